//! `paas nodes [--json]`: `GET /v1/nodes`.

use crate::client::Client;
use crate::output::{age, memory, table};
use chrono::Utc;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the nodes as a JSON array
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let list = client.list_nodes()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list.nodes)?);
        return Ok(());
    }
    if list.nodes.is_empty() {
        println!("No nodes: start a paas-agent.");
        return Ok(());
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = list
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.state.clone(),
                n.address.clone(),
                n.zone.clone(),
                format!("{}/{}", memory(n.memory_used_mb), memory(n.memory_mb)),
                memory(n.disk_mb),
                format!("{}/{}", n.instances, n.instance_slots),
                format!("{} ago", age(n.last_heartbeat, now)),
                if n.labels.is_empty() {
                    "-".to_string()
                } else {
                    n.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NAME",
                "STATE",
                "ADDRESS",
                "ZONE",
                "MEMORY",
                "DISK",
                "INSTANCES",
                "HEARTBEAT",
                "LABELS"
            ],
            &rows
        )
    );
    Ok(())
}
