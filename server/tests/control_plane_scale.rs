//! CI guard against accidental O(n²) in the control plane (issue 24): one convergence pass at rest
//! with 100 nodes, 1,000 apps and 10,000 instances must take at most 10× the time recorded in
//! `bench/control_plane.baseline` for this build profile. A guard, not a timing test: a slower
//! machine passes, a pass that went quadratic (100× at this size) does not.
//!
//! Everything is real except the nodes: the store calls a push ends in seed the apps (each with
//! its own revision), their rows are written placed and running, and the nodes' reports go
//! through the same `nodes::heartbeat` the agent endpoint calls; then passes at rest are timed. It also runs at 10× fewer (10 nodes, 100 apps, 1,000 instances) and prints how the
//! pass grew; `bench/control_plane.sh` measures the whole controller over HTTP.
//!
//! To record a new baseline: `PAAS_CP_RECORD=1 cargo test -p paas-server --test
//! control_plane_scale` (release: add `--release`), which rewrites this profile's line.

use chrono::Utc;
use paas_common::agent::{Heartbeat, InstanceReport, NodeCapacity};
use paas_common::api::{AppState, InstanceState};
use paas_server::config::Settings;
use paas_server::control::{convergence, nodes};
use paas_server::state::AppCtx;
use paas_server::store::{
    AppRecord, Event, InstanceRecord, NewRevision, NodeRecord, RevisionExtra, SqliteStore,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PER_APP: u32 = 10;
/// Passes timed at rest; the median counts.
const PASSES: usize = 7;

fn capacity() -> NodeCapacity {
    NodeCapacity {
        memory_mb: 1 << 20,
        disk_mb: 1 << 22,
        instance_slots: 1000,
    }
}

struct Measured {
    instances: usize,
    /// Writing the rows, and one heartbeat from every node reporting them.
    seeding: Duration,
    heartbeats: Duration,
    /// Every node's assignment list, fetched once.
    assignments: Duration,
    /// Median pass at rest.
    pass: Duration,
}

async fn measure(node_count: usize, apps: usize) -> Measured {
    let dir = tempfile::Builder::new()
        .prefix("paas-cp-scale-")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("temp dir");
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        // Seeding in a debug build takes longer than the default grace: no node is lost here.
        node_grace_secs: 3600,
        ..Settings::default()
    };
    let sqlite = Arc::new(
        SqliteStore::open(&dir.path().join("paas.db"))
            .await
            .expect("store"),
    );
    let ctx = paas_server::startup::context(settings, sqlite.clone(), 8080)
        .await
        .expect("context");
    let names: Vec<String> = (0..node_count)
        .map(|i| format!("scale-node-{i:03}"))
        .collect();
    for (i, n) in names.iter().enumerate() {
        ctx.store
            .upsert_node(&NodeRecord {
                name: n.clone(),
                address: "127.0.0.1".into(),
                zone: format!("z{}", i % 3),
                labels: BTreeMap::new(),
                capacity: capacity(),
                token_hash: format!("hash-{n}"),
                state: "ready".into(),
                last_heartbeat: Utc::now(),
                registered_at: Utc::now(),
            })
            .await
            .expect("node");
    }
    let app_ids = seed(&ctx, apps).await;
    let instances = apps * PER_APP as usize;

    // Every row placed and running, spread over the nodes as the scheduler would: written
    // straight to the store (placing 10,000 rows through passes takes minutes in a debug build;
    // `bench/control_plane.sh` times that part on the real controller).
    let t = Instant::now();
    let mut k = 0usize;
    for (app_id, revision) in &app_ids {
        for index in 0..PER_APP {
            let mut row = InstanceRecord::pending(
                uuid::Uuid::new_v4().to_string(),
                app_id.clone(),
                *revision,
                "web".into(),
                index,
            );
            row.node_name = Some(names[k % names.len()].clone());
            row.state = InstanceState::Running;
            row.host_port = Some(30000 + (k % 20000) as u16);
            row.container_id = Some(format!("c-{k}"));
            row.ready = true;
            ctx.store.insert_instance(&row).await.expect("row");
            k += 1;
        }
    }
    let seeding = t.elapsed();
    // The nodes report their rows through the agent's heartbeat path.
    let rows = ctx.store.list_instances().await.expect("instances");
    let mut by_node: HashMap<String, Vec<InstanceReport>> = HashMap::new();
    for r in &rows {
        by_node
            .entry(r.node_name.clone().unwrap_or_default())
            .or_default()
            .push(InstanceReport {
                instance_id: r.id.clone(),
                state: InstanceState::Running,
                container_id: r.container_id.clone(),
                host_port: r.host_port,
                restarts: 0,
                last_exit: None,
                since: r.since,
                usage: None,
                ready: true,
                ip: None,
            });
    }
    let t = Instant::now();
    for n in &names {
        let hb = Heartbeat {
            capacity: capacity(),
            instances: by_node.remove(n).unwrap_or_default(),
            tasks: Vec::new(),
            services: Vec::new(),
        };
        nodes::heartbeat(&ctx, n, &hb).await.expect("heartbeat");
    }
    let heartbeats = t.elapsed();
    // The first pass builds the route table; every one after it finds nothing to do.
    assert!(
        !convergence::pass(&ctx).await.expect("pass"),
        "the seeded rows are what should run"
    );

    let mut times = Vec::new();
    for _ in 0..PASSES {
        let t = Instant::now();
        let changed = convergence::pass(&ctx).await.expect("pass");
        times.push(t.elapsed());
        if changed {
            let evs = ctx
                .store
                .list_events(&Default::default(), None, 100000)
                .await
                .expect("events");
            let tail: Vec<String> = evs
                .iter()
                .rev()
                .take(5)
                .map(|e| format!("{} {}", e.event.kind, e.event.message))
                .collect();
            panic!("a pass at rest changed placements: {tail:?}");
        }
    }
    times.sort();
    // What one change costs the nodes: every node fetches its whole assignment list.
    let t = Instant::now();
    let mut assigned = 0;
    for n in &names {
        assigned += nodes::assignments_for(&ctx, n)
            .await
            .expect("assignments")
            .len();
    }
    let assignments = t.elapsed();
    assert_eq!(assigned, instances, "every row is assigned to its node");
    sqlite.close().await;
    Measured {
        instances,
        seeding,
        heartbeats,
        assignments,
        pass: times[times.len() / 2],
    }
}

/// Started apps of PER_APP instances, each with a revision, through the store calls a push ends
/// in. Returns their ids and revisions.
async fn seed(ctx: &AppCtx, apps: usize) -> Vec<(String, i64)> {
    let mut ids = Vec::new();
    let space = ctx
        .store
        .space("default", "default", true)
        .await
        .expect("space")
        .expect("the default space");
    let droplet = format!("{:064x}", 24);
    for i in 0..apps {
        let now = Utc::now();
        let name = format!("scale-{i:05}");
        let rec = AppRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.clone(),
            state: AppState::Started,
            desired_instances: PER_APP,
            memory_mb: 64,
            disk_mb: 256,
            current_revision: None,
            created_at: now,
            updated_at: now,
            space_id: space.id.clone(),
            host: Some(name.clone()),
        };
        let ev = |kind: &str| Event {
            app_name: Some(name.clone()),
            app_id: Some(rec.id.clone()),
            actor: "dev".into(),
            kind: kind.into(),
            message: "seeded".into(),
        };
        ctx.store
            .create_app(&rec, &ev("app.create"))
            .await
            .expect("app");
        let rev = NewRevision {
            package: droplet.clone(),
            droplet: droplet.clone(),
            command: "true".into(),
            detected: "test".into(),
            desired_instances: PER_APP,
            memory_mb: 64,
        };
        let extra = RevisionExtra {
            created_by: "dev".into(),
            description: "seeded".into(),
            ..Default::default()
        };
        let number = ctx
            .store
            .deploy_revision_with(&rec.id, &rev, &extra, &ev("app.push"))
            .await
            .expect("revision");
        ids.push((rec.id, number));
    }
    ids
}

fn baseline_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/control_plane.baseline")
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_convergence_pass_at_10000_instances_stays_within_10x_of_its_baseline() {
    let small = measure(10, 100).await;
    let large = measure(100, 1000).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    for m in [&small, &large] {
        println!(
            "{} instances: rows written in {:.0} ms, a heartbeat from every node in {:.0} ms, \
             every node's assignments in {:.0} ms, one pass at rest {:.1} ms",
            m.instances,
            ms(m.seeding),
            ms(m.heartbeats),
            ms(m.assignments),
            ms(m.pass)
        );
    }
    println!(
        "growth at 10x the instances: pass {:.1}x, heartbeats {:.1}x, assignments {:.1}x",
        ms(large.pass) / ms(small.pass),
        ms(large.heartbeats) / ms(small.heartbeats),
        ms(large.assignments) / ms(small.assignments)
    );
    let file = baseline_file();
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    if std::env::var_os("PAAS_CP_RECORD").is_some() {
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{} ", profile())))
            .map(str::to_string)
            .collect();
        lines.push(format!("{} {:.1}", profile(), ms(large.pass)));
        std::fs::write(&file, lines.join("\n") + "\n").expect("write the baseline");
        println!(
            "recorded {} {:.1} ms in {}",
            profile(),
            ms(large.pass),
            file.display()
        );
        return;
    }
    let baseline: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{} ", profile()))?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no `{} MS` line in {}", profile(), file.display()));
    assert!(
        ms(large.pass) <= 10.0 * baseline,
        "one convergence pass at 10,000 instances took {:.1} ms, more than 10x its baseline of \
         {baseline:.1} ms ({} build, {}): something in the control plane grew worse than linear",
        ms(large.pass),
        profile(),
        file.display()
    );
}

/// Route table rebuilds are coalesced (`router::refresh`): refreshes asked for together share
/// rebuilds (at most one runs, one more covers every request that came during it), and a
/// refresh that returns has seen the store as it was when it was called, even with a rebuild
/// already in flight that read it earlier: a row removed before the call is never routed after
/// it (the ordering invariant of `router/mod.rs`: routes before stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_refreshes_coalesce_and_never_answer_with_a_table_read_before_the_call() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::Builder::new()
        .prefix("paas-cp-refresh-")
        .tempdir()
        .expect("temp dir");
    let settings = Settings {
        data_dir: dir.path().to_path_buf(),
        ..Settings::default()
    };
    let sqlite = Arc::new(
        SqliteStore::open(&dir.path().join("paas.db"))
            .await
            .expect("store"),
    );
    let ctx = Arc::new(
        paas_server::startup::context(settings, sqlite.clone(), 8080)
            .await
            .expect("context"),
    );
    ctx.store
        .upsert_node(&NodeRecord {
            name: "refresh-node".into(),
            address: "127.0.0.1".into(),
            zone: "z".into(),
            labels: BTreeMap::new(),
            capacity: capacity(),
            token_hash: "hash-refresh-node".into(),
            state: "ready".into(),
            last_heartbeat: Utc::now(),
            registered_at: Utc::now(),
        })
        .await
        .expect("node");
    let (app_id, revision) = seed(&ctx, 1).await.remove(0);
    let routed = |ctx: &AppCtx| ctx.routes.get(&app_id).map_or(0, |a| a.backends.len());

    let before = ctx.refresher.rebuilds.load(Ordering::SeqCst);
    let calls: Vec<_> = (0..20)
        .map(|_| paas_server::router::refresh(&ctx))
        .collect();
    for r in futures_util::future::join_all(calls).await {
        r.expect("refresh");
    }
    let rebuilds = ctx.refresher.rebuilds.load(Ordering::SeqCst) - before;
    assert!(
        (1..=2).contains(&rebuilds),
        "20 refreshes asked for together took {rebuilds} rebuilds"
    );

    for round in 0..30u16 {
        let mut row = InstanceRecord::pending(
            uuid::Uuid::new_v4().to_string(),
            app_id.clone(),
            revision,
            "web".into(),
            0,
        );
        row.node_name = Some("refresh-node".into());
        row.state = InstanceState::Running;
        row.host_port = Some(31000 + round);
        row.ready = true;
        ctx.store.insert_instance(&row).await.expect("row");
        paas_server::router::refresh(&ctx).await.expect("refresh");
        assert_eq!(routed(&ctx), 1, "round {round}: the new row is routed");
        // A rebuild in flight, which may read the rows before or after the removal below.
        let in_flight = {
            let ctx = ctx.clone();
            tokio::spawn(async move { paas_server::router::refresh(&ctx).await })
        };
        tokio::task::yield_now().await;
        ctx.store.delete_instance(&row.id).await.expect("delete");
        paas_server::router::refresh(&ctx).await.expect("refresh");
        assert_eq!(
            routed(&ctx),
            0,
            "round {round}: a refresh after the removal still routes the removed row"
        );
        in_flight.await.expect("join").expect("refresh");
    }
    sqlite.close().await;
}
