//! Replica digests and repair (issue 16 part 2, SPEC 2.15): a node's rows changed behind
//! berth's back (capture triggers dropped by a tool, a row changed, deleted or added by
//! hand, a value corrupted, a row that should have left kept) are detected at the next dock
//! by comparing them with the digests central's bundles carry, and repaired from central's
//! rows of the differing buckets. Every row a repair replaces is kept aside, listed, and can
//! be written back; rows with unsent local changes are never touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::Disposition;
use berth_engine::replica;
use berth_tests::{OWNER_MODEL, World, tool};
use proptest::prelude::*;
use rusqlite::Connection;
use std::collections::BTreeMap;

const ITEM: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, v INTEGER, note TEXT);";

fn data(n: usize) -> String {
    (0..n)
        .map(|i| format!("INSERT INTO item VALUES ('k{i}', {i}, 'row {i}');\n"))
        .collect()
}

/// Runs SQL at a node through the system `sqlite3` shell (another SQLite than berth's) with
/// the capture triggers dropped, as a tool that rebuilds tables or a hand edit in DB
/// Browser does, then puts the triggers back the way `berth capture restore` does: the
/// writes were never journaled.
fn behind_berths_back(w: &World, site: &str, sql: &str) {
    let db = w.dir(site).join("data.db");
    let c = Connection::open(&db).unwrap();
    let drops: String = c
        .query_row(
            "SELECT group_concat('DROP TRIGGER \"' || name || '\";', ' ') FROM sqlite_master
             WHERE type = 'trigger' AND name LIKE 'berth_%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(c);
    let out = std::process::Command::new(tool("sqlite3"))
        .args(["-bail", "-cmd", ".timeout 10000"])
        .arg(&db)
        .arg(format!("{drops} {sql}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let site = w.open(site);
    let restored = berth_engine::guard::restore(&site).unwrap();
    assert!(!restored.tables.is_empty(), "the triggers were put back");
    let count: i64 = site
        .conn
        .query_row(
            "SELECT COUNT(*) FROM berth_log WHERE tbl = 'item'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(count, 0, "nothing of it was journaled");
}

fn kept(w: &World, site: &str) -> Vec<replica::Kept> {
    replica::kept(&w.open(site).conn).unwrap()
}

fn last_report(w: &World, site: &str) -> Option<replica::Report> {
    replica::last(&w.open(site).conn).unwrap()
}

/// Docks `site` then central: the node compares (and reports), central answers.
fn round_trip(w: &World, site: &str) {
    w.dock(site);
    w.dock("hq");
}

/// A row changed by hand at a node with the triggers dropped: the next dock finds its bucket
/// differs, central's next bundle repairs it, and the node's value is kept aside; written
/// back with `reapply`, it reaches central and every node as an ordinary change.
#[test]
fn a_row_changed_behind_berths_back_is_repaired_and_kept_aside() {
    let w = World::new(ITEM, &data(40), &["a", "b"]);
    w.settle();
    behind_berths_back(&w, "a", "UPDATE item SET v = 999 WHERE id = 'k7';");
    round_trip(&w, "a");
    let r = last_report(&w, "a").expect("a compared its rows");
    assert_eq!(r.differ.len(), 1, "one bucket differs: {r:?}");
    assert_eq!(r.differ[0].t, "item");
    assert!(r.differ[0].b.is_some());
    w.dock("hq");
    let took = w.dock("a");
    assert!(
        took.incoming
            .iter()
            .any(|i| i.detail.contains("1 rows repaired from central's")),
        "{took:?}"
    );
    w.dock("hq");
    assert_eq!(w.value("a", "SELECT v FROM item WHERE id = 'k7'"), "7");
    let k = kept(&w, "a");
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0].table, "item");
    assert_eq!(k[0].key, r#"["k7"]"#);
    assert_eq!(k[0].node_row.as_ref().unwrap()["v"], 999);
    assert_eq!(k[0].central_row.as_ref().unwrap()["v"], 7);
    w.settle();
    w.assert_converged();
    let r = last_report(&w, "a").unwrap();
    assert!(r.differ.is_empty(), "repaired: {r:?}");
    let hq = w.open("hq");
    let reports = replica::reports(&hq.conn).unwrap();
    let a = reports.iter().find(|(n, ..)| n == "a").expect("a reported");
    assert!(
        a.1.differ.is_empty(),
        "central has a's report of the repair"
    );
    drop(hq);
    // The node's value, written back, is an ordinary change.
    let mut a = w.open("a");
    replica::reapply(&mut a, k[0].id).unwrap();
    drop(a);
    assert!(kept(&w, "a").is_empty());
    w.settle();
    w.assert_converged();
    assert_eq!(w.value("b", "SELECT v FROM item WHERE id = 'k7'"), "999");
    assert_eq!(w.conflicts(), 0);
}

/// A row deleted, a row added and a value corrupted (another storage class), all behind
/// berth's back: each is found and repaired; each is kept aside (the deleted row as "no
/// row"), and the node ends exactly as central.
#[test]
fn deleted_added_and_corrupted_rows_are_repaired() {
    let w = World::new(ITEM, &data(40), &["a"]);
    w.settle();
    behind_berths_back(
        &w,
        "a",
        "DELETE FROM item WHERE id = 'k3';
         INSERT INTO item VALUES ('stray', 1, 'added by hand');
         UPDATE item SET note = CAST(note AS BLOB) WHERE id = 'k11';",
    );
    w.settle();
    w.assert_converged();
    let k = kept(&w, "a");
    let by_key: BTreeMap<&str, &replica::Kept> = k.iter().map(|k| (k.key.as_str(), k)).collect();
    assert_eq!(by_key.len(), 3, "{k:?}");
    assert!(by_key[r#"["k3"]"#].node_row.is_none(), "k3 was gone here");
    assert!(by_key[r#"["k3"]"#].central_row.is_some());
    assert!(
        by_key[r#"["stray"]"#].central_row.is_none(),
        "central has no stray"
    );
    assert_eq!(
        by_key[r#"["stray"]"#].node_row.as_ref().unwrap()["note"],
        "added by hand"
    );
    assert!(by_key[r#"["k11"]"#].node_row.is_some());
    assert_eq!(
        w.value("a", "SELECT typeof(note) FROM item WHERE id = 'k11'"),
        "'text'"
    );
    assert!(last_report(&w, "a").unwrap().differ.is_empty());
}

/// A node's unsent change to a row of a bucket being repaired is never overwritten: the
/// repair leaves that row alone and the change reaches central.
#[test]
fn unsent_local_changes_are_not_touched_by_a_repair() {
    let w = World::new(ITEM, &data(40), &["a"]);
    w.settle();
    behind_berths_back(&w, "a", "UPDATE item SET note = 'by hand' WHERE id = 'k5';");
    round_trip(&w, "a"); // a reports k5's bucket; central answers with its rows
    // Before the repair arrives, the application at a writes k5 (journaled, unsent).
    w.exec("a", "UPDATE item SET v = 555 WHERE id = 'k5';");
    w.dock("a"); // applies the repair: k5 has an unsent change, so it stays as it is
    assert_eq!(w.value("a", "SELECT v FROM item WHERE id = 'k5'"), "555");
    assert_eq!(
        w.value("a", "SELECT note FROM item WHERE id = 'k5'"),
        "'by hand'"
    );
    w.settle();
    assert_eq!(w.value("hq", "SELECT v FROM item WHERE id = 'k5'"), "555");
    w.assert_converged();
    assert_eq!(w.conflicts(), 0);
}

const OWNED: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, owner TEXT, v INTEGER);";
const OWNED_DATA: &str = "INSERT INTO item VALUES ('mine', 'A', 1);
INSERT INTO item VALUES ('theirs', 'B', 2);";

/// A `limited` row a node should not hold (it left, or was put there by hand): the repair
/// removes it and keeps it aside; the node ends holding exactly what central routes to it.
#[test]
fn a_row_that_should_have_left_the_node_is_removed() {
    let attrs = BTreeMap::from([("owner".to_string(), "A".to_string())]);
    let w = World::build(OWNED, OWNED_DATA, Some(OWNER_MODEL), &[("a", attrs)]);
    w.settle();
    assert_eq!(w.value("a", "SELECT COUNT(*) FROM item"), "1");
    behind_berths_back(&w, "a", "INSERT INTO item VALUES ('theirs', 'B', 2);");
    w.settle();
    assert_eq!(w.value("a", "SELECT group_concat(id) FROM item"), "'mine'");
    let k = kept(&w, "a");
    assert_eq!(k.len(), 1, "{k:?}");
    assert_eq!(k[0].key, r#"["theirs"]"#);
    assert!(k[0].central_row.is_none());
    assert_eq!(
        w.value("hq", "SELECT COUNT(*) FROM item"),
        "2",
        "central untouched"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Any set of edits behind berth's back, at any node: after two round trips every node
    /// holds exactly central's rows, and every row a repair changed is kept aside (no write
    /// of a node lost unreported).
    #[test]
    fn any_edits_behind_berths_back_converge_and_are_kept(
        edits in prop::collection::vec((0usize..2, 0usize..30, 0u8..3, -50i64..50), 1..8)
    ) {
        let w = World::new(ITEM, &data(30), &["a", "b"]);
        w.settle();
        let mut touched: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
        for (node, row, kind, x) in &edits {
            let site = ["a", "b"][*node];
            let sql = match kind {
                0 => format!("UPDATE item SET v = {x} WHERE id = 'k{row}';"),
                1 => format!("DELETE FROM item WHERE id = 'k{row}';"),
                _ => format!("INSERT OR REPLACE INTO item VALUES ('x{row}', {x}, 'stray');"),
            };
            behind_berths_back(&w, site, &sql);
            touched.entry(site).or_default().insert(match kind {
                2 => format!(r#"["x{row}"]"#),
                _ => format!(r#"["k{row}"]"#),
            });
        }
        // The rows each edit left different from central's: each must be kept aside.
        let row = |site: &str, key: &str| -> Option<(i64, String)> {
            let id = key.trim_start_matches("[\"").trim_end_matches("\"]").to_string();
            Connection::open(w.dir(site).join("data.db"))
                .unwrap()
                .query_row("SELECT v, note FROM item WHERE id = ?1", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .ok()
        };
        let differ: BTreeMap<&str, std::collections::BTreeSet<String>> = touched
            .iter()
            .map(|(site, keys)| {
                let d = keys.iter().filter(|k| row(site, k) != row("hq", k)).cloned().collect();
                (*site, d)
            })
            .collect();
        for _ in 0..2 {
            for n in ["a", "b"] {
                round_trip(&w, n);
            }
        }
        w.assert_converged();
        for (site, keys) in differ {
            let kept: std::collections::BTreeSet<String> =
                kept(&w, site).into_iter().map(|k| k.key).collect();
            prop_assert_eq!(&kept, &keys, "{}: kept aside vs rows left different", site);
        }
    }
}

/// Writes into the exchange folder a bundle from central to `to`, signed with central's real
/// key, carrying no changes and the given replica entries (name, kind, bytes).
fn forge_from_central(w: &World, to: &str, entries: &[(&str, &str, Vec<u8>)]) -> String {
    let hq = Connection::open(w.dir("hq").join("data.db")).unwrap();
    let (out_seq, acked, applied): (i64, i64, i64) = hq
        .query_row(
            "SELECT out_seq, acked_pos, applied_pos FROM berth_peers WHERE name = ?1",
            [to],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let stream = berth_bundle::StreamPosition {
        seq: (out_seq + 1) as u64,
        log_from: (acked + 1) as u64,
        log_to: acked as u64,
        requires: acked as u64,
        acks: applied as u64,
    };
    let path = berth_tests::forge_with(w, "hq", to, stream, &[], entries);
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// A repair or digests entry that cannot be right (hostile or damaged, yet signed by
/// central) is refused as malformed: the bundle is quarantined with the reason, naming the
/// entry and line, and not one row changes.
#[test]
fn a_malformed_repair_or_digest_is_quarantined_and_changes_nothing() {
    let w = World::new(ITEM, &data(10), &["a"]);
    w.settle();
    let before = w.dump("a");
    let key_k1_bucket = berth_engine::digest::bucket_of_key(&[serde_json::json!("k1")]).unwrap();
    let other = (key_k1_bucket + 1) % berth_engine::digest::BUCKETS;
    /// (what, entries (name, kind, bytes), the reason the quarantine names)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str, Vec<u8>)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "bucket out of range",
            vec![(replica::REPAIR_ENTRY, "repair", br#"{"t":"item","b":99,"n":0}"#.to_vec())],
            "out of range",
        ),
        (
            "row in the wrong bucket",
            vec![(
                replica::REPAIR_ENTRY,
                "repair",
                format!(
                    "{{\"t\":\"item\",\"b\":{other},\"n\":1}}\n{{\"t\":\"item\",\"b\":{other},\"k\":[\"k1\"],\"r\":{{\"id\":\"k1\",\"v\":0,\"note\":\"x\"}}}}\n"
                )
                .into_bytes(),
            )],
            "not in that bucket",
        ),
        (
            "header count disagrees",
            vec![(
                replica::REPAIR_ENTRY,
                "repair",
                format!("{{\"t\":\"item\",\"b\":{key_k1_bucket},\"n\":5}}\n").into_bytes(),
            )],
            "header says 5 rows",
        ),
        (
            "not JSON",
            vec![(replica::REPAIR_ENTRY, "repair", b"\xff\xfe garbage".to_vec())],
            "line 1",
        ),
        (
            "digests with a bad hash",
            vec![(
                replica::DIGESTS_ENTRY,
                "digests",
                br#"{"item":{"rows":1,"xor":"zz","b":{"3":[1,"zz"]}}}"#.to_vec(),
            )],
            "digests",
        ),
    ];
    for (what, entries, reason) in cases {
        let name = forge_from_central(&w, "a", &entries);
        let r = w.dock("a");
        let i = r
            .incoming
            .iter()
            .find(|i| i.file == name)
            .unwrap_or_else(|| panic!("{what}: {name} not reported: {r:?}"));
        assert_eq!(i.outcome, Disposition::Quarantined, "{what}: {i:?}");
        assert!(i.detail.contains(reason), "{what}: {:?}", i.detail);
        assert_eq!(w.dump("a"), before, "{what}: rows changed");
        assert!(kept(&w, "a").is_empty(), "{what}");
    }
}
