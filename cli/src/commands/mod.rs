//! The command line: one clap-derive enum whose doc comments are the help text, and one module
//! per subcommand with its `Args` and a `run` that returns `anyhow::Result`.

pub mod app;
pub mod apps;
pub mod delete;
pub mod env;
pub mod login;
pub mod logs;
pub mod nodes;
pub mod push;
pub mod revisions;

use crate::client::Client;
use crate::config::Env;
use clap::{Parser, Subcommand};

/// paas: push folders as apps, and see their instances, logs and nodes.
///
/// The API and token come from `paas login` ($PAAS_HOME/config.json, default ~/.paas), or from
/// PAAS_API and PAAS_TOKEN when both are set.
#[derive(Debug, Parser)]
#[command(name = "paas", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in to a paas API and save the token in $PAAS_HOME/config.json.
    Login(login::Args),
    /// Upload a folder as an app, then wait until all its instances run.
    Push(push::Args),
    /// List apps.
    Apps(apps::Args),
    /// Show one app and its instances.
    App(app::Args),
    /// Delete an app, its instances and its route.
    Delete(delete::Args),
    /// Show an app's logs.
    Logs(logs::Args),
    /// List the nodes that run app instances.
    Nodes(nodes::Args),
    /// Show an app's env vars (those of its current revision).
    Env(env::Args),
    /// Set an env var: a new revision with the same droplet, redeployed without rebuilding.
    SetEnv(env::SetArgs),
    /// Remove an env var: a new revision with the same droplet, redeployed without rebuilding.
    UnsetEnv(env::UnsetArgs),
    /// List an app's revisions, newest first (* marks the current one).
    Revisions(revisions::Args),
    /// Redeploy an earlier revision's droplet and env as a new revision (default: the previous).
    Rollback(revisions::RollbackArgs),
}

/// Runs one command. Every command but `login` needs a saved login or PAAS_API + PAAS_TOKEN.
pub fn dispatch(cli: Cli, env: &Env) -> anyhow::Result<()> {
    if let Command::Login(args) = cli.command {
        return login::run(args, env);
    }
    let client = Client::from_config(env.load()?)?;
    match cli.command {
        Command::Login(_) => unreachable!("handled above"),
        Command::Push(args) => push::run(args, &client),
        Command::Apps(args) => apps::run(args, &client),
        Command::App(args) => app::run(args, &client),
        Command::Delete(args) => delete::run(args, &client),
        Command::Logs(args) => logs::run(args, &client),
        Command::Nodes(args) => nodes::run(args, &client),
        Command::Env(args) => env::run(args, &client),
        Command::SetEnv(args) => env::run_set(args, &client),
        Command::UnsetEnv(args) => env::run_unset(args, &client),
        Command::Revisions(args) => revisions::run(args, &client),
        Command::Rollback(args) => revisions::run_rollback(args, &client),
    }
}

/// Reads one line from stdin without its line ending; `None` at end of input.
pub(crate) fn read_line() -> anyhow::Result<Option<String>> {
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line)? == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end_matches(['\n', '\r']).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_push_flags() {
        let cli = Cli::try_parse_from([
            "paas",
            "push",
            "web",
            "-p",
            "dir",
            "-i",
            "2",
            "-m",
            "1G",
            "-c",
            "run",
            "--timeout",
            "5",
        ])
        .unwrap();
        let Command::Push(a) = cli.command else {
            panic!("not push")
        };
        assert_eq!(a.name.unwrap().as_str(), "web");
        assert_eq!(a.memory, Some(1024));
        assert_eq!(a.instances, Some(2));
        assert_eq!(a.timeout, 5);
        assert!(Cli::try_parse_from(["paas", "push", "Bad_Name"]).is_err());
        assert!(Cli::try_parse_from(["paas", "push", "-m", "lots"]).is_err());
    }
}
