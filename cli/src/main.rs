//! The `paas` binary: parse the command line, run it, turn any failure into one `error:` line.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = paas::Cli::parse();
    paas::run(cli, paas::config::Env::from_process())
}
