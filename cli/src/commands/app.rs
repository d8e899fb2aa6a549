//! `paas app NAME [--json]`: `GET /v1/apps/NAME`.

use crate::client::Client;
use crate::output::{age, memory, or_dash, table};
use chrono::{DateTime, Utc};
use paas_common::api::{AppDetail, InstanceInfo, InstanceState};
use paas_common::domain::format_log_rate_limit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// App name
    pub name: String,
    /// Print the app as JSON, exactly as the API sent it
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, client: &Client) -> anyhow::Result<()> {
    let fetched = client.get_app_raw(&args.name)?;
    if args.json {
        println!("{}", fetched.raw.trim_end());
    } else {
        print!("{}", render(&fetched.value, Utc::now()));
    }
    Ok(())
}

/// The human view: a few `key: value` lines, then one row per instance.
pub fn render(d: &AppDetail, now: DateTime<Utc>) -> String {
    let running = d
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .count();
    let revision = match &d.revision {
        Some(r) => format!("{} ({}, command: {})", r.number, r.detected, r.command),
        None => "none yet".to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!("name:       {}\n", d.name));
    out.push_str(&format!("state:      {}\n", d.state.as_str()));
    out.push_str(&format!("url:        {}\n", d.url));
    out.push_str(&format!("revision:   {revision}\n"));
    out.push_str(&format!("memory:     {}\n", memory(d.memory_mb)));
    // Empty from a server that predates stacks by name.
    if !d.stack.is_empty() {
        out.push_str(&format!("stack:      {}\n", d.stack));
    }
    if !d.services.is_empty() {
        out.push_str(&format!("services:   {}\n", d.services.join(", ")));
    }
    for s in d.revision.iter().flat_map(|r| &r.sidecars) {
        out.push_str(&format!(
            "sidecar:    {} ({}, {}): {}\n",
            s.name,
            s.process_types.join(", "),
            memory(s.reserved_mb()),
            s.command
        ));
    }
    out.push_str(&format!(
        "log rate:   {}\n",
        d.log_rate_limit_bytes.map_or_else(
            || "platform default".to_string(),
            |b| format!("{}/s per instance", format_log_rate_limit(b))
        )
    ));
    if !d.placement_labels.is_empty() {
        let labels: Vec<String> = d
            .placement_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!("placement:  {}\n", labels.join(", ")));
    }
    let unready = d
        .instances
        .iter()
        .filter(|i| i.state == InstanceState::Running && !i.ready)
        .count();
    let unready = if unready > 0 {
        format!(" ({unready} not ready: out of the routes)")
    } else {
        String::new()
    };
    out.push_str(&format!(
        "instances:  {running}/{} running{unready}\n",
        d.desired_instances
    ));
    if d.instances.is_empty() {
        return out;
    }
    // Several process types: one section per type, `web` first, each with its own table.
    let only_web = d.processes.len() <= 1 && d.instances.iter().all(|i| i.process_type == "web");
    if !only_web {
        let mut types: Vec<&str> = d
            .processes
            .iter()
            .map(|p| p.process_type.as_str())
            .collect();
        for i in &d.instances {
            if !types.contains(&i.process_type.as_str()) {
                types.push(&i.process_type);
            }
        }
        for t in types {
            let list: Vec<&InstanceInfo> =
                d.instances.iter().filter(|i| i.process_type == t).collect();
            let up = list
                .iter()
                .filter(|i| i.state == InstanceState::Running)
                .count();
            let head = match d.processes.iter().find(|p| p.process_type == t) {
                Some(p) => format!(
                    "\n{t}: {up}/{} running, {} each, {} check, command: {}\n",
                    p.instances,
                    memory(p.memory_mb),
                    p.health_check,
                    p.command
                ),
                None => format!("\n{t}: {up} running (no longer in the current revision)\n"),
            };
            out.push_str(&head);
            if !list.is_empty() {
                out.push_str(&instance_table(&list, now));
            }
        }
        return out;
    }
    out.push('\n');
    let list: Vec<&InstanceInfo> = d.instances.iter().collect();
    out.push_str(&instance_table(&list, now));
    out
}

fn instance_table(list: &[&InstanceInfo], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|i| {
            let why = i.last_exit.clone().or_else(|| i.placement_error.clone());
            // Cloud Foundry's `routable`: only a running instance is ready or not.
            let ready = match (i.state, i.ready) {
                (InstanceState::Running, true) => "yes",
                (InstanceState::Running, false) => "no",
                _ => "-",
            };
            vec![
                i.index.to_string(),
                i.state.as_str().to_string(),
                ready.to_string(),
                or_dash(i.node.as_ref()),
                or_dash(i.address.as_ref()),
                i.restarts.to_string(),
                or_dash(i.since.map(|s| age(s, now))),
                or_dash(i.usage.as_ref().map(|u| format!("{:.1}%", u.cpu_percent))),
                or_dash(i.usage.as_ref().map(|u| {
                    format!(
                        "{}/{}",
                        memory(u.memory_bytes / (1024 * 1024)),
                        memory(u.memory_limit_bytes / (1024 * 1024))
                    )
                })),
                or_dash(
                    i.usage
                        .as_ref()
                        .map(|u| memory(u.disk_bytes / (1024 * 1024))),
                ),
                or_dash(why),
            ]
        })
        .collect();
    table(
        &[
            "INDEX",
            "STATE",
            "READY",
            "NODE",
            "ADDRESS",
            "RESTARTS",
            "SINCE",
            "CPU",
            "MEMORY",
            "DISK",
            "LAST-EXIT",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use paas_common::api::{AppState, RevisionInfo};

    #[test]
    fn renders_app_and_instances() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let d = AppDetail {
            placement_labels: Default::default(),
            log_rate_limit_bytes: None,
            stack: "trixie".into(),
            services: vec![],
            name: "web".into(),
            state: AppState::Started,
            url: "http://web.localhost:8080".into(),
            desired_instances: 2,
            memory_mb: 256,
            processes: Vec::new(),
            revision: Some(RevisionInfo {
                number: 3,
                droplet: "d".into(),
                command: "python app.py".into(),
                detected: "python".into(),
                created_at: now,
                sidecars: vec![paas_common::api::Sidecar {
                    name: "config-server".into(),
                    process_types: vec!["web".into()],
                    command: "./config-server".into(),
                    memory_mb: Some(64),
                }],
            }),
            instances: vec![
                InstanceInfo {
                    ready: true,
                    retiring: false,
                    process_type: "web".into(),
                    revision: None,
                    index: 0,
                    state: InstanceState::Running,
                    node: Some("node-1".into()),
                    address: Some("10.0.0.1:61000".into()),
                    ip: None,
                    restarts: 0,
                    last_exit: None,
                    placement_error: None,
                    since: Some(now - chrono::Duration::seconds(90)),
                    usage: Some(paas_common::api::InstanceUsage {
                        cpu_percent: 3.25,
                        memory_bytes: 41 * 1024 * 1024,
                        memory_limit_bytes: 256 * 1024 * 1024,
                        disk_bytes: 2 * 1024 * 1024,
                        uptime_secs: 90,
                        sampled_at: Some(now),
                    }),
                },
                InstanceInfo {
                    ready: true,
                    retiring: false,
                    process_type: "web".into(),
                    revision: None,
                    index: 1,
                    state: InstanceState::Crashed,
                    node: Some("node-2".into()),
                    address: None,
                    ip: None,
                    restarts: 2,
                    last_exit: Some("exited with code 1".into()),
                    placement_error: None,
                    since: None,
                    usage: None,
                },
            ],
            created_at: now,
            updated_at: now,
        };
        let text = render(&d, now);
        assert!(
            text.contains("revision:   3 (python, command: python app.py)"),
            "{text}"
        );
        assert!(
            text.contains("sidecar:    config-server (web, 64M): ./config-server"),
            "{text}"
        );
        assert!(text.contains("stack:      trixie\n"), "{text}");
        assert!(text.contains("instances:  1/2 running"));
        assert!(
            text.contains(
                "INDEX   STATE     READY   NODE     ADDRESS          RESTARTS   SINCE   CPU    MEMORY     DISK   LAST-EXIT"
            ),
            "{text}"
        );
        assert!(
            text.contains("0       running   yes     node-1   10.0.0.1:61000   0          1m      3.2%   41M/256M   2M     -"),
            "{text}"
        );
        assert!(
            text.contains(
                "1       crashed   -       node-2   -                2          -       -      -          -      exited with code 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn shows_readiness_and_placement() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let inst = |index: u32, ready: bool| InstanceInfo {
            process_type: "web".into(),
            index,
            revision: Some(1),
            state: InstanceState::Running,
            node: Some("n1".into()),
            address: None,
            ip: None,
            restarts: 0,
            last_exit: None,
            placement_error: None,
            since: Some(now),
            usage: None,
            ready,
            retiring: false,
        };
        let d = AppDetail {
            name: "a".into(),
            state: AppState::Started,
            url: "http://a.localhost".into(),
            desired_instances: 2,
            memory_mb: 128,
            revision: None,
            instances: vec![inst(0, true), inst(1, false)],
            created_at: now,
            updated_at: now,
            processes: Vec::new(),
            placement_labels: [("disk".to_string(), "ssd".to_string())].into(),
            log_rate_limit_bytes: Some(16 << 20),
            stack: "trixie".into(),
            services: vec![],
        };
        let out = render(&d, now);
        assert!(out.contains("placement:  disk=ssd\n"), "{out}");
        assert!(out.contains("log rate:   16M/s per instance\n"), "{out}");
        assert!(
            out.contains("instances:  2/2 running (1 not ready: out of the routes)"),
            "{out}"
        );
        assert!(out.contains("0       running   yes     n1"), "{out}");
        assert!(out.contains("1       running   no      n1"), "{out}");
    }

    #[test]
    fn groups_instances_by_process_type() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        let inst = |t: &str, index: u32| InstanceInfo {
            ready: true,
            retiring: false,
            process_type: t.into(),
            index,
            revision: Some(1),
            state: InstanceState::Running,
            node: Some("n1".into()),
            address: None,
            ip: None,
            restarts: 0,
            last_exit: None,
            placement_error: None,
            since: Some(now),
            usage: None,
        };
        let proc = |t: &str, n: u32, check: &str| paas_common::api::ProcessInfo {
            process_type: t.into(),
            instances: n,
            memory_mb: 128,
            command: format!("run-{t}"),
            health_check: check.into(),
        };
        let d = AppDetail {
            placement_labels: Default::default(),
            log_rate_limit_bytes: None,
            stack: "trixie".into(),
            services: vec![],
            name: "a".into(),
            state: AppState::Started,
            url: "http://a.localhost".into(),
            desired_instances: 1,
            memory_mb: 128,
            revision: None,
            instances: vec![inst("web", 0), inst("worker", 0), inst("worker", 1)],
            created_at: now,
            updated_at: now,
            processes: vec![proc("web", 1, "port"), proc("worker", 2, "process")],
        };
        let out = render(&d, now);
        let web = out
            .find("web: 1/1 running, 128M each, port check, command: run-web")
            .expect(&out);
        let worker = out
            .find("worker: 2/2 running, 128M each, process check, command: run-worker")
            .expect(&out);
        assert!(web < worker, "web first: {out}");
        assert_eq!(
            out[worker..]
                .lines()
                .filter(|l| l.contains("running") && l.contains("n1"))
                .count(),
            2,
            "{out}"
        );
    }
}
