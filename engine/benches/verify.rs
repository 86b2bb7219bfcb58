#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Replica digests (issue 16 part 2): a full verify of a node holding 1M rows, that is
//! `digest::compute` with `Scope::All` over its tables, against the floor of one pass that
//! reads every row of those tables (`SELECT *`) and hashes each row's values with SHA-256,
//! the plainest reasonable code. Target: the verify at 0.5x or better of the floor's speed
//! (floor time / verify time >= 0.5).
//!
//! The database is built once (not timed): `item(id TEXT PRIMARY KEY, n INTEGER, x REAL,
//! v TEXT)` with time-ordered text ids and ~60-byte texts (70% of the rows), and
//! `line(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER, note TEXT)` (30%). Both sides read
//! through the same connection, so they find the same pages in the same caches.
//!
//! `cargo bench -p berth-engine --bench verify`; `BERTH_BENCH_ROWS=100000` for a quick check;
//! `BERTH_BENCH_PAIRS` (default 5) interleaved runs of both sides give the ratio that decides
//! the target.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_engine::digest::{self, Scope};
use berth_engine::table::Policy;
use berth_engine::table::TableInfo;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

#[path = "support/mod.rs"]
mod support;
use support::env;

const DEFAULT_ROWS: usize = 1_000_000;
const SCHEMA: &str = "
CREATE TABLE item(id TEXT PRIMARY KEY, n INTEGER, x REAL, v TEXT);
CREATE TABLE line(id INTEGER PRIMARY KEY, item TEXT, qty INTEGER, note TEXT);
";

fn rows() -> usize {
    env("BERTH_BENCH_ROWS", DEFAULT_ROWS).max(10)
}

fn pairs() -> usize {
    env("BERTH_BENCH_PAIRS", 5)
}

/// UUIDv7-like ids: a millisecond prefix that only grows, then pseudo-random bits.
fn id(i: usize, x: &mut u64) -> String {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    let ms = 0x0190_0000_0000u64 + (i as u64) / 8;
    format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        (*x >> 52) & 0xfff,
        0x8000 | ((*x >> 36) & 0x3fff),
        *x & 0xffff_ffff_ffff
    )
}

/// The tables as berth's catalog describes them.
pub(crate) fn tables() -> Vec<TableInfo> {
    let t = |name: &str, cols: &[&str]| TableInfo {
        name: name.into(),
        pk: vec!["id".into()],
        cols: cols.iter().map(|c| c.to_string()).collect(),
        policy: Policy::default(),
    };
    vec![
        t("item", &["id", "n", "x", "v"]),
        t("line", &["id", "item", "qty", "note"]),
    ]
}

/// Builds the node's database: `n` rows, 70% items and 30% lines.
pub(crate) fn build(path: &Path, n: usize) -> Connection {
    let mut conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    let items = n * 7 / 10;
    let tx = conn.transaction().unwrap();
    {
        let mut x = 0x2545_F491_4F6C_DD1D;
        let mut ids = Vec::with_capacity(items);
        let mut st = tx
            .prepare("INSERT INTO item(id, n, x, v) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for i in 0..items {
            let id = id(i, &mut x);
            let v = format!(
                "item {i}: pallet of {} boxes, dock {}, aisle {:04}",
                i % 97,
                i % 13,
                i % 7919
            );
            st.execute(params![id, i as i64, i as f64 * 0.25, v])
                .unwrap();
            ids.push(id);
        }
        let mut st = tx
            .prepare("INSERT INTO line(id, item, qty, note) VALUES (?1, ?2, ?3, ?4)")
            .unwrap();
        for i in 0..n - items {
            let note = format!("line {i} of order {}: handle with care", i / 4);
            st.execute(params![
                i as i64,
                ids[i % items.max(1)],
                (i % 50) as i64,
                note
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
    conn
}

/// The floor: one pass over every row of the tables, each row's values hashed with SHA-256.
pub(crate) fn floor(conn: &Connection) -> (u64, [u8; 32]) {
    let mut rows = 0u64;
    let mut acc = [0u8; 32];
    for t in ["item", "line"] {
        let mut st = conn.prepare(&format!("SELECT * FROM {t}")).unwrap();
        let cols = st.column_count();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let mut h = Sha256::new();
            for i in 0..cols {
                match r.get_ref(i).unwrap() {
                    ValueRef::Null => h.update([0u8]),
                    ValueRef::Integer(v) => h.update(v.to_be_bytes()),
                    ValueRef::Real(v) => h.update(v.to_bits().to_be_bytes()),
                    ValueRef::Text(b) | ValueRef::Blob(b) => h.update(b),
                }
            }
            for (a, b) in acc.iter_mut().zip(h.finalize().iter()) {
                *a ^= b;
            }
            rows += 1;
        }
    }
    (rows, acc)
}

/// The verify: berth's digests of every table, every row.
pub(crate) fn verify(conn: &Connection, tables: &[TableInfo]) -> u64 {
    let scoped: Vec<(&TableInfo, Scope)> = tables.iter().map(|t| (t, Scope::All)).collect();
    let d = digest::compute(conn, &scoped).unwrap();
    d.values().map(|t| t.rows).sum()
}

/// The digests as the module doc defines them, row by row through `digest::row_hash` and
/// `digest::bucket_of_values`: what `compute`'s fast path must agree with (tests/agreement.rs).
pub(crate) fn by_definition(conn: &Connection, tables: &[TableInfo]) -> digest::Digests {
    let mut out = digest::Digests::new();
    for t in tables {
        let mut d = digest::TableDigest::default();
        let mut st = conn.prepare(&format!("SELECT * FROM {}", t.name)).unwrap();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let values: Vec<ValueRef<'_>> =
                (0..t.cols.len()).map(|i| r.get_ref(i).unwrap()).collect();
            let key: Vec<ValueRef<'_>> =
                t.pk.iter()
                    .map(|k| values[t.cols.iter().position(|c| c == k).unwrap()])
                    .collect();
            d.add(
                digest::bucket_of_values(&key),
                &digest::row_hash(&t.name, &t.cols, &values),
            );
        }
        out.insert(t.name.clone(), d);
    }
    out
}

fn timed<T>(f: impl FnOnce() -> T) -> Duration {
    let t = Instant::now();
    black_box(f());
    t.elapsed()
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let mid = v.get(v.len() / 2).copied().unwrap_or(0.0);
    (
        mid,
        v.first().copied().unwrap_or(mid),
        v.last().copied().unwrap_or(mid),
    )
}

fn bench(c: &mut Criterion) {
    let n = rows();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let conn = build(&dir.path().join("node.db"), n);
    let tables = tables();
    println!("built {n} rows in {:.1} s", t.elapsed().as_secs_f64());
    assert_eq!(floor(&conn).0, n as u64);
    assert_eq!(verify(&conn, &tables), n as u64);
    // What is timed is right: the fast path gives the digests the definition gives.
    let scoped: Vec<(&TableInfo, Scope)> = tables.iter().map(|t| (t, Scope::All)).collect();
    assert_eq!(
        digest::compute(&conn, &scoped).unwrap(),
        by_definition(&conn, &tables)
    );

    let mut group = c.benchmark_group(format!("verify_{n}_rows"));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15))
        .throughput(criterion::Throughput::Elements(n as u64));
    group.bench_function("digest::compute, Scope::All", |b| {
        b.iter(|| verify(&conn, &tables));
    });
    group.bench_function("floor: SELECT * + sha256 per row", |b| {
        b.iter(|| floor(&conn));
    });
    group.finish();

    // Criterion runs one side after the other; on a shared machine the load can change in
    // between. The ratio that decides the target comes from interleaved pairs.
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for i in 0..pairs() {
        let (v, f) = if i % 2 == 0 {
            let v = timed(|| verify(&conn, &tables));
            (v, timed(|| floor(&conn)))
        } else {
            let f = timed(|| floor(&conn));
            (timed(|| verify(&conn, &tables)), f)
        };
        ours.push(v.as_secs_f64());
        base.push(f.as_secs_f64());
    }
    let ratios: Vec<f64> = ours.iter().zip(&base).map(|(v, f)| f / v).collect();
    let (v, _, _) = median(ours);
    let (f, _, _) = median(base);
    let (r, lo, hi) = median(ratios);
    let rate = |s: f64| n as f64 / s;
    println!(
        "{n} rows: verify {:.0} rows/s ({v:.3} s), floor {:.0} rows/s ({f:.3} s), medians of {} interleaved pairs",
        rate(v),
        rate(f),
        pairs()
    );
    println!(
        "verify target (issue 16) >= 0.5x of the floor: {} ({r:.2}x; {lo:.2}x to {hi:.2}x)",
        if r >= 0.5 { "met" } else { "NOT met" }
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
