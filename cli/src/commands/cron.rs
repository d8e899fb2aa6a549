//! `paas cron NAME` (entries with their last and next runs), `paas cron NAME add "SCHEDULE"
//! "COMMAND"`, `paas cron NAME remove ID`: commands run as tasks on a schedule (issue 21).

use crate::client::{seg, Client};
use crate::output::table;
use chrono::SecondsFormat;
use paas_common::api::{AddCronRequest, CronEntry};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Print the entries as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Run COMMAND as a task on SCHEDULE: five fields (`*/5 * * * *`), six with seconds first
    /// (`*/10 * * * * *`), or `@hourly`, `@daily`
    Add { schedule: String, command: String },
    /// Remove entry ID
    Remove { id: u64 },
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let path = format!("/v1/apps/{}/cron", seg(&args.name));
    match args.action {
        Some(Action::Add { schedule, command }) => {
            let e: CronEntry = client.post_json(&path, &AddCronRequest { schedule, command })?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                println!(
                    "Cron {} of {}: {:?} at {:?}, next run {}",
                    e.id,
                    args.name,
                    e.command,
                    e.schedule,
                    e.next_run_at.to_rfc3339_opts(SecondsFormat::Secs, true)
                );
            }
            Ok(())
        }
        Some(Action::Remove { id }) => {
            client.delete_path(&format!("{path}/{id}"))?;
            println!("Removed cron {id} of {}", args.name);
            Ok(())
        }
        None => {
            let list: Vec<CronEntry> = client.get_json(&path)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|e| {
                    vec![
                        e.id.to_string(),
                        e.schedule.clone(),
                        e.last_run_at.map_or("-".into(), |t| {
                            let state = e.last_state.map(|s| s.to_string()).unwrap_or_default();
                            format!(
                                "{} (task {} {state})",
                                t.to_rfc3339_opts(SecondsFormat::Secs, true),
                                e.last_task.map_or("-".into(), |n| n.to_string())
                            )
                        }),
                        e.next_run_at.to_rfc3339_opts(SecondsFormat::Secs, true),
                        e.command.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["ID", "SCHEDULE", "LAST RUN", "NEXT RUN", "COMMAND"],
                    &rows
                )
            );
            Ok(())
        }
    }
}
