//! `paas routes [--app NAME] [--json]`, `paas map-route NAME HOST[/PATH]`,
//! `paas unmap-route NAME HOST[/PATH]`: the routes that send requests to apps.

use crate::client::Client;
use crate::output::table;

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this app's routes
    #[arg(long)]
    pub app: Option<String>,
    /// Print the routes as a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct MapArgs {
    /// App name
    pub name: String,
    /// HOST or HOST/PATH, e.g. shop.example.com/api
    pub route: String,
}

pub fn list(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    let list = client.list_routes(args.app.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list.routes)?);
        return Ok(());
    }
    if list.routes.is_empty() {
        println!("No routes: push an app first.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .routes
        .iter()
        .map(|r| {
            let path = if r.path.is_empty() {
                "/".to_string()
            } else {
                r.path.clone()
            };
            vec![
                r.host.clone(),
                path,
                r.app.clone(),
                if r.default {
                    "default".into()
                } else {
                    "mapped".into()
                },
            ]
        })
        .collect();
    print!("{}", table(&["HOST", "PATH", "APP", "KIND"], &rows));
    Ok(())
}

pub fn map(args: MapArgs, client: &Client) -> anyhow::Result<()> {
    let r = client.map_route(&args.name, &args.route)?;
    println!("Mapped {}{} to {}", r.host, r.path, r.app);
    Ok(())
}

pub fn unmap(args: MapArgs, client: &Client) -> anyhow::Result<()> {
    client.unmap_route(&args.name, &args.route)?;
    println!("Unmapped {} from {}", args.route, args.name);
    Ok(())
}
