//! `paas login URL -u USER [-p PASS]`: `POST URL/v1/auth/login`, then save api + token.

use crate::client::Client;
use crate::config::{normalize_api, Config, Env};
use anyhow::bail;
use paas_common::api::LoginRequest;
use std::io::{IsTerminal, Write};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// API URL, e.g. http://127.0.0.1:8080
    pub url: String,
    /// User name
    #[arg(short = 'u', long = "username")]
    pub username: String,
    /// Password; read from stdin (one line) when left out
    #[arg(short = 'p', long = "password")]
    pub password: Option<String>,
}

pub fn run(args: Args, env: &Env) -> anyhow::Result<()> {
    let password = match args.password {
        Some(p) => p,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("Password: ");
                std::io::stderr().flush()?;
            }
            match super::read_line()? {
                Some(p) if !p.is_empty() => p,
                _ => bail!("no password given: pass -p PASSWORD or one line on stdin"),
            }
        }
    };
    let api = normalize_api(&args.url);
    let client = Client::new(&api, None)?;
    let resp = client.login(&LoginRequest {
        username: args.username.clone(),
        password,
    })?;
    env.save(&Config {
        api: api.clone(),
        token: resp.token,
        space: None,
        expires_at: Some(resp.expires_at),
        refresh_token: resp.refresh_token,
    })?;
    println!("Logged in to {api} as {}", args.username);
    Ok(())
}

/// `paas logout`: revokes the saved refresh token on the server and forgets the login.
pub fn logout(env: &Env) -> anyhow::Result<()> {
    let path = env.config_path();
    let Some(cfg) = env.load()? else {
        println!("Not logged in");
        return Ok(());
    };
    if env.api.is_some() && env.token.is_some() {
        bail!("PAAS_API and PAAS_TOKEN are set: there is no saved login to log out of");
    }
    if let Some(refresh) = &cfg.refresh_token {
        let client = Client::new(&cfg.api, None)?;
        // An already revoked or expired refresh token is as good as logged out.
        if let Err(e) = client.logout(refresh) {
            if e.code() != Some("unauthorized") {
                return Err(e.into());
            }
        }
    }
    std::fs::remove_file(&path)?;
    println!("Logged out of {}", cfg.api);
    Ok(())
}
