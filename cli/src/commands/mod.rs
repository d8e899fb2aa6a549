//! The command line: one clap-derive enum whose doc comments are the help text, and one module
//! per subcommand with its `Args` and a `run` that returns `anyhow::Result`.

pub mod app;
pub mod apps;
pub mod delete;
pub mod lifecycle;
pub mod login;
pub mod logs;
pub mod nodes;
pub mod push;

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
    /// Change an app's instances, memory, rolling width or health check.
    Scale(lifecycle::ScaleArgs),
    /// Restart an app's instances one at a time (or --max-in-flight K at a time).
    Restart(lifecycle::RestartArgs),
    /// Stop every instance of an app (it keeps its settings and route).
    Stop(lifecycle::NameArgs),
    /// Start a stopped app.
    Start(lifecycle::NameArgs),
    /// Replace one instance of an app (the new one runs before the old one stops).
    RestartInstance(lifecycle::RestartInstanceArgs),
    /// Manage one node.
    Node(lifecycle::NodeArgs),
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
        Command::Scale(args) => lifecycle::scale(args, &client),
        Command::Restart(args) => lifecycle::restart(args, &client),
        Command::Stop(args) => lifecycle::stop(args, &client),
        Command::Start(args) => lifecycle::start(args, &client),
        Command::RestartInstance(args) => lifecycle::restart_instance(args, &client),
        Command::Node(args) => lifecycle::node(args, &client),
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

    #[test]
    fn parses_lifecycle_commands() {
        let cli = Cli::try_parse_from(["paas", "scale", "web", "-i", "3", "-m", "512M", "--health-check", "http", "--health-endpoint", "/h"]).unwrap();
        let Command::Scale(a) = cli.command else { panic!("not scale") };
        assert_eq!((a.instances, a.memory, a.health_check.as_deref()), (Some(3), Some(512), Some("http")));
        assert!(Cli::try_parse_from(["paas", "scale", "web", "--health-check", "tcp"]).is_err());
        let cli = Cli::try_parse_from(["paas", "restart", "web", "--max-in-flight", "2"]).unwrap();
        assert!(matches!(cli.command, Command::Restart(a) if a.max_in_flight == Some(2)));
        let cli = Cli::try_parse_from(["paas", "restart-instance", "web", "1"]).unwrap();
        assert!(matches!(cli.command, Command::RestartInstance(a) if a.index == 1));
        let cli = Cli::try_parse_from(["paas", "node", "drain", "n1"]).unwrap();
        assert!(matches!(cli.command, Command::Node(lifecycle::NodeArgs { command: lifecycle::NodeCommand::Drain { name } }) if name == "n1"));
        assert!(Cli::try_parse_from(["paas", "restart-instance", "web", "x"]).is_err());
    }
}
