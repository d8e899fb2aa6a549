//! `paas apps [--json]`: `GET /v1/apps`.

use crate::client::Client;
use crate::output::{memory, or_dash, table};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the apps as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let list = client.list_apps()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list.apps)?);
        return Ok(());
    }
    if list.apps.is_empty() {
        println!("No apps yet: push one with `paas push`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .apps
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.state.as_str().to_string(),
                format!("{}/{}", a.running_instances, a.desired_instances),
                memory(a.memory_mb),
                or_dash(a.revision),
                a.url.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["NAME", "STATE", "INSTANCES", "MEMORY", "REVISION", "URL"],
            &rows
        )
    );
    Ok(())
}
