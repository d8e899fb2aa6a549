//! Minimal staging: decides how to run an app from what its archive holds. A `Procfile` with a
//! `web:` process runs that command; otherwise an `app.py` runs with `python3 app.py`. Buildpacks
//! (detect/compile/release in a staging container) replace this in their own issue; the result
//! they produce has the same shape, [`Staged`].

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// What was detected, for humans: "procfile" or "python".
    pub detected: String,
    /// The web process's start command.
    pub command: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StagingError {
    #[error("the Procfile has no `web:` process")]
    NoWebProcess,
    #[error("this folder is not an app: no Procfile with a web process, app.py, index.html, package.json, requirements.txt, pyproject.toml, Gemfile, config.ru or go.mod (nothing to run)")]
    NotAnApp,
}

/// Parses Procfile lines `type: command`, ignoring blanks and comments.
pub fn parse_procfile(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (t, c) = l.split_once(':')?;
            let (t, c) = (t.trim(), c.trim());
            (!t.is_empty() && !c.is_empty()).then(|| (t.to_string(), c.to_string()))
        })
        .collect()
}

pub fn detect(
    procfile: Option<&str>,
    top_level: &[String],
    command_override: Option<&str>,
) -> Result<Staged, StagingError> {
    let has = |name: &str| top_level.iter().any(|f| f == name);
    let has_app_py = has("app.py");
    // Issue 3: the built-in buildpacks' detections, so an app any of them stages is an app.
    let has_static = has("index.html") || has("Staticfile");
    let has_node = has("package.json");
    // Issue 19: what the dependency-installing buildpacks detect; their commands come from
    // staging on a node (the fallback below runs the files as they are).
    let has_python = [
        "requirements.txt",
        "pyproject.toml",
        "Pipfile",
        "Pipfile.lock",
        "setup.py",
        "manage.py",
    ]
    .iter()
    .any(|f| has(f));
    let has_ruby = has("Gemfile") || has("config.ru");
    let has_go = has("go.mod");
    let detected = if procfile.is_some() {
        "procfile"
    } else if has_app_py {
        "python"
    } else if has_static {
        "staticfile"
    } else if has_node {
        "node"
    } else if has_python {
        "python"
    } else if has_ruby {
        "ruby"
    } else if has_go {
        "go"
    } else {
        "command"
    };
    if let Some(cmd) = command_override.filter(|c| !c.trim().is_empty()) {
        return Ok(Staged {
            detected: detected.into(),
            command: cmd.trim().to_string(),
        });
    }
    if let Some(text) = procfile {
        let web = parse_procfile(text)
            .into_iter()
            .find(|(t, _)| t == "web")
            .ok_or(StagingError::NoWebProcess)?;
        return Ok(Staged {
            detected: detected.into(),
            command: web.1,
        });
    }
    if has_app_py {
        return Ok(Staged {
            detected: detected.into(),
            command: "python3 app.py".into(),
        });
    }
    // Without a node to run the buildpacks on, these commands run the app files as they are.
    if has_static {
        return Ok(Staged {
            detected: detected.into(),
            command: "exec python3 -m http.server \"$PORT\"".into(),
        });
    }
    if has_node {
        return Ok(Staged {
            detected: detected.into(),
            command: "exec sh -c \"$(node -p 'require(\\\"./package.json\\\").scripts.start')\""
                .into(),
        });
    }
    let fallback = match detected {
        "python" => Some("python3 app.py"),
        "ruby" => Some("exec rackup config.ru -p \"$PORT\" -o 0.0.0.0"),
        "go" => Some("exec /app/bin/app"),
        _ => None,
    };
    if let Some(command) = fallback {
        return Ok(Staged {
            detected: detected.into(),
            command: command.into(),
        });
    }
    Err(StagingError::NotAnApp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfile_web_wins() {
        let s = detect(
            Some("# c\nworker: x\nweb: python3 -m http.server $PORT\n"),
            &["app.py".into()],
            None,
        )
        .unwrap();
        assert_eq!(s.command, "python3 -m http.server $PORT");
        assert_eq!(s.detected, "procfile");
    }

    #[test]
    fn app_py_runs_with_python() {
        assert_eq!(
            detect(None, &["app.py".into()], None).unwrap().command,
            "python3 app.py"
        );
    }

    #[test]
    fn not_an_app() {
        assert_eq!(
            detect(None, &["README.md".into()], None),
            Err(StagingError::NotAnApp)
        );
        assert_eq!(
            detect(Some("worker: x"), &[], None),
            Err(StagingError::NoWebProcess)
        );
        assert_eq!(
            detect(None, &["README.md".into()], Some("./run"))
                .unwrap()
                .command,
            "./run"
        );
    }
}
