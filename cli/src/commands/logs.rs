//! `paas logs NAME [--recent] [--limit N]`: `GET /v1/apps/NAME/logs?recent=true&limit=N`.
//!
//! Only the snapshot exists for now; without `--recent` it prints the same. Following the live
//! stream (`-f`) will be a second branch in [`run`] that feeds [`print_lines`] as lines arrive.

use crate::client::Client;
use crate::output::log_line;
use paas_common::api::LogLine;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Print the recent lines and exit (the default until streaming exists)
    #[arg(long)]
    pub recent: bool,
    /// How many recent lines to print
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let list = client.recent_logs(&args.name, args.limit)?;
    print_lines(&list.lines);
    Ok(())
}

pub fn print_lines(lines: &[LogLine]) {
    for l in lines {
        println!("{}", log_line(l));
    }
}
