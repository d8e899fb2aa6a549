//! The `paas` developer CLI. `main` parses [`Cli`] and calls [`run`]; each subcommand lives in its
//! own module under `commands`, all HTTP goes through [`client::Client`], and every failure ends as
//! exactly one `error: ...` line on stderr with exit code 1 (clap's usage errors exit with 2).

pub mod archive;
pub mod client;
pub mod commands;
pub mod config;
pub mod output;
pub mod session;

pub use commands::Cli;

use std::process::ExitCode;

/// Runs one parsed command line and maps its outcome to the process exit code.
pub fn run(cli: Cli, env: config::Env) -> ExitCode {
    match commands::dispatch(cli, &env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `paas ssh`: the remote command's status, as ssh passes it on.
            if let Some(commands::ssh::RemoteExit(code)) = e.downcast_ref() {
                return ExitCode::from((*code & 0xff) as u8);
            }
            eprintln!("error: {}", output::one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
