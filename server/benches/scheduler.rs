//! Placement throughput: 10,000 instances (1,000 apps x 10) on 1,000 simulated nodes in 10 zones,
//! instance 0 of every app first, as the convergence loop orders them. The peer, measured in the
//! same run, is the scheduler this one replaced (spread over nodes only, counts of the app's
//! instances per node refreshed on every node before each placement, as its convergence did).
//! Prints the median of 5 runs of each.
//!
//! `cargo bench -p paas-server --bench scheduler`

use paas_server::control::scheduler::{place, Ask, NodeView, Spread};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const NODES: usize = 1_000;
const APPS: usize = 1_000;
const PER_APP: u32 = 10;

fn cluster() -> Vec<NodeView> {
    (0..NODES)
        .map(|i| NodeView {
            name: format!("node-{i:04}"),
            zone: format!("zone-{}", i % 10),
            ready: i % 100 != 99, // 1% of nodes draining or lost
            labels: BTreeMap::new(),
            memory_mb: 64 * 1024,
            used_memory_mb: (i as u64 * 37) % 8192,
            disk_mb: 500 * 1024,
            used_disk_mb: 0,
            slots: 256,
            used_slots: 0,
            starting: 0,
        })
        .collect()
}

fn requests() -> Vec<(usize, u32)> {
    let mut r: Vec<(usize, u32)> = (0..APPS)
        .flat_map(|a| (0..PER_APP).map(move |i| (a, i)))
        .collect();
    r.sort_by_key(|&(a, i)| (i, a));
    r
}

fn run_new() -> (Duration, usize) {
    let mut nodes = cluster();
    let reqs = requests();
    let labels = BTreeMap::new();
    let ask = Ask {
        memory_mb: 256,
        disk_mb: 1024,
        labels: &labels,
    };
    let mut spreads: HashMap<usize, Spread> = HashMap::new();
    let start = Instant::now();
    let mut placed = 0;
    for (app, _) in &reqs {
        let spread = spreads.entry(*app).or_insert_with(|| Spread::new(NODES));
        if let Ok(i) = place(&nodes, &ask, spread, u32::MAX) {
            nodes[i].book(&ask);
            spread.add(&nodes, i);
            placed += 1;
        }
    }
    (start.elapsed(), placed)
}

/// The replaced scheduler, verbatim in its logic.
mod old {
    pub struct NodeView {
        pub name: String,
        pub ready: bool,
        pub memory_mb: u64,
        pub used_memory_mb: u64,
        pub slots: u32,
        pub used_slots: u32,
        pub same_app: u32,
    }

    pub fn place(nodes: &[NodeView], memory_mb: u64) -> Option<&NodeView> {
        let ready: Vec<&NodeView> = nodes.iter().filter(|n| n.ready).collect();
        ready
            .into_iter()
            .filter(|n| n.used_slots < n.slots && n.used_memory_mb + memory_mb <= n.memory_mb)
            .min_by(|a, b| {
                let load = |n: &NodeView| (n.used_memory_mb * 1000) / n.memory_mb.max(1);
                (a.same_app, load(a), &a.name).cmp(&(b.same_app, load(b), &b.name))
            })
    }
}

fn run_old() -> (Duration, usize) {
    let mut nodes: Vec<old::NodeView> = cluster()
        .into_iter()
        .map(|n| old::NodeView {
            name: n.name,
            ready: n.ready,
            memory_mb: n.memory_mb,
            used_memory_mb: n.used_memory_mb,
            slots: n.slots,
            used_slots: 0,
            same_app: 0,
        })
        .collect();
    let index: HashMap<String, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), i))
        .collect();
    let reqs = requests();
    let mut counts: HashMap<usize, HashMap<String, u32>> = HashMap::new();
    let start = Instant::now();
    let mut placed = 0;
    for (app, _) in &reqs {
        let c = counts.entry(*app).or_default();
        for n in nodes.iter_mut() {
            n.same_app = c.get(&n.name).copied().unwrap_or(0);
        }
        if let Some(n) = old::place(&nodes, 256).map(|n| n.name.clone()) {
            let i = index[&n];
            nodes[i].used_memory_mb += 256;
            nodes[i].used_slots += 1;
            *c.entry(n).or_insert(0) += 1;
            placed += 1;
        }
    }
    (start.elapsed(), placed)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let total = APPS * PER_APP as usize;
    let mut new_t = Vec::new();
    let mut old_t = Vec::new();
    for _ in 0..5 {
        // Alternate, so both see the same machine load.
        let (t, placed) = run_new();
        assert_eq!(placed, total, "every instance fits");
        new_t.push(t);
        let (t, placed) = run_old();
        assert_eq!(placed, total);
        old_t.push(t);
    }
    let (n, o) = (median(new_t), median(old_t));
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!("placing {total} instances ({APPS} apps x {PER_APP}) on {NODES} nodes in 10 zones, median of 5:");
    println!(
        "  scheduler (zones, labels, disk, starts in flight): {:>8.1} ms  {:>9.0} placements/s",
        n.as_secs_f64() * 1e3,
        rate(n)
    );
    println!(
        "  previous scheduler (nodes only):                   {:>8.1} ms  {:>9.0} placements/s",
        o.as_secs_f64() * 1e3,
        rate(o)
    );
    println!("  ratio new/old throughput: {:.2}", rate(n) / rate(o));
}
