//! Property of change export and merge (issue 15, defect 1; SPEC 2.4, 2.5, 2.10): any chain
//! of writes a node's application makes between two docks (inserts, updates, deletes, key
//! changes, `INSERT OR REPLACE`, `INSERT OR IGNORE`, statements that fail, children that
//! follow their parent through `ON UPDATE CASCADE` and `ON DELETE CASCADE`), exported from the
//! node's journal in one bundle and merged at a central that started from the same rows and
//! enforces foreign keys, leaves central exactly as the writer left the node, every value
//! compared by storage class and bytes, with no collision recorded (no other site wrote).
//!
//! The node's writer has foreign keys on (its state is then one central can hold) or off with
//! no child table written (nothing can dangle). The export is split at a random position into
//! two bundles merged one after the other, as two docks would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::change::{Change, Filter, export};
use berth_engine::merge::apply::{Catalog, CentralMerge, MergeStats};
use proptest::prelude::*;
use rusqlite::Connection;
use rusqlite::types::Value;

const SCHEMA: &str = "
CREATE TABLE item(id TEXT PRIMARY KEY, code TEXT UNIQUE, v);
CREATE TABLE line(id TEXT PRIMARY KEY,
  item_id TEXT REFERENCES item(id) ON UPDATE CASCADE ON DELETE CASCADE, n INTEGER);
INSERT INTO item VALUES ('k0', 'c0', 1), ('k1', 'c1', 2.5), ('k2', NULL, X'00FF');
INSERT INTO line VALUES ('l0', 'k0', 1), ('l1', 'k0', 2), ('l2', 'k1', 3);
";

/// One write of the node's application.
#[derive(Debug, Clone)]
enum Write {
    Insert(u8, Option<u8>, i64),
    Replace(u8, Option<u8>, i64),
    Ignore(u8, Option<u8>, i64),
    SetV(u8, f64),
    SetCode(u8, Option<u8>),
    Rekey(u8, u8),
    Delete(u8),
    LineInsert(u8, u8),
    LineMove(u8, u8),
    LineDelete(u8),
}

fn write() -> impl Strategy<Value = Write> {
    let k = 0u8..5;
    let code = proptest::option::of(0u8..4);
    prop_oneof![
        (k.clone(), code.clone(), any::<i64>()).prop_map(|(a, b, c)| Write::Insert(a, b, c)),
        (k.clone(), code.clone(), any::<i64>()).prop_map(|(a, b, c)| Write::Replace(a, b, c)),
        (k.clone(), code.clone(), any::<i64>()).prop_map(|(a, b, c)| Write::Ignore(a, b, c)),
        (k.clone(), any::<f64>()).prop_map(|(a, f)| Write::SetV(a, f)),
        (k.clone(), code).prop_map(|(a, b)| Write::SetCode(a, b)),
        (k.clone(), k.clone()).prop_map(|(a, b)| Write::Rekey(a, b)),
        k.clone().prop_map(Write::Delete),
        (0u8..4, k.clone()).prop_map(|(a, b)| Write::LineInsert(a, b)),
        (0u8..4, k).prop_map(|(a, b)| Write::LineMove(a, b)),
        (0u8..4).prop_map(Write::LineDelete),
    ]
}

fn key(i: u8) -> String {
    format!("k{i}")
}

fn code(c: Option<u8>) -> Option<String> {
    c.map(|c| format!("c{c}"))
}

/// Runs a write through a plain connection (a failing statement changes nothing).
fn run(c: &Connection, w: &Write) {
    let r = match w {
        Write::Insert(k, cd, v) => c.execute(
            "INSERT INTO item VALUES (?1, ?2, ?3)",
            rusqlite::params![key(*k), code(*cd), v],
        ),
        Write::Replace(k, cd, v) => c.execute(
            "INSERT OR REPLACE INTO item VALUES (?1, ?2, ?3)",
            rusqlite::params![key(*k), code(*cd), v],
        ),
        Write::Ignore(k, cd, v) => c.execute(
            "INSERT OR IGNORE INTO item VALUES (?1, ?2, ?3)",
            rusqlite::params![key(*k), code(*cd), v],
        ),
        // SQLite stores NaN as NULL.
        Write::SetV(k, f) => c.execute(
            "UPDATE item SET v = ?2 WHERE id = ?1",
            rusqlite::params![key(*k), f],
        ),
        Write::SetCode(k, cd) => c.execute(
            "UPDATE item SET code = ?2 WHERE id = ?1",
            rusqlite::params![key(*k), code(*cd)],
        ),
        Write::Rekey(a, b) => c.execute(
            "UPDATE item SET id = ?2 WHERE id = ?1",
            rusqlite::params![key(*a), key(*b)],
        ),
        Write::Delete(k) => c.execute("DELETE FROM item WHERE id = ?1", [key(*k)]),
        Write::LineInsert(l, k) => c.execute(
            "INSERT INTO line VALUES (?1, ?2, ?3)",
            rusqlite::params![format!("l{l}x"), key(*k), i64::from(*l)],
        ),
        Write::LineMove(l, k) => c.execute(
            "UPDATE line SET item_id = ?2 WHERE id IN (?1, ?1 || 'x')",
            rusqlite::params![format!("l{l}"), key(*k)],
        ),
        Write::LineDelete(l) => c.execute(
            "DELETE FROM line WHERE id IN (?1, ?1 || 'x')",
            [format!("l{l}")],
        ),
    };
    if let Err(e) = r {
        assert!(
            matches!(&e, rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation),
            "{w:?}: {e}"
        );
    }
}

/// A site's database: the schema and its rows, berth's tables and capture.
fn site(foreign_keys: bool) -> Connection {
    let c = Connection::open_in_memory().unwrap();
    berth_engine::store::install(&c).unwrap();
    c.execute_batch(SCHEMA).unwrap();
    let tables = berth_engine::schema::tables(&c).unwrap();
    berth_engine::capture::install(&c, &tables).unwrap();
    c.execute_batch(&format!("PRAGMA foreign_keys = {foreign_keys};"))
        .unwrap();
    c
}

/// Every row of both tables, exactly (storage class and bytes; reals by bit pattern).
fn rows(c: &Connection) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for sql in [
        "SELECT id, code, v FROM item ORDER BY id",
        "SELECT id, item_id, n FROM line ORDER BY id",
    ] {
        let mut st = c.prepare(sql).unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get::<_, Value>(i)? {
                            // SQLite's SQL cannot tell -0.0 from 0.0, so capture journals
                            // it as 0.0 (SPEC 2.14): compared as SQLite compares them.
                            Value::Real(0.0) => "real 0".to_string(),
                            Value::Real(f) => format!("real {:016x}", f.to_bits()),
                            other => format!("{other:?}"),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .unwrap()
            .map(Result::unwrap);
        out.extend(rows);
    }
    out
}

/// The node's changes after `after`, as its bundle to central carries them.
fn bundle(node: &Connection, after: i64) -> Vec<Change> {
    let catalog = Catalog::load(node, &Default::default(), Default::default()).unwrap();
    let tx = node.unchecked_transaction().unwrap();
    let mut out = Vec::new();
    export(
        &tx,
        &Filter {
            after,
            peer: None,
            key_updates: true,
            seen_now: None,
        },
        &catalog,
        |ch| {
            out.push(ch.clone());
            Ok(())
        },
    )
    .unwrap();
    tx.commit().unwrap();
    out
}

/// Merges one bundle at central, in one transaction, as a dock does.
fn merge(central: &Connection, changes: &[Change]) -> MergeStats {
    let catalog = Catalog::load(central, &Default::default(), Default::default()).unwrap();
    let tx = central.unchecked_transaction().unwrap();
    let mut stats = MergeStats::default();
    {
        let m = CentralMerge {
            conn: &tx,
            catalog: &catalog,
            node: "n",
            bundle_id: "b",
            clock: 1,
            central: "hq",
            now: 0,
            sql: Default::default(),
            auth: None,
        };
        for ch in changes {
            // Over the wire and back.
            let line = serde_json::to_string(ch).unwrap();
            let ch: Change = serde_json::from_str(&line).unwrap();
            m.merge(&ch, &mut stats).unwrap();
        }
        m.finish(&mut stats).unwrap();
    }
    tx.commit().unwrap();
    stats
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_chain_of_writes_arrives_at_central_as_the_writer_left_it(
        writes in proptest::collection::vec(write(), 1..24),
        foreign_keys in any::<bool>(),
        cut in 0usize..24,
    ) {
        let node = site(foreign_keys);
        let central = site(true);
        let writes: Vec<Write> = writes
            .into_iter()
            .filter(|w| {
                foreign_keys
                    || !matches!(w, Write::LineInsert(..) | Write::LineMove(..) | Write::Delete(_)
                        | Write::Replace(..) | Write::Rekey(..))
            })
            .collect();
        let cut = cut.min(writes.len());
        for w in &writes[..cut] {
            run(&node, w);
        }
        let first = bundle(&node, 0);
        let seen = berth_engine::store::max_pos(&node).unwrap();
        for w in &writes[cut..] {
            run(&node, w);
        }
        let second = bundle(&node, seen);
        let a = merge(&central, &first);
        let b = merge(&central, &second);
        let conflicts: Vec<String> = central
            .prepare("SELECT kind || ' ' || tbl || ' ' || pk FROM berth_conflicts")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        prop_assert!(
            conflicts.is_empty(),
            "collisions {conflicts:?}\nwrites {writes:?}\nbundles {first:?}\n{second:?}"
        );
        prop_assert_eq!(a.conflicts + b.conflicts, 0);
        prop_assert_eq!(
            rows(&central),
            rows(&node),
            "writes {:?}\nbundles {:?}\n{:?}",
            writes,
            first,
            second
        );
    }
}
