#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Merge cost (issue 3): central docks one node bundle of 500k row changes (400k inserts and
//! 100k updates of rows central already has): intake, verify, unpack, collision checks, apply
//! and journal, all through `dock`, exactly as `berth dock` runs it. The floor, measured in the
//! same run: the same 400k inserts and 100k updates with prepared statements in one
//! transaction, (a) into a copy of central's database with capture off and (b) into a plain
//! database with the same schema and the same seed rows. Target: at least 0.3x of raw.
//!
//! The scenario is built through the public API, as a user would: `init_central` with a schema
//! and seed data, `init_node`, enrollment request, `add_node`, the node's first dock (applies
//! the extract), plain SQL writes at the node, the node's dock (writes the bundle). Each timed
//! run starts from a fresh copy of central's folder and of the bundle (copying is not timed).
//!
//! `cargo bench -p berth-engine --bench merge`; `BERTH_BENCH_ROWS=50000` for a quick check;
//! `BERTH_BENCH_PAIRS` (default 3) interleaved runs give the ratio that decides the target;
//! `BERTH_BENCH_SPLIT=1` adds a diagnostic: the SQL a merge cannot avoid, without the rest.

use berth_engine::dock::Disposition;
use std::collections::BTreeMap;
use std::fs;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Seek};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_bundle::{Bundle, Limits, PublicKey, TrustedKey, TrustedKeys};
use berth_engine::change::Change;
use berth_engine::dock::{CHANGES_ENTRY, DockOptions, dock};
use berth_engine::site::{CentralInit, Site};
use berth_engine::{capture, enroll, store};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rusqlite::{Connection, params};

#[path = "support/mod.rs"]
mod support;
use support::{copy_dir, env};

const DEFAULT_ROWS: usize = 500_000;
const SCHEMA: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, n INTEGER, v TEXT);\n";
const INSERT: &str = "INSERT INTO item(id, n, v) VALUES (?1, ?2, ?3)";
const UPDATE: &str = "UPDATE item SET n = ?2, v = ?3 WHERE id = ?1";

/// The changes: `updates` rows seeded at central (ids 0..updates) that the node updates,
/// and `inserts` new rows (ids after them). Ids are time-ordered text.
pub(crate) struct Work {
    inserts: Vec<(String, i64, String)>,
    updates: Vec<(String, i64, String)>,
}

fn id(k: usize) -> String {
    format!("{k:016x}")
}

fn work() -> Work {
    work_of(env("BERTH_BENCH_ROWS", DEFAULT_ROWS))
}

/// `total` changes (at least 5): a fifth updates, the rest inserts.
pub(crate) fn work_of(total: usize) -> Work {
    let total = total.max(5);
    let updates = total / 5;
    let inserts = total - updates;
    let val = |k: usize, round: u32| {
        format!(
            "item {k} round {round}: pallet of {} boxes, dock {}",
            k % 97,
            k % 13
        )
    };
    Work {
        updates: (0..updates)
            .map(|k| (id(k), (k as i64) * 2 + 1, val(k, 1)))
            .collect(),
        inserts: (updates..updates + inserts)
            .map(|k| (id(k), k as i64, val(k, 0)))
            .collect(),
    }
}

fn seed_sql(rows: usize) -> String {
    format!(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {rows})
         INSERT INTO item(id, n, v) SELECT printf('%016x', i), i, 'seed row ' || i FROM c;\n"
    )
}

impl Work {
    /// How many changes the node makes.
    pub(crate) fn changes(&self) -> u64 {
        (self.inserts.len() + self.updates.len()) as u64
    }
}

fn write_changes(conn: &mut Connection, w: &Work) {
    let tx = conn.transaction().unwrap();
    {
        let mut ins = tx.prepare(INSERT).unwrap();
        for (id, n, v) in &w.inserts {
            ins.execute(params![id, n, v]).unwrap();
        }
        let mut upd = tx.prepare(UPDATE).unwrap();
        for (id, n, v) in &w.updates {
            assert_eq!(upd.execute(params![id, n, v]).unwrap(), 1);
        }
    }
    tx.commit().unwrap();
}

/// Pristine state: central's folder (before the merge), the node's bundle, the node's key.
pub(crate) struct Scenario {
    central: PathBuf,
    bundle: PathBuf,
    node_key: PublicKey,
    _root: tempfile::TempDir,
}

pub(crate) fn scenario(w: &Work) -> Scenario {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (schema, data, via) = (r.join("schema.sql"), r.join("data.sql"), r.join("via"));
    fs::write(&schema, SCHEMA).unwrap();
    fs::write(&data, seed_sql(w.updates.len())).unwrap();
    fs::create_dir_all(&via).unwrap();
    let hq_dir = r.join("hq");
    let (mut hq, _warnings) = Site::init_central(&CentralInit {
        dir: &hq_dir,
        name: Some("hq"),
        schema: &schema,
        docking: None,
        data: Some(&data),
    })
    .unwrap();
    let mut node = Site::init_node(&r.join("alice"), "alice").unwrap();
    let request = enroll::write_request(&node, &via).unwrap();
    enroll::add_node(&mut hq, "alice", &request, &BTreeMap::new(), &via).unwrap();
    fs::remove_file(&request).unwrap();
    let first = DockOptions {
        upload: false,
        download: true,
        fail_after: None,
        ..DockOptions::default()
    };
    let report = dock(&mut node, &via, &first).unwrap();
    assert_eq!(
        report.count(Disposition::Applied),
        1,
        "extract applied: {report:?}"
    );

    let t = Instant::now();
    write_changes(&mut node.conn, w);
    eprintln!(
        "node wrote {} inserts + {} updates through capture in {:.1}s",
        w.inserts.len(),
        w.updates.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let up = DockOptions {
        upload: true,
        download: false,
        fail_after: None,
        ..DockOptions::default()
    };
    let report = dock(&mut node, &via, &up).unwrap();
    let [written] = report.written.as_slice() else {
        panic!("the node should write one bundle: {report:?}");
    };
    let bundle = r.join(written.file_name().unwrap());
    fs::rename(written, &bundle).unwrap();
    eprintln!(
        "node bundle {} ({:.1} MB) written in {:.1}s",
        bundle.file_name().unwrap().to_string_lossy(),
        fs::metadata(&bundle).unwrap().len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let node_key = node.public_key();
    drop(node);

    hq.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(hq);
    let central = r.join("hq-pristine");
    copy_dir(&hq_dir, &central);
    Scenario {
        central,
        bundle,
        node_key,
        _root: root,
    }
}

/// One merge: fresh copies (not timed), then central's `dock` (timed).
pub(crate) fn merge_once(s: &Scenario, expected: u64) -> Duration {
    let work = tempfile::tempdir().unwrap();
    let (dir, via) = (work.path().join("hq"), work.path().join("via"));
    copy_dir(&s.central, &dir);
    fs::create_dir_all(&via).unwrap();
    fs::copy(&s.bundle, via.join(s.bundle.file_name().unwrap())).unwrap();
    let mut hq = Site::open(&dir).unwrap();
    let opts = DockOptions {
        upload: false,
        download: true,
        fail_after: None,
        ..DockOptions::default()
    };
    let t = Instant::now();
    let report = dock(&mut hq, &via, &opts).unwrap();
    let d = t.elapsed();
    let [incoming] = report.incoming.as_slice() else {
        panic!("one incoming bundle expected: {report:?}");
    };
    assert_eq!(incoming.outcome, Disposition::Applied, "{incoming:?}");
    assert_eq!(incoming.stats.applied, expected, "{incoming:?}");
    assert_eq!(incoming.stats.conflicts, 0, "{incoming:?}");
    d
}

/// The floor: the same writes, prepared, one transaction. `central_copy`: into a copy of
/// central's database with capture off; otherwise into a plain database with the same schema
/// and seed rows.
fn raw_once(s: &Scenario, w: &Work, central_copy: bool) -> Duration {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("data.db");
    let mut conn = if central_copy {
        fs::copy(s.central.join("data.db"), &path).unwrap();
        store::open(&path).unwrap()
    } else {
        let c = store::open(&path).unwrap();
        c.execute_batch(&(SCHEMA.to_owned() + &seed_sql(w.updates.len())))
            .unwrap();
        c
    };
    let t = Instant::now();
    let tx = conn.transaction().unwrap();
    if central_copy {
        capture::set_capture(&tx, false).unwrap();
    }
    {
        let mut ins = tx.prepare_cached(INSERT).unwrap();
        for (id, n, v) in &w.inserts {
            ins.execute(params![id, n, v]).unwrap();
        }
        let mut upd = tx.prepare_cached(UPDATE).unwrap();
        for (id, n, v) in &w.updates {
            upd.execute(params![id, n, v]).unwrap();
        }
    }
    if central_copy {
        capture::set_capture(&tx, true).unwrap();
    }
    tx.commit().unwrap();
    t.elapsed()
}

/// Diagnostic (`BERTH_BENCH_SPLIT=1`): the SQL a merge cannot avoid, with everything else
/// precomputed: per change, read the current row by key, write the row, journal it (JSON texts
/// prepared before the clock starts), in one transaction on a copy of central with capture off.
fn shaped_once(s: &Scenario, w: &Work) -> Duration {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("data.db");
    fs::copy(s.central.join("data.db"), &path).unwrap();
    let mut conn = store::open(&path).unwrap();
    let row = |id: &str, n: i64, v: &str| serde_json::json!({"id": id, "n": n, "v": v}).to_string();
    let key = |id: &str| serde_json::json!([id]).to_string();
    let ins: Vec<(String, String)> = w
        .inserts
        .iter()
        .map(|(id, n, v)| (key(id), row(id, *n, v)))
        .collect();
    let upd: Vec<(String, String, String)> = w
        .updates
        .iter()
        .enumerate()
        .map(|(k, (id, n, v))| {
            (
                key(id),
                row(id, k as i64, &format!("seed row {k}")),
                row(id, *n, v),
            )
        })
        .collect();
    let t = Instant::now();
    let tx = conn.transaction().unwrap();
    capture::set_capture(&tx, false).unwrap();
    {
        let mut read = tx
            .prepare_cached("SELECT id, n, v FROM item WHERE id = ?1")
            .unwrap();
        let mut ins_st = tx.prepare_cached(INSERT).unwrap();
        let mut upd_st = tx.prepare_cached(UPDATE).unwrap();
        let mut journal = tx
            .prepare_cached(
                "INSERT INTO berth_log(tbl, pk, op, old, new, origin, origin_pos, clock)
                 VALUES ('item', ?1, ?2, ?3, ?4, 'alice', ?5, 0)",
            )
            .unwrap();
        let mut pos = 0i64;
        let mut current = |id: &str| {
            read.query_row(params![id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .ok()
        };
        for ((id, n, v), (k, new)) in w.inserts.iter().zip(&ins) {
            assert!(current(id).is_none());
            ins_st.execute(params![id, n, v]).unwrap();
            pos += 1;
            journal
                .execute(params![k, "I", None::<String>, new, pos])
                .unwrap();
        }
        for ((id, n, v), (k, old, new)) in w.updates.iter().zip(&upd) {
            black_box(current(id));
            upd_st.execute(params![id, n, v]).unwrap();
            pos += 1;
            journal.execute(params![k, "U", old, new, pos]).unwrap();
        }
    }
    capture::set_capture(&tx, true).unwrap();
    tx.commit().unwrap();
    t.elapsed()
}

/// Only the bundle part of a merge: open, verify the signature, unpack the changes entry to a
/// temporary file while checking its hash; then, timed apart, parse every change line.
pub(crate) fn verify_unpack_parse_once(s: &Scenario, expected: u64) -> (Duration, Duration) {
    let spool = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let file = fs::File::open(&s.bundle).unwrap();
    let mut trust = TrustedKeys::new();
    trust.add(TrustedKey {
        public: s.node_key.clone(),
        site: "alice".into(),
        kinds: None,
    });
    let mut b = Bundle::open(file, "bench", &Limits::default())
        .unwrap()
        .verify(&trust)
        .unwrap();
    let mut out = tempfile::tempfile_in(spool.path()).unwrap();
    b.copy_entry(CHANGES_ENTRY, &mut out).unwrap();
    let unpack = t.elapsed();
    out.rewind().unwrap();
    let t = Instant::now();
    let mut parsed = 0u64;
    for line in BufReader::new(out).lines() {
        let ch: Change = serde_json::from_str(&line.unwrap()).unwrap();
        black_box(&ch);
        parsed += 1;
    }
    assert_eq!(parsed, expected);
    (unpack, t.elapsed())
}

fn median(v: &[Duration]) -> Duration {
    let mut d = v.to_vec();
    d.sort();
    d.get(d.len() / 2).copied().unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let w = work();
    let n = w.changes();
    let t = Instant::now();
    let s = scenario(&w);
    eprintln!("scenario ready in {:.1}s", t.elapsed().as_secs_f64());

    let (mut merges, mut raw_central, mut raw_plain) = (Vec::new(), Vec::new(), Vec::new());
    let mut group = c.benchmark_group(format!("merge_{n}_changes"));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(criterion::Throughput::Elements(n));
    group.bench_function("central dock (merge)", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let d = merge_once(&s, n);
                    merges.push(d);
                    d
                })
                .sum()
        });
    });
    group.bench_function("raw: central copy, capture off", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let d = raw_once(&s, &w, true);
                    raw_central.push(d);
                    d
                })
                .sum()
        });
    });
    group.bench_function("raw: plain db", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let d = raw_once(&s, &w, false);
                    raw_plain.push(d);
                    d
                })
                .sum()
        });
    });
    group.finish();

    if merges.is_empty() || raw_central.is_empty() || raw_plain.is_empty() {
        println!("ratio: n/a (a filter skipped a side)");
        return;
    }
    let split: Vec<(Duration, Duration)> =
        (0..3).map(|_| verify_unpack_parse_once(&s, n)).collect();
    let verify: Vec<Duration> = split.iter().map(|p| p.0).collect();
    let parse: Vec<Duration> = split.iter().map(|p| p.1).collect();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let (m, rc, rp, v, ps) = (
        median(&merges),
        median(&raw_central),
        median(&raw_plain),
        median(&verify),
        median(&parse),
    );
    // The stricter floor: the faster raw variant.
    let floor = rc.min(rp);
    println!(
        "{n} changes ({} inserts, {} updates); medians of {} merges, {} + {} raw runs",
        w.inserts.len(),
        w.updates.len(),
        merges.len(),
        raw_central.len(),
        raw_plain.len()
    );
    println!(
        "merge (central dock):          {:.3} s, {:>7.0} changes/s",
        m.as_secs_f64(),
        rate(m)
    );
    println!(
        "  of which bundle verify+unpack (measured alone): {:.3} s ({:.0}%)",
        v.as_secs_f64(),
        100.0 * v.as_secs_f64() / m.as_secs_f64()
    );
    println!(
        "  of which JSON parse of the changes (measured alone): {:.3} s ({:.0}%)",
        ps.as_secs_f64(),
        100.0 * ps.as_secs_f64() / m.as_secs_f64()
    );
    println!(
        "  rest (intake copy, collision checks, apply, journal, bookkeeping): {:.3} s ({:.0}%)",
        (m.saturating_sub(v + ps)).as_secs_f64(),
        100.0 * (m.saturating_sub(v + ps)).as_secs_f64() / m.as_secs_f64()
    );
    println!(
        "raw, central copy, capture off: {:.3} s, {:>7.0} rows/s",
        rc.as_secs_f64(),
        rate(rc)
    );
    println!(
        "raw, plain db:                  {:.3} s, {:>7.0} rows/s",
        rp.as_secs_f64(),
        rate(rp)
    );
    if std::env::var_os("BERTH_BENCH_SPLIT").is_some() {
        let runs: Vec<Duration> = (0..3).map(|_| shaped_once(&s, &w)).collect();
        let sh = median(&runs);
        println!(
            "split: read + write + journal per change, all else precomputed: {:.3} s, {:>7.0} changes/s ({:.2}x of the faster raw)",
            sh.as_secs_f64(),
            rate(sh),
            floor.as_secs_f64() / sh.as_secs_f64()
        );
    }
    println!(
        "ratio of the medians above: merge / raw plain = {:.2}x, merge / raw central copy = {:.2}x",
        rp.as_secs_f64() / m.as_secs_f64(),
        rc.as_secs_f64() / m.as_secs_f64()
    );
    // Criterion runs one side after the other; on a shared machine the load can change in
    // between. The ratio that decides the target comes from interleaved runs.
    let mut vs_plain = Vec::new();
    let mut vs_central = Vec::new();
    for i in 0..pairs() {
        let (m, rp, rc) = if i % 2 == 0 {
            let m = merge_once(&s, n);
            let rp = raw_once(&s, &w, false);
            (m, rp, raw_once(&s, &w, true))
        } else {
            let rc = raw_once(&s, &w, true);
            let rp = raw_once(&s, &w, false);
            (merge_once(&s, n), rp, rc)
        };
        vs_plain.push(rp.as_secs_f64() / m.as_secs_f64());
        vs_central.push(rc.as_secs_f64() / m.as_secs_f64());
    }
    vs_plain.sort_by(f64::total_cmp);
    vs_central.sort_by(f64::total_cmp);
    let (Some(&p), Some(&c)) = (
        vs_plain.get(vs_plain.len() / 2),
        vs_central.get(vs_central.len() / 2),
    ) else {
        println!("ratio merge / raw: n/a (BERTH_BENCH_PAIRS=0)");
        return;
    };
    println!(
        "ratio merge / raw plain db = {p:.2}x ({:.2}x to {:.2}x); merge / raw central copy = {c:.2}x ({:.2}x to {:.2}x); medians of {} interleaved runs",
        vs_plain.first().copied().unwrap_or(p),
        vs_plain.last().copied().unwrap_or(p),
        vs_central.first().copied().unwrap_or(c),
        vs_central.last().copied().unwrap_or(c),
        vs_plain.len()
    );
    println!(
        "merge target >= 0.30x of raw (plain db, the stricter floor): {}",
        if p >= 0.3 { "met" } else { "NOT met" }
    );
}

fn pairs() -> usize {
    env("BERTH_BENCH_PAIRS", 3)
}

criterion_group!(benches, bench);
criterion_main!(benches);
