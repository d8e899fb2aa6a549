//! `paas routes [--app NAME] [--json]`, `paas map-route NAME HOST[/PATH]`,
//! `paas unmap-route NAME HOST[/PATH]`: the routes that send requests to apps. With
//! `--hostname H` the route is `H.DOMAIN`, as Cloud Foundry's (`paas map-route b apps.internal
//! --hostname b`: an internal route, resolved only by other apps' instances).

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
    /// HOST or HOST/PATH, e.g. shop.example.com/api; with --hostname, the DOMAIN
    pub route: String,
    /// The host label under the domain given as the route: `--hostname b` with `apps.internal`
    /// is the internal route `b.apps.internal`, which only other apps' instances resolve (to
    /// the app's instance addresses) and the public router never serves
    #[arg(long, short = 'n')]
    pub hostname: Option<String>,
}

impl MapArgs {
    /// The route as the API takes it: `HOSTNAME.DOMAIN` when a hostname is given.
    pub fn full_route(&self) -> String {
        match &self.hostname {
            Some(h) => format!("{h}.{}", self.route),
            None => self.route.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct MapRouteArgs {
    #[command(flatten)]
    pub route: MapArgs,
    /// Answer plain HTTP with a 308 redirect to HTTPS (mapping again changes it)
    #[arg(long)]
    pub https_redirect: bool,
    /// Send Strict-Transport-Security on HTTPS answers (browsers then refuse plain HTTP for a year)
    #[arg(long)]
    pub hsts: bool,
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
                match (r.default, r.https_redirect, r.hsts) {
                    (true, _, _) => "default".into(),
                    (false, false, false) => "mapped".into(),
                    (false, redirect, hsts) => format!(
                        "mapped{}{}",
                        if redirect { ", https redirect" } else { "" },
                        if hsts { ", hsts" } else { "" }
                    ),
                },
            ]
        })
        .collect();
    print!("{}", table(&["HOST", "PATH", "APP", "KIND"], &rows));
    Ok(())
}

pub fn map(args: MapRouteArgs, client: &Client) -> anyhow::Result<()> {
    let r = client.map_route(
        &args.route.name,
        &args.route.full_route(),
        args.https_redirect,
        args.hsts,
    )?;
    let extras: Vec<&str> = [
        r.https_redirect.then_some("HTTPS redirect"),
        r.hsts.then_some("HSTS"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if extras.is_empty() {
        println!("Mapped {}{} to {}", r.host, r.path, r.app);
    } else {
        println!(
            "Mapped {}{} to {} ({})",
            r.host,
            r.path,
            r.app,
            extras.join(", ")
        );
    }
    Ok(())
}

pub fn unmap(args: MapArgs, client: &Client) -> anyhow::Result<()> {
    let route = args.full_route();
    client.unmap_route(&args.name, &route)?;
    println!("Unmapped {route} from {}", args.name);
    Ok(())
}
