#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Routing and extract cost (issue 4), with the sales sample at scale.
//!
//! **Routing.** Central with the sales schema and docking model, 1,000 employees, 5,000
//! accounts, 20,000 opportunities with their assignments, 10,000 quotes, 40,000 activities;
//! N employees and N nodes enrolled through the public API (node `nI` stands for employee
//! `EI`), so every row has a holder at both sizes. Then
//! `BERTH_BENCH_CHANGES` (default 100,000) changes at central through the capture triggers:
//! every tenth reassigns an opportunity to another employee (visibility changes: it leaves one
//! laptop and arrives on another), the rest update opportunities, quotes and activities. The
//! timed part is one routing pass over all of them for every node, in one transaction, as
//! `dock` runs it (`partial::route`). Reported: time per change with the set-form rules at
//! 100 and at 1,000 nodes (target: flat), and set form against the seed's per-pair
//! evaluation on the same data (target: at least 20x). The per-pair evaluation is too slow
//! to run over all the changes at 1,000 nodes, so that comparison uses the first
//! `BERTH_BENCH_PAIR_CHANGES` (default 2,000) changes, both sides on the same state.
//!
//! **Extract.** A central of about 1M rows; a manager node sees 10% of it (its positions
//! cover a tenth of the accounts, and it is assigned to their opportunities). Timed:
//! `enroll::add_node` for it, end to end (verifying the request, evaluating what it sees,
//! writing and signing the extract bundle). The floor: the same rows (and the enterprise
//! tables) copied into an empty database with the same schema with one `INSERT .. SELECT`
//! per table, the row lists prepared before the clock starts. Target: at least 0.5x. Also
//! reported, a second reference: the extract one would write by hand for this model without
//! berth (the visible ids selected in SQL, then one `INSERT .. SELECT` per table), checked to
//! copy exactly the rows our extract records.
//!
//! **Batches** (issue 20): with `BERTH_BENCH_BATCHES=1`, the dock's pass committed in
//! batches against one pass in one transaction, throughput ratio ([`bench_batches`]).
//!
//! `cargo bench -p berth-engine --bench routing`. `BERTH_BENCH_EXTRACT_ROWS=100000` for a
//! quick check of the extract; `BERTH_BENCH_SKIP_ROUTING=1` / `BERTH_BENCH_SKIP_EXTRACT=1`
//! run one half; `BERTH_BENCH_NODES=100,1000` the two node counts; `BERTH_BENCH_PAIRS` (default 3) interleaved runs give the
//! ratios that decide the targets.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_engine::route::router::{self, Evaluation, Plan};
use berth_engine::site::{CentralInit, Site};
use berth_engine::{enroll, store};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use rusqlite::{Connection, params};

#[path = "support/mod.rs"]
mod support;
use support::{copy_dir, env};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sales");

/// The routing scenario's data size: 5,000 accounts, 20,000 opportunities, 10,000 quotes,
/// 40,000 activities, whatever the number of employees (`tests/agreement.rs` uses a smaller
/// unit).
const ROWS_UNIT: usize = 1000;

/// Rows of the routing scenario: `emps` employees, each in a position of their own;
/// `5 * unit` accounts, `20 * unit` opportunities, `10 * unit` quotes, `40 * unit` activities.
fn routing_data(emps: usize, unit: usize) -> String {
    let accounts = 5 * unit;
    let optys = 20 * unit;
    let quotes = 10 * unit;
    let acts = 40 * unit;
    format!(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {emps})
         INSERT INTO employee(id, name) SELECT printf('E%d', i), printf('Employee %d', i) FROM c;
         INSERT INTO position(id, name) SELECT 'P' || substr(id, 2), 'Position of ' || id FROM employee;
         INSERT INTO emp_postn SELECT id, 'P' || substr(id, 2) FROM employee;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < 100)
         INSERT INTO product(id, name, price) SELECT printf('PR%d', i), printf('Product %d', i), i * 10.0 FROM c;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {accounts})
         INSERT INTO account(id, name, region) SELECT printf('A%d', i), printf('Account %d', i), 'north' FROM c;
         INSERT INTO acct_postn SELECT id, printf('P%d', CAST(substr(id, 2) AS INTEGER) % {emps}) FROM account;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {optys})
         INSERT INTO opty(id, account_id, name, amount) SELECT printf('O%d', i), printf('A%d', i % {accounts}), printf('Deal %d', i), i FROM c;
         INSERT INTO opty_emp SELECT id, printf('E%d', CAST(substr(id, 2) AS INTEGER) % {emps}), 'owner' FROM opty;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {quotes})
         INSERT INTO quote(id, opty_id, owner_emp_id, name, total) SELECT printf('Q%d', i), printf('O%d', 2 * i), printf('E%d', (7 * i) % {emps}), printf('Quote %d', i), i FROM c;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {acts})
         INSERT INTO activity(id, account_id, opty_id, quote_id, kind, note)
           SELECT printf('T%d', i), printf('A%d', (i % {optys}) % {accounts}), printf('O%d', i % {optys}),
                  CASE WHEN i % 4 = 0 THEN printf('Q%d', (i / 4) % {quotes}) END, 'call', 'note' FROM c;
         "
    )
}

/// Central of the sales sample (schema and docking model) with `data`, in `root/hq`.
/// Returns it, its folder and an exchange folder.
fn sample_central(root: &Path, data: &str) -> (Site, PathBuf, PathBuf) {
    fs::create_dir_all(root).unwrap();
    let (schema, data_path, via) = (
        root.join("schema.sql"),
        root.join("data.sql"),
        root.join("via"),
    );
    fs::copy(Path::new(SAMPLE).join("schema.sql"), &schema).unwrap();
    fs::write(&data_path, data).unwrap();
    fs::create_dir_all(&via).unwrap();
    let dir = root.join("hq");
    let docking = Path::new(SAMPLE).join("docking.toml");
    let (hq, _) = Site::init_central(&CentralInit {
        dir: &dir,
        name: Some("hq"),
        schema: &schema,
        docking: Some(&docking),
        data: Some(&data_path),
    })
    .unwrap();
    (hq, dir, via)
}

/// Enrolls node `name` standing for `employee` through the public API, then throws its
/// folder and extract away (only central's side matters here).
fn enroll_node(hq: &mut Site, root: &Path, via: &Path, name: &str, employee: &str) {
    let dir = root.join("nodes").join(name);
    let node = Site::init_node(&dir, name).unwrap();
    let request = enroll::write_request(&node, via).unwrap();
    let attrs = BTreeMap::from([("employee".to_string(), employee.to_string())]);
    let added = enroll::add_node(hq, name, &request, &attrs, via).unwrap();
    fs::remove_file(&request).unwrap();
    fs::remove_file(&added.extract).unwrap();
    drop(node);
    fs::remove_dir_all(&dir).unwrap();
}

/// Central, with `nodes` nodes enrolled, in `dir`.
pub(crate) fn central_with_nodes(root: &Path, nodes: usize, emps: usize, unit: usize) -> PathBuf {
    let (mut hq, dir, via) = sample_central(root, &routing_data(emps, unit));
    let t = Instant::now();
    for i in 0..nodes {
        enroll_node(&mut hq, root, &via, &format!("n{i}"), &format!("E{i}"));
    }
    eprintln!(
        "{nodes} nodes enrolled in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    hq.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    dir
}

/// `count` changes at central through the capture triggers; every tenth a reassignment.
pub(crate) fn write_changes(dir: &Path, count: usize, emps: usize, unit: usize) {
    let mut conn = store::open(&dir.join("data.db")).unwrap();
    let optys = 20 * unit;
    let tx = conn.transaction().unwrap();
    {
        let mut reassign = tx
            .prepare("UPDATE opty_emp SET emp_id = ?2 WHERE opty_id = ?1")
            .unwrap();
        let mut opty = tx
            .prepare("UPDATE opty SET amount = amount + 1 WHERE id = ?1")
            .unwrap();
        let mut quote = tx
            .prepare("UPDATE quote SET total = total + 1 WHERE id = ?1")
            .unwrap();
        let mut act = tx
            .prepare("UPDATE activity SET note = note || '.' WHERE id = ?1")
            .unwrap();
        for c in 0..count {
            let k = (c * 7919) % optys;
            match c % 10 {
                0 => {
                    let to = format!("E{}", (k + 1 + c / 10) % emps);
                    reassign.execute(params![format!("O{k}"), to]).unwrap();
                }
                1..=3 => {
                    opty.execute(params![format!("O{k}")]).unwrap();
                }
                4 | 5 => {
                    quote
                        .execute(params![format!("Q{}", k % (10 * unit))])
                        .unwrap();
                }
                _ => {
                    act.execute(params![format!("T{}", (c * 31) % (40 * unit))])
                        .unwrap();
                }
            }
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
}

/// Pristine central states to route from.
struct Routing {
    at_100: PathBuf,
    at_1000: PathBuf,
    prefix_1000: PathBuf,
    changes: usize,
    prefix: usize,
    _root: tempfile::TempDir,
}

fn routing_scenario() -> Routing {
    let changes = env("BERTH_BENCH_CHANGES", 100_000);
    let prefix = env("BERTH_BENCH_PAIR_CHANGES", 2_000).min(changes);
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // `BERTH_BENCH_NODES=SMALL,LARGE` (default 100,1000) for quick checks and profiles.
    let sizes: Vec<usize> = std::env::var("BERTH_BENCH_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1000]);
    let (small, large) = (sizes[0], *sizes.last().unwrap());
    // The same central data at both sizes; every employee is a node, so every row has a
    // holder and each change goes somewhere at both sizes.
    let base_100 = central_with_nodes(&r.join("s100"), small, small, ROWS_UNIT);
    let base_1000 = if large == small {
        base_100.clone()
    } else {
        central_with_nodes(&r.join("s1000"), large, large, ROWS_UNIT)
    };
    let at_100 = r.join("at_100");
    copy_dir(&base_100, &at_100);
    write_changes(&at_100, changes, small, ROWS_UNIT);
    let at_1000 = r.join("at_1000");
    copy_dir(&base_1000, &at_1000);
    write_changes(&at_1000, changes, large, ROWS_UNIT);
    let prefix_1000 = r.join("prefix_1000");
    copy_dir(&base_1000, &prefix_1000);
    write_changes(&prefix_1000, prefix, large, ROWS_UNIT);
    Routing {
        at_100,
        at_1000,
        prefix_1000,
        changes,
        prefix,
        _root: root,
    }
}

/// One routing pass over a fresh copy of `pristine` (copy not timed). Returns the time and
/// the number of changes written into partial logs.
fn route_once(pristine: &Path, eval: Evaluation) -> (Duration, i64) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("hq");
    copy_dir(pristine, &dir);
    let site = Site::open(&dir).unwrap();
    let catalog = site.catalog().unwrap();
    let model = site.docking_model().unwrap().unwrap();
    let t = Instant::now();
    let tx =
        rusqlite::Transaction::new_unchecked(&site.conn, rusqlite::TransactionBehavior::Immediate)
            .unwrap();
    match eval {
        Evaluation::Set => berth_engine::route::route(&tx, &catalog, Some(&model)).unwrap(),
        Evaluation::PerPair => {
            let plan = Plan::new(&tx, &model).unwrap();
            router::route_all(&tx, &catalog, Some(&plan), Evaluation::PerPair).unwrap();
        }
    }
    tx.commit().unwrap();
    let d = t.elapsed();
    let routed: i64 = site
        .conn
        .query_row("SELECT count(*) FROM berth_partial", [], |r| r.get(0))
        .unwrap();
    (d, routed)
}

/// The partial logs of both evaluations must be the same (same decisions, same order).
/// Returns how many changes were routed.
pub(crate) fn same_output(pristine: &Path) -> usize {
    let dump = |eval| {
        let work = tempfile::tempdir().unwrap();
        let dir = work.path().join("hq");
        copy_dir(pristine, &dir);
        let site = Site::open(&dir).unwrap();
        let catalog = site.catalog().unwrap();
        let model = site.docking_model().unwrap().unwrap();
        let plan = Plan::new(&site.conn, &model).unwrap();
        router::route_all(&site.conn, &catalog, Some(&plan), eval).unwrap();
        let mut st = site
            .conn
            .prepare("SELECT node, ppos, change FROM berth_partial ORDER BY node, ppos")
            .unwrap();
        st.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
    };
    let (a, b) = (dump(Evaluation::Set), dump(Evaluation::PerPair));
    assert_eq!(a.len(), b.len(), "set and per-pair route differently");
    assert!(a == b, "set and per-pair route differently");
    eprintln!(
        "set form and per-pair agree on all {} routed changes",
        a.len()
    );
    a.len()
}

fn per_change(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

fn bench_routing(c: &mut Criterion) {
    if std::env::var_os("BERTH_BENCH_SKIP_ROUTING").is_some() {
        return;
    }
    let s = routing_scenario();
    same_output(&s.prefix_1000);
    let mut g = c.benchmark_group("routing");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.bench_function(format!("set form, 100 nodes, {} changes", s.changes), |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| route_once(&s.at_100, Evaluation::Set).0)
                .sum()
        })
    });
    g.bench_function(
        format!("set form, 1000 nodes, {} changes", s.changes),
        |b| {
            b.iter_custom(|n| {
                (0..n)
                    .map(|_| route_once(&s.at_1000, Evaluation::Set).0)
                    .sum()
            })
        },
    );
    g.finish();

    let pairs = env("BERTH_BENCH_PAIRS", 3);
    let (mut t100, mut t1000, mut set_p, mut pair_p) = (vec![], vec![], vec![], vec![]);
    for _ in 0..pairs {
        let (a, routed_100) = route_once(&s.at_100, Evaluation::Set);
        let (b, routed_1000) = route_once(&s.at_1000, Evaluation::Set);
        let (c, _) = route_once(&s.prefix_1000, Evaluation::Set);
        let (d, _) = route_once(&s.prefix_1000, Evaluation::PerPair);
        eprintln!(
            "run: set 100 nodes {:.2}s ({routed_100} routed), set 1000 nodes {:.2}s ({routed_1000} routed); first {} changes at 1000 nodes: set {:.3}s, per-pair {:.2}s",
            a.as_secs_f64(),
            b.as_secs_f64(),
            s.prefix,
            c.as_secs_f64(),
            d.as_secs_f64()
        );
        t100.push(a);
        t1000.push(b);
        set_p.push(c);
        pair_p.push(d);
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b, c, d) = (
        med(&mut t100),
        med(&mut t1000),
        med(&mut set_p),
        med(&mut pair_p),
    );
    println!(
        "routing {} changes, set form: {:.1} us/change at 100 nodes, {:.1} us/change at 1000 nodes (1000/100: {:.2}x)",
        s.changes,
        per_change(a, s.changes),
        per_change(b, s.changes),
        b.as_secs_f64() / a.as_secs_f64()
    );
    println!(
        "routing the first {} changes at 1000 nodes: set form {:.1} us/change, per-pair {:.1} us/change: set form is {:.1}x faster (median of {pairs} interleaved runs)",
        s.prefix,
        per_change(c, s.prefix),
        per_change(d, s.prefix),
        d.as_secs_f64() / c.as_secs_f64()
    );
}

/// One dock's routing pass over a fresh copy of `pristine`, committed every `batch` log
/// entries (`None`: the whole pass in one transaction, as before issue 20).
fn route_committed(pristine: &Path, batch: Option<u32>) -> (Duration, i64) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("hq");
    copy_dir(pristine, &dir);
    let site = Site::open(&dir).unwrap();
    let catalog = site.catalog().unwrap();
    let model = site.docking_model().unwrap().unwrap();
    let t = Instant::now();
    match batch {
        Some(batch_changes) => {
            let cfg = berth_engine::route::run::Routing {
                batch_changes,
                max_changes: None,
            };
            let plan = berth_engine::route::plan::Plan::new(&site.conn, &model).unwrap();
            berth_engine::route::run::route(&site.conn, &catalog, Some(&plan), &cfg, &None)
                .unwrap();
        }
        None => {
            let tx = rusqlite::Transaction::new_unchecked(
                &site.conn,
                rusqlite::TransactionBehavior::Immediate,
            )
            .unwrap();
            berth_engine::route::route(&tx, &catalog, Some(&model)).unwrap();
            tx.commit().unwrap();
        }
    }
    let d = t.elapsed();
    let routed: i64 = site
        .conn
        .query_row("SELECT count(*) FROM berth_partial", [], |r| r.get(0))
        .unwrap();
    (d, routed)
}

/// Routing in committed batches (issue 20, item 2) against one pass in one transaction, on
/// the routing scenario's changes at the first node count: `BERTH_BENCH_BATCHES=1` runs it
/// (`BERTH_BENCH_SKIP_ROUTING=1 BERTH_BENCH_SKIP_EXTRACT=1 BERTH_BENCH_BATCHES=1` alone).
/// Batches of the default size and of 1,000 entries, each throughput against one pass.
fn bench_batches(_: &mut Criterion) {
    if std::env::var_os("BERTH_BENCH_BATCHES").is_none() {
        return;
    }
    let changes = env("BERTH_BENCH_CHANGES", 100_000);
    let nodes = std::env::var("BERTH_BENCH_NODES")
        .ok()
        .and_then(|v| v.split(',').next().and_then(|n| n.trim().parse().ok()))
        .unwrap_or(100);
    let root = tempfile::tempdir().unwrap();
    let base = central_with_nodes(&root.path().join("b"), nodes, nodes, ROWS_UNIT);
    write_changes(&base, changes, nodes, ROWS_UNIT);
    let default = berth_engine::route::run::DEFAULT_BATCH;
    let pairs = env("BERTH_BENCH_PAIRS", 3);
    let (mut one, mut big, mut small) = (vec![], vec![], vec![]);
    for _ in 0..pairs {
        let (a, ra) = route_committed(&base, None);
        let (b, rb) = route_committed(&base, Some(default));
        let (c, rc) = route_committed(&base, Some(1000));
        eprintln!(
            "run: one pass {:.2}s ({ra} routed), batches of {default} {:.2}s ({rb}), batches of 1000 {:.2}s ({rc})",
            a.as_secs_f64(),
            b.as_secs_f64(),
            c.as_secs_f64()
        );
        assert_eq!(ra, rb, "one pass and the default batches route the same");
        one.push(a);
        big.push(b);
        small.push(c);
    }
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (a, b, c) = (med(&mut one), med(&mut big), med(&mut small));
    println!(
        "routing {changes} changes at {nodes} nodes: one pass (one transaction) {:.1} us/change; committed batches of {default}: {:.1} us/change (throughput {:.2}x of one pass); of 1000: {:.1} us/change ({:.2}x) (median of {pairs} interleaved runs)",
        per_change(a, changes),
        per_change(b, changes),
        a.as_secs_f64() / b.as_secs_f64(),
        per_change(c, changes),
        a.as_secs_f64() / c.as_secs_f64()
    );
}

/// Rows of the extract scenario, about `rows` in all; employee `EMGR` holds a tenth of the
/// positions and is assigned to the opportunities of their accounts.
fn extract_data(rows: usize) -> String {
    let unit = (rows * 10 / 174).max(100);
    let (accounts, contacts, optys, quotes, acts) = (unit, 2 * unit, 4 * unit, 2 * unit, 4 * unit);
    format!(
        "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < 1000)
         INSERT INTO employee(id, name) SELECT printf('E%d', i), printf('Employee %d', i) FROM c;
         INSERT INTO employee(id, name) VALUES ('EMGR', 'Regional manager');
         INSERT INTO position(id, name) SELECT 'P' || substr(id, 2), 'Position of ' || id FROM employee WHERE id <> 'EMGR';
         INSERT INTO emp_postn SELECT id, 'P' || substr(id, 2) FROM employee WHERE id <> 'EMGR';
         INSERT INTO emp_postn SELECT 'EMGR', id FROM position WHERE CAST(substr(id, 2) AS INTEGER) < 100;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < 100)
         INSERT INTO product(id, name, price) SELECT printf('PR%d', i), printf('Product %d', i), i * 10.0 FROM c;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {accounts})
         INSERT INTO account(id, name, region) SELECT printf('A%d', i), printf('Account %d', i), 'north' FROM c;
         INSERT INTO acct_postn SELECT id, printf('P%d', CAST(substr(id, 2) AS INTEGER) % 1000) FROM account;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {contacts})
         INSERT INTO contact(id, account_id, name, phone) SELECT printf('C%d', i), printf('A%d', i % {accounts}), printf('Contact %d', i), '555-0100' FROM c;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {optys})
         INSERT INTO opty(id, account_id, name, amount) SELECT printf('O%d', i), printf('A%d', i % {accounts}), printf('Deal %d', i), i FROM c;
         INSERT INTO opty_emp SELECT id, printf('E%d', CAST(substr(id, 2) AS INTEGER) % 1000), 'owner' FROM opty;
         INSERT INTO opty_emp SELECT id, 'EMGR', 'manager' FROM opty WHERE (CAST(substr(id, 2) AS INTEGER) % {accounts}) % 1000 < 100;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {quotes})
         INSERT INTO quote(id, opty_id, owner_emp_id, name, total) SELECT printf('Q%d', i), printf('O%d', 2 * i), printf('E%d', (7 * i) % 1000), printf('Quote %d', i), i FROM c;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {acts})
         INSERT INTO activity(id, account_id, opty_id, quote_id, kind, note)
           SELECT printf('T%d', i), printf('A%d', (i % {optys}) % {accounts}), printf('O%d', i % {optys}),
                  CASE WHEN i % 4 = 0 THEN printf('Q%d', (i / 4) % {quotes}) END, 'call', 'note about the call' FROM c;
         "
    )
}

pub(crate) struct Extract {
    central: PathBuf,
    request: PathBuf,
    node: PathBuf,
    /// Rows at central, in all.
    pub(crate) rows: i64,
    _root: tempfile::TempDir,
}

fn extract_scenario() -> Extract {
    extract_scenario_of(env("BERTH_BENCH_EXTRACT_ROWS", 1_000_000))
}

/// The extract scenario with about `rows` rows at central.
pub(crate) fn extract_scenario_of(rows: usize) -> Extract {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let t = Instant::now();
    let (mut hq, dir, via) = sample_central(r, &extract_data(rows));
    let total: i64 = [
        "employee",
        "position",
        "emp_postn",
        "product",
        "account",
        "acct_postn",
        "contact",
        "opty",
        "opty_emp",
        "quote",
        "activity",
    ]
    .iter()
    .map(|t| {
        hq.conn
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
    })
    .sum();
    eprintln!(
        "central with {total} rows built in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // An established central: one node enrolled already (the router's edges are built).
    enroll_node(&mut hq, r, &via, "first", "E1");
    hq.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(hq);
    let node = r.join("mgr");
    let mgr = Site::init_node(&node, "mgr").unwrap();
    let request = enroll::write_request(&mgr, r).unwrap();
    let central = r.join("hq-pristine");
    copy_dir(&dir, &central);
    Extract {
        central,
        request,
        node,
        rows: total,
        _root: root,
    }
}

/// Ours: `add_node` for the manager on a fresh copy of central. Returns the time and the
/// rows the node holds (limited tables).
pub(crate) fn extract_once(s: &Extract) -> (Duration, i64, PathBuf, tempfile::TempDir) {
    let work = tempfile::tempdir().unwrap();
    let (dir, out) = (work.path().join("hq"), work.path().join("out"));
    copy_dir(&s.central, &dir);
    fs::create_dir_all(&out).unwrap();
    let mut hq = Site::open(&dir).unwrap();
    let attrs = BTreeMap::from([("employee".to_string(), "EMGR".to_string())]);
    let t = Instant::now();
    enroll::add_node(&mut hq, "mgr", &s.request, &attrs, &out).unwrap();
    let d = t.elapsed();
    let held: i64 = hq
        .conn
        .query_row(
            "SELECT count(*) FROM berth_node_rows WHERE node = 'mgr'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(hq);
    (d, held, dir, work)
}

/// A connection to the central `done` with an empty database of the sample's schema attached
/// as `dest` (in the returned folder), for the two references to copy into.
fn copy_target(done: &Path) -> (tempfile::TempDir, Connection) {
    let work = tempfile::tempdir().unwrap();
    let conn = Connection::open(done.join("data.db")).unwrap();
    // As at a node: a partial copy has references to rows it does not hold.
    conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    let dest = work.path().join("copy.db");
    {
        let d = Connection::open(&dest).unwrap();
        d.execute_batch(&fs::read_to_string(Path::new(SAMPLE).join("schema.sql")).unwrap())
            .unwrap();
    }
    conn.execute("ATTACH ?1 AS dest", [dest.to_string_lossy()])
        .unwrap();
    (work, conn)
}

/// The floor: the rows the manager holds (and the enterprise tables) copied with one
/// `INSERT .. SELECT` per table into an empty database with the schema. `done` is a central
/// after our extract: its `berth_node_rows` name the rows (turned into rowid lists before
/// the clock starts).
fn floor_once(done: &Path) -> Duration {
    let (_work, conn) = copy_target(done);
    for (t, k) in LIMITED {
        let k: Vec<String> = k.split(", ").map(|c| format!("x.{c}")).collect();
        conn.execute_batch(&format!(
            "CREATE TEMP TABLE keep_{t} AS SELECT x.rowid AS r FROM {t} x CROSS JOIN berth_node_rows n
               ON n.node = 'mgr' AND n.tbl = '{t}' AND n.pk = json_array({});",
            k.join(", ")
        ))
        .unwrap();
    }
    let t = Instant::now();
    conn.execute_batch("BEGIN").unwrap();
    for e in ["employee", "position", "emp_postn", "product"] {
        conn.execute_batch(&format!("INSERT INTO dest.{e} SELECT * FROM main.{e};"))
            .unwrap();
    }
    for (tb, _) in LIMITED {
        conn.execute_batch(&format!(
            "INSERT INTO dest.{tb} SELECT * FROM main.{tb} WHERE rowid IN (SELECT r FROM temp.keep_{tb});"
        ))
        .unwrap();
    }
    conn.execute_batch("COMMIT").unwrap();
    t.elapsed()
}

/// The second reference: what one would write by hand without berth for this model and this
/// manager. The visible ids are selected in SQL (the opportunity <-> quote cycle and the
/// related account closed by hand), then one `INSERT .. SELECT` per table copies the rows,
/// all inside the clock. `done` is a central after our extract: before returning, it checks
/// that the copy holds exactly the rows our extract recorded ([`same_rows_as_extract`]).
pub(crate) fn floor_sql_once(done: &Path) -> Duration {
    let (_work, conn) = copy_target(done);
    let t = Instant::now();
    conn.execute_batch(
        "BEGIN;
         CREATE TEMP TABLE v_opty AS
           SELECT opty_id AS id FROM opty_emp WHERE emp_id = 'EMGR'
           UNION SELECT opty_id FROM quote WHERE owner_emp_id = 'EMGR' AND opty_id IS NOT NULL;
         CREATE TEMP TABLE v_quote AS
           SELECT id FROM quote WHERE owner_emp_id = 'EMGR'
           UNION SELECT id FROM quote WHERE opty_id IN (SELECT id FROM temp.v_opty);
         CREATE TEMP TABLE v_account AS
           SELECT ap.account_id AS id FROM acct_postn ap JOIN emp_postn ep ON ep.position_id = ap.position_id
            WHERE ep.emp_id = 'EMGR'
           UNION SELECT account_id FROM opty WHERE id IN (SELECT id FROM temp.v_opty) AND account_id IS NOT NULL;
         INSERT INTO dest.employee SELECT * FROM main.employee;
         INSERT INTO dest.position SELECT * FROM main.position;
         INSERT INTO dest.emp_postn SELECT * FROM main.emp_postn;
         INSERT INTO dest.product SELECT * FROM main.product;
         INSERT INTO dest.account SELECT * FROM main.account WHERE id IN (SELECT id FROM temp.v_account);
         INSERT INTO dest.acct_postn SELECT * FROM main.acct_postn WHERE account_id IN (SELECT id FROM temp.v_account);
         INSERT INTO dest.contact SELECT * FROM main.contact WHERE account_id IN (SELECT id FROM temp.v_account);
         INSERT INTO dest.opty SELECT * FROM main.opty WHERE id IN (SELECT id FROM temp.v_opty);
         INSERT INTO dest.opty_emp SELECT * FROM main.opty_emp WHERE opty_id IN (SELECT id FROM temp.v_opty);
         INSERT INTO dest.opty_prod SELECT * FROM main.opty_prod WHERE opty_id IN (SELECT id FROM temp.v_opty);
         INSERT INTO dest.quote SELECT * FROM main.quote WHERE id IN (SELECT id FROM temp.v_quote);
         INSERT INTO dest.quote_item SELECT * FROM main.quote_item WHERE quote_id IN (SELECT id FROM temp.v_quote);
         INSERT INTO dest.activity SELECT * FROM main.activity
          WHERE account_id IN (SELECT id FROM temp.v_account)
             OR opty_id IN (SELECT id FROM temp.v_opty)
             OR quote_id IN (SELECT id FROM main.quote WHERE opty_id IN (SELECT id FROM temp.v_opty));
         COMMIT;",
    )
    .unwrap();
    let d = t.elapsed();
    same_rows_as_extract(&conn);
    d
}

/// The tables whose rows a node holds only in part (`berth_node_rows`), with their key
/// columns in key order.
const LIMITED: [(&str, &str); 9] = [
    ("account", "id"),
    ("contact", "id"),
    ("opty", "id"),
    ("quote", "id"),
    ("activity", "id"),
    ("quote_item", "id"),
    ("opty_prod", "id"),
    ("acct_postn", "account_id, position_id"),
    ("opty_emp", "opty_id, emp_id"),
];

/// Checks that the copy in `dest` holds exactly the rows of the limited tables that our
/// extract recorded for the manager (`berth_node_rows`), key by key, and that the extract
/// recorded rows of no other table.
fn same_rows_as_extract(conn: &Connection) {
    let keys = |sql: &str| -> std::collections::BTreeSet<String> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    for (table, key) in LIMITED {
        let copied = keys(&format!("SELECT json_array({key}) FROM dest.{table}"));
        let held = keys(&format!(
            "SELECT pk FROM berth_node_rows WHERE node = 'mgr' AND tbl = '{table}'"
        ));
        assert!(
            copied == held,
            "the hand-written extract copies other {table} rows than ours: {} copied, {} held; only copied: {:?}; only held: {:?}",
            copied.len(),
            held.len(),
            copied.difference(&held).take(5).collect::<Vec<_>>(),
            held.difference(&copied).take(5).collect::<Vec<_>>(),
        );
    }
    let tables = keys("SELECT DISTINCT tbl FROM berth_node_rows WHERE node = 'mgr'");
    let others: Vec<&String> = tables
        .iter()
        .filter(|t| !LIMITED.iter().any(|(l, _)| l == t))
        .collect();
    assert!(others.is_empty(), "our extract holds rows of {others:?}");
}

fn bench_extract(c: &mut Criterion) {
    if std::env::var_os("BERTH_BENCH_SKIP_EXTRACT").is_some() {
        return;
    }
    let s = extract_scenario();
    let (d, held, done, _keep) = extract_once(&s);
    eprintln!(
        "manager extract: {held} limited rows of {} ({:.1}%), first run {:.2}s",
        s.rows,
        held as f64 * 100.0 / s.rows as f64,
        d.as_secs_f64()
    );
    let _ = &s.node;
    let mut g = c.benchmark_group("extract");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("add_node (10% of central)", |b| {
        b.iter_custom(|n| (0..n).map(|_| extract_once(&s).0).sum())
    });
    g.bench_function("INSERT..SELECT per table (floor)", |b| {
        b.iter_custom(|n| (0..n).map(|_| floor_once(&done)).sum())
    });
    g.bench_function("hand-written SQL extract", |b| {
        b.iter_custom(|n| (0..n).map(|_| floor_sql_once(&done)).sum())
    });
    g.finish();
    let pairs = env("BERTH_BENCH_PAIRS", 3);
    let (mut ratios, mut sql_ratios) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let ours = extract_once(&s).0;
        let floor = floor_once(&done);
        let by_hand = floor_sql_once(&done);
        eprintln!(
            "run: add_node {:.3}s, INSERT..SELECT of the row lists {:.3}s, hand-written SQL extract {:.3}s",
            ours.as_secs_f64(),
            floor.as_secs_f64(),
            by_hand.as_secs_f64()
        );
        ratios.push(floor.as_secs_f64() / ours.as_secs_f64());
        sql_ratios.push(by_hand.as_secs_f64() / ours.as_secs_f64());
    }
    for (what, r) in [
        ("INSERT..SELECT of the row lists (the floor)", &mut ratios),
        ("the hand-written SQL extract", &mut sql_ratios),
    ] {
        r.sort_by(f64::total_cmp);
        println!(
            "extract of {held} rows ({:.1}% of {}): {:.2}x of {what} (median of {pairs} interleaved runs; range {:.2}x-{:.2}x)",
            held as f64 * 100.0 / s.rows as f64,
            s.rows,
            r[r.len() / 2],
            r[0],
            r[r.len() - 1]
        );
    }
}

criterion_group!(benches, bench_routing, bench_extract, bench_batches);
criterion_main!(benches);
