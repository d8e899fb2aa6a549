//! Events the platform records by itself, from what nodes report, with actor `node:NAME`:
//!
//! - `instance.crash`, one per crash, with the exit reason (exit code, OOM-killed, health check
//!   failed) and the counts. A crash leaves the instance `crashed` until its node restarts it,
//!   which counts it in `restarts`; so the crashes an instance has had are its restarts, plus one
//!   while it is crashed. Comparing that number before and after a report finds every crash, even
//!   when several (Cloud Foundry's immediate restarts) fall between two heartbeats, and never
//!   counts one twice (once crashed, once restarted).
//! - `instance.unready` / `instance.ready` when a running instance's readiness check starts or
//!   stops failing: it leaves or rejoins the routes without being restarted.

use paas_common::agent::InstanceReport;
use paas_common::api::InstanceState;

use crate::store::{Event, ReportedBefore};

/// Crashes so far of an instance with these counts.
fn crashes(restarts: u32, state: InstanceState) -> u32 {
    restarts.saturating_add(u32::from(state == InstanceState::Crashed))
}

/// The events `report` calls for, given the row it replaced.
pub fn events_for(node: &str, report: &InstanceReport, before: &ReportedBefore) -> Vec<Event> {
    let event = |kind: &str, message: String| Event {
        app_name: Some(before.app_name.clone()),
        app_id: Some(before.app_id.clone()),
        actor: format!("node:{node}"),
        kind: kind.into(),
        message,
    };
    let index = before.index;
    let mut out = Vec::new();
    let reason = report.last_exit.as_deref().unwrap_or("unknown reason");
    let (old, new) = (
        crashes(before.restarts, before.state),
        crashes(report.restarts, report.state),
    );
    for n in old.saturating_add(1)..=new {
        out.push(event(
            "instance.crash",
            format!(
                "instance {index} crashed: {reason} (crash {n}, restarts: {})",
                report.restarts
            ),
        ));
    }
    let running = |s| s == InstanceState::Running;
    if running(before.state) && running(report.state) && before.ready != report.ready {
        out.push(if report.ready {
            event(
                "instance.ready",
                format!("instance {index} is ready again: back in the routes"),
            )
        } else {
            event(
                "instance.unready",
                format!(
                    "instance {index} is not ready: out of the routes until its readiness check passes (not restarted)"
                ),
            )
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn before(state: InstanceState, restarts: u32, ready: bool) -> ReportedBefore {
        ReportedBefore {
            app_id: "id-a".into(),
            app_name: "a".into(),
            index: 1,
            state,
            host_port: Some(1000),
            restarts,
            last_exit: None,
            ready,
        }
    }

    fn report(state: InstanceState, restarts: u32, ready: bool) -> InstanceReport {
        InstanceReport {
            instance_id: "i".into(),
            state,
            container_id: Some("c".into()),
            host_port: Some(1000),
            restarts,
            last_exit: Some("exited with code 3".into()),
            since: Utc::now(),
            usage: None,
            ready,
            ip: None,
        }
    }

    fn kinds(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn every_crash_once() {
        use InstanceState::*;
        // Crashed: one event, with the reason and the counts.
        let e = events_for("n1", &report(Crashed, 0, false), &before(Running, 0, true));
        assert_eq!(kinds(&e), ["instance.crash"]);
        assert_eq!(
            e[0].message,
            "instance 1 crashed: exited with code 3 (crash 1, restarts: 0)"
        );
        assert_eq!(e[0].actor, "node:n1");
        // Its restart is the same crash: nothing new.
        let e = events_for(
            "n1",
            &report(Starting, 1, false),
            &before(Crashed, 0, false),
        );
        assert!(e.is_empty(), "{e:?}");
        // Two crashes and restarts between two heartbeats, then crashed again: three events.
        let e = events_for("n1", &report(Crashed, 3, false), &before(Running, 1, true));
        assert_eq!(kinds(&e), ["instance.crash"; 3]);
        assert!(e[2].message.contains("(crash 4, restarts: 3)"), "{e:?}");
        // Still crashed, still backing off: nothing.
        let e = events_for("n1", &report(Crashed, 3, false), &before(Crashed, 3, false));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn readiness_flips_of_a_running_instance() {
        use InstanceState::*;
        let e = events_for("n1", &report(Running, 0, false), &before(Running, 0, true));
        assert_eq!(kinds(&e), ["instance.unready"]);
        let e = events_for("n1", &report(Running, 0, true), &before(Running, 0, false));
        assert_eq!(kinds(&e), ["instance.ready"]);
        // Becoming running is not a readiness flip, nor is a crash.
        let e = events_for("n1", &report(Running, 0, true), &before(Starting, 0, false));
        assert!(e.is_empty(), "{e:?}");
        let e = events_for("n1", &report(Crashed, 0, false), &before(Running, 0, true));
        assert_eq!(kinds(&e), ["instance.crash"]);
    }
}
