//! Issue 17's property: an adversarial node. Keith (employee E1) writes anything to his own
//! replica with foreign keys off (re-pointing every foreign key to any id of the sample,
//! inserting rows under keys he does not hold, rows on instances he does not hold, rows of
//! tables nodes may not write), in random rounds; his bundles carry whatever his SQLite
//! journaled. A last round is a bundle he forges and signs with his own key, continuing his
//! stream: inserts, updates and deletes of any row of any table, held or not, with any
//! references (the test asserts central merged it). After each round has settled, with
//! nobody else writing:
//! - (P1) no node holds an instance it did not hold before, unless keith held it or his
//!   round created it (its primary row was not at central before);
//! - (P2) no node holds a row it did not hold before that keith does not hold or held,
//!   unless his round created it on instances he held or created: whatever keith shares
//!   is his own;
//! - (P3) at central, no row outside keith's view before the round changed or went;
//! - (P4) every replica is the oracle's projection of central, and central's router agrees.
//!
//! Run with the sample's rules in both forms (set forms answer for all nodes at once) and
//! with the seed's pair forms only. `BERTH_AUTH_SEEDS=N` runs more seeds; `BERTH_AUTH_SEED=S`
//! replays one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::route::model::DockingModel;
use berth_tests::{World, forge, pair_forms_only, sample};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};

fn world(docking: &str) -> World {
    let nodes: Vec<(&str, BTreeMap<String, String>)> =
        [("keith", "E1"), ("carl", "E2"), ("greg", "E3")]
            .iter()
            .map(|(n, e)| (*n, BTreeMap::from([("employee".into(), (*e).into())])))
            .collect();
    World::build(
        &sample("schema.sql"),
        &sample("data.sql"),
        Some(docking),
        &nodes,
    )
}

fn hq(w: &World) -> Connection {
    Connection::open(w.dir("hq").join("data.db")).unwrap()
}

fn pairs(c: &Connection, sql: &str, node: &str) -> BTreeSet<(String, String)> {
    c.prepare(sql)
        .unwrap()
        .query_map([node], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The instances central's router says `node` holds: (object, id).
fn instances(w: &World, node: &str) -> BTreeSet<(String, String)> {
    pairs(
        &hq(w),
        "SELECT obj, id FROM berth_instances WHERE node = ?1",
        node,
    )
}

/// The rows a node holds, as (table, key text), read from its own replica.
fn rows(w: &World, node: &str) -> BTreeSet<(String, String)> {
    table_rows(&w.dir(node).join("data.db"))
        .into_keys()
        .collect()
}

/// Every user row of a database file: (table, key as a JSON array) -> the whole row, read
/// exactly.
fn table_rows(path: &std::path::Path) -> BTreeMap<(String, String), berth_tests::TypedRow> {
    berth_tests::typed_rows(path)
        .into_iter()
        .flat_map(|(t, rows)| rows.into_iter().map(move |(k, r)| ((t.clone(), k), r)))
        .collect()
}

/// Ids of the sample and of the rows keith made, by kind.
struct Ids {
    accounts: Vec<String>,
    optys: Vec<String>,
    quotes: Vec<String>,
    employees: Vec<String>,
    activities: Vec<String>,
    contacts: Vec<String>,
}

impl Ids {
    fn new() -> Ids {
        let v = |p: &str, n: usize| (1..=n).map(|i| format!("{p}{i}")).collect();
        Ids {
            accounts: v("A", 5),
            optys: v("O", 5),
            quotes: v("Q", 4),
            employees: v("E", 5),
            activities: Vec::new(),
            contacts: v("C", 6),
        }
    }
}

fn any(rng: &mut StdRng, from: &[String]) -> String {
    from[rng.random_range(0..from.len())].clone()
}

/// A reference to one of `from`, or NULL.
fn reference(rng: &mut StdRng, from: &[String]) -> String {
    if rng.random_range(0..5) == 0 {
        "NULL".into()
    } else {
        format!("'{}'", any(rng, from))
    }
}

/// The id of a row keith holds in `table` (any id of the sample when he holds none).
fn own(rng: &mut StdRng, keith: &Connection, table: &str, or: &[String]) -> String {
    let held: Vec<String> = keith
        .prepare(&format!("SELECT id FROM {table} ORDER BY id"))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    if held.is_empty() {
        any(rng, or)
    } else {
        any(rng, &held)
    }
}

/// One hostile (or harmless) write of keith's, as SQL for his replica: updates change rows
/// he holds; references name any id of the sample or of his own rows.
fn hostile(rng: &mut StdRng, keith: &Connection, ids: &mut Ids, step: usize) -> String {
    let fresh = |p: &str| format!("{p}x{step}");
    match rng.random_range(0..16) {
        0 => format!(
            "UPDATE opty SET account_id = {} WHERE id = '{}'",
            reference(rng, &ids.accounts),
            own(rng, keith, "opty", &ids.optys)
        ),
        1 => {
            let id = fresh("Q");
            let sql = format!(
                "INSERT INTO quote(id, opty_id, owner_emp_id, name) VALUES ('{id}', {}, {}, 'hostile')",
                reference(rng, &ids.optys),
                reference(rng, &ids.employees)
            );
            ids.quotes.push(id);
            sql
        }
        2 => format!(
            "UPDATE quote SET opty_id = {} WHERE id = '{}'",
            reference(rng, &ids.optys),
            own(rng, keith, "quote", &ids.quotes)
        ),
        3 => format!(
            "UPDATE quote SET owner_emp_id = {} WHERE id = '{}'",
            reference(rng, &ids.employees),
            own(rng, keith, "quote", &ids.quotes)
        ),
        4 | 5 => {
            let id = fresh("X");
            let sql = format!(
                "INSERT INTO activity(id, account_id, opty_id, quote_id, kind) VALUES ('{id}', {}, {}, {}, 'call')",
                reference(rng, &ids.accounts),
                reference(rng, &ids.optys),
                reference(rng, &ids.quotes)
            );
            ids.activities.push(id);
            sql
        }
        6 if !ids.activities.is_empty() => {
            let col = any(
                rng,
                &["account_id".into(), "opty_id".into(), "quote_id".into()],
            );
            let to = match col.as_str() {
                "account_id" => reference(rng, &ids.accounts),
                "opty_id" => reference(rng, &ids.optys),
                _ => reference(rng, &ids.quotes),
            };
            format!(
                "UPDATE activity SET {col} = {to} WHERE id = '{}'",
                own(rng, keith, "activity", &ids.activities)
            )
        }
        7 => {
            let id = fresh("C");
            let sql = format!(
                "INSERT INTO contact(id, account_id, name) VALUES ('{id}', {}, 'hostile')",
                reference(rng, &ids.accounts)
            );
            ids.contacts.push(id);
            sql
        }
        8 => format!(
            "UPDATE contact SET account_id = {} WHERE id = '{}'",
            reference(rng, &ids.accounts),
            own(rng, keith, "contact", &ids.contacts)
        ),
        9 => {
            let id = fresh("O");
            let sql = format!(
                "INSERT INTO opty(id, account_id, name) VALUES ('{id}', {}, 'new')",
                reference(rng, &ids.accounts)
            );
            ids.optys.push(id);
            sql
        }
        10 => format!(
            "INSERT INTO opty_emp(opty_id, emp_id, role) VALUES ('{}', 'E1', 'me')",
            any(rng, &ids.optys)
        ),
        11 => format!(
            "INSERT INTO opty_prod(id, opty_id, product_id) VALUES ('{}', '{}', 'P1')",
            fresh("OP"),
            any(rng, &ids.optys)
        ),
        12 => format!(
            "INSERT INTO quote_item(id, quote_id, product_id) VALUES ('{}', '{}', 'P2')",
            fresh("QI"),
            any(rng, &ids.quotes)
        ),
        // A row under a key he may not hold, whole.
        13 => format!(
            "INSERT OR REPLACE INTO opty(id, account_id, name) VALUES ('{}', {}, 'stolen')",
            any(rng, &ids.optys),
            reference(rng, &ids.accounts)
        ),
        14 => {
            let table = any(rng, &["quote".into(), "contact".into(), "activity".into()]);
            format!(
                "DELETE FROM {table} WHERE id = '{}'",
                own(rng, keith, &table, &ids.contacts)
            )
        }
        _ => format!(
            "UPDATE opty SET name = name || ' +' WHERE id = '{}'",
            own(rng, keith, "opty", &ids.optys)
        ),
    }
}

fn adversary(docking: &str, seed: u64) {
    let model = DockingModel::from_toml(docking).unwrap();
    let w = world(docking);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ids = Ids::new();
    for round in 0..3 {
        round_holds(&w, &model, &format!("seed {seed} round {round}"), |keith| {
            let mut wrote = Vec::new();
            for i in 0..rng.random_range(3..12) {
                let sql = hostile(&mut rng, keith, &mut ids, 100 * round + i);
                // A write SQLite refuses at the node (a key taken there) is just not made.
                if keith.execute_batch(&sql).is_ok() {
                    wrote.push(sql);
                }
            }
            wrote
        });
    }
    // Last, a bundle keith forges and signs with his own key: changes his SQLite could not
    // journal (updates and deletes of rows he does not hold, any key, any table).
    let mut forged = Vec::new();
    round_holds(&w, &model, &format!("seed {seed} forged round"), |keith| {
        forged = forge_round(&w, keith, &mut rng, &ids);
        forged.clone()
    });
    // Central took the forged bundle in and merged it (nothing quarantined).
    let last: i64 =
        serde_json::from_str::<serde_json::Value>(forged.last().unwrap()).unwrap()["pos"]
            .as_i64()
            .unwrap();
    let applied: i64 = hq(&w)
        .query_row(
            "SELECT applied_pos FROM berth_peers WHERE name = 'keith'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        applied >= last,
        "seed {seed}: the forged bundle was not merged ({applied} < {last})"
    );
}

/// Writes into the exchange folder a bundle from keith to central that continues his
/// stream, signed with his key, carrying random changes; moves his stream past it so that
/// his next bundle follows. Returns the change lines.
fn forge_round(w: &World, keith: &Connection, rng: &mut StdRng, ids: &Ids) -> Vec<String> {
    use berth_bundle::StreamPosition;
    // Every change of his is acknowledged (the rounds settled): the forged positions follow
    // his log's last.
    let (seq, acked, top, applied): (i64, i64, i64, i64) = keith
        .query_row(
            "SELECT out_seq, acked_pos, (SELECT COALESCE(MAX(pos), 0) FROM berth_log), applied_pos
             FROM berth_peers WHERE name = 'hq'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(acked, top, "keith's log is not all acknowledged");
    let (seq, sent, applied) = (seq as u64, top as u64, applied as u64);
    let n = rng.random_range(1..8u64);
    let lines: Vec<String> = (1..=n)
        .map(|i| {
            let pos = sent + i;
            let (t, k, row) = match rng.random_range(0..7) {
                0 => {
                    let id = any(rng, &ids.optys);
                    let a = reference(rng, &ids.accounts);
                    ("opty", id.clone(), format!(r#"{{"id":"{id}","account_id":{},"name":"forged"}}"#, json(&a)))
                }
                1 => {
                    let id = any(rng, &ids.quotes);
                    let o = reference(rng, &ids.optys);
                    let e = reference(rng, &ids.employees);
                    ("quote", id.clone(), format!(r#"{{"id":"{id}","opty_id":{},"owner_emp_id":{},"name":"forged"}}"#, json(&o), json(&e)))
                }
                2 => {
                    let id = format!("F{pos}");
                    let o = reference(rng, &ids.optys);
                    let a = reference(rng, &ids.accounts);
                    ("activity", id.clone(), format!(r#"{{"id":"{id}","opty_id":{},"account_id":{},"kind":"forged"}}"#, json(&o), json(&a)))
                }
                3 => {
                    let id = any(rng, &ids.accounts);
                    ("account", id.clone(), format!(r#"{{"id":"{id}","name":"forged"}}"#))
                }
                4 => {
                    let id = any(rng, &ids.contacts);
                    let a = reference(rng, &ids.accounts);
                    ("contact", id.clone(), format!(r#"{{"id":"{id}","account_id":{},"name":"forged"}}"#, json(&a)))
                }
                5 => ("commission", "E1".into(), r#"{"emp_id":"E1","rate":0.9}"#.into()),
                _ => ("employee", "E2".into(), r#"{"id":"E2","name":"forged"}"#.into()),
            };
            let op = any(rng, &["I".into(), "U".into(), "D".into()]);
            let (old, new) = match op.as_str() {
                "I" => ("null".to_string(), row),
                "U" => (r#"{"name":"whatever"}"#.to_string(), row),
                _ => (row, "null".to_string()),
            };
            format!(r#"{{"pos":{pos},"t":"{t}","k":["{k}"],"op":"{op}","old":{old},"new":{new},"c":{pos}}}"#)
        })
        .collect();
    forge(
        w,
        "keith",
        "hq",
        StreamPosition {
            seq: seq + 1,
            log_from: sent + 1,
            log_to: sent + n,
            requires: sent,
            acks: applied,
        },
        &lines,
    );
    // His own stream goes on after the forged bundle, as if he had written it: the next
    // sequence number, and his log reaching its last position (an entry central skips as
    // applied, once it has applied the forged bundle).
    let last = (sent + n) as i64;
    keith
        .execute_batch(&format!(
            "UPDATE berth_peers SET out_seq = out_seq + 1, sent_pos = {last} WHERE name = 'hq';
             INSERT INTO berth_log(pos, tbl, pk, op, old)
               SELECT {last}, 'opty', json_array(id), 'U', json_object('name', name) FROM opty LIMIT 1;"
        ))
        .unwrap();
    lines
}

/// An SQL literal of `reference` as JSON.
fn json(sql: &str) -> String {
    match sql.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Some(id) => format!("\"{id}\""),
        None => "null".into(),
    }
}

/// Runs one round of keith's writes (`write` makes them on his replica and returns them),
/// settles, and asserts P1-P4.
fn round_holds(
    w: &World,
    model: &DockingModel,
    label: &str,
    write: impl FnOnce(&Connection) -> Vec<String>,
) {
    let nodes = ["keith", "carl", "greg"];
    let inst: BTreeMap<&str, _> = nodes.iter().map(|n| (*n, instances(w, n))).collect();
    let held: BTreeMap<&str, _> = nodes.iter().map(|n| (*n, rows(w, n))).collect();
    let central = table_rows(&w.dir("hq").join("data.db"));
    let keith = Connection::open(w.dir("keith").join("data.db")).unwrap();
    // Foreign keys off, SQLite's default (not the bundled build's): the rows a hostile
    // write names are not at the node.
    keith.execute_batch("PRAGMA foreign_keys=OFF").unwrap();
    let wrote = write(&keith);
    drop(keith);
    w.settle();
    let why = || format!("{label}, keith wrote:\n  {}", wrote.join("\n  "));
    // Instances the round created: primary rows central did not have.
    let after = table_rows(&w.dir("hq").join("data.db"));
    let created: BTreeSet<(String, String)> = after
        .keys()
        .filter(|k| !central.contains_key(*k))
        .filter_map(|(t, k)| match t.as_str() {
            "opty" => Some(("opportunity".to_string(), k.clone())),
            "quote" => Some(("quote".to_string(), k.clone())),
            "account" => Some(("account".to_string(), k.clone())),
            _ => None,
        })
        .collect();
    let now_keith = rows(w, "keith");
    for n in nodes {
        // P1.
        for i in instances(w, n) {
            assert!(
                inst[n].contains(&i) || inst["keith"].contains(&i) || created.contains(&i),
                "P1: {n} now holds {i:?}, which neither it nor keith held\n{}",
                why()
            );
        }
        // P2.
        for r in rows(w, n) {
            assert!(
                held[n].contains(&r)
                    || held["keith"].contains(&r)
                    || now_keith.contains(&r)
                    || his_creation(w, &r, &inst["keith"], &created),
                "P2: {n} now holds {r:?}, a row keith neither holds nor held\n{}",
                why()
            );
        }
    }
    // P3.
    for (k, v) in &central {
        if held["keith"].contains(k) {
            continue;
        }
        assert_eq!(
            after.get(k),
            Some(v),
            "P3: central's {k:?}, outside keith's view, changed\n{}",
            why()
        );
    }
    // P4.
    for n in nodes {
        w.assert_matches_oracle(model, n);
    }
}

/// Whether row `r` (new at central) is keith's to share: the primary row of an instance his
/// round created, or a member row whose every parent instance (read from its foreign keys
/// at central, in the sample's terms) he held or created.
fn his_creation(
    w: &World,
    r: &(String, String),
    held: &BTreeSet<(String, String)>,
    created: &BTreeSet<(String, String)>,
) -> bool {
    let (table, key) = r;
    let object = |o: &str| (o.to_string(), key.clone());
    match table.as_str() {
        "opty" => return created.contains(&object("opportunity")),
        "quote" if created.contains(&object("quote")) => return true,
        "account" => return created.contains(&object("account")),
        _ => {}
    }
    let parents: &[(&str, &str)] = match table.as_str() {
        "activity" => &[
            ("account_id", "account"),
            ("opty_id", "opportunity"),
            ("quote_id", "quote"),
        ],
        "contact" => &[("account_id", "account")],
        "opty_prod" => &[("opty_id", "opportunity")],
        "quote_item" => &[("quote_id", "quote")],
        _ => return false,
    };
    let c = hq(w);
    parents.iter().all(|(col, obj)| {
        let id: Option<String> = c
            .query_row(
                &format!("SELECT json_array({col}) FROM {table} WHERE json_array(id) = ?1 AND {col} IS NOT NULL"),
                [key],
                |r| r.get(0),
            )
            .ok();
        id.is_none_or(|id| {
            let i = (obj.to_string(), id);
            held.contains(&i) || created.contains(&i)
        })
    })
}

/// The issue's paths, each as one round under the same properties.
#[test]
fn the_escalation_paths_hold_the_properties() {
    let docking = sample("docking.toml");
    let model = DockingModel::from_toml(&docking).unwrap();
    let w = world(&docking);
    for sql in [
        "UPDATE opty SET account_id = 'A2' WHERE id = 'O1'",
        "INSERT INTO quote(id, opty_id, owner_emp_id, name) VALUES ('Q9', 'O2', 'E1', 'mine')",
        "UPDATE quote SET opty_id = 'O2' WHERE id = 'Q1'",
        "INSERT INTO activity(id, opty_id, kind) VALUES ('X1', 'O2', 'call')",
        "INSERT INTO activity(id, quote_id, kind) VALUES ('X2', 'Q2', 'call')",
        "INSERT INTO contact(id, account_id, name) VALUES ('C9', 'A2', 'planted')",
        "INSERT INTO opty_prod(id, opty_id, product_id) VALUES ('OP9', 'O2', 'P1')",
        "INSERT INTO quote_item(id, quote_id, product_id) VALUES ('QI9', 'Q2', 'P1')",
        "INSERT OR REPLACE INTO opty(id, account_id, name) VALUES ('O2', 'A1', 'stolen')",
        "INSERT INTO opty(id, account_id, name) VALUES ('O9', 'A2', 'a way into A2');
         INSERT INTO activity(id, opty_id, kind) VALUES ('X9', 'O9', 'on the refused one')",
    ] {
        round_holds(&w, &model, sql, |keith| {
            keith.execute_batch(sql).unwrap();
            vec![sql.to_string()]
        });
    }
    // Each was refused, and nothing of them is at central.
    let c = hq(&w);
    let denied: i64 = c
        .query_row(
            "SELECT count(*) FROM berth_conflicts WHERE node = 'keith' AND kind = 'denied'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(denied >= 11, "{denied} denied");
    for q in [
        "SELECT count(*) FROM activity WHERE id IN ('X1', 'X2', 'X9')",
        "SELECT count(*) FROM opty WHERE id = 'O9' OR name = 'stolen'",
        "SELECT count(*) FROM quote WHERE id = 'Q9' OR opty_id = 'O2' AND id <> 'Q2'",
    ] {
        assert_eq!(
            c.query_row(q, [], |r| r.get::<_, i64>(0)).unwrap(),
            0,
            "{q}"
        );
    }
}

#[test]
fn an_adversarial_node_never_reaches_beyond_what_it_holds() {
    let docking = sample("docking.toml");
    berth_tests::for_seeds("BERTH_AUTH_SEED", "BERTH_AUTH_SEEDS", 6, |seed| {
        adversary(&docking, seed);
    });
}

#[test]
fn an_adversarial_node_never_reaches_beyond_what_it_holds_with_pair_forms() {
    let docking = pair_forms_only(&sample("docking.toml"));
    berth_tests::for_seeds("BERTH_AUTH_SEED", "BERTH_AUTH_SEEDS", 4, |seed| {
        adversary(&docking, 1000 + seed);
    });
}
