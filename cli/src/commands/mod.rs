//! The command line: one clap-derive enum whose doc comments are the help text, and one module
//! per subcommand with its `Args` and a `run` that returns `anyhow::Result`.

pub mod app;
pub mod apply;
pub mod apps;
pub mod autoscale;
pub mod base_images;
pub mod buildpacks;
pub mod canary;
pub mod cron;
pub mod delete;
pub mod deployment;
pub mod domains;
pub mod env;
pub mod events;
pub mod lifecycle;
pub mod log_drain;
pub mod login;
pub mod logs;
pub mod network;
pub mod nodes;
pub mod push;
pub mod revisions;
pub mod routes;
pub mod services;
pub mod ssh;
pub mod tasks;
pub mod tenancy;

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
    /// Revoke the saved login's refresh token and forget the login.
    Logout,
    /// Upload a folder as an app, then wait until all its instances run.
    Push(Box<push::Args>),
    /// Make a space match a file of apps, processes, env, routes and services (`--dry-run`
    /// prints the diff; `--prune` deletes the apps the file no longer names).
    Apply(apply::Args),
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
    /// JWT signing keys (operators): list them, or rotate to a new active key.
    #[command(subcommand)]
    Keys(tenancy::KeysCmd),
    /// Manage API tokens for CI: create, list, revoke.
    #[command(subcommand)]
    Tokens(tenancy::TokensCmd),
    /// List users and their roles (operators only).
    Users {
        #[arg(long)]
        json: bool,
    },
    /// Create a user (operators only).
    AddUser {
        username: String,
        /// Password; read from stdin (one line) when left out
        #[arg(short = 'p', long)]
        password: Option<String>,
        /// Make the user an operator (nodes, buildpacks, users, spaces)
        #[arg(long)]
        operator: bool,
    },
    /// Give a user a role in a space (admin, developer, viewer) or with --org in an
    /// organization (manager, auditor); `none` takes it away.
    SetRole {
        username: String,
        role: String,
        /// ORG/SPACE (default: default/default)
        #[arg(long, conflicts_with = "org")]
        space: Option<String>,
        /// ORG: a role in the whole organization, its later spaces included
        #[arg(long)]
        org: Option<String>,
    },
    /// List spaces.
    Spaces,
    /// Create a space ORG/SPACE (operators; managers of the org).
    CreateSpace { space: String },
    /// Show or set the space that commands act in (ORG/SPACE).
    Target { space: Option<String> },
    /// Show a space's quota and usage, or set its limits (operators; managers of the org).
    SpaceQuota(tenancy::QuotaArgs),
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
    /// List routes (all apps, or one with --app).
    Routes(routes::ListArgs),
    /// Send requests for HOST[/PATH] to an app (the longest matching path prefix wins).
    MapRoute(routes::MapRouteArgs),
    /// Stop sending requests for HOST[/PATH] to an app.
    UnmapRoute(routes::MapArgs),
    /// Let SOURCE's instances connect to DESTINATION's (deny by default; developers of both
    /// spaces). DESTINATION is found at NAME.apps.internal once mapped there.
    AddNetworkPolicy(network::PolicyArgs),
    /// Remove a network policy: SOURCE can no longer connect to DESTINATION on those ports.
    RemoveNetworkPolicy(network::PolicyArgs),
    /// List the network policies of the apps you see.
    NetworkPolicies(network::ListArgs),
    /// List domains: the shared apps domain and your spaces' private domains.
    Domains(domains::ListArgs),
    /// Create a private domain: only its space maps hosts under it.
    CreateDomain(domains::CreateArgs),
    /// Delete a private domain (refused while a route uses it).
    DeleteDomain(domains::DeleteArgs),
    /// Set a domain's TLS certificate (PEM chain and key); every router serves it by SNI.
    SetCert(domains::CertArgs),
    /// Turn automatic certificates (ACME HTTP-01) on or off for the hosts mapped under a domain
    DomainAcme(domains::AcmeArgs),
    /// Register an Open Service Broker API broker (operators).
    CreateServiceBroker(services::CreateBrokerArgs),
    /// List service brokers, built-in and registered (operators).
    ServiceBrokers(services::ListArgs),
    /// Remove a registered service broker (operators).
    DeleteServiceBroker(services::NameArgs),
    /// List the service offerings and plans of the target space's brokers.
    Marketplace(services::ListArgs),
    /// Create a service instance of an offering's plan in the target space.
    CreateService(services::CreateArgs),
    /// Create a user-provided service instance with credentials.
    #[command(alias = "create-user-provided-service")]
    Cups(services::CupsArgs),
    /// Update a user-provided service instance's credentials (bound apps redeploy).
    #[command(alias = "uups")]
    UpdateUserProvidedService(services::CupsArgs),
    /// List the service instances of the target space.
    Services(services::ListArgs),
    /// Show one service instance: state, plan, bound apps.
    Service(services::ShowArgs),
    /// Delete a service instance (refused while apps are bound to it).
    DeleteService(services::NameArgs),
    /// Bind a service instance to an app (the app redeploys with VCAP_SERVICES).
    BindService(services::BindArgs),
    /// Unbind a service instance from an app (the app redeploys without it).
    UnbindService(services::BindArgs),
    /// Back up a built-in PostgreSQL service instance (pg_dump format, kept in the blobstore).
    ServiceBackup(services::BackupArgs),
    /// List a built-in PostgreSQL service instance's backups and restores.
    ServiceBackups(services::ShowArgs),
    /// Restore a backup over a built-in PostgreSQL service instance's database.
    ServiceRestore(services::RestoreArgs),
    /// Open a shell (or run one command with -c) in a running instance, with the app's env.
    Ssh(ssh::Args),
    /// Allow ssh to an app (space admins, operators).
    EnableSsh(ssh::NameArgs),
    /// Forbid ssh to an app (space admins, operators).
    DisableSsh(ssh::NameArgs),
    /// Show whether ssh to an app is allowed.
    SshEnabled(ssh::NameArgs),
    /// Allow ssh in a space ORG/SPACE (operators, org managers, space admins).
    AllowSpaceSsh(ssh::SpaceArgs),
    /// Forbid ssh in a space ORG/SPACE, whatever its apps say.
    DisallowSpaceSsh(ssh::SpaceArgs),
    /// Show an app's audit trail: who did what, and what the platform did (crashes, reschedules).
    Events(events::Args),
    /// List, add or remove an app's log drains (syslog:// or http://).
    LogDrain(log_drain::Args),
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
    /// Show an app's canary or blue-green deployment with the live comparison of the two
    /// revisions; `continue` moves it to its next step, `cancel` goes back to the old revision.
    Deployment(canary::Args),
    /// Run a one-off task once on the app's current droplet with its env.
    RunTask(tasks::RunArgs),
    /// List an app's tasks with their state and exit code.
    Tasks(tasks::ListArgs),
    /// Terminate a task that has not ended (it ends FAILED "terminated").
    TerminateTask(tasks::TerminateArgs),
    /// List an app's cron entries with their last and next runs, or add or remove one.
    Cron(cron::Args),
    /// Scale an app's web instances on load between --min and --max (CPU, requests per
    /// instance, p99), turn it --off, or show the policy and its last decision.
    Autoscale(autoscale::Args),
    /// List buildpacks in detection order: the built-ins, then those an operator added.
    Buildpacks(buildpacks::ListArgs),
    /// Add a buildpack (operators): a folder or zip with bin/detect, bin/compile, bin/release.
    CreateBuildpack(buildpacks::CreateArgs),
    /// Remove an added buildpack (operators).
    DeleteBuildpack(buildpacks::DeleteArgs),
    /// List the base images a Dockerfile may build on besides the stack image (operators).
    BaseImages(base_images::ListArgs),
    /// Allow a Dockerfile to build FROM an image, by name (operators).
    AllowBaseImage(base_images::NameArgs),
    /// Stop allowing a base image (operators).
    DisallowBaseImage(base_images::NameArgs),
}

/// Runs one command. Every command but `login` needs a saved login or PAAS_API + PAAS_TOKEN.
pub fn dispatch(cli: Cli, env: &Env) -> anyhow::Result<()> {
    match cli.command {
        Command::Login(args) => return login::run(args, env),
        Command::Logout => return login::logout(env),
        Command::Target { space } => return tenancy::target(space, env),
        _ => {}
    }
    let client = Client::from_config(crate::session::fresh_login(env)?)?;
    match cli.command {
        Command::Login(_) | Command::Logout | Command::Target { .. } => {
            unreachable!("handled above")
        }
        Command::Keys(cmd) => tenancy::keys(cmd, &client),
        Command::Push(args) => push::run(*args, &client),
        Command::Apply(args) => apply::run(args, &client),
        Command::Apps(args) => apps::run(args, &client),
        Command::App(args) => app::run(args, &client),
        Command::Delete(args) => delete::run(args, &client),
        Command::Logs(args) => logs::run(args, &client),
        Command::Nodes(args) => nodes::run(args, &client),
        Command::Tokens(cmd) => tenancy::tokens(cmd, &client),
        Command::Users { json } => tenancy::users(json, &client),
        Command::AddUser {
            username,
            password,
            operator,
        } => tenancy::add_user(username, password, operator, &client),
        Command::SetRole {
            username,
            role,
            space,
            org,
        } => tenancy::set_role(username, role, space, org, &client),
        Command::Spaces => tenancy::spaces(&client),
        Command::CreateSpace { space } => tenancy::create_space(space, &client),
        Command::SpaceQuota(args) => tenancy::space_quota(args, &client),
        Command::Scale(args) => lifecycle::scale(args, &client),
        Command::Restart(args) => lifecycle::restart(args, &client),
        Command::Stop(args) => lifecycle::stop(args, &client),
        Command::Start(args) => lifecycle::start(args, &client),
        Command::RestartInstance(args) => lifecycle::restart_instance(args, &client),
        Command::Node(args) => lifecycle::node(args, &client),
        Command::Routes(args) => routes::list(args, &client),
        Command::MapRoute(args) => routes::map(args, &client),
        Command::UnmapRoute(args) => routes::unmap(args, &client),
        Command::AddNetworkPolicy(args) => network::add(args, &client),
        Command::RemoveNetworkPolicy(args) => network::remove(args, &client),
        Command::NetworkPolicies(args) => network::list(args, &client),
        Command::Domains(args) => domains::list(args, &client),
        Command::CreateDomain(args) => domains::create(args, &client),
        Command::DeleteDomain(args) => domains::delete(args, &client),
        Command::SetCert(args) => domains::set_cert(args, &client),
        Command::DomainAcme(args) => domains::acme(args, &client),
        Command::CreateServiceBroker(args) => services::create_broker(args, &client),
        Command::ServiceBrokers(args) => services::brokers(args, &client),
        Command::DeleteServiceBroker(args) => services::delete_broker(args, &client),
        Command::Marketplace(args) => services::marketplace(args, &client),
        Command::CreateService(args) => services::create(args, &client),
        Command::Cups(args) => services::cups(args, false, &client),
        Command::UpdateUserProvidedService(args) => services::cups(args, true, &client),
        Command::Services(args) => services::list(args, &client),
        Command::Service(args) => services::show(args, &client),
        Command::DeleteService(args) => services::delete(args, &client),
        Command::BindService(args) => services::bind(args, &client),
        Command::UnbindService(args) => services::unbind(args, &client),
        Command::ServiceBackup(args) => services::backup(args, &client),
        Command::ServiceBackups(args) => services::backups(args, &client),
        Command::ServiceRestore(args) => services::restore(args, &client),
        Command::Ssh(args) => ssh::run(args, &client),
        Command::EnableSsh(args) => ssh::set_app(args, true, &client),
        Command::DisableSsh(args) => ssh::set_app(args, false, &client),
        Command::SshEnabled(args) => ssh::status(args, &client),
        Command::AllowSpaceSsh(args) => ssh::set_space(args, true, &client),
        Command::DisallowSpaceSsh(args) => ssh::set_space(args, false, &client),
        Command::Events(args) => events::run(args, &client),
        Command::LogDrain(args) => log_drain::run(args, &client),
        Command::Env(args) => env::run(args, &client),
        Command::SetEnv(args) => env::run_set(args, &client),
        Command::UnsetEnv(args) => env::run_unset(args, &client),
        Command::Revisions(args) => revisions::run(args, &client),
        Command::Rollback(args) => revisions::run_rollback(args, &client),
        Command::Deployment(args) => canary::run(args, &client),
        Command::RunTask(args) => tasks::run(args, &client),
        Command::Tasks(args) => tasks::list(args, &client),
        Command::TerminateTask(args) => tasks::terminate(args, &client),
        Command::Cron(args) => cron::run(args, &client),
        Command::Autoscale(args) => autoscale::run(args, &client),
        Command::Buildpacks(args) => buildpacks::list(args, &client),
        Command::CreateBuildpack(args) => buildpacks::create(args, &client),
        Command::DeleteBuildpack(args) => buildpacks::delete(args, &client),
        Command::BaseImages(args) => base_images::list(args, &client),
        Command::AllowBaseImage(args) => base_images::allow(args, &client),
        Command::DisallowBaseImage(args) => base_images::disallow(args, &client),
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
        assert!(Cli::try_parse_from(["paas", "push", "Bad/Name"]).is_err());
        // Cloud Foundry's flags as written.
        let cli = Cli::try_parse_from([
            "paas",
            "push",
            "GetStarted Python",
            "-k",
            "1G",
            "--no-start",
            "-u",
            "http",
            "--endpoint",
            "/health",
            "-t",
            "90",
            "--random-route",
            "--var",
            "a=b=c",
            "--vars-file",
            "vars.yml",
            "--dockerfile",
        ])
        .unwrap();
        let Command::Push(a) = cli.command else {
            panic!("not push")
        };
        assert_eq!(a.name.unwrap().as_str(), "GetStarted Python");
        assert_eq!(a.disk, Some(1024));
        assert!(a.no_start && a.random_route && a.dockerfile && !a.no_route);
        assert_eq!(a.health_check_type.as_deref(), Some("http"));
        assert_eq!(a.app_start_timeout, Some(90));
        assert_eq!(a.vars, vec![("a".to_string(), "b=c".to_string())]);
        assert!(Cli::try_parse_from(["paas", "push", "-u", "ping"]).is_err());
        assert!(Cli::try_parse_from(["paas", "push", "--random-route", "--no-route"]).is_err());
        assert!(Cli::try_parse_from(["paas", "push", "-b", "node", "--dockerfile"]).is_err());
        assert!(Cli::try_parse_from(["paas", "push", "-m", "lots"]).is_err());
    }

    #[test]
    fn parses_ssh_commands() {
        let cli = Cli::try_parse_from([
            "paas",
            "ssh",
            "web",
            "-i",
            "2",
            "--process",
            "worker",
            "-c",
            "echo $X",
        ])
        .unwrap();
        let Command::Ssh(a) = cli.command else {
            panic!("not ssh")
        };
        assert_eq!((a.index, a.process.as_str()), (2, "worker"));
        assert_eq!(a.command.as_deref(), Some("echo $X"));
        assert!(!a.tty && !a.no_tty);
        let cli = Cli::try_parse_from(["paas", "ssh", "web"]).unwrap();
        assert!(
            matches!(cli.command, Command::Ssh(a) if a.index == 0 && a.process == "web" && a.command.is_none())
        );
        assert!(Cli::try_parse_from(["paas", "ssh", "web", "-t", "-T"]).is_err());
        for cmd in ["enable-ssh", "disable-ssh", "ssh-enabled"] {
            assert!(Cli::try_parse_from(["paas", cmd, "web"]).is_ok(), "{cmd}");
        }
        for cmd in ["allow-space-ssh", "disallow-space-ssh"] {
            assert!(
                Cli::try_parse_from(["paas", cmd, "acme/dev"]).is_ok(),
                "{cmd}"
            );
        }
    }

    #[test]
    fn parses_lifecycle_commands() {
        let cli = Cli::try_parse_from([
            "paas",
            "scale",
            "web",
            "-i",
            "3",
            "-m",
            "512M",
            "--health-check",
            "http",
            "--health-endpoint",
            "/h",
        ])
        .unwrap();
        let Command::Scale(a) = cli.command else {
            panic!("not scale")
        };
        assert_eq!(
            (a.instances, a.memory, a.health_check.as_deref()),
            (Some(3), Some(512), Some("http"))
        );
        assert!(Cli::try_parse_from(["paas", "scale", "web", "--health-check", "tcp"]).is_err());
        let cli = Cli::try_parse_from(["paas", "restart", "web", "--max-in-flight", "2"]).unwrap();
        assert!(matches!(cli.command, Command::Restart(a) if a.max_in_flight == Some(2)));
        let cli = Cli::try_parse_from(["paas", "restart-instance", "web", "1"]).unwrap();
        assert!(
            matches!(cli.command, Command::RestartInstance(a) if a.index == 1 && a.process == "web")
        );
        let cli = Cli::try_parse_from([
            "paas",
            "restart-instance",
            "web",
            "0",
            "--process",
            "worker",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::RestartInstance(a) if a.process == "worker"));
        let cli = Cli::try_parse_from(["paas", "node", "drain", "n1"]).unwrap();
        assert!(
            matches!(cli.command, Command::Node(lifecycle::NodeArgs { command: lifecycle::NodeCommand::Drain { name } }) if name == "n1")
        );
        assert!(Cli::try_parse_from(["paas", "restart-instance", "web", "x"]).is_err());
    }
}
