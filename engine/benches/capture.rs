#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Capture cost (issue 3): 200k inserts, then 200k updates, each in one transaction with a
//! prepared statement, through berth's capture triggers, against the same writes on the same
//! schema without triggers, measured in the same run. Target: triggered throughput at least
//! 0.5x of raw.
//!
//! Both databases are opened with berth's settings (`store::open`: WAL, synchronous=FULL,
//! 64 MiB cache); only the triggered one gets `store::install` + `capture::install`. Every
//! run starts from a fresh database file (set-up not timed). Ids are time-ordered text
//! (UUIDv7-like), as berth recommends for tables nodes insert into.
//!
//! `cargo bench -p berth-engine --bench capture`; `BERTH_BENCH_ROWS=20000` for a quick check;
//! `BERTH_BENCH_PAIRS` (default 5) interleaved runs of both sides give the ratios that decide
//! the target; `BERTH_BENCH_SPLIT=1` adds diagnostic trigger variants that show where the cost goes.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use berth_engine::{capture, schema, store};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rusqlite::{Connection, params};

#[path = "support/mod.rs"]
mod support;
use support::env;

const DEFAULT_ROWS: usize = 200_000;
const SCHEMA: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, n INTEGER, v TEXT);";

fn rows() -> usize {
    env("BERTH_BENCH_ROWS", DEFAULT_ROWS).max(1)
}

/// UUIDv7-like ids: a millisecond prefix that only grows, then pseudo-random bits.
pub(crate) fn ids(n: usize) -> Vec<String> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ms = 0x0190_0000_0000u64 + (i as u64) / 8;
            format!(
                "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
                ms >> 16,
                ms & 0xffff,
                (x >> 52) & 0xfff,
                0x8000 | ((x >> 36) & 0x3fff),
                x & 0xffff_ffff_ffff
            )
        })
        .collect()
}

pub(crate) fn value(i: usize, round: u32) -> String {
    format!(
        "item {i} round {round}: pallet of {} boxes, dock {}",
        i % 97,
        i % 13
    )
}

/// Which triggers a run's database gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Triggers {
    /// None: the floor.
    Raw,
    /// berth's capture triggers, installed through the engine API.
    Berth,
    /// Diagnostic (`BERTH_BENCH_SPLIT=1`): hand-written triggers into the same `berth_log`,
    /// each adding one ingredient of berth's, to show where the cost goes.
    Split(Variant),
    /// Diagnostic (`BERTH_BENCH_ALT=a.sql,b.sql`): hand-written capture triggers read from a
    /// file (index into [`alt_sql`]), to measure a formulation before changing `capture.rs`.
    Alt(usize),
}

/// The trigger files named in `BERTH_BENCH_ALT` (comma-separated), read once.
fn alt_sql() -> &'static [(String, String)] {
    static ALT: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    ALT.get_or_init(|| {
        std::env::var("BERTH_BENCH_ALT")
            .unwrap_or_default()
            .split(',')
            .filter(|f| !f.is_empty())
            .map(|f| (f.to_owned(), std::fs::read_to_string(f).unwrap()))
            .collect()
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Variant {
    /// Logs table, key and op only: the cost of a trigger plus a second row insert.
    KeyOnly,
    /// Logs whole rows with plain `json_object` (no blob tagging, no guard).
    PlainJson,
    /// berth's triggers before issue 15 (key only on insert, old row on update; no
    /// pre-image probe, no key-change split, reals through `json_object`): the "before"
    /// of the capture figures, measured in every run.
    Previous,
}

impl Variant {
    const ALL: [Variant; 2] = [Variant::KeyOnly, Variant::PlainJson];

    fn sql(self) -> String {
        let when = "";
        if self == Variant::Previous {
            let w = |c: &str| {
                format!(
                    "CASE WHEN typeof({c}) = 'blob' THEN json_array('b', hex({c})) ELSE {c} END"
                )
            };
            return format!(
                "CREATE TRIGGER d_ins AFTER INSERT ON item BEGIN
                   INSERT INTO berth_log(tbl, pk, op) VALUES ('item', json_array({}), 'I'); END;
                 CREATE TRIGGER d_upd AFTER UPDATE ON item BEGIN
                   INSERT INTO berth_log(tbl, pk, op, old) VALUES ('item', json_array({}), 'U',
                     json_object('id', {}, 'n', {}, 'v', {})); END;",
                w("NEW.id"),
                w("NEW.id"),
                w("OLD.id"),
                w("OLD.n"),
                w("OLD.v")
            );
        }
        let (ins, upd) = match self {
            Variant::KeyOnly => (
                "'item', NEW.id, 'I', NULL, NULL".to_owned(),
                "'item', NEW.id, 'U', NULL, NULL".to_owned(),
            ),
            Variant::Previous => unreachable!("written above"),
            Variant::PlainJson => {
                let row = |p: &str| format!("json_object('id', {p}.id, 'n', {p}.n, 'v', {p}.v)");
                (
                    format!("'item', json_array(NEW.id), 'I', NULL, {}", row("NEW")),
                    format!(
                        "'item', json_array(OLD.id), 'U', {}, {}",
                        row("OLD"),
                        row("NEW")
                    ),
                )
            }
        };
        format!(
            "CREATE TRIGGER d_ins AFTER INSERT ON item {when} BEGIN
               INSERT INTO berth_log(tbl, pk, op, old, new) VALUES ({ins}); END;
             CREATE TRIGGER d_upd AFTER UPDATE ON item {when} BEGIN
               INSERT INTO berth_log(tbl, pk, op, old, new) VALUES ({upd}); END;"
        )
    }
}

fn open(path: &Path, triggers: Triggers) -> Connection {
    let conn = store::open(path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    match triggers {
        Triggers::Raw => {}
        Triggers::Berth => {
            store::install(&conn).unwrap();
            capture::install(&conn, &schema::tables(&conn).unwrap()).unwrap();
        }
        Triggers::Split(v) => {
            store::install(&conn).unwrap();
            conn.execute_batch(&v.sql()).unwrap();
        }
        Triggers::Alt(i) => {
            store::install(&conn).unwrap();
            conn.execute_batch(&alt_sql()[i].1).unwrap();
        }
    }
    conn
}

#[derive(Clone, Copy)]
pub(crate) struct Split {
    insert: Duration,
    update: Duration,
}

/// A point in time: the wall clock, or with `BERTH_BENCH_CPU=1` (diagnostics on a shared
/// machine) the CPU time this thread has run (Linux `schedstat`), which other processes'
/// load does not stretch.
#[derive(Clone, Copy)]
struct Clock(Instant, Duration);

impl Clock {
    fn cpu() -> Option<Duration> {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !*ON.get_or_init(|| std::env::var_os("BERTH_BENCH_CPU").is_some()) {
            return None;
        }
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        Some(Duration::from_nanos(s.split(' ').next()?.parse().ok()?))
    }
    fn now() -> Self {
        Clock(Instant::now(), Self::cpu().unwrap_or_default())
    }
    fn elapsed(&self) -> Duration {
        match Self::cpu() {
            Some(c) => c - self.1,
            None => self.0.elapsed(),
        }
    }
}

pub(crate) fn run(ids: &[String], vals: &[(String, String)], triggers: Triggers) -> Split {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = open(&dir.path().join("data.db"), triggers);

    let t = Clock::now();
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx
            .prepare("INSERT INTO item(id, n, v) VALUES (?1, ?2, ?3)")
            .unwrap();
        for (i, (id, (v, _))) in ids.iter().zip(vals).enumerate() {
            st.execute(params![id, i as i64, v]).unwrap();
        }
    }
    tx.commit().unwrap();
    let insert = t.elapsed();

    let t = Clock::now();
    let tx = conn.transaction().unwrap();
    {
        let mut st = tx
            .prepare("UPDATE item SET n = ?2, v = ?3 WHERE id = ?1")
            .unwrap();
        for (i, (id, (_, v))) in ids.iter().zip(vals).enumerate() {
            st.execute(params![id, (i as i64) * 2 + 1, v]).unwrap();
        }
    }
    tx.commit().unwrap();
    let update = t.elapsed();

    // Diagnostic files may journal less (an empty one is the raw floor).
    if !matches!(triggers, Triggers::Raw | Triggers::Alt(_)) {
        let logged: i64 = conn
            .query_row("SELECT COUNT(*) FROM berth_log", [], |r| r.get(0))
            .unwrap();
        assert_eq!(logged as usize, 2 * ids.len(), "every write is journaled");
    }
    black_box(&conn);
    Split { insert, update }
}

type Phase = (&'static str, fn(&Split) -> Duration);
const PHASES: [Phase; 3] = [
    ("insert", |s| s.insert),
    ("update", |s| s.update),
    ("insert+update", |s| s.insert + s.update),
];

fn pairs() -> usize {
    env("BERTH_BENCH_PAIRS", 5)
}

fn median(v: &[Split], f: impl Fn(&Split) -> Duration) -> Duration {
    let mut d: Vec<Duration> = v.iter().map(f).collect();
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

/// `BERTH_BENCH_ALT`: interleaved rounds of raw, berth, previous and each file's triggers
/// (the order rotates each round); medians of the ratios to raw of the same round.
fn alternatives(ids: &[String], vals: &[(String, String)]) {
    if std::env::var_os("BERTH_BENCH_ALT_ONCE").is_some() {
        // One run of each file's triggers and nothing else (for instruction counts under
        // valgrind; an empty file is the raw floor).
        for i in 0..alt_sql().len() {
            run(ids, vals, Triggers::Alt(i));
        }
        return;
    }
    let mut sides = vec![
        ("berth".to_owned(), Triggers::Berth),
        ("previous".to_owned(), Triggers::Split(Variant::Previous)),
    ];
    for (i, (f, _)) in alt_sql().iter().enumerate() {
        sides.push((f.clone(), Triggers::Alt(i)));
    }
    let mut ratios: Vec<Vec<[f64; 3]>> = vec![Vec::new(); sides.len()];
    for round in 0..pairs() {
        let raw = run(ids, vals, Triggers::Raw);
        for k in 0..sides.len() {
            let j = (k + round) % sides.len();
            let s = run(ids, vals, sides[j].1);
            let r = PHASES.map(|(_, f)| f(&raw).as_secs_f64() / f(&s).as_secs_f64());
            ratios[j].push(r);
        }
    }
    for ((name, _), rs) in sides.iter().zip(&ratios) {
        let mid: Vec<String> = (0..3)
            .map(|p| {
                let mut v: Vec<f64> = rs.iter().map(|r| r[p]).collect();
                v.sort_by(f64::total_cmp);
                format!(
                    "{} {:.3}x ({:.2}-{:.2})",
                    PHASES[p].0,
                    v[v.len() / 2],
                    v[0],
                    v[v.len() - 1]
                )
            })
            .collect();
        println!("alt {name:>40}: {}", mid.join(", "));
    }
}

fn bench(c: &mut Criterion) {
    let n = rows();
    let ids = ids(n);
    let vals: Vec<(String, String)> = (0..n).map(|i| (value(i, 0), value(i, 1))).collect();
    if std::env::var_os("BERTH_BENCH_ALT").is_some() {
        alternatives(&ids, &vals);
        return;
    }
    let mut trig: Vec<Split> = Vec::new();
    let mut raw: Vec<Split> = Vec::new();

    let mut group = c.benchmark_group(format!("capture_{n}_rows"));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(criterion::Throughput::Elements(2 * n as u64));
    group.bench_function("triggers: insert+update", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let s = run(&ids, &vals, Triggers::Berth);
                    trig.push(s);
                    s.insert + s.update
                })
                .sum()
        });
    });
    group.bench_function("raw: insert+update", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let s = run(&ids, &vals, Triggers::Raw);
                    raw.push(s);
                    s.insert + s.update
                })
                .sum()
        });
    });
    group.finish();

    if trig.is_empty() || raw.is_empty() {
        println!("ratio: n/a (a filter skipped one side)");
        return;
    }
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "{n} rows, medians of {} triggered / {} raw runs",
        trig.len(),
        raw.len()
    );
    for (what, f) in PHASES {
        let (t, r) = (median(&trig, f), median(&raw, f));
        let per = if what == "insert+update" { 2.0 } else { 1.0 };
        println!(
            "{what:>13}: triggers {:>7.0} rows/s, raw {:>7.0} rows/s, ratio of medians {:.2}x",
            per * rate(t),
            per * rate(r),
            r.as_secs_f64() / t.as_secs_f64()
        );
    }
    // Criterion runs one side after the other; on a shared machine the load can change in
    // between. The ratios that decide the target come from interleaved pairs.
    let previous = Triggers::Split(Variant::Previous);
    let runs: Vec<(Split, Split, Split)> = (0..pairs())
        .map(|i| {
            if i % 2 == 0 {
                let t = run(&ids, &vals, Triggers::Berth);
                let p = run(&ids, &vals, previous);
                (t, run(&ids, &vals, Triggers::Raw), p)
            } else {
                let r = run(&ids, &vals, Triggers::Raw);
                let p = run(&ids, &vals, previous);
                (run(&ids, &vals, Triggers::Berth), r, p)
            }
        })
        .collect();
    let pairs: Vec<(Split, Split)> = runs.iter().map(|(t, r, _)| (*t, *r)).collect();
    for (what, f) in PHASES {
        let mut before: Vec<f64> = runs
            .iter()
            .map(|(_, raw, p)| f(raw).as_secs_f64() / f(p).as_secs_f64())
            .collect();
        before.sort_by(f64::total_cmp);
        let mut now_vs: Vec<f64> = runs
            .iter()
            .map(|(t, _, p)| f(p).as_secs_f64() / f(t).as_secs_f64())
            .collect();
        now_vs.sort_by(f64::total_cmp);
        if let (Some(b), Some(n)) = (before.get(before.len() / 2), now_vs.get(now_vs.len() / 2)) {
            println!(
                "{what:>13}: before issue 15 (previous triggers) {b:.2}x of raw; now {n:.2}x of the previous speed"
            );
        }
    }
    let mut worst = f64::INFINITY;
    for (what, f) in PHASES {
        let mut r: Vec<f64> = pairs
            .iter()
            .map(|(t, raw)| f(raw).as_secs_f64() / f(t).as_secs_f64())
            .collect();
        r.sort_by(f64::total_cmp);
        let Some(&mid) = r.get(r.len() / 2) else {
            continue;
        };
        worst = worst.min(mid);
        println!(
            "{what:>13}: ratio triggers/raw = {mid:.2}x (median of {} interleaved pairs, {:.2}x to {:.2}x)",
            r.len(),
            r.first().copied().unwrap_or(mid),
            r.last().copied().unwrap_or(mid),
        );
    }
    let mut both: Vec<f64> = pairs
        .iter()
        .map(|(t, raw)| {
            (raw.insert + raw.update).as_secs_f64() / (t.insert + t.update).as_secs_f64()
        })
        .collect();
    both.sort_by(f64::total_cmp);
    let mid = both.get(both.len() / 2).copied().unwrap_or(0.0);
    println!(
        "capture target (issue 15) inserts+updates >= 0.40x of raw: {} ({mid:.2}x; lowest phase {worst:.2}x)",
        if mid >= 0.4 { "met" } else { "NOT met" }
    );

    if std::env::var_os("BERTH_BENCH_SPLIT").is_some() {
        // Where the trigger cost goes: 3 runs of each diagnostic variant, medians.
        for v in Variant::ALL {
            let runs: Vec<Split> = (0..3)
                .map(|_| run(&ids, &vals, Triggers::Split(v)))
                .collect();
            let (i, u) = (median(&runs, |s| s.insert), median(&runs, |s| s.update));
            println!(
                "split {v:?}: insert {:>7.0} rows/s ({:.2}x raw), update {:>7.0} rows/s ({:.2}x raw)",
                rate(i),
                median(&raw, |s| s.insert).as_secs_f64() / i.as_secs_f64(),
                rate(u),
                median(&raw, |s| s.update).as_secs_f64() / u.as_secs_f64(),
            );
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
