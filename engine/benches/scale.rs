#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Central at thousands of nodes (issue 20, item 4): what a central dock costs as the number
//! of nodes and the size of central's log grow. Everything on a node stays flat; these are
//! the parts of central's dock that must too.
//!
//! The scenario is built through the public API, as `berth` runs it: central with a table
//! `item` whose rows are `limited` (each node sees the one row it owns, attribute `owner`)
//! and a `central` table `note` (never routed: it grows central's log without growing any
//! partial log); N nodes enrolled (`init_node`, enrollment request, `add_node`, the node's
//! first dock applying its extract), every node docking through **one shared folder**. Each
//! node then updates its row and docks: N bundles wait in the folder.
//!
//! Timed, on a fresh copy of central and of the folder each run (copying is not timed):
//!
//! - **absorb**: central's download-only dock taking in and merging the N bundles, divided
//!   by N (time per bundle), at each node count. Target: the largest count within 1.5x of the
//!   smallest.
//! - **write**: central's upload-only dock after that (one routing pass, then a bundle to
//!   every node), divided by N.
//! - **idle**: a central dock with nothing to take in and nothing new to send, at the largest
//!   node count, with the log as the scenario left it (small) and after
//!   `BERTH_BENCH_LOG` (default 200,000) central writes to `note` (large). Target: within 1.5x.
//!
//! `cargo bench -p berth-engine --bench scale`; `BERTH_BENCH_NODES=100,1000` the node counts
//! (the first and the last are compared); `BERTH_BENCH_LOG` the rows the large log gains;
//! `BERTH_BENCH_PAIRS` (default 3) interleaved runs give the ratios that decide the targets.

use berth_engine::dock::Disposition;
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_engine::dock::{DockOptions, dock};
use berth_engine::enroll;
use berth_engine::site::{CentralInit, Site};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};

#[path = "support/mod.rs"]
mod support;
use support::{copy_dir, env};

const SCHEMA: &str =
    "CREATE TABLE item(id TEXT PRIMARY KEY, owner TEXT NOT NULL, v INTEGER NOT NULL);
CREATE TABLE note(id INTEGER PRIMARY KEY, body TEXT NOT NULL);
";

const DOCKING: &str = r#"version = 1

[nodes]
attributes = ["owner"]

[tables]
item = { visibility = "limited", node_write = true }
note = { visibility = "central" }

[[object]]
name = "item"
primary_table = "item"

[[object.rule]]
sql = "SELECT 'X' FROM item WHERE id = :primary_row_id AND owner = :attr_owner"
set_sql = "SELECT i.id, na.node_id FROM item i JOIN berth_node_attr na ON na.name = 'owner' AND na.value = i.owner"
"#;

/// A central with `nodes` nodes, each with one bundle waiting in the shared folder.
struct World {
    _root: tempfile::TempDir,
    central: PathBuf,
    via: PathBuf,
    nodes: usize,
}

fn node_name(i: usize) -> String {
    format!("n{i:05}")
}

fn download_only() -> DockOptions {
    DockOptions {
        upload: false,
        ..DockOptions::default()
    }
}

fn upload_only() -> DockOptions {
    DockOptions {
        download: false,
        ..DockOptions::default()
    }
}

fn world(nodes: usize) -> World {
    let root = tempfile::tempdir().unwrap();
    let base = root.path();
    let (schema, docking, data, via) = (
        base.join("schema.sql"),
        base.join("docking.toml"),
        base.join("data.sql"),
        base.join("via"),
    );
    fs::write(&schema, SCHEMA).unwrap();
    fs::write(&docking, DOCKING).unwrap();
    let rows: String = (0..nodes)
        .map(|i| {
            let n = node_name(i);
            format!("INSERT INTO item VALUES ('{n}', '{n}', 0);\n")
        })
        .collect();
    fs::write(&data, rows).unwrap();
    fs::create_dir_all(&via).unwrap();
    let central = base.join("hq");
    let (mut hq, _) = Site::init_central(&CentralInit {
        dir: &central,
        name: Some("hq"),
        schema: &schema,
        docking: Some(&docking),
        data: Some(&data),
    })
    .unwrap();
    let t = Instant::now();
    let mut sites = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let name = node_name(i);
        let dir = base.join("nodes").join(&name);
        let node = Site::init_node(&dir, &name).unwrap();
        let request = enroll::write_request(&node, &via).unwrap();
        let attrs = BTreeMap::from([("owner".to_string(), name.clone())]);
        enroll::add_node(&mut hq, &name, &request, &attrs, &via).unwrap();
        drop(node);
        sites.push(dir);
    }
    // Each node applies its extract, changes its row and writes its bundle.
    for (i, dir) in sites.iter().enumerate() {
        let mut node = Site::open(dir).unwrap();
        dock(&mut node, &via, &download_only()).unwrap();
        node.conn
            .execute(
                "UPDATE item SET v = v + 1 WHERE id = ?1",
                [node_name(i).as_str()],
            )
            .unwrap();
        dock(&mut node, &via, &upload_only()).unwrap();
    }
    drop(hq);
    eprintln!(
        "{nodes} nodes enrolled, each with a bundle waiting, in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // The node folders are not needed any more: only central's side is timed.
    fs::remove_dir_all(base.join("nodes")).unwrap();
    World {
        _root: root,
        central,
        via,
        nodes,
    }
}

/// A fresh copy of central and of the shared folder.
fn copy_of(w: &World) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let (c, v) = (t.path().join("hq"), t.path().join("via"));
    copy_dir(&w.central, &c);
    copy_dir(&w.via, &v);
    (t, c, v)
}

/// One central dock of each half on a fresh copy: (absorb, write) times.
fn absorb_and_write(w: &World) -> (Duration, Duration) {
    let (_t, c, v) = copy_of(w);
    let mut hq = Site::open(&c).unwrap();
    let t = Instant::now();
    let r = dock(&mut hq, &v, &download_only()).unwrap();
    let absorb = t.elapsed();
    assert_eq!(
        r.count(Disposition::Applied),
        w.nodes,
        "every node's bundle is merged"
    );
    let t = Instant::now();
    let r = dock(&mut hq, &v, &upload_only()).unwrap();
    let write = t.elapsed();
    assert_eq!(r.written.len(), w.nodes, "every node is written its bundle");
    (absorb, write)
}

/// Turns `w` into a central that has absorbed and answered every node (its bundles wait in
/// the folder): the state of an idle dock. With `log_rows`, central's log then grows by that
/// many entries of the `central` table, routed by one dock.
fn settle(w: &World, log_rows: usize) {
    let mut hq = Site::open(&w.central).unwrap();
    dock(&mut hq, &w.via, &DockOptions::default()).unwrap();
    if log_rows > 0 {
        hq.conn
            .execute(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1)
                 INSERT INTO note(body) SELECT printf('note %d', i) FROM c",
                [log_rows as i64],
            )
            .unwrap();
        dock(&mut hq, &w.via, &DockOptions::default()).unwrap();
    }
    hq.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
}

fn log_size(w: &World) -> i64 {
    let hq = Site::open(&w.central).unwrap();
    hq.conn
        .query_row("SELECT COUNT(*) FROM berth_log", [], |r| r.get(0))
        .unwrap()
}

/// One idle central dock on a fresh copy.
fn idle(w: &World) -> Duration {
    let (_t, c, v) = copy_of(w);
    let mut hq = Site::open(&c).unwrap();
    let t = Instant::now();
    let r = dock(&mut hq, &v, &DockOptions::default()).unwrap();
    let d = t.elapsed();
    assert!(
        r.written.is_empty() && r.incoming.is_empty(),
        "an idle dock: {:?}",
        r.written.len()
    );
    d
}

fn us_per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let counts: Vec<usize> = std::env::var("BERTH_BENCH_NODES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| v.len() >= 2)
        .unwrap_or_else(|| vec![100, 1000]);
    let log_rows: usize = env("BERTH_BENCH_LOG", 200_000);
    let pairs: usize = env("BERTH_BENCH_PAIRS", 3).max(1);
    let worlds: Vec<World> = counts.iter().map(|&n| world(n)).collect();

    let mut g = c.benchmark_group("scale");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for w in &worlds {
        g.bench_function(format!("absorb+write, {} nodes", w.nodes), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (a, wr) = absorb_and_write(w);
                        a + wr
                    })
                    .sum()
            })
        });
    }
    // Interleaved runs decide the ratios (one side after the other would let a change of
    // load on the shared machine hit one side only).
    let mut absorb: Vec<Vec<f64>> = vec![Vec::new(); worlds.len()];
    let mut write: Vec<Vec<f64>> = vec![Vec::new(); worlds.len()];
    for _ in 0..pairs {
        for (i, w) in worlds.iter().enumerate() {
            let (a, wr) = absorb_and_write(w);
            absorb[i].push(us_per(a, w.nodes));
            write[i].push(us_per(wr, w.nodes));
        }
    }

    // Idle docks at the largest count: small log, then a large one (a second world state).
    let big = worlds.last().unwrap();
    settle(big, 0);
    let small_log = log_size(big);
    let small_dir = tempfile::tempdir().unwrap();
    let small = World {
        central: small_dir.path().join("hq"),
        via: small_dir.path().join("via"),
        _root: small_dir,
        nodes: big.nodes,
    };
    copy_dir(&big.central, &small.central);
    copy_dir(&big.via, &small.via);
    settle(big, log_rows);
    let large_log = log_size(big);
    g.bench_function(
        format!("idle dock, {} nodes, log {small_log}", small.nodes),
        |b| b.iter_custom(|iters| (0..iters).map(|_| idle(&small)).sum()),
    );
    g.bench_function(
        format!("idle dock, {} nodes, log {large_log}", big.nodes),
        |b| b.iter_custom(|iters| (0..iters).map(|_| idle(big)).sum()),
    );
    g.finish();
    let (mut idle_small, mut idle_large) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        idle_small.push(idle(&small).as_secs_f64() * 1e3);
        idle_large.push(idle(big).as_secs_f64() * 1e3);
    }

    println!("\nscale, medians of {pairs} interleaved runs:");
    for (i, w) in worlds.iter().enumerate() {
        println!(
            "  {:>6} nodes: absorb {:>8.1} us/bundle, write {:>8.1} us/node",
            w.nodes,
            median(absorb[i].clone()),
            median(write[i].clone())
        );
    }
    let (first, last) = (0, worlds.len() - 1);
    println!(
        "ratio absorb per bundle, {} / {} nodes: {:.2}x (target <= 1.5x)",
        worlds[last].nodes,
        worlds[first].nodes,
        median(absorb[last].clone()) / median(absorb[first].clone())
    );
    println!(
        "ratio write per node, {} / {} nodes: {:.2}x",
        worlds[last].nodes,
        worlds[first].nodes,
        median(write[last].clone()) / median(write[first].clone())
    );
    let (s, l) = (median(idle_small), median(idle_large));
    println!(
        "idle dock at {} nodes: log {small_log} rows {s:.1} ms, log {large_log} rows {l:.1} ms",
        big.nodes
    );
    println!(
        "ratio idle dock, large / small log: {:.2}x (target <= 1.5x)",
        l / s
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
