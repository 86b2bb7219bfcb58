#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Schema migration cost (issue 5).
//!
//! **Rebuild.** A 1M-row table `t(id INTEGER PRIMARY KEY, k TEXT, n INTEGER, v TEXT)` with an
//! index on `k`, in a site-like database (`store::open`: WAL, synchronous=FULL). The target
//! schema adds a CHECK constraint, which ALTER TABLE cannot do: the plan is SQLite's 12-step
//! rebuild. Timed end to end: reading the snapshot, the diff, and `apply::apply` (foreign keys
//! off, copy, drop, rename, index, `foreign_key_check`, snapshot checked, commit). The floor,
//! on a fresh copy of the same file: one transaction with `CREATE TABLE` of the new table,
//! `INSERT INTO new SELECT * FROM old` and the index, nothing else. Target: floor/rebuild
//! >= 0.7.
//!
//! **Diff.** Two snapshots of 200 tables (8 columns, an index each); 50 tables change (a
//! column added, a type changed, an index changed, a rename). Timed: `diff::diff`. Target
//! < 1 s.
//!
//! `cargo bench -p berth-engine --bench migrate`; `BERTH_BENCH_ROWS` (default 1,000,000),
//! `BERTH_BENCH_PAIRS` (default 3) interleaved runs for the printed ratio.

use berth_engine::evolve::diff::{DiffOptions, diff};
use berth_engine::evolve::{apply, snapshot};
use berth_engine::store;
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
#[path = "support/mod.rs"]
mod support;
use support::env;

const OLD: &str =
    "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, n INTEGER, v TEXT); CREATE INDEX t_k ON t(k);";
const NEW: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, n INTEGER CHECK (n >= 0), v TEXT); CREATE INDEX t_k ON t(k);";

fn rows() -> i64 {
    env("BERTH_BENCH_ROWS", 1_000_000)
}

fn template(dir: &Path) -> PathBuf {
    let path = dir.join("template.db");
    let c = store::open(&path).unwrap();
    c.execute_batch(OLD).unwrap();
    c.execute_batch("BEGIN").unwrap();
    {
        let mut st = c.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4)").unwrap();
        for i in 0..rows() {
            st.execute(rusqlite::params![
                i,
                format!("key-{:08}", (i * 7919) % rows()),
                i % 1000,
                "some text value of moderate length"
            ])
            .unwrap();
        }
    }
    c.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    path
}

fn fresh(template: &Path, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    std::fs::copy(template, &p).unwrap();
    p
}

fn rebuild(path: &Path) -> Duration {
    let c = store::open(path).unwrap();
    let target = snapshot::from_sql(NEW).unwrap();
    let start = Instant::now();
    let before = snapshot::read(&c).unwrap();
    let plan = diff(&before, &target, &DiffOptions::default()).unwrap();
    apply::apply(&c, &plan).unwrap();
    start.elapsed()
}

fn floor(path: &Path) -> Duration {
    let c = store::open(path).unwrap();
    let start = Instant::now();
    c.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE t2(id INTEGER PRIMARY KEY, k TEXT, n INTEGER CHECK (n >= 0), v TEXT);
         INSERT INTO t2 SELECT * FROM t;
         CREATE INDEX t2_k ON t2(k);
         COMMIT;",
    )
    .unwrap();
    start.elapsed()
}

fn schema_200(changed: bool) -> String {
    let mut out = String::new();
    for i in 0..200 {
        let touched = changed && i % 4 == 0;
        let n_type = if touched && i % 8 == 0 {
            "TEXT"
        } else {
            "INTEGER"
        };
        let extra = if touched { ", added TEXT" } else { "" };
        let name = if touched && i % 16 == 4 {
            format!("renamed{i}")
        } else {
            format!("t{i}")
        };
        out.push_str(&format!(
            "CREATE TABLE {name}(id TEXT PRIMARY KEY, a TEXT NOT NULL DEFAULT '', b INTEGER, n {n_type}, c REAL, d BLOB, e TEXT COLLATE NOCASE, f TEXT REFERENCES t0(id){extra});\n"
        ));
        let cols = if touched { "a, b" } else { "a" };
        out.push_str(&format!("CREATE INDEX {name}_a ON {name}({cols});\n"));
    }
    out
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let tpl = template(dir.path());
    let mut g = c.benchmark_group("migrate");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("rebuild_1m", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rebuild(&fresh(&tpl, dir.path(), "r.db")))
                .sum()
        })
    });
    g.bench_function("floor_insert_select_1m", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| floor(&fresh(&tpl, dir.path(), "f.db")))
                .sum()
        })
    });
    let from = snapshot::from_sql(&schema_200(false)).unwrap();
    let to = snapshot::from_sql(&schema_200(true)).unwrap();
    let renames = DiffOptions {
        renames: (0..200)
            .filter(|i| i % 4 == 0 && i % 16 == 4)
            .map(|i| format!("t{i}=renamed{i}").parse().unwrap())
            .collect(),
        ..DiffOptions::default()
    };
    g.bench_function("diff_200_tables", |b| {
        b.iter(|| diff(&from, &to, &renames).unwrap())
    });
    g.finish();

    // Interleaved pairs for the ratio (medians).
    let pairs: usize = env("BERTH_BENCH_PAIRS", 3);
    let (mut r, mut f) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        r.push(rebuild(&fresh(&tpl, dir.path(), "r.db")).as_secs_f64());
        f.push(floor(&fresh(&tpl, dir.path(), "f.db")).as_secs_f64());
    }
    r.sort_by(f64::total_cmp);
    f.sort_by(f64::total_cmp);
    let (rm, fm) = (r[r.len() / 2], f[f.len() / 2]);
    let start = Instant::now();
    let plan = diff(&from, &to, &renames).unwrap();
    let d = start.elapsed();
    println!(
        "migrate: {} rows: rebuild {:.3} s, floor {:.3} s, floor/rebuild {:.2}x (target >= 0.7x); diff of 200 tables {:.1} ms, {} steps (target < 1 s)",
        rows(),
        rm,
        fm,
        fm / rm,
        d.as_secs_f64() * 1000.0,
        plan.steps.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
