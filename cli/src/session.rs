//! Keeps a saved login usable: the access token from `paas login` lives minutes, so before a
//! command runs, an expired (or nearly expired) one is renewed with the saved refresh token.
//! CI tokens from PAAS_TOKEN have no refresh token and are used as they are.

use anyhow::Context;
use chrono::{DateTime, Duration, Utc};

use crate::client::Client;
use crate::config::{Config, Env};

/// Renew this long before expiry, so a token does not run out during a command.
const MARGIN_SECS: i64 = 60;

fn needs_refresh(cfg: &Config, now: DateTime<Utc>) -> bool {
    cfg.refresh_token.is_some()
        && cfg
            .expires_at
            .is_some_and(|exp| exp - Duration::seconds(MARGIN_SECS) <= now)
}

/// The login to use, renewed first when its access token expired; `None` when not logged in.
pub fn fresh_login(env: &Env) -> anyhow::Result<Option<Config>> {
    let Some(cfg) = env.load()? else {
        return Ok(None);
    };
    if !needs_refresh(&cfg, Utc::now()) {
        return Ok(Some(cfg));
    }
    // A refresh token is single-use and the server revokes the whole login when one is
    // presented twice, so commands running side by side must refresh one at a time: the first
    // renews, the others find the renewed login when they get the lock.
    std::fs::create_dir_all(&env.home)
        .with_context(|| format!("cannot create {}", env.home.display()))?;
    let lock_path = env.home.join("config.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let Some(cfg) = env.load()? else {
        return Ok(None);
    };
    if !needs_refresh(&cfg, Utc::now()) {
        return Ok(Some(cfg));
    }
    let Some(refresh) = cfg.refresh_token.clone() else {
        return Ok(Some(cfg));
    };
    let client = Client::new(&cfg.api, None)?;
    let resp = client.refresh(&refresh).map_err(|e| {
        anyhow::anyhow!(
            "your login at {} expired and could not be renewed ({e}): run `paas login {}` again",
            cfg.api,
            cfg.api
        )
    })?;
    let renewed = Config {
        token: resp.token,
        expires_at: Some(resp.expires_at),
        refresh_token: resp.refresh_token.or(Some(refresh)),
        ..cfg
    };
    env.save(&renewed)?;
    Ok(Some(renewed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_only_logins_near_expiry() {
        let now = Utc::now();
        let mut cfg = Config {
            api: "http://x".into(),
            token: "t".into(),
            expires_at: Some(now + Duration::minutes(10)),
            refresh_token: Some("r".into()),
            ..Default::default()
        };
        assert!(!needs_refresh(&cfg, now));
        cfg.expires_at = Some(now + Duration::seconds(30));
        assert!(needs_refresh(&cfg, now));
        cfg.expires_at = Some(now - Duration::hours(1));
        assert!(needs_refresh(&cfg, now));
        // A CI token (no refresh token) is used as it is.
        cfg.refresh_token = None;
        assert!(!needs_refresh(&cfg, now));
    }
}
