//! `paas-agent`: parse the command line, load the settings, run until a signal arrives.

use anyhow::Context;
use clap::{Parser, Subcommand};
use paas_agent::{agent, Settings};

/// The paas node agent: runs this node's assigned app instances in sandboxed Docker containers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Register with the controller and run assigned instances (the default).
    Run,
    /// Manage the stack image apps run on.
    Stack {
        #[command(subcommand)]
        command: StackCommand,
    },
}

#[derive(Subcommand)]
enum StackCommand {
    /// Build every stack's run and build images with debootstrap unless the engine has them.
    Build {
        /// Rebuild even if the images exist.
        #[arg(long)]
        force: bool,
        /// Only this stack (trixie, bookworm).
        #[arg(long, value_parser = parse_stack)]
        stack: Option<String>,
    },
}

fn parse_stack(s: &str) -> Result<String, String> {
    paas_common::stack::resolve(s)
        .map(str::to_string)
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,paas_agent=info".into()),
        )
        .init();
    let cli = Cli::parse();
    let settings = Settings::load().context("loading settings")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Stack {
            command: StackCommand::Build { force, stack },
        } => {
            let started = std::time::Instant::now();
            for (name, outcome) in agent::build_stacks(&settings, stack.as_deref(), force).await? {
                tracing::info!(stack = name, ?outcome, "stack images ready");
            }
            tracing::info!(elapsed_s = started.elapsed().as_secs(), "stacks ready");
            Ok(())
        }
        Command::Run => {
            tracing::info!(node = %settings.node_name, controller = %settings.controller, "starting agent");
            let node = settings.node_name.clone();
            tokio::select! {
                result = agent::run(settings) => result.context("agent stopped"),
                () = shutdown_signal() => {
                    // Containers keep running; the next agent process re-adopts them. The
                    // network rules go: nothing keeps them current any more (the next agent
                    // rebuilds them at start, nothing open until its first assignment list).
                    paas_agent::netpolicy::remove(&node);
                    tracing::info!("shutting down, leaving instances running");
                    Ok(())
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
