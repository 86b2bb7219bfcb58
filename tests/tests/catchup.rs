//! A node away for months (issue 20, item 1; SPEC 2.8 "Nodes away"): central stops keeping
//! its log for it, keeps its stream as the net effect per row, and the node catches up with
//! one compact bundle; what it wrote while away still merges with every genuine collision
//! found, the one only the pruned log could have shown included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::Disposition;
use berth_engine::dock::{DockOptions, DockReport};
use berth_engine::route::model::DockingModel;
use berth_tests::World;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

const SCHEMA: &str = include_str!("../fixtures/owner-notes/schema.sql");

/// Items are seen by the node whose `owner` attribute names their owner; notes by all.
const MODEL: &str = include_str!("../fixtures/owner-notes/docking.toml");

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
    set_away_days(&w, 30);
    w.settle();
    w
}

fn set_away_days(w: &World, days: u32) {
    let cfg = w.dir("hq").join("berth.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[retention]\naway_days = {days}\n")).unwrap();
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

/// The segments of `node`'s stream at central (split by markers, statements, migrations and
/// corrective changes); asserts no row has two changes in one.
fn segments(w: &World, node: &str) -> i64 {
    let hq = rusqlite::Connection::open(w.dir("hq").join("data.db")).unwrap();
    let mut st = hq
        .prepare(
            "SELECT change FROM berth_partial WHERE node = ?1
              AND ppos > (SELECT acked_pos FROM berth_peers WHERE name = ?1) ORDER BY ppos",
        )
        .unwrap();
    let texts: Vec<String> = st
        .query_map([node], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut n = 1;
    let mut seen = BTreeSet::new();
    for t in &texts {
        let v: serde_json::Value = serde_json::from_str(t).unwrap();
        let op = v["op"].as_str().unwrap();
        if !matches!(op, "I" | "U" | "D") || v.get("ack").is_some() {
            n += 1;
            seen.clear();
            continue;
        }
        let key = (v["t"].to_string(), v["k"].to_string());
        assert!(
            seen.insert(key),
            "{node}: two changes of one row in a segment: {t}"
        );
    }
    n
}

/// Asserts central never had to repair a replica (SPEC 2.15): every node reached its state
/// through its stream alone (no repair sent, no row a repair replaced kept aside).
fn assert_no_repair(w: &World) {
    assert_eq!(
        w.value(
            "hq",
            "SELECT group_concat(node) FROM berth_replicas WHERE repair_seq > 0 OR attempts > 0"
        ),
        "NULL",
        "central repaired these replicas"
    );
    for (n, _) in &w.nodes {
        assert_eq!(
            count(w, n, "SELECT count(*) FROM berth_kept"),
            0,
            "{n} was repaired"
        );
    }
}

/// Docks b, central and a (at `now`) until nothing moves.
fn settle_at(w: &World, now: i64) {
    for _ in 0..10 {
        let mut moved = 0;
        for site in ["b", "hq", "a", "hq"] {
            let r = dock_at(w, site, now);
            moved += r.written.len() + r.count(Disposition::Applied);
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
            assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
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
    assert_eq!(hold.away, ["b"]);
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
        .filter(|i| i.outcome == Disposition::Applied)
        .collect();
    assert_eq!(applied.len(), 1, "{r:?}");
    let s = &applied[0].stats;
    assert_eq!((s.applied, s.skipped, s.overrides), (10, 7, 1), "{s:?}");
    settle_at(&w, now);

    // b holds exactly what it should.
    let model = DockingModel::from_toml(MODEL).unwrap();
    w.assert_matches_oracle(&model, "b");
    w.assert_matches_oracle(&model, "a");
    assert_no_repair(&w);
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
    assert!(hold.away.is_empty());
    assert!(hold.entries >= 100, "{hold:?}");
    assert_eq!(stream(&w, "b"), (100, 1));
    settle_at(&w, t0 + 20 * DAY);
    assert_eq!(
        w.value("b", "SELECT body FROM note WHERE id = 'n10'"),
        "'d20-4'"
    );
}

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

fn files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// What one long run saw at its worst.
#[derive(Debug, Default)]
struct Peaks {
    log: i64,
    log_bound: i64,
    partial: i64,
    partial_bound: i64,
    spool: usize,
    waiting: usize,
}

/// Issue 20's long run: daily docks of many nodes for many days, a quarter of them away for
/// months (writing all the while), central and the other nodes writing every day. At every
/// step central's log holds at most what was journaled within the away window (a node away
/// longer no longer holds it), an away node's stream holds one change per row it holds or
/// held (not its history), every spool is empty after its site's dock, and the exchange
/// folder holds at most one bundle per recipient. At the end every node, back, holds
/// exactly the oracle's projection, and each node's last write to its own note (a row only
/// it writes) is central's.
///
/// By default 8 nodes for 60 days (away 15 to 30 days, `away_days` 10); `BERTH_LONGRUN=1`
/// runs 50 nodes for 365 days (away 3 to 6 months, `away_days` 30; run it in release);
/// `BERTH_LONGRUN_NODES`, `BERTH_LONGRUN_DAYS` and `BERTH_LONGRUN_SEED` set each.
#[test]
fn a_long_run_of_daily_docks_stays_bounded_and_ends_at_the_oracle() {
    let full = std::env::var_os("BERTH_LONGRUN").is_some();
    let n_nodes = env_or("BERTH_LONGRUN_NODES", if full { 50 } else { 8 });
    let days = env_or("BERTH_LONGRUN_DAYS", if full { 365 } else { 60 });
    let seed = env_or("BERTH_LONGRUN_SEED", 1);
    let away_days: i64 = if days >= 180 { 30 } else { 10 };
    eprintln!(
        "long run: {n_nodes} nodes, {days} days, away_days {away_days}, seed {seed} (BERTH_LONGRUN_SEED)"
    );
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(u64::try_from(seed).unwrap());
    let names: Vec<String> = (0..n_nodes).map(|i| format!("n{i:02}")).collect();
    let owner = |i: usize| format!("o{i:02}");
    let mut data = String::new();
    for (i, n) in names.iter().enumerate() {
        for k in 0..10 {
            data.push_str(&format!(
                "INSERT INTO item VALUES ('{n}-{k}', '{}', {k});\n",
                owner(i)
            ));
        }
        data.push_str(&format!("INSERT INTO note VALUES ('own-{n}', '');\n"));
    }
    for k in 0..20 {
        data.push_str(&format!("INSERT INTO note VALUES ('s{k:02}', '');\n"));
    }
    let nodes: Vec<(&str, BTreeMap<String, String>)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.as_str(),
                BTreeMap::from([("owner".to_string(), owner(i))]),
            )
        })
        .collect();
    let w = World::build(SCHEMA, &data, Some(MODEL), &nodes);
    set_away_days(&w, u32::try_from(away_days).unwrap());
    // Every fourth node is away once, for months (longer than `away_days`).
    let away: Vec<Option<(i64, i64)>> = (0..names.len())
        .map(|i| {
            (i % 4 == 1).then(|| {
                let start = rng.random_range(1..days / 2);
                (start, start + rng.random_range(days / 4..days / 2))
            })
        })
        .collect();
    let is_away = |i: usize, day: i64| away[i].is_some_and(|(s, e)| (s..e).contains(&day));
    let t0 = berth_engine::store::now();
    let mut own_last: BTreeMap<String, String> = BTreeMap::new();
    let mut log_top: Vec<i64> = vec![count(
        &w,
        "hq",
        "SELECT COALESCE(MAX(pos), 0) FROM berth_log",
    )];
    let mut deleted_on: Vec<i64> = vec![0];
    let mut peaks = Peaks::default();
    let mut serial = 0;
    for day in 1..=days {
        let now = t0 + day * DAY;
        // Central's application.
        let mut deleted = 0;
        for k in 0..10 {
            let items = count(&w, "hq", "SELECT count(*) FROM item");
            let pick = format!(
                "(SELECT id FROM item ORDER BY id LIMIT 1 OFFSET {})",
                rng.random_range(0..items)
            );
            let sql = match rng.random_range(0..10) {
                0..4 => format!(
                    "UPDATE item SET v = {} WHERE id = {pick}",
                    rng.random_range(0..1000)
                ),
                4..6 => format!(
                    "UPDATE item SET owner = '{}' WHERE id = {pick}",
                    owner(rng.random_range(0..names.len()))
                ),
                6 => format!(
                    "UPDATE note SET body = 'hq-{day}-{k}' WHERE id = 's{:02}'",
                    rng.random_range(0..20)
                ),
                7..9 => {
                    serial += 1;
                    format!(
                        "INSERT INTO item VALUES ('c{serial}', '{}', 0)",
                        owner(rng.random_range(0..names.len()))
                    )
                }
                _ => {
                    deleted += 1;
                    format!("DELETE FROM item WHERE id = {pick}")
                }
            };
            w.exec("hq", &sql);
        }
        deleted_on.push(deleted);
        // The nodes: those here write and dock; those away write now and then.
        for (i, n) in names.iter().enumerate() {
            let here = !is_away(i, day);
            if here || rng.random_range(0..4) == 0 {
                let body = format!("{n}-{day}");
                w.exec(
                    n,
                    &format!("UPDATE note SET body = '{body}' WHERE id = 'own-{n}'"),
                );
                own_last.insert(n.clone(), body);
                let items = count(&w, n, "SELECT count(*) FROM item");
                if items > 0 {
                    w.exec(
                        n,
                        &format!(
                            "UPDATE item SET v = {} WHERE id = (SELECT id FROM item ORDER BY id LIMIT 1 OFFSET {})",
                            rng.random_range(1000..2000),
                            rng.random_range(0..items)
                        ),
                    );
                }
                if rng.random_range(0..5) == 0 {
                    w.exec(
                        n,
                        &format!(
                            "UPDATE note SET body = '{n}-{day}' WHERE id = 's{:02}'",
                            rng.random_range(0..20)
                        ),
                    );
                }
            }
            if here {
                dock_at(&w, n, now);
                let spool = files(&w.dir(n).join("spool"));
                assert!(spool.is_empty(), "day {day}: {n}'s spool holds {spool:?}");
            }
        }
        dock_at(&w, "hq", now);
        // Bounds, at every step.
        let spool = files(&w.dir("hq").join("spool"));
        assert!(
            spool.is_empty(),
            "day {day}: central's spool holds {spool:?}"
        );
        let waiting = files(&w.via);
        let per: BTreeSet<&String> = waiting.iter().collect();
        assert_eq!(per.len(), waiting.len());
        for n in names.iter().chain([&"hq".to_string()]) {
            let to = waiting
                .iter()
                .filter(|f| f.contains(&format!("_to_{n}_")))
                .count();
            assert!(to <= 1, "day {day}: {to} bundles wait for {n}: {waiting:?}");
        }
        peaks.spool = peaks.spool.max(spool.len());
        peaks.waiting = peaks.waiting.max(waiting.len());
        log_top.push(count(
            &w,
            "hq",
            "SELECT COALESCE(MAX(pos), 0) FROM berth_log",
        ));
        let day_i = usize::try_from(day).unwrap();
        let window = usize::try_from(away_days + 2).unwrap();
        let log = count(&w, "hq", "SELECT count(*) FROM berth_log");
        // What was journaled within the window: a node that docks holds the log only back
        // to what it acknowledged (sent the day before it docked); a node silent longer
        // than `away_days` holds none of it.
        let log_bound = log_top[day_i] - log_top[day_i.saturating_sub(window)] + 1;
        assert!(
            log <= log_bound,
            "day {day}: central's log holds {log} entries, bound {log_bound}"
        );
        peaks.log = peaks.log.max(log);
        peaks.log_bound = peaks.log_bound.max(log_bound);
        for (i, n) in names.iter().enumerate() {
            let Some((start, _)) = away[i] else { continue };
            if !is_away(i, day) || day - start <= away_days {
                continue;
            }
            // An away node's stream: one change per row between barriers (its last
            // bundle's marker and corrective changes), each segment at most the rows
            // central holds now and those deleted since the node left.
            let (changes, rows) = stream(&w, n);
            let segments = segments(&w, n);
            let rows_now = count(
                &w,
                "hq",
                "SELECT (SELECT count(*) FROM item) + (SELECT count(*) FROM note)",
            );
            let gone: i64 = deleted_on[usize::try_from(start).unwrap()..].iter().sum();
            let bound = rows_now + gone;
            assert!(
                rows <= bound,
                "day {day}: {n}'s stream holds {rows} rows, bound {bound}"
            );
            assert!(
                changes <= segments * bound,
                "day {day}: {n}'s stream holds {changes} changes in {segments} segments"
            );
            peaks.partial = peaks.partial.max(changes);
            peaks.partial_bound = peaks.partial_bound.max(bound);
        }
    }
    // Everyone comes back.
    let end = t0 + (days + 1) * DAY;
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 10, "did not settle");
        let mut moved = 0;
        for n in names.iter().chain([&"hq".to_string()]) {
            let r = dock_at(&w, n, end);
            moved += r.written.len() + r.count(Disposition::Applied);
        }
        if moved == 0 {
            break;
        }
    }
    let model = DockingModel::from_toml(MODEL).unwrap();
    for n in &names {
        w.assert_matches_oracle(&model, n);
        assert_eq!(
            w.value("hq", &format!("SELECT body FROM note WHERE id = 'own-{n}'")),
            format!("'{}'", own_last[n]),
            "{n}'s last write to its own note"
        );
        assert_eq!(stream(&w, n), (0, 0), "{n}'s stream is acknowledged");
    }
    assert_eq!(w.seqs_applied_twice("hq"), 0);
    assert_no_repair(&w);
    eprintln!(
        "long run done in {:.1} s: central log at most {} entries (bound at most {}), an away node's stream at most {} changes (bound at most {}), spools at most {}, exchange folder at most {} files; {} central log entries journaled, {} collisions",
        started.elapsed().as_secs_f64(),
        peaks.log,
        peaks.log_bound,
        peaks.partial,
        peaks.partial_bound,
        peaks.spool,
        peaks.waiting,
        log_top.last().copied().unwrap_or(0),
        w.conflicts(),
    );
}

/// b's last bundle collided and central's answer (a corrective change and the marker of
/// the merge) waits in b's stream when b goes away; central then changes that row daily.
/// The corrective change and the marker stay where they are (barriers: a node applies a
/// corrective change against its changes after the one it corrects, and the marker ends its
/// pending changes); only what follows is compacted. b comes back to central's last value,
/// and the one collision is the one that happened.
#[test]
fn a_corrective_change_and_the_marker_stay_in_place_in_a_compacted_stream() {
    let w = world();
    let t0 = berth_engine::store::now();
    w.exec("b", "UPDATE item SET v = 1 WHERE id = 'i03'");
    w.exec("hq", "UPDATE item SET v = 2 WHERE id = 'i03'");
    dock_at(&w, "b", t0);
    dock_at(&w, "hq", t0);
    // b is away from here; it writes another row meanwhile.
    w.exec("b", "UPDATE note SET body = 'b-away' WHERE id = 'n04'");
    for day in 1..=40 {
        let now = t0 + day * DAY;
        for k in 0..3 {
            w.exec(
                "hq",
                &format!("UPDATE item SET v = {} WHERE id = 'i03'", 100 * day + k),
            );
        }
        dock_at(&w, "hq", now);
        dock_at(&w, "a", now);
        dock_at(&w, "hq", now);
    }
    // Three segments: central's change routed before the merge; the corrective change; the
    // marker; then one change of the 120 central made since.
    assert_eq!(segments(&w, "b"), 3);
    let (changes, rows) = stream(&w, "b");
    assert_eq!((changes, rows), (4, 2), "{:?}", stream(&w, "b"));
    settle_at(&w, t0 + 41 * DAY);
    assert_eq!(w.value("b", "SELECT v FROM item WHERE id = 'i03'"), "4002");
    assert_eq!(w.value("hq", "SELECT v FROM item WHERE id = 'i03'"), "4002");
    assert_eq!(
        w.value("hq", "SELECT body FROM note WHERE id = 'n04'"),
        "'b-away'"
    );
    assert_eq!(
        w.value(
            "hq",
            "SELECT group_concat(node || ' ' || pk || ' ' || kind, '; ') FROM berth_conflicts"
        ),
        "'b [\"i03\"] update-update'"
    );
    let model = DockingModel::from_toml(MODEL).unwrap();
    w.assert_matches_oracle(&model, "b");
    assert_no_repair(&w);
}

/// While b is away the admin changes its attribute (the rule's input): every row it held
/// leaves and every row of its new owner arrives, and central keeps changing both kinds.
/// b's stream is one change per row (a delete for each row it held, the latest whole row
/// for each it gains, whatever happened to them meanwhile), and b comes back holding
/// exactly its new rows, with what it wrote meanwhile at central.
#[test]
fn an_attribute_change_while_away_arrives_as_one_change_per_row() {
    let w = world();
    let t0 = berth_engine::store::now();
    w.exec("b", "UPDATE note SET body = 'b-away' WHERE id = 'n05'");
    for day in 1..=40 {
        let now = t0 + day * DAY;
        if day == 10 {
            let set = BTreeMap::from([("owner".to_string(), "alice".to_string())]);
            berth_engine::enroll::set_attributes(&w.open("hq"), "b", &set, &[]).unwrap();
        }
        // Central changes one of alice's items and one of bob's a day, three times each.
        for k in 0..3 {
            let (a, b) = (2 * (day % 20), 2 * (day % 20) + 1);
            w.exec(
                "hq",
                &format!(
                    "UPDATE item SET v = {} WHERE id = 'i{a:02}';
                     UPDATE item SET v = {} WHERE id = 'i{b:02}'",
                    1000 * day + k,
                    1000 * day + k
                ),
            );
        }
        dock_at(&w, "hq", now);
        dock_at(&w, "a", now);
        dock_at(&w, "hq", now);
    }
    // 20 removals, 20 downloads (alice's items, each with its latest value), nothing else:
    // b's notes did not change.
    assert_eq!(stream(&w, "b"), (40, 40));
    settle_at(&w, t0 + 41 * DAY);
    let model = DockingModel::from_toml(MODEL).unwrap();
    w.assert_matches_oracle(&model, "b");
    assert_eq!(
        w.value("b", "SELECT group_concat(DISTINCT owner) FROM item"),
        "'alice'"
    );
    assert_eq!(count(&w, "b", "SELECT count(*) FROM item"), 20);
    assert_eq!(w.value("b", "SELECT v FROM item WHERE id = 'i00'"), "40002");
    assert_eq!(
        w.value("hq", "SELECT body FROM note WHERE id = 'n05'"),
        "'b-away'"
    );
    assert_eq!(w.conflicts(), 0);
    assert_no_repair(&w);
}

/// Berth's own JSON that was damaged by hand does not read back as an empty default: a node's
/// attributes turned into garbage through the `sqlite3` shell stop central's next routing
/// pass with an error naming where, instead of routing as if the node had no attributes
/// (which would remove every row it holds).
#[test]
fn a_nodes_attributes_damaged_by_hand_stop_routing_with_an_error_naming_them() {
    let w = world();
    let held = w.value("a", "SELECT count(*) FROM item");
    w.write(
        "hq",
        berth_tests::Writer::Shell,
        &[
            berth_tests::Stmt::sql("UPDATE berth_peers SET attrs = '{owner' WHERE name = 'a'"),
            berth_tests::Stmt::sql("UPDATE item SET v = v + 1"),
        ],
    );
    let mut hq = w.open("hq");
    let err = berth_engine::dock::dock(&mut hq, &w.via, &DockOptions::default()).unwrap_err();
    let berth_engine::EngineError::Stored { place, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(place, "berth_peers.attrs of node a");
    assert!(err.to_string().contains("berth verify"), "{err}");
    drop(hq);
    // Nothing was routed to the node: it still holds what it held.
    w.dock("a");
    assert_eq!(w.value("a", "SELECT count(*) FROM item"), held);
}
