//! A node away for months (issue 20, item 1; SPEC 2.8 "Nodes away"): central stops keeping
//! its log for it, keeps its stream as the net effect per row, and the node catches up with
//! one compact bundle; what it wrote while away still merges with every genuine collision
//! found, the one only the pruned log could have shown included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::{DockOptions, DockReport};
use berth_engine::route::model::DockingModel;
use berth_tests::World;
use std::collections::{BTreeMap, BTreeSet};

const SCHEMA: &str = "
CREATE TABLE item(id TEXT PRIMARY KEY, owner TEXT NOT NULL, v INTEGER);
CREATE TABLE note(id TEXT PRIMARY KEY, body TEXT);
";

/// Items are seen by the node whose `owner` attribute names their owner; notes by all.
const MODEL: &str = "version = 1
[nodes]
attributes = [\"owner\"]
[tables]
item = { visibility = \"limited\", node_write = true }
note = { visibility = \"enterprise\", node_write = true }
[[object]]
name = \"item\"
primary_table = \"item\"
[[object.member]]
table = \"item\"
vis_event = true
[[object.rule]]
sql = \"SELECT 'X' FROM item WHERE id = :primary_row_id AND owner = :attr_owner\"
";

const DAY: i64 = 86_400;

/// Items i00..i39 (even: alice's, odd: bob's, `v` = the number), notes n00..n19.
fn data() -> String {
    let mut s = String::new();
    for i in 0..40 {
        let owner = if i % 2 == 0 { "alice" } else { "bob" };
        s.push_str(&format!(
            "INSERT INTO item VALUES ('i{i:02}', '{owner}', {i});\n"
        ));
    }
    for i in 0..20 {
        s.push_str(&format!("INSERT INTO note VALUES ('n{i:02}', 'x');\n"));
    }
    s
}

fn world() -> World {
    let attrs = |o: &str| BTreeMap::from([("owner".to_string(), o.to_string())]);
    let w = World::build(
        SCHEMA,
        &data(),
        Some(MODEL),
        &[("a", attrs("alice")), ("b", attrs("bob"))],
    );
    let cfg = w.dir("hq").join("berth.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[retention]\naway_days = 30\n")).unwrap();
    w.settle();
    w
}

fn dock_at(w: &World, site: &str, now: i64) -> DockReport {
    w.dock_with(
        site,
        &w.via,
        &DockOptions {
            now: Some(now),
            ..DockOptions::default()
        },
    )
    .unwrap()
}

fn count(w: &World, site: &str, sql: &str) -> i64 {
    w.value(site, sql).parse().unwrap()
}

/// b's stream at central after what it acknowledged: (changes, distinct rows).
fn stream(w: &World, node: &str) -> (i64, i64) {
    let hq = rusqlite::Connection::open(w.dir("hq").join("data.db")).unwrap();
    let mut st = hq
        .prepare(
            "SELECT change FROM berth_partial WHERE node = ?1
              AND ppos > (SELECT acked_pos FROM berth_peers WHERE name = ?1)",
        )
        .unwrap();
    let texts: Vec<String> = st
        .query_map([node], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let rows: BTreeSet<(String, String)> = texts
        .iter()
        .map(|t| {
            let v: serde_json::Value = serde_json::from_str(t).unwrap();
            (v["t"].to_string(), v["k"].to_string())
        })
        .collect();
    (texts.len() as i64, rows.len() as i64)
}

/// Docks b, central and a (at `now`) until nothing moves.
fn settle_at(w: &World, now: i64) {
    for _ in 0..10 {
        let mut moved = 0;
        for site in ["b", "hq", "a", "hq"] {
            let r = dock_at(w, site, now);
            moved += r.written.len() + r.count("applied");
        }
        if moved == 0 {
            return;
        }
    }
    panic!("did not settle");
}

/// b is away 60 days while central makes thousands of changes and a docks daily. Central's
/// log is pruned below what b saw; b's stream holds one change per row it should change; b
/// comes back, holds exactly what it should, and its writes from while it was away arrive,
/// losing only genuine collisions: one by value, one that only the pruned log could show
/// (central changed the value and changed it back).
#[test]
fn a_node_away_for_months_catches_up_with_one_compact_bundle() {
    let w = world();
    let t0 = berth_engine::store::now();
    // b writes while away.
    w.exec("b", "UPDATE note SET body = 'b-note' WHERE id = 'n01'");
    w.exec("b", "UPDATE item SET v = 1001 WHERE id = 'i01'");
    w.exec("b", "UPDATE item SET v = 1005 WHERE id = 'i05'");
    w.exec("b", "UPDATE item SET v = 1007 WHERE id = 'i07'");
    w.exec("b", "INSERT INTO item VALUES ('b-new', 'bob', 1)");
    let mut central_changes = 0;
    for day in 1..=60 {
        let now = t0 + day * DAY;
        // Ten notes, five updates each a day: 3,000 changes of 10 rows.
        for k in 0..50 {
            let n = 10 + k % 10;
            w.exec(
                "hq",
                &format!("UPDATE note SET body = 'd{day}-{k}' WHERE id = 'n{n}'"),
            );
            central_changes += 1;
        }
        let once = match day {
            // i05 changes and changes back: values cannot show it.
            1 => "UPDATE item SET v = 99 WHERE id = 'i05'",
            2 => "UPDATE item SET v = 5 WHERE id = 'i05'",
            3 => "UPDATE item SET v = 77 WHERE id = 'i07'",
            // Made and deleted while b is away.
            5 => "INSERT INTO item VALUES ('tmp', 'bob', 0)",
            6 => "DELETE FROM item WHERE id = 'tmp'",
            // Made and deleted between two routing passes: b never hears of it.
            50 => "INSERT INTO item VALUES ('tmp2', 'bob', 0); DELETE FROM item WHERE id = 'tmp2'",
            // Leaves b's visibility (the rule's input, the owner, changes) and changes.
            7 => "UPDATE item SET owner = 'alice' WHERE id = 'i09'",
            8 => "UPDATE item SET v = 909 WHERE id = 'i09'",
            // Enters b's visibility and changes.
            9 => "UPDATE item SET owner = 'bob' WHERE id = 'i10'",
            10 => "UPDATE item SET v = 1010 WHERE id = 'i10'",
            // Enters, leaves, changes.
            11 => "UPDATE item SET owner = 'bob' WHERE id = 'i12'",
            12 => "UPDATE item SET owner = 'alice' WHERE id = 'i12'",
            13 => "UPDATE item SET v = 1212 WHERE id = 'i12'",
            _ => "",
        };
        if !once.is_empty() {
            w.exec("hq", once);
            central_changes += 1;
        }
        if day == 20 {
            w.exec("a", "UPDATE note SET body = 'a-note' WHERE id = 'n02'");
        }
        if day == 45 {
            // b takes central's (compacted) bundle but cannot send: still away. It writes
            // on, knowing what it took.
            let down = DockOptions {
                upload: false,
                now: Some(now),
                ..DockOptions::default()
            };
            let r = w.dock_with("b", &w.via, &down).unwrap();
            assert_eq!(r.count("applied"), 1, "{r:?}");
            w.exec("b", "UPDATE note SET body = 'b-45' WHERE id = 'n03'");
            w.exec("b", "UPDATE note SET body = 'b-45' WHERE id = 'n10'");
        }
        dock_at(&w, "hq", now);
        dock_at(&w, "a", now);
        dock_at(&w, "hq", now);
    }
    assert!(central_changes > 3000);
    let now = t0 + 61 * DAY;
    let hq = w.open("hq");
    let hold =
        berth_engine::partial::log_hold(&hq.conn, hq.config.retention.away_cutoff(now)).unwrap();
    drop(hq);
    assert_ne!(hold.held_by.as_deref(), Some("b"), "{hold:?}");
    assert!(hold.entries <= 10, "the log is pruned: {hold:?}");
    // Pruned below what b saw.
    let b_saw = count(
        &w,
        "hq",
        "SELECT MAX(m.pos) FROM berth_route_marks m, berth_peers p
          WHERE p.name = 'b' AND m.node = 'b' AND m.ppos <= p.acked_pos",
    );
    let floor = count(&w, "hq", "SELECT MIN(pos) FROM berth_log");
    assert!(floor > b_saw + 1, "log from {floor}, b saw up to {b_saw}");
    // One change per row b is to change: notes n10..n19 and a's n02; i05 and i07 (changed
    // in place), tmp (made, routed, deleted: a harmless delete), i09 and i12 (removed),
    // i10 (downloaded with its last value); nothing of tmp2.
    let (changes, rows) = stream(&w, "b");
    assert_eq!(
        (changes, rows),
        (17, 17),
        "b's stream is one change per row"
    );

    // b comes back: one bundle with those 17 changes, of which it took the 7 whose last
    // change came before day 45 then (skipped by position); the one on a row it changed
    // since (n10) leaves its column alone.
    let r = dock_at(&w, "b", now);
    let applied: Vec<_> = r
        .incoming
        .iter()
        .filter(|i| i.outcome == "applied")
        .collect();
    assert_eq!(applied.len(), 1, "{r:?}");
    let s = &applied[0].stats;
    assert_eq!((s.applied, s.skipped, s.overrides), (10, 7, 1), "{s:?}");
    settle_at(&w, now);

    // b holds exactly what it should.
    let model = DockingModel::from_toml(MODEL).unwrap();
    w.assert_matches_oracle(&model, "b");
    w.assert_matches_oracle(&model, "a");
    for (id, present) in [
        ("i09", false),
        ("i12", false),
        ("tmp", false),
        ("i10", true),
    ] {
        assert_eq!(
            count(
                &w,
                "b",
                &format!("SELECT count(*) FROM item WHERE id = '{id}'")
            ),
            i64::from(present),
            "{id} at b"
        );
    }
    assert_eq!(w.value("b", "SELECT v FROM item WHERE id = 'i10'"), "1010");
    assert_eq!(
        w.value("b", "SELECT body FROM note WHERE id = 'n19'"),
        "'d60-49'"
    );
    // b's writes arrived, exactly.
    assert_eq!(
        w.value("hq", "SELECT body FROM note WHERE id = 'n01'"),
        "'b-note'"
    );
    assert_eq!(w.value("hq", "SELECT v FROM item WHERE id = 'i01'"), "1001");
    assert_eq!(w.value("hq", "SELECT v FROM item WHERE id = 'b-new'"), "1");
    assert_eq!(
        w.value("hq", "SELECT body FROM note WHERE id = 'n02'"),
        "'a-note'"
    );
    assert_eq!(
        w.value("hq", "SELECT body FROM note WHERE id = 'n03'"),
        "'b-45'"
    );
    assert_eq!(
        w.value("b", "SELECT body FROM note WHERE id = 'n10'"),
        "'d60-40'"
    );
    // Central's genuine concurrent writes beat b's (central wins), recorded, and b took them.
    let conflicts = {
        let hq = rusqlite::Connection::open(w.dir("hq").join("data.db")).unwrap();
        let mut st = hq
            .prepare("SELECT node, tbl, pk, kind, columns FROM berth_conflicts ORDER BY pk")
            .unwrap();
        st.query_map([], |r| {
            Ok(format!(
                "{} {} {} {} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
    };
    assert_eq!(
        conflicts,
        [
            "b item [\"i05\"] update-update [\"v\"]",
            "b item [\"i07\"] update-update [\"v\"]",
            "b note [\"n10\"] update-update [\"body\"]"
        ]
    );
    for (id, v) in [("i05", "5"), ("i07", "77")] {
        let q = format!("SELECT v FROM item WHERE id = '{id}'");
        assert_eq!(w.value("hq", &q), v);
        assert_eq!(w.value("b", &q), v);
    }
    // The numbering held: b applied every sequence number once, and acknowledged all.
    assert_eq!(w.seqs_applied_twice("b"), 0);
    assert_eq!(w.seqs_applied_twice("hq"), 0);
    assert_eq!(
        w.value("hq", "SELECT out_seq FROM berth_peers WHERE name = 'b'"),
        w.value("b", "SELECT in_seq FROM berth_peers WHERE name = 'hq'")
    );
    assert_eq!(stream(&w, "b"), (0, 0));
}

/// A node is away only past `away_days`: before, it holds the log back as it always did,
/// and its stream is the whole history.
#[test]
fn a_node_within_the_away_days_holds_the_log_and_gets_the_history() {
    let w = world();
    let t0 = berth_engine::store::now();
    for day in 1..=20 {
        for k in 0..5 {
            w.exec(
                "hq",
                &format!("UPDATE note SET body = 'd{day}-{k}' WHERE id = 'n10'"),
            );
        }
        dock_at(&w, "hq", t0 + day * DAY);
        dock_at(&w, "a", t0 + day * DAY);
        dock_at(&w, "hq", t0 + day * DAY);
    }
    let hq = w.open("hq");
    let hold =
        berth_engine::partial::log_hold(&hq.conn, hq.config.retention.away_cutoff(t0 + 20 * DAY))
            .unwrap();
    drop(hq);
    assert_eq!(hold.held_by.as_deref(), Some("b"));
    assert!(hold.entries >= 100, "{hold:?}");
    assert_eq!(stream(&w, "b"), (100, 1));
    settle_at(&w, t0 + 20 * DAY);
    assert_eq!(
        w.value("b", "SELECT body FROM note WHERE id = 'n10'"),
        "'d20-4'"
    );
}
