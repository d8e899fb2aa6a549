//! The node's DNS resolver (issue 25): answers `*.apps.internal` from the internal DNS table of
//! the latest assignment list and forwards every other name to the host's resolvers, so
//! instances resolve public names as before.
//!
//! It listens on the instance network's gateway, UDP port 53; instance containers name it as
//! their DNS server and the engine's embedded resolver (which answers container names) forwards
//! everything else here. Agents sharing one engine and network would all want that address:
//! the first one binds it, the others log it and try again now and then (every agent is told
//! the whole table, so any of them answers alike), taking over when the first one stops.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use paas_common::agent::Assignments;
use paas_common::network::{is_internal, DnsTable};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Seconds instances may cache an internal answer: instances come and go, so short.
const TTL: u32 = 5;
/// How long a forwarded query waits for the upstream resolver.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(4);
/// How often an agent whose address another resolver holds tries again.
const RETRY_BIND: Duration = Duration::from_secs(5);

/// What the resolver answers a query with, before it is encoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// An internal name: these addresses (empty: the name exists, not with that type).
    Internal(Vec<Ipv4Addr>),
    /// An internal name that does not exist.
    NxDomain,
    /// Not ours: ask the host's resolvers.
    Forward,
}

/// How `name` (any case, with or without the final dot) of type `qtype` is answered.
pub fn answer(table: &DnsTable, name: &str, qtype: RecordType) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if !is_internal(&name) {
        return Answer::Forward;
    }
    let Some(ips) = table.get(&name) else {
        return Answer::NxDomain;
    };
    if !matches!(qtype, RecordType::A | RecordType::ANY) {
        return Answer::Internal(Vec::new());
    }
    Answer::Internal(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
}

/// The response to `query` for an internal name, encoded.
fn respond(query: &Message, table: &DnsTable) -> Option<Vec<u8>> {
    let q = query.queries.first()?;
    let found = answer(table, &q.name().to_ascii(), q.query_type());
    let mut resp = Message::response(query.metadata.id, OpCode::Query);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.metadata.authoritative = true;
    resp.add_query(q.clone());
    match found {
        Answer::Forward => return None,
        Answer::NxDomain => {
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        Answer::Internal(ips) => {
            for ip in ips {
                resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
            }
        }
    }
    resp.to_vec().ok()
}

/// An error response (SERVFAIL) to `query`.
fn failure(query: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut resp = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    if let Some(q) = query.queries.first() {
        resp.add_query(q.clone());
    }
    resp.to_vec().ok()
}

/// The host's resolvers, from `/etc/resolv.conf` (the agent runs on the host, so a loopback
/// resolver such as systemd-resolved's works here, unlike inside a container).
pub fn host_resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: std::net::IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Serves until the process ends; never returns an error: a resolver that cannot bind leaves
/// the node working, without internal names.
pub async fn serve(gateway: Ipv4Addr, assignments: watch::Receiver<Option<Assignments>>) {
    let upstreams = Arc::new(host_resolvers(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    ));
    let addr = SocketAddr::from((gateway, 53));
    let mut told = false;
    let socket = loop {
        match UdpSocket::bind(addr).await {
            Ok(s) => break Arc::new(s),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if !told {
                    tracing::info!(%addr, "another resolver (an agent sharing this network) serves the instance network; relying on it");
                    told = true;
                }
            }
            Err(e) => {
                if !told {
                    tracing::warn!(%addr, error = %e, "cannot serve DNS to instances; retrying");
                    told = true;
                }
            }
        }
        tokio::time::sleep(RETRY_BIND).await;
    };
    tracing::info!(%addr, upstreams = ?upstreams, "serving DNS to instances");
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "dns receive failed");
                continue;
            }
        };
        let raw = buf[..len].to_vec();
        let Ok(query) = Message::from_vec(&raw) else {
            continue;
        };
        if query.metadata.message_type != MessageType::Query {
            continue;
        }
        let local = {
            let current = assignments.borrow();
            let empty = DnsTable::new();
            let table = current.as_ref().map_or(&empty, |a| &a.network.dns);
            respond(&query, table)
        };
        if let Some(resp) = local {
            let _ = socket.send_to(&resp, peer).await;
            continue;
        }
        tokio::spawn(forward(socket.clone(), upstreams.clone(), raw, query, peer));
    }
}

/// Sends the raw query to the host's resolvers in turn and relays the first answer.
async fn forward(
    socket: Arc<UdpSocket>,
    upstreams: Arc<Vec<SocketAddr>>,
    raw: Vec<u8>,
    query: Message,
    peer: SocketAddr,
) {
    for up in upstreams.iter() {
        let bind: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(out) = UdpSocket::bind(bind).await else {
            continue;
        };
        if out.send_to(&raw, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        if let Ok(Ok((n, _))) = tokio::time::timeout(FORWARD_TIMEOUT, out.recv_from(&mut buf)).await
        {
            let _ = socket.send_to(&buf[..n], peer).await;
            return;
        }
    }
    if let Some(resp) = failure(&query, ResponseCode::ServFail) {
        let _ = socket.send_to(&resp, peer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DnsTable {
        DnsTable::from([
            (
                "b.apps.internal".to_string(),
                vec!["10.0.0.2".to_string(), "10.0.0.3".to_string()],
            ),
            (
                "0.b.apps.internal".to_string(),
                vec!["10.0.0.2".to_string()],
            ),
        ])
    }

    #[test]
    fn answers_internal_names_only() {
        let t = table();
        assert_eq!(
            answer(&t, "B.apps.internal.", RecordType::A),
            Answer::Internal(vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)])
        );
        assert_eq!(
            answer(&t, "0.b.apps.internal", RecordType::A),
            Answer::Internal(vec![Ipv4Addr::new(10, 0, 0, 2)])
        );
        assert_eq!(
            answer(&t, "b.apps.internal", RecordType::AAAA),
            Answer::Internal(vec![])
        );
        assert_eq!(
            answer(&t, "c.apps.internal", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(answer(&t, "example.com", RecordType::A), Answer::Forward);
    }

    #[test]
    fn encodes_answers() {
        let mut q = Message::query();
        q.metadata.id = 7;
        q.metadata.recursion_desired = true;
        q.add_query(hickory_proto::op::Query::query(
            hickory_proto::rr::Name::from_ascii("b.apps.internal.").unwrap(),
            RecordType::A,
        ));
        let resp = Message::from_vec(&respond(&q, &table()).unwrap()).unwrap();
        assert_eq!(resp.metadata.id, 7);
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert_eq!(resp.answers.len(), 2);
    }

    #[test]
    fn reads_resolv_conf() {
        let r = host_resolvers("# x\nnameserver 127.0.0.53\nsearch lan\nnameserver ::1\n");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], "127.0.0.53:53".parse().unwrap());
    }
}
