#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Log pruning and a months-offline catch-up (issue 20, item 1), each against its floor in
//! the same run.
//!
//! - **prune**: central's log of `BERTH_BENCH_LOG` (default 200,000) entries, every one
//!   processed by every node, removed by the log manager (`partial::prune_log`, in steps of
//!   `LOG_PRUNE_STEP`, one transaction each, as successive docks do), against one plain
//!   `DELETE FROM berth_log WHERE pos <= ?` of the same rows: rows per second and the ratio.
//! - **catch-up**: central with 20,000 `limited` items (half of them node b's) and 1,000
//!   `enterprise` notes; b goes away while central makes `BERTH_BENCH_AWAY` (default
//!   100,000) changes to 2,000 of the rows b sees, over 50 days of daily docks (node a docks
//!   every day). Central's dock compacts b's stream ([retention] away_days = 30). Timed at b,
//!   on a fresh copy each run: applying the one bundle that catches it up; against applying
//!   its full re-extract (a node enrolled with b's attributes, what a node that cannot catch
//!   up gets instead), and against the same catch-up without compaction (`away_days = 0`:
//!   the whole history, the way berth did before). Sizes of the three bundles are printed.
//!
//! `cargo bench -p berth-engine --bench catchup`; `BERTH_BENCH_PAIRS` (default 3)
//! interleaved runs give the ratios.

use berth_engine::dock::Disposition;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_engine::dock::{DockOptions, dock};
use berth_engine::enroll;
use berth_engine::site::{CentralInit, Site};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rusqlite::Connection;

#[path = "support/mod.rs"]
mod support;
use support::{copy_dir, env};

const SCHEMA: &str = include_str!("../../tests/fixtures/owner-notes/schema.sql");

const DOCKING: &str = include_str!("../../tests/fixtures/owner-notes/docking.toml");

const DAY: i64 = 86_400;

fn at(now: i64) -> DockOptions {
    DockOptions {
        now: Some(now),
        ..DockOptions::default()
    }
}

fn download_only() -> DockOptions {
    DockOptions {
        upload: false,
        ..DockOptions::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---- pruning ---------------------------------------------------------------------------

/// A central (no nodes: every entry is processed) whose log holds `rows` entries.
fn pruned_world(rows: usize) -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let schema = root.path().join("schema.sql");
    fs::write(
        &schema,
        "CREATE TABLE note(id INTEGER PRIMARY KEY, body TEXT);",
    )
    .unwrap();
    let central = root.path().join("hq");
    let (hq, _) = Site::init_central(&CentralInit {
        dir: &central,
        name: Some("hq"),
        schema: &schema,
        docking: None,
        data: None,
    })
    .unwrap();
    hq.conn
        .execute(
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1)
             INSERT INTO note(body) SELECT printf('note %d', i) FROM c",
            [rows as i64],
        )
        .unwrap();
    hq.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(hq);
    (root, central.join("data.db"))
}

/// A fresh copy of the database, opened as a dock opens it.
fn fresh_db(db: &Path) -> (tempfile::TempDir, Connection) {
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("data.db");
    fs::copy(db, &copy).unwrap();
    let c = Connection::open(&copy).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
        .unwrap();
    (t, c)
}

/// The log manager removing everything processed, one step per transaction; (time, rows).
fn prune(db: &Path) -> (Duration, i64) {
    let (_t, c) = fresh_db(db);
    let start = Instant::now();
    let mut total = 0;
    loop {
        let tx = rusqlite::Transaction::new_unchecked(&c, rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let n = berth_engine::partial::prune_log(&tx, berth_engine::partial::LOG_PRUNE_STEP, None)
            .unwrap();
        tx.commit().unwrap();
        total += n;
        if n == 0 {
            break;
        }
    }
    (start.elapsed(), total)
}

/// The floor: one plain delete of the same rows.
fn plain_delete(db: &Path) -> (Duration, i64) {
    let (_t, c) = fresh_db(db);
    let top: i64 = c
        .query_row("SELECT MAX(pos) FROM berth_log", [], |r| r.get(0))
        .unwrap();
    let start = Instant::now();
    let tx =
        rusqlite::Transaction::new_unchecked(&c, rusqlite::TransactionBehavior::Immediate).unwrap();
    let n = tx
        .execute("DELETE FROM berth_log WHERE pos <= ?1", [top - 1])
        .unwrap();
    tx.commit().unwrap();
    (start.elapsed(), n as i64)
}

// ---- catch-up --------------------------------------------------------------------------

/// The state after b's absence: b's site and the folder with central's bundle to it.
struct Away {
    _root: tempfile::TempDir,
    b: PathBuf,
    via: PathBuf,
    bundle_bytes: u64,
    changes: i64,
}

/// A fresh node enrolled with b's attributes and its extract: the full re-extract.
struct Extract {
    _root: tempfile::TempDir,
    node: PathBuf,
    via: PathBuf,
    bundle_bytes: u64,
}

fn bundle_to(via: &Path, node: &str) -> PathBuf {
    fs::read_dir(via)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(&format!("_to_{node}_"))
        })
        .unwrap_or_else(|| panic!("no bundle to {node} in {}", via.display()))
}

fn away_world(changes: usize, away_days: u32) -> (Away, Option<Extract>) {
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
    let mut rows = String::new();
    for i in 0..20_000 {
        let owner = if i % 2 == 0 { "alice" } else { "bob" };
        rows.push_str(&format!(
            "INSERT INTO item VALUES ('i{i:05}', '{owner}', {i});\n"
        ));
    }
    for i in 0..1_000 {
        rows.push_str(&format!("INSERT INTO note VALUES ('n{i:04}', '');\n"));
    }
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
    let mut dirs = BTreeMap::new();
    for (name, owner) in [("a", "alice"), ("b", "bob")] {
        let dir = base.join(name);
        let node = Site::init_node(&dir, name).unwrap();
        let request = enroll::write_request(&node, &via).unwrap();
        let attrs = BTreeMap::from([("owner".to_string(), owner.to_string())]);
        enroll::add_node(&mut hq, name, &request, &attrs, &via).unwrap();
        fs::remove_file(&request).unwrap();
        drop(node);
        dirs.insert(name, dir);
    }
    drop(hq);
    let cfg = central.join("berth.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(
        &cfg,
        format!("{text}\n[retention]\naway_days = {away_days}\n"),
    )
    .unwrap();
    let t0 = berth_engine::store::now();
    let dock_at = |dir: &Path, now: i64| {
        let mut s = Site::open(dir).unwrap();
        dock(&mut s, &via, &at(now)).unwrap()
    };
    for site in [
        &dirs["a"], &dirs["b"], &central, &dirs["a"], &dirs["b"], &central,
    ] {
        dock_at(site, t0);
    }
    // b is away for 50 days; central changes 2,000 of the rows b sees (bob's first 1,000
    // items and the 1,000 notes), a docks daily.
    let days = 50;
    let per_day = changes / days;
    let started = Instant::now();
    for day in 1..=days as i64 {
        let hq = Site::open(&central).unwrap();
        let tx = rusqlite::Transaction::new_unchecked(
            &hq.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .unwrap();
        {
            let mut item = tx
                .prepare("UPDATE item SET v = v + 1 WHERE id = ?1")
                .unwrap();
            let mut note = tx
                .prepare("UPDATE note SET body = ?2 WHERE id = ?1")
                .unwrap();
            for k in 0..per_day {
                let j = (k * 7 + day as usize * 13) % 2_000;
                if j < 1_000 {
                    item.execute([format!("i{:05}", 2 * j + 1)]).unwrap();
                } else {
                    note.execute([format!("n{:04}", j - 1_000), format!("d{day}-{k}")])
                        .unwrap();
                }
            }
        }
        tx.commit().unwrap();
        drop(hq);
        let now = t0 + day * DAY;
        dock_at(&central, now);
        dock_at(&dirs["a"], now);
        dock_at(&central, now);
    }
    eprintln!(
        "{changes} central changes over {days} days (away_days {away_days}) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let file = bundle_to(&via, "b");
    let hq = Site::open(&central).unwrap();
    let changes: i64 = hq
        .conn
        .query_row(
            "SELECT COUNT(*) FROM berth_partial WHERE node = 'b'
              AND ppos > (SELECT acked_pos FROM berth_peers WHERE name = 'b')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(hq);
    // Only b's bundle matters from here on.
    let b_via = base.join("b-via");
    fs::create_dir_all(&b_via).unwrap();
    fs::copy(&file, b_via.join(file.file_name().unwrap())).unwrap();
    let away = Away {
        bundle_bytes: fs::metadata(&file).unwrap().len(),
        changes,
        b: dirs["b"].clone(),
        via: b_via,
        _root: root,
    };
    if away_days == 0 {
        return (away, None);
    }
    // The full re-extract of a node with b's attributes.
    let xroot = tempfile::tempdir().unwrap();
    let (node_dir, xvia) = (xroot.path().join("b2"), xroot.path().join("via"));
    fs::create_dir_all(&xvia).unwrap();
    let node = Site::init_node(&node_dir, "b2").unwrap();
    let request = enroll::write_request(&node, &xvia).unwrap();
    drop(node);
    let mut hq = Site::open(&central).unwrap();
    let attrs = BTreeMap::from([("owner".to_string(), "bob".to_string())]);
    enroll::add_node(&mut hq, "b2", &request, &attrs, &xvia).unwrap();
    fs::remove_file(&request).unwrap();
    let file = bundle_to(&xvia, "b2");
    let extract = Extract {
        bundle_bytes: fs::metadata(&file).unwrap().len(),
        node: node_dir,
        via: xvia,
        _root: xroot,
    };
    (away, Some(extract))
}

/// Applies what waits in `via` at a fresh copy of the node `dir`; the time of the dock.
fn apply_at(dir: &Path, via: &Path) -> Duration {
    let t = tempfile::tempdir().unwrap();
    let (d, v) = (t.path().join("node"), t.path().join("via"));
    copy_dir(dir, &d);
    copy_dir(via, &v);
    let mut node = Site::open(&d).unwrap();
    let start = Instant::now();
    let r = dock(&mut node, &v, &download_only()).unwrap();
    let took = start.elapsed();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    took
}

fn bench(c: &mut Criterion) {
    let log_rows: usize = env("BERTH_BENCH_LOG", 200_000);
    let away_changes: usize = env("BERTH_BENCH_AWAY", 100_000);
    let pairs: usize = env("BERTH_BENCH_PAIRS", 3).max(1);

    let (_proot, db) = pruned_world(log_rows);
    let (compact, extract) = away_world(away_changes, 30);
    let extract = extract.unwrap();
    let (history, _) = away_world(away_changes, 0);

    let mut g = c.benchmark_group("catchup");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.bench_function(format!("prune_log, {log_rows} entries"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| prune(&db).0).sum())
    });
    g.bench_function(format!("plain DELETE, {log_rows} entries"), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| plain_delete(&db).0).sum())
    });
    g.bench_function("catch-up: compact bundle", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| apply_at(&compact.b, &compact.via)).sum())
    });
    g.bench_function("catch-up: full re-extract", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| apply_at(&extract.node, &extract.via))
                .sum()
        })
    });
    g.bench_function("catch-up: whole history", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| apply_at(&history.b, &history.via)).sum())
    });
    g.finish();

    // Interleaved runs decide the ratios.
    let (mut pr, mut fl, mut cu, mut ex, mut hi) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut removed = 0;
    for _ in 0..pairs {
        let (d, n) = prune(&db);
        removed = n;
        pr.push(d.as_secs_f64());
        let (d, n) = plain_delete(&db);
        assert_eq!(n, removed, "the same rows");
        fl.push(d.as_secs_f64());
        cu.push(apply_at(&compact.b, &compact.via).as_secs_f64() * 1e3);
        ex.push(apply_at(&extract.node, &extract.via).as_secs_f64() * 1e3);
        hi.push(apply_at(&history.b, &history.via).as_secs_f64() * 1e3);
    }
    let (pr, fl) = (median(pr), median(fl));
    println!("\ncatchup, medians of {pairs} interleaved runs:");
    println!(
        "prune_log: {removed} entries in {:.1} ms, {:.0} rows/s; plain DELETE {:.1} ms, {:.0} rows/s; ratio {:.2}x of the floor's throughput",
        pr * 1e3,
        removed as f64 / pr,
        fl * 1e3,
        removed as f64 / fl,
        fl / pr
    );
    let (cu, ex, hi) = (median(cu), median(ex), median(hi));
    println!(
        "catch-up after {away_changes} central changes to 2,000 rows: compact bundle {} changes, {} bytes, applied in {cu:.1} ms",
        compact.changes, compact.bundle_bytes
    );
    println!(
        "  full re-extract (11,000 rows): {} bytes, applied in {ex:.1} ms; whole history: {} changes, {} bytes, applied in {hi:.1} ms",
        extract.bundle_bytes, history.changes, history.bundle_bytes
    );
    println!(
        "ratio compact / re-extract: size {:.2}x, apply {:.2}x; compact / history: size {:.3}x, apply {:.3}x",
        compact.bundle_bytes as f64 / extract.bundle_bytes as f64,
        cu / ex,
        compact.bundle_bytes as f64 / history.bundle_bytes as f64,
        cu / hi
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
