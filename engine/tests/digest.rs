#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Replica digests (issue 16 part 2) on real SQLite files: equal rows give equal digests
//! whatever the order and statements that wrote them; any single difference shows in exactly
//! the bucket of the row's key, with its counts; a wire key falls in the same bucket as the
//! stored row, for every storage class; a digest received from elsewhere never panics.

use berth_engine::digest::{
    self, BUCKETS, DigestError, Digests, Mismatch, Scope, bucket_of_key, bucket_of_values, compare,
    compute, rows_in_buckets,
};
use berth_engine::merge::Policy;
use berth_engine::merge::apply::TableInfo;
use berth_engine::value::{Row, from_sql, parse_key};
use proptest::prelude::*;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params};
use serde_json::{Value as Json, json};
use std::collections::BTreeSet;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE item(id TEXT PRIMARY KEY, n INTEGER, x REAL, v);
-- Key columns neither first nor in column order.
CREATE TABLE line(w TEXT, b BLOB, a INTEGER, PRIMARY KEY(a, b));
-- What central records of the rows a node holds (store.rs).
CREATE TABLE berth_node_rows(node TEXT NOT NULL, tbl TEXT NOT NULL, pk TEXT NOT NULL,
  PRIMARY KEY (node, tbl, pk)) WITHOUT ROWID;
";

fn open(dir: &Path, name: &str) -> Connection {
    let c = Connection::open(dir.join(name)).unwrap();
    c.execute_batch(SCHEMA).unwrap();
    c
}

fn info(name: &str, pk: &[&str], cols: &[&str]) -> TableInfo {
    TableInfo {
        name: name.into(),
        pk: pk.iter().map(|s| s.to_string()).collect(),
        cols: cols.iter().map(|s| s.to_string()).collect(),
        policy: Policy::default(),
    }
}

fn item() -> TableInfo {
    info("item", &["id"], &["id", "n", "x", "v"])
}

fn line() -> TableInfo {
    info("line", &["a", "b"], &["w", "b", "a"])
}

fn all(c: &Connection) -> Digests {
    let (i, l) = (item(), line());
    compute(c, &[(&i, Scope::All), (&l, Scope::All)]).unwrap()
}

/// 300 items and 100 lines, every storage class among the values.
fn fill_in_order(c: &Connection) {
    let mut st = c
        .prepare("INSERT INTO item(id, n, x, v) VALUES (?1, ?2, ?3, ?4)")
        .unwrap();
    for i in 0..300i64 {
        st.execute(params![format!("k{i}"), i * 7, i as f64 / 3.0, value(i)])
            .unwrap();
    }
    let mut st = c
        .prepare("INSERT INTO line(a, b, w) VALUES (?1, ?2, ?3)")
        .unwrap();
    for i in 0..100i64 {
        st.execute(params![i % 10, vec![i as u8, 0xff], format!("w{i}")])
            .unwrap();
    }
}

/// The same rows as [`fill_in_order`], written backwards through other statements: an insert
/// of the key, then an update of the values; lines through one INSERT..SELECT.
fn fill_otherwise(c: &Connection) {
    for i in (0..300i64).rev() {
        c.execute("INSERT INTO item(id) VALUES (?1)", [format!("k{i}")])
            .unwrap();
        c.execute(
            "UPDATE item SET v = ?2, x = ?3, n = ?4 WHERE id = ?1",
            params![format!("k{i}"), value(i), i as f64 / 3.0, i * 7],
        )
        .unwrap();
    }
    c.execute_batch(
        "WITH RECURSIVE s(i) AS (SELECT 99 UNION ALL SELECT i - 1 FROM s WHERE i > 0)
         INSERT INTO line(a, b, w) SELECT i % 10, unhex(printf('%02X', i) || 'FF'), 'w' || i FROM s",
    )
    .unwrap();
}

fn value(i: i64) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match i % 5 {
        0 => Value::Null,
        1 => Value::Integer(i),
        2 => Value::Real(i as f64 + 0.25),
        3 => Value::Text(format!("pallet {i}")),
        _ => Value::Blob(vec![i as u8; 3]),
    }
}

fn pair() -> (tempfile::TempDir, Connection, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), "a.db");
    let b = open(dir.path(), "b.db");
    fill_in_order(&a);
    fill_otherwise(&b);
    (dir, a, b)
}

fn rows_of(d: &Digests, table: &str, bucket: u16) -> u64 {
    d[table].buckets.get(&bucket).map_or(0, |e| e.0)
}

#[test]
fn same_rows_written_differently_give_equal_digests() {
    let (_dir, a, b) = pair();
    let (da, db) = (all(&a), all(&b));
    assert_eq!(da["item"].rows, 300);
    assert_eq!(da["line"].rows, 100);
    assert!(
        da["item"].buckets.len() > 32,
        "keys spread over the buckets"
    );
    assert_eq!(da, db);
    assert!(compare(&da, &db).is_empty());
    // Read inside the caller's transaction as well as in its own.
    a.execute_batch("BEGIN").unwrap();
    assert_eq!(all(&a), da);
    a.execute_batch("COMMIT").unwrap();
}

/// Each single difference shows in the bucket of the row's key and nowhere else.
#[test]
fn one_difference_shows_in_its_bucket_only() {
    type Edit = (&'static str, &'static str, Vec<Json>, i64);
    let edits: Vec<Edit> = vec![
        // (table, SQL run on b, key of the row, change in b's bucket count)
        (
            "item",
            "UPDATE item SET v = 'changed' WHERE id = 'k17'",
            vec![json!("k17")],
            0,
        ),
        (
            "item",
            "UPDATE item SET n = NULL WHERE id = 'k4'",
            vec![json!("k4")],
            0,
        ),
        (
            "item",
            "DELETE FROM item WHERE id = 'k250'",
            vec![json!("k250")],
            -1,
        ),
        (
            "item",
            "INSERT INTO item VALUES ('new', 1, 2.0, 'x')",
            vec![json!("new")],
            1,
        ),
        // v has no affinity: an integer and a real are different values there (and on the
        // wire, which carries 1 and 1.0 apart).
        (
            "item",
            "UPDATE item SET v = 1 WHERE id = 'k3'",
            vec![json!("k3")],
            0,
        ),
        (
            "line",
            "UPDATE line SET w = 'w' WHERE a = 3 AND b = X'03FF'",
            vec![json!(3), json!(["b", "03FF"])],
            0,
        ),
        (
            "line",
            "DELETE FROM line WHERE a = 5 AND b = X'0FFF'",
            vec![json!(5), json!(["b", "0FFF"])],
            -1,
        ),
    ];
    for (table, sql, key, delta) in edits {
        let (_dir, a, b) = pair();
        if sql.contains("v = 1") {
            a.execute("UPDATE item SET v = 1.0 WHERE id = 'k3'", [])
                .unwrap();
        }
        b.execute_batch(sql).unwrap();
        let (da, db) = (all(&a), all(&b));
        let bucket = bucket_of_key(&key).unwrap();
        let n = rows_of(&da, table, bucket);
        assert_eq!(
            compare(&da, &db),
            vec![Mismatch {
                table: table.into(),
                bucket: Some(bucket),
                ours_rows: n,
                theirs_rows: (n as i64 + delta) as u64,
            }],
            "{sql}"
        );
        assert_eq!(da[table].rows as i64 + delta, db[table].rows as i64);
    }
}

/// What SQLite (or berth's journal) cannot tell apart does not differ: -0.0 and 0.0, and 1
/// and 1.0 written into a REAL column.
#[test]
fn zero_signs_and_integers_in_real_columns_are_the_same_value() {
    let (_dir, a, b) = pair();
    a.execute("UPDATE item SET x = 0.0 WHERE id = 'k1'", [])
        .unwrap();
    b.execute("UPDATE item SET x = ?1 WHERE id = 'k1'", [-0.0f64])
        .unwrap();
    let neg: f64 = b
        .query_row("SELECT x FROM item WHERE id = 'k1'", [], |r| r.get(0))
        .unwrap();
    assert!(neg == 0.0);
    a.execute("UPDATE item SET x = 1 WHERE id = 'k2'", [])
        .unwrap();
    b.execute("UPDATE item SET x = 1.0 WHERE id = 'k2'", [])
        .unwrap();
    // Also in a column without affinity, for the sign of zero.
    a.execute("UPDATE item SET v = 0.0 WHERE id = 'k5'", [])
        .unwrap();
    b.execute("UPDATE item SET v = ?1 WHERE id = 'k5'", [-0.0f64])
        .unwrap();
    assert_eq!(compare(&all(&a), &all(&b)), vec![]);
}

/// Held(node) takes exactly the listed rows, however their keys are spelled in
/// `berth_node_rows`: the digest equals the digest of a database holding only those rows.
#[test]
fn held_scope_takes_only_the_listed_rows() {
    let (dir, a, _b) = pair();
    let listed = [
        ("item", r#"["k1"]"#),
        ("item", r#"[ "k2" ]"#),
        ("item", r#"["\u006b3"]"#),
        ("item", r#"["no such row"]"#),
        ("item", "not json"),
        ("line", r#"[3,["b","03FF"]]"#),
        ("line", r#"[4, ["b", "0eff"]]"#),
    ];
    for (t, pk) in listed {
        a.execute(
            "INSERT INTO berth_node_rows(node, tbl, pk) VALUES ('n1', ?1, ?2)",
            [t, pk],
        )
        .unwrap();
    }
    a.execute(
        "INSERT INTO berth_node_rows(node, tbl, pk) VALUES ('n2', 'item', '[\"k9\"]')",
        [],
    )
    .unwrap();
    let (i, l) = (item(), line());
    let held = compute(
        &a,
        &[
            (&i, Scope::Held("n1".into())),
            (&l, Scope::Held("n1".into())),
        ],
    )
    .unwrap();
    assert_eq!(held["item"].rows, 3);
    assert_eq!(held["line"].rows, 2);

    let only = open(dir.path(), "only.db");
    only.execute_batch(&format!(
        "ATTACH '{}' AS a;
         INSERT INTO item SELECT * FROM a.item WHERE id IN ('k1', 'k2', 'k3');
         INSERT INTO line SELECT * FROM a.line WHERE (a, b) IN (VALUES (3, X'03FF'), (4, X'0EFF'));",
        dir.path().join("a.db").display()
    ))
    .unwrap();
    assert_eq!(all(&only), held);

    let mut got = Vec::new();
    let every: BTreeSet<u16> = (0..BUCKETS).collect();
    rows_in_buckets(&a, &i, &Scope::Held("n2".into()), &every, |k, _| {
        got.push(k);
        Ok(())
    })
    .unwrap();
    assert_eq!(got, vec![vec![json!("k9")]]);
}

/// A key of every storage class: the bucket of the wire key (as read from the row, as its
/// JSON text travels, and as the capture triggers journal it) is the bucket of the row.
#[test]
fn wire_keys_fall_in_the_bucket_of_their_row() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("k.db")).unwrap();
    c.execute_batch(
        "CREATE TABLE k(id PRIMARY KEY, v);
         INSERT INTO k VALUES (NULL, 'null key'), (0, 0), (-1, 1), (9223372036854775807, 2),
           (-9223372036854775808, 3), (0.1, 4), (1e300, 5), (-2.5, 6), (9e999, 7), (-9e999, 8),
           ('plain', 9), ('', 10), (CAST(X'FF41C0' AS TEXT), 11), (X'', 12), (X'00FF10', 13),
           ('ünï', 14), (4.0, 15);",
    )
    .unwrap();
    let t = info("k", &["id"], &["id", "v"]);
    let mut st = c
        .prepare("SELECT id, typeof(id), json_array(CASE WHEN typeof(id) = 'blob' THEN json_array('b', hex(id)) ELSE id END) FROM k")
        .unwrap();
    let mut rows = st.query([]).unwrap();
    let mut classes = BTreeSet::new();
    let mut keys = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let v = r.get_ref(0).unwrap();
        classes.insert(r.get::<_, String>(1).unwrap());
        let expect = bucket_of_values(&[v]);
        let wire = vec![from_sql(v)];
        assert_eq!(bucket_of_key(&wire), Some(expect), "{wire:?}");
        let text = serde_json::to_string(&wire).unwrap();
        let travelled: Vec<Json> = serde_json::from_str(&text).unwrap();
        assert_eq!(bucket_of_key(&travelled), Some(expect), "{text}");
        let journaled = parse_key(r.get_ref(2).unwrap().as_bytes().unwrap()).unwrap();
        assert_eq!(bucket_of_key(&journaled), Some(expect), "{journaled:?}");
        keys.push((wire, expect));
    }
    assert_eq!(classes.len(), 5, "{classes:?}");
    assert!(keys.iter().any(|(k, _)| k == &vec![json!(["t", "FF41C0"])]));
    assert_eq!(bucket_of_key(&[json!(["b", "zz"])]), None);

    // rows_in_buckets finds each row in its key's bucket.
    for (key, bucket) in &keys {
        let mut found = Vec::new();
        rows_in_buckets(&c, &t, &Scope::All, &BTreeSet::from([*bucket]), |k, _| {
            found.push(k);
            Ok(())
        })
        .unwrap();
        assert!(found.contains(key), "{key:?} not in bucket {bucket}");
    }
}

#[test]
fn rows_in_buckets_returns_exactly_the_rows_of_those_buckets() {
    let (_dir, a, _b) = pair();
    let (t, l) = (item(), line());
    let d = all(&a);
    let wanted: BTreeSet<u16> = d["item"].buckets.keys().copied().step_by(3).collect();
    let mut got = Vec::new();
    rows_in_buckets(&a, &t, &Scope::All, &wanted, |k, row| {
        got.push((k, row));
        Ok(())
    })
    .unwrap();
    let expected: u64 = wanted.iter().map(|b| rows_of(&d, "item", *b)).sum();
    assert_eq!(got.len() as u64, expected);
    for (k, row) in &got {
        assert!(wanted.contains(&bucket_of_key(k).unwrap()));
        assert_eq!(&row["id"], &k[0]);
        assert_eq!(row.len(), 4);
    }
    // Every other row is outside those buckets.
    let mut every = 0;
    let all_buckets: BTreeSet<u16> = (0..BUCKETS).collect();
    rows_in_buckets(&a, &t, &Scope::All, &all_buckets, |k, _| {
        every += 1;
        assert_eq!(
            wanted.contains(&bucket_of_key(&k).unwrap()),
            got.iter().any(|(g, _)| g == &k)
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(every, 300);
    // Rows come back as the wire values read_row gives.
    let mut lines: Vec<(Vec<Json>, Row)> = Vec::new();
    rows_in_buckets(&a, &l, &Scope::All, &all_buckets, |k, row| {
        lines.push((k, row));
        Ok(())
    })
    .unwrap();
    for (k, row) in &lines {
        let read = berth_engine::merge::apply::read_row(&a, &l, k).unwrap();
        assert_eq!(read.as_ref(), Some(row));
    }
    // An error from the sink stops the pass and comes back.
    let err = rows_in_buckets(&a, &t, &Scope::All, &all_buckets, |_, _| {
        Err(berth_engine::EngineError::Kept("stop".into()))
    });
    assert!(err.is_err());
}

#[test]
fn hostile_digest_json_is_refused_with_its_kind() {
    let h = "00".repeat(16);
    let ok = format!(r#"{{"t":{{"rows":1,"xor":"{h}","b":{{"7":[1,"{h}"]}}}}}}"#);
    assert_eq!(digest::parse(ok.as_bytes()).unwrap()["t"].rows, 1);
    type Case = (String, fn(&DigestError) -> bool);
    let cases: Vec<Case> = vec![
        ("not json".into(), |e| matches!(e, DigestError::Json(_))),
        ("[]".into(), |e| matches!(e, DigestError::Json(_))),
        (r#"{"t":{"rows":-1,"xor":"00"}}"#.into(), |e| {
            matches!(e, DigestError::Json(_))
        }),
        (
            r#"{"t":{"rows":18446744073709551616,"xor":"00"}}"#.into(),
            |e| matches!(e, DigestError::Json(_)),
        ),
        (
            format!(r#"{{"t":{{"rows":1,"xor":"{h}","b":{{"7":[1,"{h}",3]}}}}}}"#),
            |e| matches!(e, DigestError::Json(_)),
        ),
        (
            format!(r#"{{"t":{{"rows":1,"b":{{"7":[1,"{h}"]}}}}}}"#),
            |e| matches!(e, DigestError::Json(_)),
        ),
        (r#"{"t":{"rows":0,"xor":"zz"}}"#.into(), |e| {
            matches!(e, DigestError::Hash { .. })
        }),
        (r#"{"t":{"rows":0,"xor":"000"}}"#.into(), |e| {
            matches!(e, DigestError::Hash { .. })
        }),
        (format!(r#"{{"t":{{"rows":0,"xor":"{h}00"}}}}"#), |e| {
            matches!(e, DigestError::Hash { .. })
        }),
        (
            format!(r#"{{"t":{{"rows":1,"xor":"{h}","b":{{"7":[1,"x{h}"]}}}}}}"#),
            |e| matches!(e, DigestError::Hash { .. }),
        ),
        (
            format!(r#"{{"t":{{"rows":1,"xor":"{h}","b":{{"64":[1,"{h}"]}}}}}}"#),
            |e| matches!(e, DigestError::Bucket { .. }),
        ),
        (
            format!(r#"{{"t":{{"rows":1,"xor":"{h}","b":{{"07":[1,"{h}"]}}}}}}"#),
            |e| matches!(e, DigestError::Bucket { .. }),
        ),
        (
            format!(r#"{{"t":{{"rows":1,"xor":"{h}","b":{{"-1":[1,"{h}"]}}}}}}"#),
            |e| matches!(e, DigestError::Bucket { .. }),
        ),
        (
            format!(r#"{{"t":{{"rows":1,"xor":"{h}","b":{{"99999999":[1,"{h}"]}}}}}}"#),
            |e| matches!(e, DigestError::Bucket { .. }),
        ),
        (
            format!(r#"{{"t":{{"rows":0,"xor":"{h}","b":{{"7":[0,"{h}"]}}}}}}"#),
            |e| matches!(e, DigestError::EmptyBucket { bucket: 7, .. }),
        ),
        (
            format!(r#"{{"t":{{"rows":2,"xor":"{h}","b":{{"7":[1,"{h}"]}}}}}}"#),
            |e| matches!(e, DigestError::Sum { .. }),
        ),
        (
            format!(
                r#"{{"t":{{"rows":1,"xor":"{h}","b":{{"7":[1,"{}"]}}}}}}"#,
                "01".repeat(16)
            ),
            |e| matches!(e, DigestError::Sum { .. }),
        ),
        (
            format!(
                r#"{{"t":{{"rows":0,"xor":"{h}","b":{{"1":[18446744073709551615,"{h}"],"2":[1,"{h}"]}}}}}}"#
            ),
            |e| matches!(e, DigestError::Sum { .. }),
        ),
        (
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            |e| matches!(e, DigestError::Json(_)),
        ),
    ];
    for (text, kind) in cases {
        let e = digest::parse(text.as_bytes()).expect_err(&text);
        assert!(kind(&e), "{text}: {e}");
        // It converts into the engine's error, as a permanent one.
        assert!(berth_engine::EngineError::from(e).is_permanent());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any bytes, and any truncation of a valid digest file: an answer, never a panic.
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..400) {
        let _ = digest::parse(&bytes);
        let mut d = berth_engine::digest::TableDigest::default();
        d.add(3, &[9; 16]);
        d.add(63, &[1; 16]);
        let text = digest::to_json(&Digests::from([("t".to_string(), d)]));
        let cut = cut.min(text.len());
        let _ = digest::parse(&text.as_bytes()[..cut]);
        let mut mangled = text.into_bytes();
        if let Some(b) = mangled.get_mut(cut) {
            *b = bytes.first().copied().unwrap_or(b'9');
        }
        let _ = digest::parse(&mangled);
    }
}

/// One edit a site makes to a table of random rows.
#[derive(Debug, Clone)]
enum Edit {
    /// Sets `n` of the i-th row (modulo the row count).
    SetN(usize, Option<i64>),
    /// Sets `v` of the i-th row.
    SetV(usize, String),
    /// Deletes the i-th row.
    Delete(usize),
    /// Inserts a row with this key (if new).
    Insert(i64, Option<i64>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), proptest::option::of(-5i64..5)).prop_map(|(i, n)| Edit::SetN(i, n)),
        (any::<usize>(), "[a-c]{0,3}").prop_map(|(i, v)| Edit::SetV(i, v)),
        any::<usize>().prop_map(Edit::Delete),
        (-1000i64..1000, proptest::option::of(-5i64..5)).prop_map(|(k, n)| Edit::Insert(k, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random rows at two sites, then one random edit at one of them: compare() finds
    /// exactly the bucket of the edited row when the edit changed something, else nothing.
    #[test]
    fn compare_finds_exactly_the_edited_bucket(
        rows in proptest::collection::btree_map(-1000i64..1000, (proptest::option::of(-5i64..5), "[a-c]{0,3}", any::<f64>()), 0..120),
        e in edit(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let schema = "CREATE TABLE r(k INTEGER PRIMARY KEY, n INTEGER, v TEXT, x REAL);";
        let a = Connection::open(dir.path().join("a.db")).unwrap();
        let b = Connection::open(dir.path().join("b.db")).unwrap();
        a.execute_batch(schema).unwrap();
        b.execute_batch(schema).unwrap();
        for (c, order) in [(&a, false), (&b, true)] {
            let mut items: Vec<_> = rows.iter().collect();
            if order { items.reverse(); }
            for (k, (n, v, x)) in items {
                c.execute("INSERT INTO r VALUES (?1, ?2, ?3, ?4)", params![k, n, v, x]).unwrap();
            }
        }
        let keys: Vec<i64> = rows.keys().copied().collect();
        let pick = |i: usize| keys.get(i % keys.len().max(1)).copied();
        let (changed, key) = match &e {
            Edit::SetN(i, n) => match pick(*i) {
                Some(k) => (b.execute("UPDATE r SET n = ?2 WHERE k = ?1 AND n IS NOT ?2", params![k, n]).unwrap(), k),
                None => (0, 0),
            },
            Edit::SetV(i, v) => match pick(*i) {
                Some(k) => (b.execute("UPDATE r SET v = ?2 WHERE k = ?1 AND v IS NOT ?2", params![k, v]).unwrap(), k),
                None => (0, 0),
            },
            Edit::Delete(i) => match pick(*i) {
                Some(k) => (b.execute("DELETE FROM r WHERE k = ?1", [k]).unwrap(), k),
                None => (0, 0),
            },
            Edit::Insert(k, n) => (b.execute("INSERT OR IGNORE INTO r(k, n) VALUES (?1, ?2)", params![k, n]).unwrap(), *k),
        };
        let t = info("r", &["k"], &["k", "n", "v", "x"]);
        let da = compute(&a, &[(&t, Scope::All)]).unwrap();
        let db = compute(&b, &[(&t, Scope::All)]).unwrap();
        let found: Vec<Option<u16>> = compare(&da, &db).iter().map(|m| m.bucket).collect();
        if changed == 0 {
            prop_assert!(found.is_empty(), "{found:?}");
        } else {
            prop_assert_eq!(found, vec![bucket_of_key(&[json!(key)])]);
            prop_assert_eq!(bucket_of_key(&[json!(key)]), Some(bucket_of_values(&[ValueRef::Integer(key)])));
        }
        // The wire form carries the digests unchanged.
        prop_assert_eq!(digest::parse(digest::to_json(&db).as_bytes()).unwrap(), db);
    }
}
