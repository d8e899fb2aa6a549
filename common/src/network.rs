//! App-to-app networking (issue 25): the internal domain that only instances resolve, the
//! network policies that open traffic between apps (deny by default), and what nodes are told to
//! enforce them: the internal DNS table and the allowed (source IPs, destination IPs, protocol,
//! ports) tuples.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The built-in internal domain: `NAME.apps.internal` resolves, inside instances only, to the
/// addresses of the running instances of the app mapped there (`INDEX.NAME.apps.internal` to
/// one of them). The public router never serves it.
pub const INTERNAL_DOMAIN: &str = "apps.internal";

/// Whether `host` is the internal domain or under it.
pub fn is_internal(host: &str) -> bool {
    crate::route::host_in_domain(
        host.trim_end_matches('.').to_ascii_lowercase().as_str(),
        INTERNAL_DOMAIN,
    )
}

/// The internal DNS table: a fully qualified name under [`INTERNAL_DOMAIN`] (lower case, no
/// trailing dot) -> IPv4 addresses, sorted. `NAME.apps.internal` lists every running instance
/// of the app, `INDEX.NAME.apps.internal` the one of that index.
pub type DnsTable = BTreeMap<String, Vec<String>>;

/// One allowed flow as a node enforces it: any of `sources` may open connections to any of
/// `destinations` on `protocol` ports `start_port..=end_port`. Addresses are instance IPs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyRule {
    pub sources: Vec<String>,
    pub destinations: Vec<String>,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub start_port: u16,
    pub end_port: u16,
}

/// Another node's instance subnet, for the route and the no-NAT rule towards it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeSubnet {
    pub node: String,
    /// CIDR, e.g. `172.30.1.0/24`.
    pub subnet: String,
    /// The node's advertised address: the next hop to the subnet when it is not on this host.
    pub address: String,
}

/// What a node needs for app-to-app traffic, in each assignment list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeNetwork {
    /// The whole internal DNS table (every node answers every name: an app resolves another
    /// app's instances wherever they run).
    #[serde(default)]
    pub dns: DnsTable,
    /// The policies with a source or destination instance on this node.
    #[serde(default)]
    pub policies: Vec<PolicyRule>,
    /// The instance subnets of the other nodes.
    #[serde(default)]
    pub subnets: Vec<NodeSubnet>,
}

/// A network policy as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkPolicy {
    pub id: String,
    /// The app that opens connections.
    pub source: String,
    /// `ORG/SPACE` of the source app.
    pub source_space: String,
    /// The app that accepts them.
    pub destination: String,
    /// `ORG/SPACE` of the destination app.
    pub destination_space: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub start_port: u16,
    pub end_port: u16,
}

impl NetworkPolicy {
    /// `8080` or `8080-8090`.
    pub fn ports(&self) -> String {
        if self.start_port == self.end_port {
            self.start_port.to_string()
        } else {
            format!("{}-{}", self.start_port, self.end_port)
        }
    }
}

/// Body of `POST /v1/network-policies` and `POST /v1/network-policies/remove`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkPolicySpec {
    /// The source app's name (in the target space, `X-Paas-Space`, or the one app of that
    /// name in reach).
    pub source: String,
    pub destination: String,
    /// `ORG/SPACE` of the destination when it is not the source's space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_space: Option<String>,
    /// `tcp` (default) or `udp`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// `8080` or a range `8080-8090`.
    pub ports: String,
}

fn tcp() -> String {
    "tcp".into()
}

/// Body of `GET /v1/network-policies`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkPolicyList {
    pub policies: Vec<NetworkPolicy>,
}

/// The iptables chain (filter and nat tables) a node keeps its rules in: `PAAS-` and a hash of
/// the node name (chain names are at most 28 characters; node names up to 63). Shared so tests
/// can remove the chains of agents they killed.
pub fn chain_name(node: &str) -> String {
    // FNV-1a: stable across versions and platforms, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("PAAS-{:012x}", h & 0xffff_ffff_ffff)
}

/// Parses `8080` or `8080-8090` (1..=65535, start <= end).
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid ports {s:?}: a port like 8080 or a range like 8080-8090");
    let (a, b) = match s.trim().split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let start: u16 = a.parse().map_err(|_| bad())?;
    let end: u16 = b.parse().map_err(|_| bad())?;
    if start == 0 || start > end {
        return Err(bad());
    }
    Ok((start, end))
}

/// `tcp` or `udp`, lower-cased.
pub fn parse_protocol(s: &str) -> Result<String, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        p @ ("tcp" | "udp") => Ok(p.to_string()),
        _ => Err(format!("invalid protocol {s:?}: tcp or udp")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_protocols() {
        assert_eq!(parse_ports("8080"), Ok((8080, 8080)));
        assert_eq!(parse_ports("8080-8090"), Ok((8080, 8090)));
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("9-8").is_err());
        assert!(parse_ports("http").is_err());
        assert!(parse_ports("70000").is_err());
        assert_eq!(parse_protocol("TCP").as_deref(), Ok("tcp"));
        assert!(parse_protocol("icmp").is_err());
    }

    #[test]
    fn chain_names_fit_iptables() {
        let c = chain_name(&"n".repeat(63));
        assert!(c.len() <= 28, "{c}");
        assert_ne!(chain_name("a"), chain_name("b"));
        assert_eq!(chain_name("a"), chain_name("a"));
    }

    #[test]
    fn internal_hosts() {
        assert!(is_internal("b.apps.internal"));
        assert!(is_internal("B.Apps.Internal."));
        assert!(is_internal("apps.internal"));
        assert!(!is_internal("xapps.internal"));
        assert!(!is_internal("b.localhost"));
    }
}
