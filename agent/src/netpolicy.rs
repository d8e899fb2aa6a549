//! Network policies in the kernel (issue 25). Deny by default is Docker's: an instance bridge
//! without inter-container traffic drops instance-to-instance packets on one bridge, and its
//! isolation chains drop them between bridges. This node's own chain (filter table, named by
//! [`chain_name`]), jumped from `DOCKER-USER` (which `FORWARD` evaluates before Docker's drops),
//! ACCEPTs exactly the (source IP, destination IP, protocol, port range) tuples the policies with
//! an end on this node allow, and replies (ESTABLISHED, RELATED) between instance subnets;
//! everything else falls through to Docker's drops.
//!
//! Across nodes: a nat chain of the same name, jumped first from `POSTROUTING`, RETURNs traffic
//! from the local instance subnet to another node's, so Docker's MASQUERADE leaves the source
//! address alone and the destination's rules can match it; and, for a node on another host, a
//! route to its instance subnet via its advertised address (host-gw style; none when the
//! subnet is on this host, where the kernel routes between bridges already).
//!
//! Each change rebuilds both chains whole in one `iptables-restore --noflush` (declaring a chain
//! flushes it), so there is never a moment with half the rules; the same at start, so a
//! restarted agent replaces whatever its last life left. On a clean stop the chains, their
//! jumps and the routes go ([`remove`]).

use paas_common::agent::Assignments;
use paas_common::network::{chain_name, NodeNetwork};
use std::collections::BTreeSet;
use std::process::Command;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum NetPolicyError {
    #[error("{cmd}: {message}")]
    Command { cmd: String, message: String },
}

/// The rules this node wants, as `iptables-restore` input (filter and nat tables).
pub fn ruleset(chain: &str, local_subnet: &str, net: &NodeNetwork) -> String {
    let mut subnets: Vec<&str> = vec![local_subnet];
    subnets.extend(net.subnets.iter().map(|s| s.subnet.as_str()));
    subnets.sort_unstable();
    subnets.dedup();
    let mut out = String::new();
    out.push_str("*filter\n");
    out.push_str(&format!(":{chain} - [0:0]\n"));
    for s in &subnets {
        for d in &subnets {
            out.push_str(&format!(
                "-A {chain} -s {s} -d {d} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for p in &net.policies {
        let ports = if p.start_port == p.end_port {
            p.start_port.to_string()
        } else {
            format!("{}:{}", p.start_port, p.end_port)
        };
        for s in &p.sources {
            for d in &p.destinations {
                let rule = format!(
                    "-A {chain} -s {s}/32 -d {d}/32 -p {proto} -m {proto} --dport {ports} -j ACCEPT\n",
                    proto = p.protocol
                );
                if seen.insert(rule.clone()) {
                    out.push_str(&rule);
                }
            }
        }
    }
    out.push_str("COMMIT\n*nat\n");
    out.push_str(&format!(":{chain} - [0:0]\n"));
    for s in &net.subnets {
        if s.subnet != local_subnet {
            out.push_str(&format!(
                "-A {chain} -s {local_subnet} -d {} -j RETURN\n",
                s.subnet
            ));
        }
    }
    out.push_str("COMMIT\n");
    out
}

fn run(cmd: &str, args: &[&str], input: Option<&str>) -> Result<(), NetPolicyError> {
    use std::io::Write;
    let shown = format!("{cmd} {}", args.join(" "));
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| NetPolicyError::Command {
        cmd: shown.clone(),
        message: e.to_string(),
    })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| NetPolicyError::Command {
                cmd: shown.clone(),
                message: e.to_string(),
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetPolicyError::Command {
            cmd: shown.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetPolicyError::Command {
            cmd: shown,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Adds `-j chain` at the top of `table`'s `parent` unless it is there.
fn ensure_jump(table: &str, parent: &str, chain: &str) -> Result<(), NetPolicyError> {
    if run(
        "iptables",
        &["-w", "5", "-t", table, "-C", parent, "-j", chain],
        None,
    )
    .is_ok()
    {
        return Ok(());
    }
    run(
        "iptables",
        &["-w", "5", "-t", table, "-I", parent, "1", "-j", chain],
        None,
    )
}

/// The IPv4 addresses of this host's interfaces.
fn local_addresses() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output();
    let Ok(out) = out else {
        return BTreeSet::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet")?;
            Some(w.next()?.split('/').next()?.to_string())
        })
        .collect()
}

/// Keeps this node's rules equal to what each assignment list says until the process ends.
pub async fn keep(
    node: String,
    local_subnet: String,
    mut assignments: watch::Receiver<Option<Assignments>>,
) {
    let chain = chain_name(&node);
    let mut applied: Option<String> = None;
    let mut routes: BTreeSet<(String, String)> = BTreeSet::new();
    loop {
        let net = assignments
            .borrow_and_update()
            .as_ref()
            .map(|a| a.network.clone())
            // Before the first list: nothing open, the chains exist (replacing a past life's).
            .unwrap_or_default();
        let rules = ruleset(&chain, &local_subnet, &net);
        if applied.as_deref() != Some(rules.as_str()) {
            let chain2 = chain.clone();
            let rules2 = rules.clone();
            let done = tokio::task::spawn_blocking(move || {
                run("iptables-restore", &["-w", "5", "--noflush"], Some(&rules2))?;
                ensure_jump("filter", "DOCKER-USER", &chain2)?;
                ensure_jump("nat", "POSTROUTING", &chain2)
            })
            .await;
            match done {
                Ok(Ok(())) => {
                    tracing::info!(chain = %chain, policies = net.policies.len(), names = net.dns.len(), "network rules applied");
                    applied = Some(rules);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot apply network rules"),
                Err(e) => tracing::warn!(error = %e, "network rules task failed"),
            }
        }
        let wanted: BTreeSet<(String, String)> = {
            let local = local_addresses();
            net.subnets
                .iter()
                .filter(|s| s.subnet != local_subnet && !local.contains(&s.address))
                .map(|s| (s.subnet.clone(), s.address.clone()))
                .collect()
        };
        if wanted != routes {
            for (subnet, via) in routes.difference(&wanted) {
                let _ = run("ip", &["route", "del", subnet, "via", via], None);
            }
            for (subnet, via) in wanted.difference(&routes) {
                if let Err(e) = run("ip", &["route", "replace", subnet, "via", via], None) {
                    tracing::warn!(error = %e, "cannot route to another node's instances");
                }
            }
            routes = wanted;
            ROUTES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone_from(&routes);
        }
        if assignments.changed().await.is_err() {
            return;
        }
    }
}

/// Routes installed to other hosts' instance subnets, for [`remove`].
static ROUTES: std::sync::Mutex<BTreeSet<(String, String)>> =
    std::sync::Mutex::new(BTreeSet::new());

/// Removes this node's chains, their jumps and its routes (a clean stop).
pub fn remove(node: &str) {
    let chain = chain_name(node);
    for (table, parent) in [("filter", "DOCKER-USER"), ("nat", "POSTROUTING")] {
        while run(
            "iptables",
            &["-w", "5", "-t", table, "-D", parent, "-j", &chain],
            None,
        )
        .is_ok()
        {}
        let _ = run("iptables", &["-w", "5", "-t", table, "-F", &chain], None);
        let _ = run("iptables", &["-w", "5", "-t", table, "-X", &chain], None);
    }
    let routes = std::mem::take(&mut *ROUTES.lock().unwrap_or_else(|p| p.into_inner()));
    for (subnet, via) in routes {
        let _ = run("ip", &["route", "del", &subnet, "via", &via], None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paas_common::network::{NodeSubnet, PolicyRule};

    #[test]
    fn rules_allow_only_policy_tuples_and_replies() {
        let net = NodeNetwork {
            dns: Default::default(),
            policies: vec![PolicyRule {
                sources: vec!["10.1.0.2".into()],
                destinations: vec!["10.2.0.3".into(), "10.2.0.4".into()],
                protocol: "tcp".into(),
                start_port: 8080,
                end_port: 8090,
            }],
            subnets: vec![NodeSubnet {
                node: "n2".into(),
                subnet: "10.2.0.0/16".into(),
                address: "192.0.2.2".into(),
            }],
        };
        let r = ruleset("PAAS-x", "10.1.0.0/16", &net);
        assert!(r.contains(":PAAS-x - [0:0]\n"));
        assert!(r.contains(
            "-A PAAS-x -s 10.1.0.2/32 -d 10.2.0.3/32 -p tcp -m tcp --dport 8080:8090 -j ACCEPT\n"
        ));
        assert!(r.contains("-d 10.2.0.4/32"));
        assert!(r.contains(
            "-A PAAS-x -s 10.2.0.0/16 -d 10.1.0.0/16 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        ));
        assert!(r.contains(
            "*nat\n:PAAS-x - [0:0]\n-A PAAS-x -s 10.1.0.0/16 -d 10.2.0.0/16 -j RETURN\n"
        ));
        assert_eq!(r.matches("COMMIT").count(), 2);
    }
}
