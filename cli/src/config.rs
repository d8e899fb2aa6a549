//! Where the CLI finds the API and its token. The process environment is read once, in
//! [`Env::from_process`]; everything else takes an [`Env`], so tests never touch real env vars.
//!
//! Order: `PAAS_API` + `PAAS_TOKEN` when both are set (CI), else `$PAAS_HOME/config.json`
//! (default `~/.paas/config.json`), written by `paas login` with mode 0600 because it holds a token.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The saved login: which API, and the bearer token for it.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    pub api: String,
    /// The access token (short-lived after `paas login`; a CI token from PAAS_TOKEN).
    pub token: String,
    /// The target space `ORG/SPACE` (`paas target`); the server's default space when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// When `token` expires; the CLI renews it with `refresh_token` shortly before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Single-use: each renewal replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for Config {
    // The token is a credential: keep it out of debug output and panics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("api", &self.api)
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The part of the process environment the CLI uses.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub api: Option<String>,
    pub token: Option<String>,
    /// `PAAS_SPACE`: the target space for CI, with PAAS_API and PAAS_TOKEN.
    pub space: Option<String>,
    /// `PAAS_HOME`, or `~/.paas`.
    pub home: PathBuf,
}

impl Env {
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let home = var("PAAS_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".paas")
        });
        Env {
            api: var("PAAS_API"),
            token: var("PAAS_TOKEN"),
            space: var("PAAS_SPACE"),
            home,
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.home.join("config.json")
    }

    /// The login to use: the env pair if both are set, else the config file, else `None`.
    pub fn load(&self) -> anyhow::Result<Option<Config>> {
        if let (Some(api), Some(token)) = (&self.api, &self.token) {
            return Ok(Some(Config {
                api: normalize_api(api),
                token: token.clone(),
                space: self.space.clone(),
                ..Default::default()
            }));
        }
        let path = self.config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let cfg: Config = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not valid paas config JSON; run `paas login URL` again",
                path.display()
            )
        })?;
        Ok(Some(Config {
            api: normalize_api(&cfg.api),
            ..cfg
        }))
    }

    /// Saves the login atomically (temp file + rename), readable by the owner only.
    pub fn save(&self, cfg: &Config) -> anyhow::Result<PathBuf> {
        create_private_dir(&self.home)?;
        let path = self.config_path();
        let mut tmp = tempfile::NamedTempFile::new_in(&self.home)
            .with_context(|| format!("cannot write in {}", self.home.display()))?;
        set_private(tmp.path(), 0o600)?;
        serde_json::to_writer_pretty(&mut tmp, cfg)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// `http://host:8080/` and `http://host:8080` name the same API.
pub fn normalize_api(api: &str) -> String {
    api.trim().trim_end_matches('/').to_string()
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    set_private(dir, 0o700)
}

#[cfg(unix)]
fn set_private(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn set_private(_path: &Path, _mode: u32) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_in(dir: &Path) -> Env {
        Env {
            api: None,
            token: None,
            space: None,
            home: dir.join("home"),
        }
    }

    #[test]
    fn missing_config_is_not_logged_in() {
        let dir = tempfile::tempdir().unwrap();
        assert!(env_in(dir.path()).load().unwrap().is_none());
    }

    #[test]
    fn save_then_load_round_trips_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        let cfg = Config {
            api: "http://127.0.0.1:8080".into(),
            token: "t0k".into(),
            space: None,
            ..Default::default()
        };
        let path = env.save(&cfg).unwrap();
        assert_eq!(env.load().unwrap(), Some(cfg.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // Saving again overwrites.
        let cfg2 = Config {
            api: "http://other/".into(),
            token: "t2".into(),
            space: None,
            ..Default::default()
        };
        env.save(&cfg2).unwrap();
        assert_eq!(env.load().unwrap().unwrap().api, "http://other");
    }

    #[test]
    fn env_pair_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = env_in(dir.path());
        env.save(&Config {
            api: "http://file".into(),
            token: "file".into(),
            space: None,
            ..Default::default()
        })
        .unwrap();
        env.api = Some("http://env:1/".into());
        env.token = Some("envtok".into());
        assert_eq!(
            env.load().unwrap(),
            Some(Config {
                api: "http://env:1".into(),
                token: "envtok".into(),
                space: None,
                ..Default::default()
            })
        );
        // Only one of the two set: the file wins.
        env.token = None;
        assert_eq!(env.load().unwrap().unwrap().token, "file");
    }

    #[test]
    fn broken_config_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_in(dir.path());
        std::fs::create_dir_all(&env.home).unwrap();
        std::fs::write(env.config_path(), "{nope").unwrap();
        let msg = format!("{:#}", env.load().unwrap_err());
        assert!(msg.contains("paas login"), "{msg}");
    }

    #[test]
    fn debug_hides_the_token() {
        let cfg = Config {
            api: "a".into(),
            token: "secret".into(),
            space: None,
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("secret"));
    }
}
