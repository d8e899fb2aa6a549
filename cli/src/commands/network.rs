//! `paas add-network-policy SRC DEST --port 8080 [--protocol tcp]`, `paas remove-network-policy
//! SRC DEST --port 8080`, `paas network-policies [--app NAME] [--json]` (issue 25): which apps'
//! instances may connect to which (deny by default).

use paas_common::network::{NetworkPolicy, NetworkPolicyList, NetworkPolicySpec};

use crate::client::{seg, Client};
use crate::output::table;

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// The app whose instances open the connections
    pub source: String,
    /// The app whose instances accept them
    pub destination: String,
    /// A port or a range, e.g. 8080 or 8080-8090
    #[arg(long)]
    pub port: String,
    /// tcp or udp
    #[arg(long, default_value = "tcp")]
    pub protocol: String,
    /// The destination's space, ORG/SPACE, when it is not the source's
    #[arg(long, value_name = "ORG/SPACE")]
    pub destination_space: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only policies with this app as source or destination
    #[arg(long)]
    pub app: Option<String>,
    /// Print the list as JSON, exactly as the API sent it
    #[arg(long)]
    pub json: bool,
}

const PATH: &str = "/v1/network-policies";

pub fn add(args: PolicyArgs, client: &Client) -> anyhow::Result<()> {
    let spec = NetworkPolicySpec {
        source: args.source,
        destination: args.destination,
        destination_space: args.destination_space,
        protocol: args.protocol,
        ports: args.port,
    };
    let p: NetworkPolicy = client.post_json(PATH, &spec)?;
    println!(
        "Added network policy: {} -> {} {} {}",
        p.source,
        p.destination,
        p.protocol,
        p.ports()
    );
    Ok(())
}

pub fn remove(args: PolicyArgs, client: &Client) -> anyhow::Result<()> {
    let protocol =
        paas_common::network::parse_protocol(&args.protocol).map_err(anyhow::Error::msg)?;
    let ports = paas_common::network::parse_ports(&args.port).map_err(anyhow::Error::msg)?;
    let list: NetworkPolicyList = client.get_json(PATH)?;
    let found = list.policies.into_iter().find(|p| {
        p.source.eq_ignore_ascii_case(&args.source)
            && p.destination.eq_ignore_ascii_case(&args.destination)
            && args
                .destination_space
                .as_deref()
                .is_none_or(|s| s == p.destination_space)
            && p.protocol == protocol
            && (p.start_port, p.end_port) == ports
    });
    let Some(p) = found else {
        anyhow::bail!(
            "not_found: no network policy {} -> {} {protocol} {}",
            args.source,
            args.destination,
            args.port
        );
    };
    client.delete_path(&format!("{PATH}/{}", seg(&p.id)))?;
    println!(
        "Removed network policy: {} -> {} {} {}",
        p.source,
        p.destination,
        p.protocol,
        p.ports()
    );
    Ok(())
}

pub fn list(args: ListArgs, client: &Client) -> anyhow::Result<()> {
    let mut list: NetworkPolicyList = client.get_json(PATH)?;
    if let Some(app) = &args.app {
        list.policies.retain(|p| {
            p.source.eq_ignore_ascii_case(app) || p.destination.eq_ignore_ascii_case(app)
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.policies.is_empty() {
        println!("No network policies: instances of different apps cannot connect to each other.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .policies
        .iter()
        .map(|p| {
            vec![
                p.source.clone(),
                p.source_space.clone(),
                p.destination.clone(),
                p.destination_space.clone(),
                p.protocol.clone(),
                p.ports(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "SOURCE",
                "SPACE",
                "DESTINATION",
                "SPACE",
                "PROTOCOL",
                "PORTS"
            ],
            &rows
        )
    );
    Ok(())
}
