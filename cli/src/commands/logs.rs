//! `paas logs NAME`: the recent lines, then live ones until Ctrl-C (like `cf logs`), from the SSE
//! stream `GET /v1/apps/NAME/logs/stream`. `--recent` prints the snapshot and exits. Filters
//! (`--source`, `--instance`, `--since`, `--grep`) are applied by the server to both. Lines are
//! coloured by source when stdout is a terminal.

use crate::client::Client;
use crate::output::log_line;
use paas_common::api::LogLine;
use std::io::{IsTerminal, Write};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Print the recent lines and exit
    #[arg(long, conflicts_with = "follow")]
    pub recent: bool,
    /// Follow: recent lines, then live ones (the default)
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many recent lines to print first
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Only these sources, comma separated: APP, APP/web/0, STG, RTR, API, CELL, TASK, TASK/3
    #[arg(long)]
    pub source: Option<String>,
    /// Only this instance index
    #[arg(long)]
    pub instance: Option<u32>,
    /// Only lines since a time (RFC 3339) or a duration ago (30s, 5m, 2h)
    #[arg(long)]
    pub since: Option<String>,
    /// Only lines containing this text
    #[arg(long)]
    pub grep: Option<String>,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

impl Args {
    fn filters(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("limit", self.limit.to_string())];
        if let Some(s) = &self.source {
            f.push(("source", s.clone()));
        }
        if let Some(i) = self.instance {
            f.push(("instance", i.to_string()));
        }
        if let Some(s) = &self.since {
            f.push(("since", s.clone()));
        }
        if let Some(g) = &self.grep {
            f.push(("grep", g.clone()));
        }
        f
    }
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let color = !args.json && std::io::stdout().is_terminal();
    if args.recent {
        let mut filters = vec![("recent", "true".to_string())];
        filters.extend(args.filters());
        let list = client.query_logs(&args.name, &filters)?;
        for l in &list.lines {
            print_line(l, args.json, color);
        }
        return Ok(());
    }
    client.stream_logs(
        &args.name,
        &args.filters(),
        |l| {
            print_line(&l, args.json, color);
            // A closed stdout (`| head`) ends the stream.
            std::io::stdout().flush().is_ok()
        },
        |n| eprintln!("paas: {n} lines were skipped because this terminal read too slowly"),
    )?;
    Ok(())
}

pub fn print_lines(lines: &[LogLine]) {
    for l in lines {
        println!("{}", log_line(l));
    }
}

fn print_line(l: &LogLine, json: bool, color: bool) {
    if json {
        if let Ok(s) = serde_json::to_string(l) {
            println!("{s}");
        }
    } else if color {
        println!("{}{}\x1b[0m", colour_of(&l.source), log_line(l));
    } else {
        println!("{}", log_line(l));
    }
}

/// ANSI colour per source family, as `cf logs` does.
pub fn colour_of(source: &str) -> &'static str {
    match source.split('/').next().unwrap_or_default() {
        "APP" => "",
        "STG" => "\x1b[36m",
        "RTR" => "\x1b[90m",
        "API" => "\x1b[35m",
        "CELL" => "\x1b[33m",
        _ => "",
    }
}

/// Prints `name`'s lines from the sources in `sources` since `since` on a background thread until
/// the returned flag is set: how `paas push` shows staging and cell output while it waits.
pub fn spawn_follow(
    client: &Client,
    name: &str,
    sources: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (client, name, stop2) = (client.clone(), name.to_string(), stop.clone());
    let filters = vec![
        ("source", sources.to_string()),
        (
            "since",
            since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        ("limit", "1000".to_string()),
    ];
    let color = std::io::stdout().is_terminal();
    std::thread::spawn(move || {
        // Failing to stream only costs the live view; the push itself goes on.
        let _ = client.stream_logs(
            &name,
            &filters,
            |l| {
                if stop2.load(Ordering::SeqCst) {
                    return false;
                }
                print_line(&l, false, color);
                true
            },
            |_| {},
        );
    });
    stop
}
