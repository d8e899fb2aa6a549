//! `paas events NAME`: the app's audit trail, oldest first: when, who (a user, `USER (token
//! NAME)` for a CI token, `node:NAME` or `platform`), what (`app.push`, `app.rollback`,
//! `instance.crash`, ...) and details. Without NAME: the caller's own events (logins, token
//! use, changes), or for an operator every event (`--actor USER` to pick one user).

use crate::client::Client;
use crate::output::table;
use chrono::SecondsFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name; without it, platform events (yours, or all for an operator)
    pub name: Option<String>,
    /// Operators, without NAME: only this user's events
    #[arg(long)]
    pub actor: Option<String>,
    /// Print the JSON the API answered
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let list = match &args.name {
        Some(name) => client.events(name)?,
        None => client.all_events(args.actor.as_deref())?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let global = args.name.is_none();
    let rows: Vec<Vec<String>> = list
        .events
        .iter()
        .map(|e| {
            let mut row = vec![
                e.time.to_rfc3339_opts(SecondsFormat::Secs, true),
                e.actor.clone(),
                e.kind.clone(),
            ];
            if global {
                row.push(e.app.clone().unwrap_or_else(|| "-".into()));
            }
            row.push(e.message.clone());
            row
        })
        .collect();
    let headers: &[&str] = if global {
        &["TIME", "ACTOR", "EVENT", "APP", "DETAILS"]
    } else {
        &["TIME", "ACTOR", "EVENT", "DETAILS"]
    };
    print!("{}", table(headers, &rows));
    Ok(())
}
