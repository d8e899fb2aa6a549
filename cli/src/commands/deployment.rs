//! Following a deployment that replaces instances (`paas restart`, `paas rollback`): polls
//! `GET /v1/apps/NAME` and prints each new instance's progress until every instance of the
//! current revision runs and none from before is left, an instance crashes, or the timeout passes.
//!
//! The API names no instance ids, so an instance from before is recognised by what the CLI saw
//! before asking for the change: process type, index, node and the time of its last state change.
//! An old instance that changes state looks new, but it is then stopping, not running, so the
//! deployment still waits for it to go.

use crate::client::Client;
use chrono::{DateTime, Utc};
use paas_common::api::{AppDetail, InstanceInfo, InstanceState};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

const POLL_EVERY: Duration = Duration::from_millis(250);

type Key = (String, u32, Option<String>, Option<DateTime<Utc>>);

fn key(i: &InstanceInfo) -> Key {
    (i.process_type.clone(), i.index, i.node.clone(), i.since)
}

/// Where a deployment stands after one look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Done { running: usize },
    Crashed(String),
    Waiting,
}

/// The instances seen before the change, and the progress lines already printed.
pub struct Deployment {
    before: HashSet<Key>,
    shown: HashSet<(String, u32, Option<String>, InstanceState)>,
}

impl Deployment {
    /// Remembers the instances running before the change was asked for.
    pub fn before(detail: &AppDetail) -> Self {
        Self {
            before: detail.instances.iter().map(key).collect(),
            shown: HashSet::new(),
        }
    }

    fn is_old(&self, d: &AppDetail, i: &InstanceInfo) -> bool {
        let current = d.revision.as_ref().map(|r| r.number);
        self.before.contains(&key(i))
            || matches!((i.revision, current), (Some(r), Some(c)) if r != c)
    }

    /// New lines to print for `d` (each instance state once), and where the deployment stands.
    pub fn look(&mut self, d: &AppDetail) -> (Vec<String>, Step) {
        let mut lines = Vec::new();
        let mut fresh: Vec<&InstanceInfo> =
            d.instances.iter().filter(|i| !self.is_old(d, i)).collect();
        fresh.sort_by(|a, b| (&a.process_type, a.index).cmp(&(&b.process_type, b.index)));
        for i in fresh {
            let shown = (i.process_type.clone(), i.index, i.node.clone(), i.state);
            if self.shown.insert(shown) {
                let reason = match i.state {
                    InstanceState::Pending => i.placement_error.as_deref(),
                    InstanceState::Crashed => i.last_exit.as_deref(),
                    _ => None,
                };
                lines.push(super::push::instance_line(
                    &i.process_type,
                    i.index,
                    i.state,
                    i.node.as_deref(),
                    reason,
                ));
            }
        }
        if let Some(c) = d.instances.iter().find(|i| {
            !self.is_old(d, i)
                && (i.restarts > 0 || i.state == InstanceState::Crashed && i.last_exit.is_some())
        }) {
            let why = c
                .last_exit
                .clone()
                .unwrap_or_else(|| format!("restarted {} times", c.restarts));
            return (
                lines,
                Step::Crashed(format!(
                    "{} #{} of {} crashed ({why})",
                    c.process_type, c.index, d.name
                )),
            );
        }
        let all_new_and_running = d
            .instances
            .iter()
            .all(|i| !self.is_old(d, i) && i.state == InstanceState::Running);
        let complete = desired(d).iter().all(|(ptype, n)| {
            d.instances
                .iter()
                .filter(|i| &i.process_type == ptype)
                .count()
                == *n as usize
        });
        let step = if all_new_and_running && complete {
            Step::Done {
                running: d.instances.len(),
            }
        } else {
            Step::Waiting
        };
        (lines, step)
    }
}

/// Desired instances per process type (web's from the app, the others' from `processes`).
fn desired(d: &AppDetail) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = d
        .processes
        .iter()
        .map(|p| (p.process_type.clone(), p.instances))
        .collect();
    out.insert("web".into(), d.desired_instances);
    if d.state == paas_common::api::AppState::Stopped {
        out.values_mut().for_each(|n| *n = 0);
    }
    out
}

/// Polls until the deployment is done (prints the summary), crashes or times out (one error
/// line; the instances and recent logs are printed first, as for a push).
pub fn follow(
    client: &Client,
    name: &str,
    mut deployment: Deployment,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let d = client.get_app(name)?;
        let (lines, step) = deployment.look(&d);
        for l in lines {
            println!("{l}");
        }
        match step {
            Step::Done { running } => {
                let rev = d
                    .revision
                    .as_ref()
                    .map(|r| format!(" of revision {}", r.number))
                    .unwrap_or_default();
                println!(
                    "{name}: {running} instance(s){rev} running ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Step::Crashed(msg) => return super::push::fail(client, &d, msg),
            Step::Waiting => {}
        }
        if Instant::now() >= deadline {
            let why = d
                .instances
                .iter()
                .filter(|i| !deployment.is_old(&d, i))
                .find_map(|i| i.placement_error.clone())
                .unwrap_or_else(|| {
                    let old = d
                        .instances
                        .iter()
                        .filter(|i| deployment.is_old(&d, i))
                        .count();
                    format!("{old} instance(s) from before still there")
                });
            let msg = format!(
                "{name} did not finish deploying within {} s: {why}",
                timeout.as_secs()
            );
            return super::push::fail(client, &d, msg);
        }
        std::thread::sleep(POLL_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use paas_common::api::{AppState, RevisionInfo};

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn inst(index: u32, state: InstanceState, node: &str, since: i64, rev: i64) -> InstanceInfo {
        InstanceInfo {
            ready: true,
            retiring: false,
            process_type: "web".into(),
            index,
            revision: Some(rev),
            state,
            node: Some(node.into()),
            address: None,
            ip: None,
            restarts: 0,
            last_exit: None,
            placement_error: None,
            since: Some(at(since)),
            usage: None,
        }
    }

    fn app(rev: i64, desired: u32, instances: Vec<InstanceInfo>) -> AppDetail {
        AppDetail {
            placement_labels: Default::default(),
            log_rate_limit_bytes: None,
            stack: "trixie".into(),
            services: vec![],
            processes: Vec::new(),
            name: "web".into(),
            state: AppState::Started,
            url: "http://web.localhost:8080".into(),
            desired_instances: desired,
            memory_mb: 256,
            revision: Some(RevisionInfo {
                number: rev,
                droplet: "d".into(),
                command: "c".into(),
                detected: "python".into(),
                created_at: at(0),
                sidecars: Vec::new(),
            }),
            instances,
            created_at: at(0),
            updated_at: at(0),
        }
    }

    #[test]
    fn a_restart_waits_for_the_old_instances_to_go() {
        let old = inst(0, InstanceState::Running, "n1", 10, 1);
        let mut d = Deployment::before(&app(1, 1, vec![old.clone()]));
        // The replacement starts beside the old one, on the same node.
        let (lines, step) = d.look(&app(
            1,
            1,
            vec![old.clone(), inst(0, InstanceState::Starting, "n1", 20, 1)],
        ));
        assert_eq!(lines, ["web #0: starting on n1"]);
        assert_eq!(step, Step::Waiting);
        // Running, but the old one is still there (now stopping: it looks new, yet not running).
        let (lines, step) = d.look(&app(
            1,
            1,
            vec![
                inst(0, InstanceState::Stopping, "n1", 30, 1),
                inst(0, InstanceState::Running, "n1", 25, 1),
            ],
        ));
        assert_eq!(lines, ["web #0: stopping on n1", "web #0: running on n1"]);
        assert_eq!(step, Step::Waiting);
        let (lines, step) = d.look(&app(
            1,
            1,
            vec![inst(0, InstanceState::Running, "n1", 25, 1)],
        ));
        assert!(lines.is_empty(), "each state is printed once: {lines:?}");
        assert_eq!(step, Step::Done { running: 1 });
    }

    #[test]
    fn a_rollback_waits_for_every_index_of_the_new_revision() {
        let before = app(
            2,
            2,
            vec![
                inst(0, InstanceState::Running, "n1", 10, 2),
                inst(1, InstanceState::Running, "n2", 10, 2),
            ],
        );
        let mut d = Deployment::before(&before);
        let (_, step) = d.look(&app(
            3,
            2,
            vec![inst(0, InstanceState::Running, "n2", 20, 3)],
        ));
        assert_eq!(step, Step::Waiting, "index 1 is missing");
        // An instance of another revision is old, whatever the snapshot says.
        let (_, step) = d.look(&app(
            3,
            2,
            vec![
                inst(0, InstanceState::Running, "n2", 20, 3),
                inst(1, InstanceState::Running, "n1", 21, 3),
                inst(1, InstanceState::Running, "n3", 99, 2),
            ],
        ));
        assert_eq!(step, Step::Waiting);
        let (_, step) = d.look(&app(
            3,
            2,
            vec![
                inst(0, InstanceState::Running, "n2", 20, 3),
                inst(1, InstanceState::Running, "n1", 21, 3),
            ],
        ));
        assert_eq!(step, Step::Done { running: 2 });
    }

    #[test]
    fn a_new_crash_fails_and_a_wait_for_a_node_says_why() {
        let mut d = Deployment::before(&app(1, 1, vec![]));
        let mut pending = inst(0, InstanceState::Pending, "n1", 5, 1);
        pending.node = None;
        pending.placement_error = Some("no node is available: needs 9 MB".into());
        let (lines, _) = d.look(&app(1, 1, vec![pending]));
        assert_eq!(lines, ["web #0: pending: no node is available: needs 9 MB"]);
        let mut crashed = inst(0, InstanceState::Crashed, "n1", 6, 1);
        crashed.last_exit = Some("exited with code 1".into());
        let (lines, step) = d.look(&app(1, 1, vec![crashed]));
        assert_eq!(lines, ["web #0: crashed on n1: exited with code 1"]);
        assert_eq!(
            step,
            Step::Crashed("web #0 of web crashed (exited with code 1)".into())
        );
    }
}
