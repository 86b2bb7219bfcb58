//! Fidelity of capture, export and merge (issue 15): a write made by a foreign SQLite client
//! (the system `sqlite3` shell and Python's `sqlite3`, both another SQLite than berth's; the
//! corpus adds sqlite-utils and SQLAlchemy) reaches every site exactly as the writer's SQLite
//! stored it, compared by storage class and exact bytes (hex of text and blobs, the bit
//! pattern of reals), and no collision is recorded where no other site wrote the row.
//!
//! Each test names the defect of issue 15 it proves. The tests need the `sqlite3` shell and
//! `python3`; the corpus also needs sqlite_utils and sqlalchemy importable by `$BERTH_PYTHON`
//! (`.ci/run` installs them into a virtual environment and sets it), else by `python3`. A
//! missing tool fails the test; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::Disposition;
use berth_engine::dock::{DockOptions, DockReport};
use berth_tests::{OWNER_MODEL, Val as Cell, World, tool, user_tables};
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

// ---------------------------------------------------------------------------------------
// Exact values
// ---------------------------------------------------------------------------------------

fn real(x: f64) -> Cell {
    Cell::Real(x.to_bits())
}

fn text(s: &str) -> Cell {
    Cell::Text(s.as_bytes().to_vec())
}

/// The user tables of a site, each as the set of its rows (cells in column order).
type Exact = BTreeMap<String, BTreeSet<Vec<Cell>>>;

fn exact_db(db: &Path) -> Exact {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let mut out = Exact::new();
    for t in user_tables(&c) {
        let mut st = c
            .prepare(&format!("SELECT * FROM \"{}\"", t.replace('"', "\"\"")))
            .unwrap();
        let n = st.column_count();
        let rows: BTreeSet<Vec<Cell>> = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get_ref(i).map(Cell::read))
                    .collect::<rusqlite::Result<Vec<Cell>>>()
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        out.insert(t, rows);
    }
    out
}

/// Every user table of a site, exactly.
fn exact(w: &World, site: &str) -> Exact {
    exact_db(&w.dir(site).join("data.db"))
}

/// The given tables of `e` only.
fn only(e: &Exact, tables: &[&str]) -> Exact {
    e.iter()
        .filter(|(t, _)| tables.contains(&t.as_str()))
        .map(|(t, r)| (t.clone(), r.clone()))
        .collect()
}

/// The rows of one table whose first column (the key) is a text starting with `prefix`.
fn rows_with_prefix(e: &Exact, table: &str, prefix: &str) -> BTreeSet<Vec<Cell>> {
    e.get(table)
        .map(|rows| {
            rows.iter()
                .filter(|r| matches!(&r[0], Cell::Text(k) if k.starts_with(prefix.as_bytes())))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn differences(want: &Exact, got: &Exact) -> String {
    let mut out = String::new();
    let names: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    let empty = BTreeSet::new();
    for t in names {
        let w = want.get(t).unwrap_or(&empty);
        let g = got.get(t).unwrap_or(&empty);
        for r in w.difference(g) {
            out.push_str(&format!("\n  {t}: missing  {r:?}"));
        }
        for r in g.difference(w) {
            out.push_str(&format!("\n  {t}: unwanted {r:?}"));
        }
    }
    out
}

/// Asserts that every site holds exactly `want` in the tables `want` names.
fn assert_everywhere(w: &World, want: &Exact, what: &str) {
    let tables: Vec<&str> = want.keys().map(String::as_str).collect();
    for s in sites(w) {
        let got = only(&exact(w, &s), &tables);
        assert!(
            got == *want,
            "{what}: {s} does not hold exactly what was written:{}",
            differences(want, &got)
        );
    }
}

fn sites(w: &World) -> Vec<String> {
    std::iter::once("hq".to_string())
        .chain(w.nodes.iter().map(|(n, _)| n.clone()))
        .collect()
}

/// One value read back at a site through berth's own SQLite (reading only).
fn read(w: &World, site: &str, sql: &str) -> Cell {
    let c = Connection::open(w.dir(site).join("data.db")).unwrap();
    c.query_row(sql, [], |r| r.get_ref(0).map(Cell::read))
        .unwrap_or_else(|e| panic!("{site}: {sql}: {e}"))
}

// ---------------------------------------------------------------------------------------
// Foreign writers
// ---------------------------------------------------------------------------------------

/// Runs SQL at a site through the system `sqlite3` shell (one session), returning its output.
fn shell_output(w: &World, site: &str, sql: &str) -> Output {
    let db = w.dir(site).join("data.db");
    let mut child = Command::new(tool("sqlite3"))
        .arg("-bail")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!(".timeout 10000\n{sql}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs SQL at a site through the `sqlite3` shell; it must succeed. Returns what it printed.
fn shell(w: &World, site: &str, sql: &str) -> String {
    let out = shell_output(w, site, sql);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "the sqlite3 shell failed at {site} on\n{sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a Python script with `python` (the database as `sys.argv[1]`, then `args`); it must
/// succeed. Returns what it printed.
fn python_with(python: &str, w: &World, site: &str, script: &str, args: &[&str]) -> String {
    let db = w.dir(site).join("data.db");
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(&db)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(
        out.status.success(),
        "python failed at {site}:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a Python script with the system `python3` and its `sqlite3` module.
fn python(w: &World, site: &str, script: &str, args: &[&str]) -> String {
    python_with(&tool("python3"), w, site, script, args)
}

/// Runs statements through Python's `sqlite3` in one connection and one transaction.
fn py_sql(w: &World, site: &str, sql: &str) {
    python(
        w,
        site,
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=10)\nc.executescript(sys.argv[2])\nc.commit()\n",
        &[sql],
    );
}

// ---------------------------------------------------------------------------------------
// Docking
// ---------------------------------------------------------------------------------------

/// Docks a site; an error, or a bundle held or quarantined, fails the test with its reason.
fn dock_opts(w: &World, site: &str, opts: &DockOptions) -> DockReport {
    let r = w
        .dock_with(site, &w.via, opts)
        .unwrap_or_else(|e| panic!("dock at {site} failed: {e}"));
    for i in &r.incoming {
        assert!(
            ![
                Disposition::Held,
                Disposition::Quarantined,
                Disposition::Retry
            ]
            .contains(&i.outcome),
            "dock at {site}: bundle {} {}: {}",
            i.file,
            i.outcome,
            i.detail
        );
    }
    r
}

fn dock(w: &World, site: &str) -> DockReport {
    dock_opts(w, site, &DockOptions::default())
}

/// Docks every node, central after each, until a round moves nothing.
fn settle(w: &World) {
    let nodes: Vec<String> = w.nodes.iter().map(|(n, _)| n.clone()).collect();
    let mut last = Vec::new();
    for _ in 0..20 {
        let mut moved = 0;
        last.clear();
        for n in &nodes {
            for s in [n.as_str(), "hq"] {
                let r = dock(w, s);
                moved += r.written.len() + r.count(Disposition::Applied);
                last.push(format!(
                    "{s}: wrote {}, took {:?}",
                    r.written.len(),
                    r.incoming
                        .iter()
                        .map(|i| format!("{} {}: {}", i.file, i.outcome, i.detail))
                        .collect::<Vec<_>>()
                ));
            }
        }
        if moved == 0 {
            return;
        }
    }
    panic!(
        "did not settle in 20 rounds; the last round:\n  {}",
        last.join("\n  ")
    );
}

/// The collisions recorded at central, one line each.
fn conflicts(w: &World) -> Vec<String> {
    let c = Connection::open(w.central.join("data.db")).unwrap();
    c.prepare(
        "SELECT node || ' ' || tbl || ' ' || pk || ' ' || kind || ' ' || resolution || ' node_old='
         || coalesce(node_old, '-') || ' central=' || coalesce(central, '-')
         FROM berth_conflicts ORDER BY id",
    )
    .unwrap()
    .query_map([], |r| r.get(0))
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn assert_no_conflicts(w: &World, what: &str) {
    let c = conflicts(w);
    assert!(
        c.is_empty(),
        "{what}: no other site wrote these rows, yet central recorded collisions:\n  {}",
        c.join("\n  ")
    );
}

/// Journaled changes at a site. Pre-images (`op = 'P'`, SPEC 2.4) are left out: an insert
/// records the rows it could displace before SQLite decides, and one whose row is still
/// there afterwards (`OR IGNORE`, `DO NOTHING`) exports as nothing; the tests that use this
/// also check that nothing moves.
fn log_count(w: &World, site: &str) -> i64 {
    let c = Connection::open(w.dir(site).join("data.db")).unwrap();
    c.query_row("SELECT count(*) FROM berth_log WHERE op <> 'P'", [], |r| {
        r.get(0)
    })
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Defect 1: chains of writes before a dock
// ---------------------------------------------------------------------------------------

const ITEM: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, v INTEGER, note TEXT);";
const ITEM_DATA: &str = "INSERT INTO item VALUES ('seed', 0, 'from central');
INSERT INTO item VALUES ('other', 10, 'untouched');";

/// Issue 15, defect 1: a node updates a row and deletes it in one `sqlite3` session before
/// its next dock; the row is deleted everywhere, with no `delete-modified` collision.
#[test]
fn update_then_delete_before_a_dock_deletes_everywhere() {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    shell(&w, "a", "INSERT INTO item VALUES ('k', 1, 'new');");
    settle(&w);
    shell(
        &w,
        "a",
        "UPDATE item SET v = 2 WHERE id = 'k'; DELETE FROM item WHERE id = 'k';",
    );
    let want = only(&exact(&w, "a"), &["item"]);
    settle(&w);
    assert_no_conflicts(&w, "update then delete of k at a");
    assert_everywhere(&w, &want, "update then delete of k at a");
}

/// Issue 15, defect 1: update, then key change, before a dock: only the new key exists
/// everywhere, holding the updated value.
#[test]
fn update_then_key_change_before_a_dock_moves_the_row_everywhere() {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    shell(&w, "a", "INSERT INTO item VALUES ('k', 1, 'new');");
    settle(&w);
    shell(
        &w,
        "a",
        "UPDATE item SET v = 3 WHERE id = 'k'; UPDATE item SET id = 'k2' WHERE id = 'k';",
    );
    let want = only(&exact(&w, "a"), &["item"]);
    assert!(want["item"].contains(&vec![text("k2"), Cell::Int(3), text("new")]));
    settle(&w);
    assert_no_conflicts(&w, "update then key change k -> k2 at a");
    assert_everywhere(&w, &want, "update then key change k -> k2 at a");
}

/// A chain on a new key: insert, updates, key change, update, delete, re-insert of the old
/// key with other values.
const CHAIN_NEW: &[&str] = &[
    "INSERT INTO item VALUES ('c', 1, 'first')",
    "UPDATE item SET v = 2 WHERE id = 'c'",
    "UPDATE item SET note = 'second' WHERE id = 'c'",
    "UPDATE item SET id = 'c2' WHERE id = 'c'",
    "UPDATE item SET v = 4 WHERE id = 'c2'",
    "DELETE FROM item WHERE id = 'c2'",
    "INSERT INTO item VALUES ('c', 9, 'again')",
];

/// A chain on a row every site holds: update, key change and back, delete, re-insert, update.
const CHAIN_OLD: &[&str] = &[
    "UPDATE item SET v = 5 WHERE id = 'seed'",
    "UPDATE item SET id = 'seed2' WHERE id = 'seed'",
    "UPDATE item SET note = 'moved' WHERE id = 'seed2'",
    "UPDATE item SET id = 'seed' WHERE id = 'seed2'",
    "DELETE FROM item WHERE id = 'seed'",
    "INSERT INTO item VALUES ('seed', 6, 'reborn')",
    "UPDATE item SET v = 7 WHERE id = 'seed'",
];

/// A chain where a row takes over the key of a deleted one, and the freed key is reused.
const CHAIN_TAKEOVER: &[&str] = &[
    "INSERT INTO item VALUES ('x', 1, 'x')",
    "INSERT INTO item VALUES ('y', 2, 'y')",
    "UPDATE item SET v = 20 WHERE id = 'y'",
    "DELETE FROM item WHERE id = 'x'",
    "UPDATE item SET id = 'x' WHERE id = 'y'",
    "UPDATE item SET v = 3 WHERE id = 'x'",
    "INSERT INTO item VALUES ('y', 4, 'new y')",
];

fn sql_of(steps: &[&str]) -> String {
    steps.iter().map(|s| format!("{s};\n")).collect()
}

/// Writes the chains at node `a` (the first two through the shell, the third through
/// Python), each cut at `cut`: the steps before it, a dock of `a` (and, when
/// `central_between`, of central and `a` again), then the rest. Then everything settles and
/// every site must hold exactly `a`'s rows, with no collision.
fn chains(cut: usize, central_between: bool) {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    let write = |steps: &[&str], python: bool| {
        if python {
            py_sql(&w, "a", &sql_of(steps));
        } else {
            shell(&w, "a", &sql_of(steps));
        }
    };
    let all = [
        (CHAIN_NEW, false),
        (CHAIN_OLD, false),
        (CHAIN_TAKEOVER, true),
    ];
    for (steps, py) in all {
        write(&steps[..cut], py);
    }
    if cut > 0 {
        dock(&w, "a");
        if central_between {
            dock(&w, "hq");
            dock(&w, "a");
        }
    }
    for (steps, py) in all {
        write(&steps[cut..], py);
    }
    let want = only(&exact(&w, "a"), &["item"]);
    let expected: BTreeSet<Vec<Cell>> = [
        ("c", 9, "again"),
        ("seed", 7, "reborn"),
        ("x", 3, "y"),
        ("y", 4, "new y"),
        ("other", 10, "untouched"),
    ]
    .iter()
    .map(|(k, v, n)| vec![text(k), Cell::Int(*v), text(n)])
    .collect();
    assert_eq!(want["item"], expected, "the chains' result at the writer");
    settle(&w);
    let what = format!("chains cut at step {cut}, central docking between: {central_between}");
    assert_no_conflicts(&w, &what);
    assert_everywhere(&w, &want, &what);
}

/// Issue 15, defect 1: chains of insert, update, delete, re-insert and key change written
/// between two docks end at every site exactly as written.
#[test]
fn chains_of_writes_in_one_bundle_end_exactly_as_written() {
    chains(0, false);
}

/// Issue 15, defect 1: the same chains split across two bundles of the node, central
/// merging both in one dock.
#[test]
fn chains_of_writes_split_across_two_bundles_end_exactly_as_written() {
    chains(3, false);
}

/// Issue 15, defect 1: the same chains split across two docks, central merging and routing
/// the first part before the rest is written.
#[test]
fn chains_of_writes_split_across_two_docks_end_exactly_as_written() {
    chains(4, true);
}

// ---------------------------------------------------------------------------------------
// Defect 2: merged, not yet routed
// ---------------------------------------------------------------------------------------

/// `item` is `limited`: a node sees the items of its owner (both nodes are owner `A`), so
/// central authorizes a node's update or delete by the rows it knows the node holds.
const OWNED: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, owner TEXT, v INTEGER, note TEXT);";
const OWNED_DATA: &str = "INSERT INTO item VALUES ('seed', 'A', 0, 'from central');";

fn merged_not_routed(central_downloads_between: bool) {
    let attrs = || BTreeMap::from([("owner".to_string(), "A".to_string())]);
    let w = World::build(
        OWNED,
        OWNED_DATA,
        Some(OWNER_MODEL),
        &[("a", attrs()), ("b", attrs())],
    );
    shell(
        &w,
        "a",
        "INSERT INTO item VALUES ('k', 'A', 1, 'new'); INSERT INTO item VALUES ('d', 'A', 1, 'doomed');",
    );
    dock(&w, "a");
    if central_downloads_between {
        // Central merges the inserts and stops before routing them.
        dock_opts(
            &w,
            "hq",
            &DockOptions {
                upload: false,
                ..DockOptions::default()
            },
        );
    }
    py_sql(
        &w,
        "a",
        "UPDATE item SET v = 2, note = 'changed' WHERE id = 'k'; DELETE FROM item WHERE id = 'd';",
    );
    let r = dock(&w, "a");
    assert!(!r.written.is_empty(), "a wrote its second bundle: {r:?}");
    let want = only(&exact(&w, "a"), &["item"]);
    dock(&w, "hq");
    let what = if central_downloads_between {
        "a's update and delete after central merged (not routed) its inserts"
    } else {
        "a's inserts and its later update and delete merged in one dock"
    };
    assert_no_conflicts(&w, what);
    let hq = only(&exact(&w, "hq"), &["item"]);
    assert!(
        hq == want,
        "{what}: central after its dock:{}",
        differences(&want, &hq)
    );
    settle(&w);
    assert_no_conflicts(&w, what);
    assert_everywhere(&w, &want, what);
}

/// Central and a node delete the same `limited` row without seeing each other's delete: the
/// node's delete reaches a central that no longer has the row (nor records the node as its
/// holder). It changes nothing there, so it is no collision, and no `denied` either.
#[test]
fn a_delete_of_a_row_central_deleted_too_is_no_collision() {
    let attrs = || BTreeMap::from([("owner".to_string(), "A".to_string())]);
    let w = World::build(
        OWNED,
        OWNED_DATA,
        Some(OWNER_MODEL),
        &[("a", attrs()), ("b", attrs())],
    );
    py_sql(&w, "hq", "DELETE FROM item WHERE id = 'seed';");
    dock(&w, "hq");
    shell(&w, "a", "DELETE FROM item WHERE id = 'seed';");
    settle(&w);
    assert_no_conflicts(&w, "hq and a both deleted seed");
    let want = only(&exact(&w, "hq"), &["item"]);
    assert!(want["item"].is_empty());
    assert_everywhere(&w, &want, "hq and a both deleted seed");
}

/// Issue 15, defect 2: a node's insert and its later update and delete of those rows, in two
/// bundles that central merges in one dock: the later changes apply, no `denied`.
#[test]
fn insert_then_update_in_two_bundles_merged_in_one_dock_both_apply() {
    merged_not_routed(false);
}

/// Issue 15, defect 2: central merges a node's inserts with `--download-only` (no routing
/// pass), then the node's update and delete of them: they apply, no `denied`.
#[test]
fn update_after_a_merge_not_yet_routed_applies() {
    merged_not_routed(true);
}

// ---------------------------------------------------------------------------------------
// Concurrent writes whose values cancel out (ABA; SPEC 2.10)
// ---------------------------------------------------------------------------------------

/// Node `b` changes `column` of `seed` and changes it back, each through a round trip to
/// central, while node `a`, which has not docked meanwhile, has already made `a_write`.
/// Returns the world after `a` docked and central merged it.
fn b_changes_and_changes_back(column: &str, a_write: &str) -> World {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    settle(&w);
    shell(&w, "a", a_write);
    let (changed, back) = match column {
        "v" => ("v = 1", "v = 0"),
        _ => ("note = 'moved'", "note = 'from central'"),
    };
    shell(
        &w,
        "b",
        &format!("UPDATE item SET {changed} WHERE id = 'seed';"),
    );
    dock(&w, "b");
    dock(&w, "hq");
    shell(
        &w,
        "b",
        &format!("UPDATE item SET {back} WHERE id = 'seed';"),
    );
    dock(&w, "b");
    dock(&w, "hq");
    dock(&w, "a");
    dock(&w, "hq");
    w
}

/// The ABA case value comparison misses (simulation seed 760): `b` sets `v` to 1 and back to
/// 0; `a`, which saw neither, sets it to 5. Central's value is the one `a` saw, yet `b`
/// wrote after `a` last saw the row: a genuine collision, recorded against `a`'s change and
/// settled by central-wins, so `b`'s last write stands everywhere.
#[test]
fn a_change_over_a_value_changed_and_changed_back_elsewhere_collides() {
    let w = b_changes_and_changes_back("v", "UPDATE item SET v = 5 WHERE id = 'seed';");
    let c = conflicts(&w);
    assert_eq!(c.len(), 1, "one collision, on a's change: {c:?}");
    assert!(
        c[0].starts_with(r#"a item ["seed"] update-update central-wins"#),
        "{c:?}"
    );
    settle(&w);
    assert_eq!(
        read(&w, "hq", "SELECT v FROM item WHERE id = 'seed'"),
        Cell::Int(0)
    );
    let want = only(&exact(&w, "hq"), &["item"]);
    assert_everywhere(&w, &want, "b's write back to 0 stands");
    assert_eq!(conflicts(&w).len(), 1, "settling adds no collision");
}

/// The same for a delete: `a` deletes a row `b` changed and changed back since `a` saw it:
/// `delete-modified`, the row stays everywhere.
#[test]
fn a_delete_of_a_row_changed_and_changed_back_elsewhere_collides() {
    let w = b_changes_and_changes_back("v", "DELETE FROM item WHERE id = 'seed';");
    let c = conflicts(&w);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(
        c[0].starts_with(r#"a item ["seed"] delete-modified central-wins"#),
        "{c:?}"
    );
    settle(&w);
    let want = only(&exact(&w, "hq"), &["item"]);
    assert!(want["item"].iter().any(|r| r[0] == text("seed")));
    assert_everywhere(&w, &want, "seed stays");
}

/// No false collision: `b` changed another column and back; `a`'s change of `v` is no
/// collision and arrives everywhere.
#[test]
fn a_change_of_another_column_than_the_one_changed_back_is_no_collision() {
    let w = b_changes_and_changes_back("note", "UPDATE item SET v = 5 WHERE id = 'seed';");
    settle(&w);
    assert_no_conflicts(&w, "b changed note and back, a changed v");
    assert_eq!(
        read(&w, "hq", "SELECT v FROM item WHERE id = 'seed'"),
        Cell::Int(5)
    );
    let want = only(&exact(&w, "hq"), &["item"]);
    assert_everywhere(&w, &want, "a's v arrives");
}

/// No false collision: a node that saw the other's changes (it docked in between) changes
/// the row over them; and a node's own change and change back never contest its next one.
#[test]
fn changes_made_after_seeing_the_others_are_no_collision() {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    settle(&w);
    shell(&w, "b", "UPDATE item SET v = 1 WHERE id = 'seed';");
    settle(&w);
    shell(&w, "b", "UPDATE item SET v = 0 WHERE id = 'seed';");
    settle(&w);
    shell(&w, "a", "UPDATE item SET v = 7 WHERE id = 'seed';");
    dock(&w, "a");
    dock(&w, "hq");
    shell(&w, "a", "UPDATE item SET v = 0 WHERE id = 'seed';");
    dock(&w, "a");
    dock(&w, "hq");
    shell(&w, "a", "UPDATE item SET v = 9 WHERE id = 'seed';");
    settle(&w);
    assert_no_conflicts(&w, "every change made knowing the ones before it");
    assert_eq!(
        read(&w, "b", "SELECT v FROM item WHERE id = 'seed'"),
        Cell::Int(9)
    );
    let want = only(&exact(&w, "hq"), &["item"]);
    assert_everywhere(&w, &want, "a's last write");
}

// ---------------------------------------------------------------------------------------
// Defect 3: REAL values
// ---------------------------------------------------------------------------------------

const REALS: &str = "CREATE TABLE m(id TEXT PRIMARY KEY, x REAL, note TEXT);";

/// Python writes random doubles (and a few famous ones) into `m` under keys starting with
/// `prefix`, then prints each key with the bit pattern of the value its SQLite stored.
const WRITE_REALS: &str = r#"
import random, sqlite3, struct, sys
db, prefix, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
random.seed(seed)
c = sqlite3.connect(db, timeout=10)
rows = [(f"{prefix}{i}", random.random() * 10 ** random.randint(-3, 9)) for i in range(80)]
rows += [(prefix + "sum", 0.1 + 0.2), (prefix + "lon", -122.41941550000001),
         (prefix + "lat", 37.774929499999996), (prefix + "third", 1 / 3)]
c.executemany("INSERT INTO m(id, x, note) VALUES (?, ?, 'python')", rows)
c.execute("INSERT INTO m(id, x, note) VALUES (?, julianday('2024-03-01 12:34:56.789'), 'jd')",
          (prefix + "jd",))
c.commit()
for k, x in c.execute("SELECT id, x FROM m WHERE id LIKE ? || '%'", (prefix,)):
    print(k, struct.unpack('<Q', struct.pack('<d', x))[0])
"#;

/// Python updates every row under `prefix` to new random doubles; prints keys and bits.
const UPDATE_REALS: &str = r#"
import random, sqlite3, struct, sys
db, prefix, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
random.seed(seed)
c = sqlite3.connect(db, timeout=10)
keys = [k for (k,) in c.execute("SELECT id FROM m WHERE id LIKE ? || '%' ORDER BY id", (prefix,))]
for k in keys:
    c.execute("UPDATE m SET x = ? WHERE id = ?", (random.random() * 10 ** random.randint(-3, 9), k))
c.commit()
for k, x in c.execute("SELECT id, x FROM m WHERE id LIKE ? || '%'", (prefix,)):
    print(k, struct.unpack('<Q', struct.pack('<d', x))[0])
"#;

fn bits_printed(out: &str) -> BTreeMap<String, u64> {
    out.lines()
        .map(|l| {
            let (k, b) = l.split_once(' ').unwrap();
            (k.to_string(), b.parse().unwrap())
        })
        .collect()
}

/// Asserts every site holds each key's real with exactly the bits the writer stored.
fn assert_bits_everywhere(w: &World, want: &BTreeMap<String, u64>, what: &str) {
    for s in sites(w) {
        let mut wrong = Vec::new();
        for (k, bits) in want {
            let got = read(w, &s, &format!("SELECT x FROM m WHERE id = '{k}'"));
            if got != Cell::Real(*bits) {
                wrong.push(format!(
                    "{k}: written {:?}, holds {got:?}",
                    Cell::Real(*bits)
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{what}: {s} holds {} of {} reals not bit for bit:\n  {}",
            wrong.len(),
            want.len(),
            wrong.join("\n  ")
        );
    }
}

/// Issue 15, defect 3a: every finite double round-trips bit for bit through the extract,
/// through a node's bundle to central and on to another node, and from central to the nodes,
/// for inserts and updates.
#[test]
fn reals_travel_bit_for_bit_in_both_directions() {
    // The extract: central's initial rows, written with their shortest exact form.
    let out = Command::new(tool("python3"))
        .args([
            "-c",
            "import random\nrandom.seed(3)\nfor i in range(80): print(f\"INSERT INTO m VALUES ('init{i}', {random.random() * 10 ** random.randint(-3, 9)!r}, 'init');\")",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let data = String::from_utf8(out.stdout).unwrap();
    let w = World::new(REALS, &data, &["a", "b"]);
    let init = exact(&w, "hq");
    assert_eq!(init["m"].len(), 80);
    assert_everywhere(&w, &init, "the initial extract");

    let mut want = bits_printed(&python(&w, "a", WRITE_REALS, &["a", "1"]));
    want.extend(bits_printed(&python(&w, "hq", WRITE_REALS, &["hq", "2"])));
    settle(&w);
    assert_bits_everywhere(&w, &want, "inserts at a and at central");

    let mut want = bits_printed(&python(&w, "a", UPDATE_REALS, &["a", "3"]));
    want.extend(bits_printed(&python(&w, "hq", UPDATE_REALS, &["hq", "4"])));
    settle(&w);
    assert_no_conflicts(&w, "updates of a's rows at a and of central's at central");
    assert_bits_everywhere(&w, &want, "updates at a and at central");
}

/// Issue 15, defect 3b: a node whose SQLite (3.40) renders reals with 15 digits updates
/// and deletes rows holding reals that need 17 (0.1+0.2, a julianday(), a coordinate, random
/// doubles): no collision, the writes stand everywhere, bit for bit.
#[test]
fn update_and_delete_of_rows_holding_17_digit_reals_are_no_collision() {
    let w = World::new(REALS, "", &["a", "b"]);
    python(&w, "a", WRITE_REALS, &["r", "5"]);
    shell(
        &w,
        "a",
        "INSERT INTO m VALUES ('shell-sum', 0.1 + 0.2, 'shell');
         INSERT INTO m VALUES ('shell-jd', julianday('2023-11-05 08:09:10.123'), 'shell');
         INSERT INTO m VALUES ('shell-lon', -122.41941550000001, 'shell');",
    );
    settle(&w);
    // Updates of the real column itself, of another column, and deletes, by both clients.
    shell(
        &w,
        "a",
        "UPDATE m SET x = x * 3 WHERE id IN ('rsum', 'shell-sum', 'rjd');
         UPDATE m SET note = 'seen' WHERE id IN ('rlon', 'shell-jd');
         DELETE FROM m WHERE id IN ('rlat', 'shell-lon', 'rthird');",
    );
    py_sql(
        &w,
        "a",
        "UPDATE m SET x = x / 7 WHERE id IN ('r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7', 'r8');
         DELETE FROM m WHERE id IN ('r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'r16', 'r17');",
    );
    let want = only(&exact(&w, "a"), &["m"]);
    settle(&w);
    assert_no_conflicts(&w, "a's updates and deletes of its own rows");
    assert_everywhere(&w, &want, "a's updates and deletes of its own rows");
}

/// Issue 15, defect 3c: +Infinity and -Infinity (the shell's `9e999`, Python's
/// `float('inf')`) arrive as themselves, real, not NULL, from a node and from central.
#[test]
fn infinities_arrive_as_themselves() {
    let w = World::new(REALS, "", &["a", "b"]);
    shell(
        &w,
        "a",
        "INSERT INTO m VALUES ('a+inf', 9e999, 'shell'), ('a-inf', -9e999, 'shell');",
    );
    python(
        &w,
        "hq",
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executemany(\"INSERT INTO m VALUES (?, ?, 'python')\", [('hq+inf', float('inf')), ('hq-inf', float('-inf'))])\nc.commit()\n",
        &[],
    );
    let mut want = BTreeMap::new();
    for (k, x) in [
        ("a+inf", f64::INFINITY),
        ("a-inf", f64::NEG_INFINITY),
        ("hq+inf", f64::INFINITY),
        ("hq-inf", f64::NEG_INFINITY),
    ] {
        want.insert(k.to_string(), x.to_bits());
    }
    let site_of = |k: &str| if k.starts_with("hq") { "hq" } else { "a" };
    for (k, bits) in &want {
        let at = read(&w, site_of(k), &format!("SELECT x FROM m WHERE id = '{k}'"));
        assert_eq!(at, Cell::Real(*bits), "the writer stored {k}");
    }
    settle(&w);
    assert_bits_everywhere(&w, &want, "infinities");
    // And an update of a row holding one, and back.
    shell(&w, "a", "UPDATE m SET x = -x WHERE id = 'a+inf';");
    settle(&w);
    assert_no_conflicts(&w, "a's update of its own infinite value");
    want.insert("a+inf".into(), f64::NEG_INFINITY.to_bits());
    assert_bits_everywhere(&w, &want, "updated infinity");
}

// ---------------------------------------------------------------------------------------
// Defect 4: text that is not UTF-8
// ---------------------------------------------------------------------------------------

/// Issue 15, defect 4: invalid UTF-8 and a lone surrogate, written as text by the shell at a
/// node and by Python at central: the bytes arrive exactly (typeof text, same hex) at every
/// other site.
#[test]
fn text_that_is_not_utf8_travels_byte_for_byte() {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    write_invalid_text(&w);
    let mut want = only(&exact(&w, "a"), &["item"]);
    let hq_rows = rows_with_prefix(&exact(&w, "hq"), "item", "hq-");
    want.get_mut("item").unwrap().extend(hq_rows);
    assert!(want["item"].contains(&vec![
        text("bad"),
        Cell::Int(1),
        Cell::Text(vec![0xff, 0x41, 0xc3])
    ]));
    assert!(want["item"].contains(&vec![
        text("hq-bad"),
        Cell::Int(3),
        Cell::Text(vec![0x80, 0xfe, 0x00, 0xff])
    ]));
    settle(&w);
    assert_no_conflicts(&w, "invalid UTF-8 text");
    assert_everywhere(&w, &want, "invalid UTF-8 text");
}

/// Invalid UTF-8 and a lone surrogate as text: rows `bad` and `surrogate` and a changed
/// `other` at node `a` (the shell), row `hq-bad` at central (Python).
fn write_invalid_text(w: &World) {
    shell(
        w,
        "a",
        "INSERT INTO item VALUES ('bad', 1, CAST(x'ff41c3' AS TEXT));
         INSERT INTO item VALUES ('surrogate', 2, CAST(x'eda080' AS TEXT));
         UPDATE item SET note = CAST(x'c0af' AS TEXT) WHERE id = 'other';",
    );
    python(
        w,
        "hq",
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.execute(\"INSERT INTO item VALUES ('hq-bad', 3, CAST(? AS TEXT))\", (bytes.fromhex('80fe00ff'),))\nc.commit()\n",
        &[],
    );
}

/// Issue 15, defect 4: once text that is not UTF-8 was written, updating and deleting the
/// rows holding it (at the node that wrote them and at central) keeps docking working, and
/// the deletes reach every site.
#[test]
fn docking_keeps_working_after_rows_of_invalid_text_are_changed_and_deleted() {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    write_invalid_text(&w);
    settle(&w);
    shell(
        &w,
        "a",
        "UPDATE item SET v = 5 WHERE id = 'surrogate';
         DELETE FROM item WHERE id = 'bad';
         UPDATE item SET note = 'valid again' WHERE id = 'other';",
    );
    py_sql(&w, "hq", "DELETE FROM item WHERE id = 'hq-bad';");
    settle(&w);
    py_sql(
        &w,
        "a",
        "DELETE FROM item WHERE id = 'surrogate'; INSERT INTO item VALUES ('after', 4, 'plain');",
    );
    let want = only(&exact(&w, "a"), &["item"]);
    let expected: BTreeSet<Vec<Cell>> = [
        ("seed", 0, "from central"),
        ("other", 10, "valid again"),
        ("after", 4, "plain"),
    ]
    .iter()
    .map(|(k, v, n)| vec![text(k), Cell::Int(*v), text(n)])
    .collect();
    assert_eq!(want["item"], expected, "the rows at a");
    settle(&w);
    assert_no_conflicts(&w, "changes and deletes of rows of invalid UTF-8 text");
    assert_everywhere(
        &w,
        &want,
        "changes and deletes of rows of invalid UTF-8 text",
    );
}

/// Issue 15, defect 4: a key that is text but not UTF-8 travels byte for byte too, and its
/// row can be updated and deleted.
#[test]
fn a_key_that_is_not_utf8_travels_byte_for_byte() {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    shell(
        &w,
        "a",
        "INSERT INTO item VALUES (CAST(x'ff6b' AS TEXT), 1, 'bad key');
         INSERT INTO item VALUES (CAST(x'eda0806b' AS TEXT), 2, 'surrogate key');",
    );
    let want = only(&exact(&w, "a"), &["item"]);
    settle(&w);
    assert_no_conflicts(&w, "keys that are not UTF-8");
    assert_everywhere(&w, &want, "keys that are not UTF-8");
    shell(
        &w,
        "a",
        "UPDATE item SET v = 5 WHERE id = CAST(x'ff6b' AS TEXT);
         DELETE FROM item WHERE id = CAST(x'eda0806b' AS TEXT);",
    );
    let want = only(&exact(&w, "a"), &["item"]);
    settle(&w);
    assert_no_conflicts(&w, "update and delete by keys that are not UTF-8");
    assert_everywhere(&w, &want, "update and delete by keys that are not UTF-8");
}

// ---------------------------------------------------------------------------------------
// Defect 5: INSERT OR REPLACE, and writes that change nothing
// ---------------------------------------------------------------------------------------

const REPLACE_SCHEMA: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, v INTEGER, note TEXT);
CREATE TABLE u(id TEXT PRIMARY KEY, code TEXT UNIQUE, v INTEGER CHECK (v >= 0));";
const REPLACE_DATA: &str = "INSERT INTO item VALUES ('k', 1, 'one');
INSERT INTO item VALUES ('other', 10, 'untouched');
INSERT INTO u VALUES ('u1', 'c1', 1);
INSERT INTO u VALUES ('u2', 'c2', 2);
INSERT INTO u VALUES ('u3', 'c3', 3);";

/// The pragma a session starts with: SQLite's default, or `recursive_triggers` on (then
/// SQLite fires delete triggers for the rows REPLACE removes).
fn pragma(recursive: bool) -> &'static str {
    if recursive {
        "PRAGMA recursive_triggers = ON;\n"
    } else {
        ""
    }
}

/// `INSERT OR REPLACE` over an existing key at node `a` (the shell) and at node `b`
/// (Python), each over a row nobody else changed.
fn replace_over_a_key(recursive: bool) {
    let w = World::new(REPLACE_SCHEMA, REPLACE_DATA, &["a", "b"]);
    let p = pragma(recursive);
    shell(
        &w,
        "a",
        &format!("{p}INSERT OR REPLACE INTO item VALUES ('k', 2, 'replaced');"),
    );
    python(
        &w,
        "b",
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2] + \"REPLACE INTO item VALUES ('other', 11, 'replaced by b');\")\n",
        &[p],
    );
    let mut want = only(&exact(&w, "a"), &["item"]);
    let item = want.get_mut("item").unwrap();
    item.retain(|r| r[0] != text("other"));
    item.insert(vec![text("other"), Cell::Int(11), text("replaced by b")]);
    assert!(item.contains(&vec![text("k"), Cell::Int(2), text("replaced")]));
    settle(&w);
    let what = format!("INSERT OR REPLACE at a and b, recursive_triggers {recursive}");
    assert_no_conflicts(&w, &what);
    assert_everywhere(&w, &want, &what);
}

/// Issue 15, defect 5: `INSERT OR REPLACE` over an existing key at a node (SQLite's default
/// settings): the node's new row wins at central and everywhere, no `insert-exists`.
#[test]
fn insert_or_replace_over_an_existing_key_at_a_node_stands() {
    replace_over_a_key(false);
}

/// Issue 15, defect 5: the same with `PRAGMA recursive_triggers = ON` in the writer's session.
#[test]
fn insert_or_replace_with_recursive_triggers_over_an_existing_key_stands() {
    replace_over_a_key(true);
}

/// A REPLACE at node `a` that displaces `u1` through the UNIQUE column, and one that
/// displaces `u2` by key and `u3` through the UNIQUE column at once.
fn replace_displacing(recursive: bool) {
    let w = World::new(REPLACE_SCHEMA, REPLACE_DATA, &["a", "b"]);
    let p = pragma(recursive);
    shell(
        &w,
        "a",
        &format!("{p}INSERT OR REPLACE INTO u VALUES ('u4', 'c1', 4);"),
    );
    python(
        &w,
        "a",
        "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\nc.executescript(sys.argv[2] + \"INSERT OR REPLACE INTO u VALUES ('u2', 'c3', 5);\")\n",
        &[p],
    );
    let want = only(&exact(&w, "a"), &["u"]);
    let expected: BTreeSet<Vec<Cell>> = [("u4", "c1", 4), ("u2", "c3", 5)]
        .iter()
        .map(|(k, c, v)| vec![text(k), text(c), Cell::Int(*v)])
        .collect();
    assert_eq!(want["u"], expected, "the writer's rows");
    settle(&w);
    let what =
        format!("REPLACE displacing rows through UNIQUE at a, recursive_triggers {recursive}");
    assert_no_conflicts(&w, &what);
    assert_everywhere(&w, &want, &what);
}

/// Issue 15, defect 5: a REPLACE at a node that displaces other rows through the UNIQUE
/// column (and one through both the key and the UNIQUE column): the displaced rows are gone
/// everywhere.
#[test]
fn insert_or_replace_displacing_another_row_at_a_node_removes_it_everywhere() {
    replace_displacing(false);
}

/// Issue 15, defect 5: the same with `PRAGMA recursive_triggers = ON`.
#[test]
fn insert_or_replace_with_recursive_triggers_displacing_rows_removes_them_everywhere() {
    replace_displacing(true);
}

/// Issue 15, defect 5: the same REPLACE done at central: the nodes follow, and the nodes'
/// later bundles still apply (no UNIQUE error at any dock, two more docks each after).
#[test]
fn insert_or_replace_displacing_another_row_at_central_reaches_the_nodes() {
    let w = World::new(REPLACE_SCHEMA, REPLACE_DATA, &["a", "b"]);
    shell(&w, "hq", "INSERT OR REPLACE INTO u VALUES ('u4', 'c1', 4);");
    let want = only(&exact(&w, "hq"), &["u"]);
    assert!(!want["u"].iter().any(|r| r[0] == text("u1")));
    settle(&w);
    assert_everywhere(&w, &want, "REPLACE displacing u1 at central");

    shell(
        &w,
        "a",
        "INSERT INTO u VALUES ('u5', 'c5', 5); UPDATE u SET v = 40 WHERE id = 'u4';",
    );
    py_sql(&w, "b", "UPDATE u SET code = 'c22' WHERE id = 'u2';");
    let mut want = only(&exact(&w, "a"), &["u"]);
    let u = want.get_mut("u").unwrap();
    u.retain(|r| r[0] != text("u2"));
    u.insert(vec![text("u2"), text("c22"), Cell::Int(2)]);
    settle(&w);
    for _ in 0..2 {
        for s in sites(&w) {
            dock(&w, &s);
        }
    }
    assert_no_conflicts(&w, "node writes after central's REPLACE");
    assert_everywhere(&w, &want, "node writes after central's REPLACE");
}

/// A node's `INSERT OR IGNORE` over a row it holds changes nothing (its pre-image is void);
/// central then deletes the row, the node applies the delete, and central inserts the key
/// again before the node's next bundle arrives. The node's bundle carries no delete: the
/// pre-image was settled when central's delete reached its row, not read from the table at
/// export (where the row was by then gone), so nothing collides and the new row stands.
#[test]
fn an_ignored_insert_stays_nothing_after_central_deletes_its_row() {
    let w = World::new(ITEM, ITEM_DATA, &["a", "b"]);
    shell(
        &w,
        "a",
        "INSERT OR IGNORE INTO item VALUES ('seed', 99, 'ignored');",
    );
    py_sql(&w, "hq", "DELETE FROM item WHERE id = 'seed';");
    dock(&w, "hq");
    dock(&w, "a");
    assert!(!w.dump("a")["item"].iter().any(|r| r.starts_with("'seed'")));
    py_sql(&w, "hq", "INSERT INTO item VALUES ('seed', 5, 'again');");
    settle(&w);
    assert_no_conflicts(&w, "a's ignored insert, then hq's delete and insert");
    let want = only(&exact(&w, "hq"), &["item"]);
    assert!(want["item"].contains(&vec![text("seed"), Cell::Int(5), text("again")]));
    assert_everywhere(&w, &want, "a's ignored insert, then hq's delete and insert");
}

/// Issue 15, defect 5: writes that change nothing journal nothing and move nothing:
/// `INSERT OR IGNORE` and `ON CONFLICT DO NOTHING` over an existing key, a statement that
/// fails (a duplicate key; a REPLACE refused by a CHECK after displacing a row) and a
/// transaction rolled back.
#[test]
fn writes_that_change_nothing_journal_nothing() {
    let w = World::new(REPLACE_SCHEMA, REPLACE_DATA, &["a", "b"]);
    let before = exact(&w, "a");
    let log = log_count(&w, "a");
    shell(
        &w,
        "a",
        "INSERT OR IGNORE INTO item VALUES ('k', 99, 'ignored');
         INSERT INTO item VALUES ('k', 98, 'nothing') ON CONFLICT DO NOTHING;
         INSERT INTO u VALUES ('u9', 'c1', 9) ON CONFLICT(code) DO NOTHING;
         INSERT OR IGNORE INTO u VALUES ('u9', 'c2', 9);",
    );
    assert_eq!(
        log_count(&w, "a"),
        log,
        "INSERT OR IGNORE / DO NOTHING journaled"
    );
    python(
        &w,
        "a",
        r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for sql in ["INSERT INTO item VALUES ('k', 97, 'duplicate')",
            "INSERT OR REPLACE INTO u VALUES ('u9', 'c1', -1)",
            "INSERT OR REPLACE INTO u VALUES ('u2', 'c3', -1)"]:
    try:
        c.execute(sql)
        raise SystemExit("did not fail: " + sql)
    except sqlite3.IntegrityError:
        pass
c.commit()
c.execute("BEGIN")
c.execute("UPDATE item SET v = 96 WHERE id = 'k'")
c.execute("DELETE FROM u WHERE id = 'u1'")
c.execute("INSERT OR REPLACE INTO u VALUES ('u8', 'c2', 8)")
c.rollback()
"#,
        &[],
    );
    assert_eq!(
        log_count(&w, "a"),
        log,
        "failed statements or a rolled back transaction journaled"
    );
    assert_eq!(exact(&w, "a"), before, "the writes changed nothing at a");
    settle(&w);
    assert_no_conflicts(&w, "writes that changed nothing");
    assert_everywhere(&w, &before, "writes that changed nothing");
}

/// Issue 15, defect 5: an UPSERT (`ON CONFLICT(id) DO UPDATE`) at a node reaches central
/// and every node.
#[test]
fn upsert_at_a_node_reaches_everywhere() {
    let w = World::new(REPLACE_SCHEMA, REPLACE_DATA, &["a", "b"]);
    shell(
        &w,
        "a",
        "INSERT INTO item VALUES ('k', 7, 'up') ON CONFLICT(id) DO UPDATE SET v = excluded.v;
         INSERT INTO item VALUES ('new', 8, 'fresh') ON CONFLICT(id) DO UPDATE SET v = excluded.v;",
    );
    let want = only(&exact(&w, "a"), &["item"]);
    assert!(want["item"].contains(&vec![text("k"), Cell::Int(7), text("one")]));
    settle(&w);
    assert_no_conflicts(&w, "UPSERT at a");
    assert_everywhere(&w, &want, "UPSERT at a");
}

// ---------------------------------------------------------------------------------------
// Defect 6: side effects at central
// ---------------------------------------------------------------------------------------

const FK_SCHEMA: &str = "CREATE TABLE parent(id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE child(id TEXT PRIMARY KEY, parent_id TEXT REFERENCES parent(id) ON DELETE CASCADE, v INTEGER);
CREATE TABLE holder(id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE held(id TEXT PRIMARY KEY, holder_id TEXT REFERENCES holder(id) ON DELETE SET NULL, v INTEGER);";
const FK_DATA: &str = "INSERT INTO parent VALUES ('p1', 'P1'), ('p2', 'P2');
INSERT INTO child VALUES ('c1', 'p1', 1), ('c2', 'p1', 2), ('c3', 'p2', 3);
INSERT INTO holder VALUES ('h1', 'H1'), ('h2', 'H2');
INSERT INTO held VALUES ('e1', 'h1', 1), ('e2', 'h1', 2), ('e3', 'h2', 3);";

/// Issue 15, defect 6: a node deletes parents with the shell's default settings (foreign
/// keys off: nothing cascades there); central, which enforces foreign keys, cascades and
/// sets null, and those changes reach the node that wrote and the other node.
#[test]
fn cascades_at_central_reach_every_node() {
    let w = World::new(FK_SCHEMA, FK_DATA, &["a", "b"]);
    let out = shell(
        &w,
        "a",
        "PRAGMA foreign_keys; DELETE FROM parent WHERE id = 'p1'; DELETE FROM holder WHERE id = 'h1';",
    );
    assert_eq!(out.trim(), "0", "the shell's default: foreign keys off");
    assert_eq!(
        w.dump("a")["child"].len(),
        3,
        "nothing cascaded at the writer"
    );
    settle(&w);
    assert_no_conflicts(&w, "a's deletes of parents");
    let rows = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let want: berth_tests::Dump = [
        ("child", rows(&["'c3'|'p2'|3"])),
        ("held", rows(&["'e1'|NULL|1", "'e2'|NULL|2", "'e3'|'h2'|3"])),
        ("holder", rows(&["'h2'|'H2'"])),
        ("parent", rows(&["'p2'|'P2'"])),
    ]
    .into_iter()
    .map(|(t, r)| (t.to_string(), r))
    .collect();
    for s in sites(&w) {
        assert_eq!(
            w.dump(&s),
            want,
            "{s}: central's ON DELETE CASCADE / SET NULL did not arrive"
        );
    }
}

const CASCADE_SCHEMA: &str = "CREATE TABLE parent(id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE child(id TEXT PRIMARY KEY,
  parent_id TEXT REFERENCES parent(id) ON UPDATE CASCADE ON DELETE CASCADE, v INTEGER);";
const CASCADE_DATA: &str = "INSERT INTO parent VALUES ('p1', 'P1'), ('p2', 'P2');
INSERT INTO child VALUES ('c1', 'p1', 1), ('c2', 'p1', 2), ('c3', 'p2', 3);";

/// `child` and `parent` of [`CASCADE_SCHEMA`] as text rows: children `(id, parent, v)`,
/// parents `(id, name)`.
fn cascade_rows(children: &[(&str, &str, i64)], parents: &[(&str, &str)]) -> Exact {
    Exact::from([
        (
            "child".to_string(),
            children
                .iter()
                .map(|(id, p, v)| vec![text(id), text(p), Cell::Int(*v)])
                .collect(),
        ),
        (
            "parent".to_string(),
            parents
                .iter()
                .map(|(id, name)| vec![text(id), text(name)])
                .collect(),
        ),
    ])
}

/// Issue 15, defects 1 and 6: a node's writer with foreign keys on renames a parent's key;
/// `ON UPDATE CASCADE` moves its children there (SQLite journals them before the parent).
/// Meanwhile another node added a child to the old key. Central merges the rename as one
/// update of the key, so its own cascade carries every child, the one the writer never saw
/// included; nothing is refused, nothing is deleted by `ON DELETE CASCADE`, no collision.
#[test]
fn key_change_with_on_update_cascade_at_a_node_moves_every_child() {
    let w = World::new(CASCADE_SCHEMA, CASCADE_DATA, &["a", "b"]);
    py_sql(&w, "b", "INSERT INTO child VALUES ('c4', 'p1', 4);");
    dock(&w, "b");
    dock(&w, "hq");
    shell(
        &w,
        "a",
        "PRAGMA foreign_keys = ON;
         UPDATE parent SET name = 'renamed' WHERE id = 'p1';
         UPDATE parent SET id = 'p9' WHERE id = 'p1';
         UPDATE child SET v = 20 WHERE id = 'c2';",
    );
    assert_eq!(
        shell(
            &w,
            "a",
            "SELECT group_concat(id || '>' || parent_id) FROM child WHERE parent_id = 'p9';"
        )
        .trim(),
        "c1>p9,c2>p9",
        "the writer's cascade"
    );
    settle(&w);
    assert_no_conflicts(&w, "a renamed p1 to p9 with ON UPDATE CASCADE");
    let want = cascade_rows(
        &[
            ("c1", "p9", 1),
            ("c2", "p9", 20),
            ("c3", "p2", 3),
            ("c4", "p9", 4),
        ],
        &[("p2", "P2"), ("p9", "renamed")],
    );
    assert_everywhere(&w, &want, "a renamed p1 to p9 with ON UPDATE CASCADE");
}

/// A key change renamed twice in one bundle, then a child deleted: the children's updates a
/// foreign key first refuses at central wait only until their parent's key change has
/// applied, not until the end of the bundle (where the second rename would have made them
/// stale: a false collision), and the later delete of a child waits behind its update.
#[test]
fn children_refused_by_a_foreign_key_apply_right_after_their_parent_and_in_order() {
    let w = World::new(CASCADE_SCHEMA, CASCADE_DATA, &["a", "b"]);
    shell(
        &w,
        "a",
        "PRAGMA foreign_keys = ON;
         UPDATE parent SET id = 'p9' WHERE id = 'p1';
         UPDATE parent SET id = 'p7' WHERE id = 'p9';
         DELETE FROM child WHERE id = 'c1';",
    );
    let want = only(&exact(&w, "a"), &["parent", "child"]);
    assert!(want["child"].contains(&vec![text("c2"), text("p7"), Cell::Int(2)]));
    settle(&w);
    assert_no_conflicts(&w, "a renamed p1 twice and deleted a child");
    assert_everywhere(&w, &want, "a renamed p1 twice and deleted a child");
}

/// A node renames a row's key while central changes another column of it: central merges
/// the rename as an update of the key, keeps its own column, and sends the row as it now
/// stands to the node, which no longer has the old key central's change was made under.
#[test]
fn a_key_change_keeps_what_central_changed_meanwhile_everywhere() {
    let w = World::new(CASCADE_SCHEMA, CASCADE_DATA, &["a", "b"]);
    shell(
        &w,
        "a",
        "PRAGMA foreign_keys = ON; UPDATE parent SET id = 'p9' WHERE id = 'p1';",
    );
    py_sql(
        &w,
        "hq",
        "UPDATE parent SET name = 'from hq' WHERE id = 'p1';",
    );
    settle(&w);
    assert_no_conflicts(&w, "a renamed p1 while hq renamed its name");
    let want = cascade_rows(
        &[("c1", "p9", 1), ("c2", "p9", 2), ("c3", "p2", 3)],
        &[("p2", "P2"), ("p9", "from hq")],
    );
    assert_everywhere(&w, &want, "a renamed p1 while hq renamed its name");
}

/// A key change whose new key another node took first is no update of the key at central:
/// it is merged as the delete of the old key and the insert of the new, and the insert
/// meets the other node's row (a genuine collision, recorded against a's change). Docking
/// goes on, and every site ends the same.
#[test]
fn key_change_onto_a_key_another_node_took_is_a_recorded_collision() {
    let w = World::new(CASCADE_SCHEMA, CASCADE_DATA, &["a", "b"]);
    py_sql(&w, "b", "INSERT INTO parent VALUES ('p9', 'from b');");
    dock(&w, "b");
    dock(&w, "hq");
    shell(&w, "a", "UPDATE parent SET id = 'p9' WHERE id = 'p1';");
    settle(&w);
    let c = conflicts(&w);
    assert!(
        c.len() == 1 && c[0].starts_with("a parent [\"p9\"] insert-exists"),
        "one collision, a's insert of p9 over b's: {c:?}"
    );
    let central = exact(&w, "hq");
    assert!(
        central["parent"].contains(&vec![text("p9"), text("from b")]),
        "central keeps b's p9 (central wins): {:?}",
        central["parent"]
    );
    assert_everywhere(
        &w,
        &only(&central, &["parent", "child"]),
        "after the collision",
    );
}

/// Issue 15, defect 6: an application trigger (in the schema; it audits only where the
/// `settings` row that turns it on exists, a `central` table) writes rows when central
/// merges a node's update; those rows reach every node.
#[test]
fn rows_written_by_an_application_trigger_at_central_reach_every_node() {
    let schema = "CREATE TABLE item(id TEXT PRIMARY KEY, v INTEGER, note TEXT);
CREATE TABLE settings(k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE audit_log(id INTEGER PRIMARY KEY, item_id TEXT, old_v INTEGER, new_v INTEGER);
CREATE TRIGGER audit AFTER UPDATE OF v ON item
WHEN (SELECT v FROM settings WHERE k = 'audit') = 'on'
BEGIN INSERT INTO audit_log(item_id, old_v, new_v) VALUES (OLD.id, OLD.v, NEW.v); END;";
    let docking = "version = 1
[tables]
item = { visibility = \"enterprise\", node_write = true }
audit_log = { visibility = \"enterprise\" }
settings = { visibility = \"central\" }
";
    let data = "INSERT INTO item VALUES ('k', 1, 'one');
INSERT INTO settings VALUES ('audit', 'on');";
    let nodes = [("a", BTreeMap::new()), ("b", BTreeMap::new())];
    let w = World::build(schema, data, Some(docking), &nodes);
    shell(&w, "a", "UPDATE item SET v = 2 WHERE id = 'k';");
    settle(&w);
    assert_no_conflicts(&w, "a's update of k");
    let hq = only(&exact(&w, "hq"), &["item", "audit_log"]);
    let audit: BTreeSet<Vec<Cell>> = [vec![Cell::Int(1), text("k"), Cell::Int(1), Cell::Int(2)]]
        .into_iter()
        .collect();
    assert_eq!(
        hq["audit_log"], audit,
        "central's trigger audited the merge"
    );
    assert_everywhere(&w, &hq, "the audit row central's trigger wrote");
}

// ---------------------------------------------------------------------------------------
// Defect 7: wide tables
// ---------------------------------------------------------------------------------------

fn wide_table(name: &str, columns: usize) -> String {
    let cols: Vec<String> = (1..columns).map(|i| format!("c{i}")).collect();
    format!(
        "CREATE TABLE {name}(id TEXT PRIMARY KEY, {});\n",
        cols.join(", ")
    )
}

/// Python writes every column of a new row, and updates every column of row `seed`, of
/// the table `sys.argv[2]`.
const WRITE_WIDE: &str = r#"
import sqlite3, sys
db, table = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, timeout=10)
cols = [r[1] for r in c.execute(f"PRAGMA table_info({table})")][1:]
def value(i, salt):
    return [i * salt, (i + salt) / 7, f"t{i}-{salt}", bytes([i % 256, salt]), None][i % 5]
c.execute(f"INSERT INTO {table} VALUES (?{', ?' * len(cols)})",
          ["new"] + [value(i, 3) for i in range(len(cols))])
c.execute(f"UPDATE {table} SET " + ", ".join(f"{n} = ?" for n in cols) + " WHERE id = 'seed'",
          [value(i + 1, 5) for i in range(len(cols))])
c.commit()
"#;

/// Issue 15, defect 7: with tables of 70 and 130 columns, the system `sqlite3` shell can
/// still open `data.db` once berth installed capture, and a write of every column through
/// Python reaches central and the other node exactly.
#[test]
fn wide_tables_stay_readable_by_sqlite_3_40_and_travel_exactly() {
    let schema = format!("{}{}", wide_table("wide", 70), wide_table("wider", 130));
    let data = "INSERT INTO wide(id) VALUES ('seed'); INSERT INTO wider(id) VALUES ('seed');";
    let w = World::new(&schema, data, &["a", "b"]);
    for s in sites(&w) {
        let out = shell_output(
            &w,
            &s,
            "SELECT count(*) FROM wide; SELECT count(*) FROM wider;",
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "the sqlite3 shell cannot open {s}'s data.db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n1\n");
    }
    python(&w, "a", WRITE_WIDE, &["wide"]);
    python(&w, "a", WRITE_WIDE, &["wider"]);
    let want = only(&exact(&w, "a"), &["wide", "wider"]);
    settle(&w);
    assert_no_conflicts(&w, "writes of every column of wide tables");
    assert_everywhere(&w, &want, "writes of every column of wide tables");
}

// ---------------------------------------------------------------------------------------
// The corpus: every value class through every writer, both ways
// ---------------------------------------------------------------------------------------

/// Each value class: its name, how the `sqlite3` shell writes it, and what must be stored.
fn classes() -> Vec<(&'static str, &'static str, Cell)> {
    vec![
        ("null", "NULL", Cell::Null),
        ("zero", "0", Cell::Int(0)),
        ("int_neg", "-1", Cell::Int(-1)),
        ("int_min", "-9223372036854775808", Cell::Int(i64::MIN)),
        ("int_max", "9223372036854775807", Cell::Int(i64::MAX)),
        ("real_sum", "0.1 + 0.2", real(0.1 + 0.2)),
        (
            "real_lon",
            "-122.41941550000001",
            real(-122.419_415_500_000_01),
        ),
        (
            "real_17",
            "1234.5678901234567",
            real(1_234.567_890_123_456_7),
        ),
        (
            "real_small",
            "3.3333333333333335e-07",
            real(3.333_333_333_333_333_5e-7),
        ),
        ("real_tiny", "4.9406564584124654e-324", real(5e-324)),
        (
            "real_max",
            "1.7976931348623157e308",
            real(1.797_693_134_862_315_7e308),
        ),
        ("inf", "9e999", real(f64::INFINITY)),
        ("ninf", "-9e999", real(f64::NEG_INFINITY)),
        ("negzero", "-0.0", real(-0.0)),
        ("empty_text", "''", text("")),
        ("unicode", "'Ωmega ✓ 𝄞 ''q'''", text("Ωmega ✓ 𝄞 'q'")),
        (
            "invalid_utf8",
            "CAST(x'ff41c3' AS TEXT)",
            Cell::Text(vec![0xff, 0x41, 0xc3]),
        ),
        (
            "surrogate",
            "CAST(x'eda080' AS TEXT)",
            Cell::Text(vec![0xed, 0xa0, 0x80]),
        ),
        (
            "nul_text",
            "CAST(x'610062' AS TEXT)",
            Cell::Text(b"a\0b".to_vec()),
        ),
        ("blob", "x'00ff10'", Cell::Blob(vec![0x00, 0xff, 0x10])),
        ("empty_blob", "x''", Cell::Blob(vec![])),
    ]
}

/// The Python writers of the corpus: `sys.argv[2]` is the key prefix. Every class of
/// [`classes`] is written by Python's sqlite3 (insert; update), sqlite-utils (`insert`;
/// `upsert` over an existing row) and SQLAlchemy Core (`insert`; `update`).
const WRITE_CORPUS: &str = r#"
import sqlite3, sys
import sqlalchemy as sa
import sqlite_utils
db, prefix = sys.argv[1], sys.argv[2]
BAD = {"invalid_utf8": bytes.fromhex("ff41c3"), "surrogate": bytes.fromhex("eda080")}
VALUES = {
    "null": None, "zero": 0, "int_neg": -1, "int_min": -2**63, "int_max": 2**63 - 1,
    "real_sum": 0.1 + 0.2, "real_lon": -122.41941550000001, "real_17": 1234.5678901234567,
    "real_small": 3.3333333333333335e-07, "real_tiny": 5e-324,
    "real_max": 1.7976931348623157e308, "inf": float("inf"), "ninf": float("-inf"),
    "negzero": -0.0, "empty_text": "", "unicode": "Ωmega ✓ 𝄞 'q'",
    "invalid_utf8": None, "surrogate": None, "nul_text": "a\x00b",
    "blob": b"\x00\xff\x10", "empty_blob": b"",
}
assert sorted(VALUES) == sorted(sys.argv[3].split(",")), "classes differ from the test's"
key = lambda writer, cls: f"{prefix}-{writer}-{cls}"
PLACEHOLDER = "placeholder"

# Python's sqlite3: insert, and update of a placeholder row.
c = sqlite3.connect(db, timeout=10)
for cls, v in VALUES.items():
    for writer in ("py", "pyu"):
        k = key(writer, cls)
        if writer == "pyu":
            c.execute("INSERT INTO corpus VALUES (?, ?)", (k, PLACEHOLDER))
            if cls in BAD:
                c.execute("UPDATE corpus SET v = CAST(? AS TEXT) WHERE id = ?", (BAD[cls], k))
            else:
                c.execute("UPDATE corpus SET v = ? WHERE id = ?", (v, k))
        elif cls in BAD:
            c.execute("INSERT INTO corpus VALUES (?, CAST(? AS TEXT))", (k, BAD[cls]))
        else:
            c.execute("INSERT INTO corpus VALUES (?, ?)", (k, v))
c.commit()
c.close()

# sqlite-utils: Table.insert, and Table.upsert over an existing row.
d = sqlite_utils.Database(db)
t = d["corpus"]
for cls, v in VALUES.items():
    conv = {"v": "CAST(? AS TEXT)"} if cls in BAD else {}
    v = BAD.get(cls, v)
    t.insert({"id": key("su", cls), "v": v}, conversions=conv)
    t.insert({"id": key("sup", cls), "v": PLACEHOLDER})
    t.upsert({"id": key("sup", cls), "v": v}, pk="id", conversions=conv)
d.conn.commit()
d.close()

# SQLAlchemy Core: insert, and update of a placeholder row.
engine = sa.create_engine("sqlite:///" + db)
corpus = sa.Table("corpus", sa.MetaData(), autoload_with=engine)
def sa_value(cls, v):
    if cls in BAD:
        return sa.cast(sa.literal(BAD[cls], sa.LargeBinary), sa.Text)
    return v
with engine.begin() as conn:
    for cls, v in VALUES.items():
        conn.execute(sa.insert(corpus).values(id=key("sa", cls), v=sa_value(cls, v)))
        conn.execute(sa.insert(corpus).values(id=key("sau", cls), v=PLACEHOLDER))
        conn.execute(sa.update(corpus).where(corpus.c.id == key("sau", cls))
                     .values(v=sa_value(cls, v)))
engine.dispose()
"#;

/// The Python for the corpus: `$BERTH_PYTHON`, else `python3`; it must import sqlite_utils
/// and sqlalchemy.
fn corpus_python() -> String {
    let py = std::env::var("BERTH_PYTHON").unwrap_or_else(|_| tool("python3"));
    let out = Command::new(&py)
        .args(["-c", "import sqlite_utils, sqlalchemy"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {py} (BERTH_PYTHON): {e}"));
    assert!(
        out.status.success(),
        "the corpus needs the PyPI packages sqlite-utils and SQLAlchemy, which {py} cannot \
         import: run .ci/run (it installs them into .ci/venv and sets BERTH_PYTHON), or set \
         BERTH_PYTHON to a Python that has them\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    py
}

/// Writes the corpus at `site` through every writer, keys prefixed with the site's name.
fn write_corpus(w: &World, site: &str, py: &str) {
    let names: Vec<&str> = classes().iter().map(|c| c.0).collect();
    let mut sql = String::new();
    for (cls, lit, _) in classes() {
        sql.push_str(&format!(
            "INSERT INTO corpus VALUES ('{site}-sh-{cls}', {lit});\n\
             INSERT INTO corpus VALUES ('{site}-shu-{cls}', 'placeholder');\n\
             UPDATE corpus SET v = {lit} WHERE id = '{site}-shu-{cls}';\n"
        ));
    }
    shell(w, site, &sql);
    python_with(py, w, site, WRITE_CORPUS, &[site, &names.join(",")]);
}

/// Issue 15 (the fidelity corpus; defects 3 and 4): every value class (NULL, integers with
/// i64 min and max, reals needing 17 digits, subnormal and largest reals, +-inf, -0.0, empty
/// text, unicode, text that is not UTF-8, text holding NUL, blobs with the empty one) written
/// by the sqlite3 shell, Python's sqlite3, sqlite-utils and SQLAlchemy Core, by insert and
/// by update, at a node and at central, arrives at every other site with the same storage
/// class and the same bytes.
#[test]
fn corpus_of_every_value_class_through_every_writer_arrives_exactly() {
    let py = corpus_python();
    let w = World::new(
        "CREATE TABLE corpus(id TEXT PRIMARY KEY, v);",
        "",
        &["a", "b"],
    );
    write_corpus(&w, "a", &py);
    write_corpus(&w, "hq", &py);
    let writers = ["sh", "shu", "py", "pyu", "su", "sup", "sa", "sau"];
    // The writers stored what each class means (a check of the test itself).
    let mut want = BTreeSet::new();
    for site in ["a", "hq"] {
        let rows = rows_with_prefix(&exact(&w, site), "corpus", &format!("{site}-"));
        assert_eq!(
            rows.len(),
            writers.len() * classes().len(),
            "rows at {site}"
        );
        for writer in writers {
            for (cls, _, cell) in classes() {
                let k = text(&format!("{site}-{writer}-{cls}"));
                let row = vec![k, cell.clone()];
                assert!(
                    rows.contains(&row),
                    "{site}'s writer {writer} did not store {cls} as {cell:?}: {:?}",
                    rows.iter().find(|r| r[0] == row[0])
                );
            }
        }
        want.extend(rows);
    }
    let want: Exact = [("corpus".to_string(), want)].into_iter().collect();
    settle(&w);
    assert_no_conflicts(&w, "the corpus");
    assert_everywhere(&w, &want, "the corpus");
}
