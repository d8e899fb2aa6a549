//! `paas delete NAME [-f]`: `DELETE /v1/apps/NAME`, after a y/N question unless `-f`.

use crate::client::Client;
use anyhow::bail;
use std::io::{IsTerminal, Write};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Delete without asking
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    if !args.force {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to delete {} without confirmation: stdin is not a terminal; use -f",
                args.name
            );
        }
        eprint!("Really delete {}? [y/N] ", args.name);
        std::io::stderr().flush()?;
        let answer = super::read_line()?.unwrap_or_default();
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            println!("Not deleted.");
            return Ok(());
        }
    }
    client.delete_app(&args.name)?;
    println!("Deleted {}", args.name);
    Ok(())
}
