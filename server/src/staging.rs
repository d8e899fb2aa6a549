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
    /// What the folder is (a language no buildpack of this stack stages), and what is.
    #[error("{0}")]
    Unsupported(String),
}

/// What a folder's top-level files say it is: a buildpack's name and the file that says so.
/// Mirrors the built-in buildpacks' `bin/detect` (and names languages the platform may not
/// stage), so the controller can say before staging which way the app will be built.
const EVIDENCE: &[(&str, &str)] = &[
    ("Procfile", "procfile"),
    ("package.json", "node"),
    ("requirements.txt", "python"),
    ("app.py", "python"),
    ("pyproject.toml", "python"),
    ("Pipfile", "python"),
    ("setup.py", "python"),
    ("manage.py", "python"),
    ("Gemfile", "ruby"),
    ("config.ru", "ruby"),
    ("go.mod", "go"),
    ("pom.xml", "java"),
    ("build.gradle", "java"),
    ("composer.json", "php"),
    ("index.html", "staticfile"),
    ("Staticfile", "staticfile"),
];

/// The languages a folder holds, each with its first file found, in [`EVIDENCE`] order.
pub fn detect_languages(top_level: &[String]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for (file, lang) in EVIDENCE {
        if top_level.iter().any(|f| f == file) && !out.iter().any(|(l, _)| l == lang) {
            out.push((lang, file));
        }
    }
    out
}

/// The built-in buildpack that stages `lang`, if any (a lone Procfile: `binary`).
fn buildpack_of(lang: &str) -> Option<&'static str> {
    if lang == "procfile" {
        Some("binary")
    } else {
        paas_common::manifest::buildpack_name(lang)
    }
}

fn supported(lang: &str) -> bool {
    buildpack_of(lang).is_some()
}

/// How a push is built and why, for the push output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildChoice {
    pub dockerfile: bool,
    /// "staging with buildpack node (package.json found); Dockerfile ignored: use --dockerfile"
    pub why: String,
}

/// Decides between buildpacks and the app's Dockerfile as Cloud Foundry would: named
/// buildpacks always mean buildpacks; a Dockerfile is built only when asked (`--dockerfile`) or
/// when no buildpack would detect the app. An app nothing can build is refused, naming what was
/// found and what is supported.
pub fn choose_build(
    top_level: &[String],
    buildpacks: &[String],
    want_dockerfile: bool,
    added_buildpacks: bool,
) -> Result<BuildChoice, StagingError> {
    let has_dockerfile = top_level.iter().any(|f| f == "Dockerfile");
    if want_dockerfile {
        if !buildpacks.is_empty() {
            return Err(StagingError::Unsupported(
                "--dockerfile and buildpacks exclude each other: name one".into(),
            ));
        }
        if !has_dockerfile {
            return Err(StagingError::Unsupported(
                "--dockerfile: the folder has no top-level Dockerfile".into(),
            ));
        }
        return Ok(BuildChoice {
            dockerfile: true,
            why: "building the Dockerfile (asked for with --dockerfile)".into(),
        });
    }
    let ignored = if has_dockerfile {
        "; Dockerfile ignored: use --dockerfile to build it"
    } else {
        ""
    };
    if !buildpacks.is_empty() {
        return Ok(BuildChoice {
            dockerfile: false,
            why: format!(
                "staging with buildpack {} (named by the push){ignored}",
                buildpacks.join(", ")
            ),
        });
    }
    let found = detect_languages(top_level);
    // The buildpack the node will pick: the first built-in, in detection order, with evidence.
    let chosen = paas_common::manifest::BUILTIN_BUILDPACKS
        .iter()
        .find_map(|bp| found.iter().find(|(l, _)| buildpack_of(l) == Some(*bp)));
    if let Some((lang, file)) = chosen {
        let bp = buildpack_of(lang).unwrap_or(lang);
        return Ok(BuildChoice {
            dockerfile: false,
            why: format!("staging with buildpack {bp} ({file} found){ignored}"),
        });
    }
    if has_dockerfile {
        let why = match found.first() {
            Some((lang, file)) => format!(
                "building the Dockerfile ({file} says {lang}, which no buildpack of this stack stages)"
            ),
            None => "building the Dockerfile (no buildpack detects the app)".to_string(),
        };
        return Ok(BuildChoice {
            dockerfile: true,
            why,
        });
    }
    if added_buildpacks {
        return Ok(BuildChoice {
            dockerfile: false,
            why: "staging with the operator's buildpacks (no built-in detects the app)".into(),
        });
    }
    match found.first() {
        Some((lang, file)) => Err(StagingError::Unsupported(format!(
            "this app cannot be built: {file} says it is {}, which is not supported on this stack; \
             supported are a Procfile, {} (or a Dockerfile)",
            language_name(lang),
            paas_common::manifest::BUILTIN_BUILDPACKS
                .iter()
                .filter(|b| **b != "procfile" && **b != "binary")
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => Err(StagingError::NotAnApp),
    }
}

fn language_name(lang: &str) -> &str {
    match lang {
        "ruby" => "a Ruby app",
        "go" => "a Go app",
        "java" => "a Java app",
        "php" => "a PHP app",
        other => other,
    }
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
    // staging on a node.
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
    // A language a built-in buildpack stages but that has no command without staging (e.g.
    // `requirements.txt` alone): the node's buildpack decides; no fallback without a node.
    if let Some((lang, _)) = detect_languages(top_level)
        .into_iter()
        .find(|(l, _)| supported(l))
    {
        return Ok(Staged {
            detected: lang.into(),
            command: String::new(),
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

    fn files(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn buildpacks_win_over_a_dockerfile_unless_asked() {
        let both = files(&["Dockerfile", "package.json"]);
        let c = choose_build(&both, &[], false, false).unwrap();
        assert!(!c.dockerfile);
        assert_eq!(
            c.why,
            "staging with buildpack node (package.json found); Dockerfile ignored: use --dockerfile to build it"
        );
        assert!(choose_build(&both, &[], true, false).unwrap().dockerfile);
        let named = choose_build(&both, &["python".into()], false, false).unwrap();
        assert!(
            !named.dockerfile && named.why.contains("python"),
            "{named:?}"
        );
        let only = choose_build(&files(&["Dockerfile", "server.py"]), &[], false, false).unwrap();
        assert!(only.dockerfile, "{only:?}");
        // Java stands for any language no buildpack of this platform stages.
        let java = choose_build(&files(&["Dockerfile", "pom.xml"]), &[], false, false).unwrap();
        assert!(java.dockerfile && java.why.contains("java"), "{java:?}");
        assert!(choose_build(&files(&["package.json"]), &[], true, false).is_err());
        // The node picks buildpacks in their detection order; a Procfile only sets the command.
        let py = choose_build(&files(&["Procfile", "requirements.txt"]), &[], false, false);
        assert_eq!(
            py.unwrap().why,
            "staging with buildpack python (requirements.txt found)"
        );
    }

    #[test]
    fn unsupported_languages_are_named() {
        let e = choose_build(&files(&["pom.xml", "src"]), &[], false, false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("pom.xml") && msg.contains("Java") && msg.contains("not supported"),
            "{msg}"
        );
        assert_eq!(
            choose_build(&files(&["README.md"]), &[], false, false),
            Err(StagingError::NotAnApp)
        );
        assert!(
            !choose_build(&files(&["README.md"]), &[], false, true)
                .unwrap()
                .dockerfile
        );
    }
}
