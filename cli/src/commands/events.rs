//! `paas events NAME`: the app's audit trail, oldest first: when, who (a user, `node:NAME` or
//! `platform`), what (`app.push`, `instance.crash`, `instance.reschedule`, ...) and details.

use crate::client::Client;
use crate::output::table;
use chrono::SecondsFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Print the JSON the API answered
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let list = client.events(&args.name)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .events
        .iter()
        .map(|e| {
            vec![
                e.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                e.actor.clone(),
                e.kind.clone(),
                e.message.clone(),
            ]
        })
        .collect();
    print!("{}", table(&["TIME", "ACTOR", "EVENT", "DETAILS"], &rows));
    Ok(())
}
