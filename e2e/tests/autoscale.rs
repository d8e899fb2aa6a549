//! Issue 23's autoscaling on the real Docker engine: a bounded local load (the e2e
//! `RequestLoop`s through the router) makes the leader's autoscaler add instances with an
//! `app.autoscale` event naming the requests against the target; a light load afterwards lets it
//! scale back in, one bounded step per cooldown, through the normal drain (no request fails);
//! a space quota of 2 instances caps it at 2 and the event says so; `--off` stops it.

use paas_e2e::{example, unique, wait_for, Options, Platform, RequestLoop};
use serde_json::Value;
use std::time::Duration;

/// (desired, running) web instances of the app.
fn counts(p: &Platform, app: &str) -> (u64, usize) {
    let v = p.app_json(app).unwrap_or_default();
    let running = v["instances"]
        .as_array()
        .map(|l| l.iter().filter(|i| i["state"] == "running").count())
        .unwrap_or(0);
    (v["desired_instances"].as_u64().unwrap_or(0), running)
}

/// The messages of the app's `app.autoscale` events, oldest first.
fn decisions(p: &Platform, app: &str) -> Vec<String> {
    let out = p.cli(&["events", app, "--json"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    let list = v["events"]
        .as_array()
        .or(v.as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter(|e| e["kind"] == "app.autoscale")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn load_scales_out_and_back_in_within_the_cooldowns_and_the_quota() {
    let mut p = Platform::start_server(Options {
        server_env: vec![
            ("PAAS_AUTOSCALE_INTERVAL_SECS".into(), "1".into()),
            ("PAAS_AUTOSCALE_WINDOW_SECS".into(), "20".into()),
        ],
        ..Options::default()
    })
    .expect("server");
    p.start_agent(&unique("e2e-as"), "zone-a").unwrap();
    p.login().unwrap();
    let app = unique("auto");
    // The manifest's `autoscale` becomes the app's policy after the push.
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(example("python-app")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    std::fs::write(
        dir.path().join("paas.yml"),
        format!(
            "applications:\n- name: {app}\n  memory: 64M\n  autoscale:\n    min: 1\n    max: 2\n    cpu: 50\n    p99: 1.5s\n    scale-in-cooldown: 2m\n"
        ),
    )
    .unwrap();
    let out = p.cli_in(&["push"], Some(dir.path()));
    assert!(out.ok(), "push failed: {out:?}{}", p.logs());
    assert!(
        out.stdout
            .contains(&format!("Autoscaling {app}: 1 to 2 web instances")),
        "{out:?}"
    );
    let out = p.cli(&["autoscale", &app]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout
            .contains("1 to 2 web instances on cpu 50%, p99 1500ms")
            && out.stdout.contains("scale-out 60s, scale-in 120s"),
        "{out:?}"
    );
    let out = p.cli(&["autoscale", &app, "--off"]);
    assert!(out.ok(), "{out:?}");

    // No policy now: a one-line error, non-zero.
    let out = p.cli(&["autoscale", &app]);
    assert!(
        !out.ok() && out.stderr.contains("no autoscaling policy"),
        "{out:?}"
    );
    let out = p.cli(&["autoscale", &app, "--min", "0", "--max", "3"]);
    assert!(!out.ok() && out.stderr.contains("min (0)"), "{out:?}");

    let out = p.cli(&[
        "autoscale",
        &app,
        "--min",
        "1",
        "--max",
        "3",
        "--rps-per-instance",
        "5",
        "--scale-out-cooldown",
        "2s",
        "--scale-in-cooldown",
        "8s",
    ]);
    assert!(out.ok(), "{out:?}");
    assert!(
        out.stdout
            .contains("1 to 3 web instances on 5 requests/s per instance"),
        "{out:?}"
    );
    let out = p.cli(&["autoscale", &app, "--json"]);
    let policy: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(policy["rps_per_instance"], 5);
    assert_eq!(policy["scale_in_cooldown_secs"], 8);
    assert!(policy.get("cpu_percent").is_none(), "{policy}");

    // Load well above 5 requests/s: the autoscaler adds instances, up to its max of 3.
    let heavy = RequestLoop::start(p.addr, &app);
    wait_for(
        Duration::from_secs(120),
        "more than one running instance",
        || (counts(&p, &app).1 > 1).then_some(()),
    )
    .unwrap();
    wait_for(Duration::from_secs(120), "3 running instances", || {
        (counts(&p, &app) == (3, 3)).then_some(())
    })
    .unwrap();
    let seen = heavy.stop();
    assert!(seen.failed.is_empty(), "failed requests: {:?}", seen.failed);
    let first = decisions(&p, &app);
    let out_msg = first.first().cloned().unwrap_or_default();
    assert!(
        out_msg.starts_with("scaled out 1 -> ")
            && out_msg.contains("requests ")
            && out_msg.contains("vs 5/s per instance wants"),
        "{first:?}"
    );
    assert!(
        first.iter().all(|m| !m.contains("-> 4")),
        "never above max: {first:?}"
    );

    // A light load (under 2 requests/s) stays on: the scale-in drains, so none of it fails.
    let light = RequestLoop::start_every(p.addr, &app, Duration::from_millis(600));
    wait_for(Duration::from_secs(180), "back to 1 instance", || {
        (counts(&p, &app) == (1, 1)).then_some(())
    })
    .unwrap();
    let seen = light.stop();
    assert!(seen.ok > 0);
    assert!(
        seen.failed.is_empty(),
        "failed requests while scaling in: {:?}",
        seen.failed
    );
    let all = decisions(&p, &app);
    let ins: Vec<&String> = all.iter().filter(|m| m.starts_with("scaled in")).collect();
    assert!(!ins.is_empty(), "{all:?}");
    // One bounded step at a time (3 -> 2 -> 1: at most half of the instances).
    assert!(ins.iter().all(|m| !m.contains("3 -> 1")), "{all:?}");
    let status = p.cli(&["autoscale", &app]);
    assert!(
        status.stdout.contains("last decision: scaled in"),
        "{status:?}"
    );

    // A space quota of 2 instances: the same load stops at 2, and the event says why.
    let out = p.cli(&["space-quota", "default/default", "--instances", "2"]);
    assert!(out.ok(), "{out:?}");
    let heavy = RequestLoop::start(p.addr, &app);
    let capped = wait_for(
        Duration::from_secs(120),
        "a scale-out capped by the quota",
        || {
            decisions(&p, &app)
                .into_iter()
                .find(|m| m.contains("by the space's instance quota 2"))
        },
    )
    .unwrap();
    assert!(
        capped.starts_with("scaled out 1 -> 2") || capped.starts_with("held at 2 by"),
        "{capped}"
    );
    wait_for(Duration::from_secs(120), "2 running instances", || {
        (counts(&p, &app) == (2, 2)).then_some(())
    })
    .unwrap();
    // Held there while the load lasts: said once, and no scale-out past it.
    let held = wait_for(
        Duration::from_secs(60),
        "the autoscaler held at the quota",
        || {
            let all = decisions(&p, &app);
            let from = all.iter().position(|m| m.contains("quota"))?;
            let after = all[from..].to_vec();
            after
                .iter()
                .any(|m| m.starts_with("held at 2 by the space's instance quota 2"))
                .then_some(after)
        },
    )
    .unwrap();
    assert!(held.iter().all(|m| !m.contains("-> 3")), "{held:?}");
    assert_eq!(
        held.iter().filter(|m| m.starts_with("held at")).count(),
        1,
        "{held:?}"
    );
    // Turned off under load: the count stays where it is.
    let out = p.cli(&["autoscale", &app, "--off"]);
    assert!(out.ok(), "{out:?}");
    let seen = heavy.stop();
    assert!(seen.failed.is_empty(), "failed requests: {:?}", seen.failed);
    assert_eq!(counts(&p, &app).0, 2);
    let out = p.cli(&["autoscale", &app]);
    assert!(
        !out.ok() && out.stderr.contains("no autoscaling policy"),
        "{out:?}"
    );
}
