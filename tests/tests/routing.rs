//! Visibility routing stories on the sales sample (seed 004, Figures 6-8): every replica is
//! compared, row for row, with the reference oracle's projection of central.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::Disposition;
use berth_engine::dock::DockOptions;
use berth_engine::route::model::DockingModel;
use berth_tests::{World, sample};
use std::collections::BTreeMap;

/// Nodes standing for employees E1 (Keith Palmer), E2 (Carl Lake) and E3 (Greg Emerson).
fn sales() -> (World, DockingModel) {
    sales_with(&sample("docking.toml"))
}

/// The sales sample's docking model with only the seed's pair forms (`sql`).
fn pair_forms_only() -> String {
    berth_tests::pair_forms_only(&sample("docking.toml"))
}

fn sales_with(docking: &str) -> (World, DockingModel) {
    let nodes: Vec<(&str, BTreeMap<String, String>)> =
        [("keith", "E1"), ("carl", "E2"), ("greg", "E3")]
            .iter()
            .map(|(n, e)| {
                (
                    *n,
                    BTreeMap::from([("employee".to_string(), e.to_string())]),
                )
            })
            .collect();
    let docking = docking.to_string();
    let w = World::build(
        &sample("schema.sql"),
        &sample("data.sql"),
        Some(&docking),
        &nodes,
    );
    (w, DockingModel::from_toml(&docking).unwrap())
}

fn employee(node: &str) -> &'static str {
    match node {
        "keith" => "E1",
        "carl" => "E2",
        _ => "E3",
    }
}

/// Asserts the node holds exactly what the oracle says it should.
fn assert_projection(w: &World, model: &DockingModel, node: &str) {
    w.assert_matches_oracle(model, node);
}

fn assert_all(w: &World, model: &DockingModel) {
    for (n, _) in &w.nodes {
        assert_projection(w, model, n);
    }
}

fn has(w: &World, node: &str, sql: &str) -> bool {
    w.value(node, &format!("SELECT EXISTS({sql})")) == "1"
}

#[test]
fn partial_extracts_hold_exactly_what_each_node_sees() {
    let (w, model) = sales();
    assert_all(&w, &model);
    assert!(has(&w, "keith", "SELECT 1 FROM opty WHERE id = 'O1'"));
    assert!(!has(&w, "carl", "SELECT 1 FROM opty WHERE id = 'O1'"));
    assert!(
        !has(&w, "keith", "SELECT 1 FROM commission"),
        "central tables never leave"
    );
    assert!(
        has(&w, "carl", "SELECT 1 FROM product"),
        "enterprise tables reach everyone"
    );
    let st = berth_engine::status::status(&w.open("hq")).unwrap();
    let keith = st.peers.iter().find(|p| p.name == "keith").unwrap();
    let limited: i64 = w
        .value(
            "keith",
            "SELECT (SELECT COUNT(*) FROM account) + (SELECT COUNT(*) FROM opty) + (SELECT COUNT(*) FROM quote)",
        )
        .parse()
        .unwrap();
    assert!(
        keith.rows_held >= limited,
        "status counts the rows each node holds"
    );
}

/// An employee assigned to an opportunity receives it with its related objects; unassigned,
/// it disappears from that laptop only.
#[test]
fn reassigned_opportunity_moves_between_laptops() {
    let (w, model) = sales();
    // Keith sees O1 through his assignment and through the quote he owns (the cycle
    // opportunity <-> quote); hand both over to Carl.
    w.exec(
        "hq",
        "UPDATE opty_emp SET emp_id = 'E2' WHERE opty_id = 'O1' AND emp_id = 'E1';
         UPDATE quote SET owner_emp_id = 'E2' WHERE opty_id = 'O1';",
    );
    w.settle();
    assert_all(&w, &model);
    assert!(
        !has(&w, "keith", "SELECT 1 FROM opty WHERE id = 'O1'"),
        "left Keith's laptop"
    );
    assert!(
        has(&w, "carl", "SELECT 1 FROM opty WHERE id = 'O1'"),
        "arrived on Carl's"
    );
    assert!(
        has(&w, "carl", "SELECT 1 FROM quote WHERE opty_id = 'O1'"),
        "with its quotes"
    );
}

/// Field edits flow to central and to the other nodes that see the row, not to the others;
/// edits of a table nodes may not write are refused.
#[test]
fn node_edits_reach_exactly_the_nodes_that_see_the_row() {
    let (w, model) = sales();
    w.exec(
        "keith",
        "UPDATE opty SET name = 'Fleet renewal (signed)' WHERE id = 'O1'",
    );
    w.exec("carl", "UPDATE product SET price = price + 1");
    w.settle();
    assert_all(&w, &model);
    assert_eq!(
        w.value("hq", "SELECT name FROM opty WHERE id = 'O1'"),
        "'Fleet renewal (signed)'"
    );
    // The product catalogue is enterprise and read-only for nodes (node_write = false in the
    // sample): Carl's price edits are refused and undone.
    assert_eq!(
        w.value(
            "hq",
            "SELECT group_concat(DISTINCT kind || ':' || tbl) FROM berth_conflicts"
        ),
        "'denied:product'"
    );
    assert_eq!(
        w.value("carl", "SELECT price FROM product WHERE id = 'P1'"),
        w.value("hq", "SELECT price FROM product WHERE id = 'P1'")
    );
}

/// A delete at central reaches only the nodes that held the row.
#[test]
fn deletes_reach_only_holders() {
    let (w, model) = sales();
    let item = w.value(
        "hq",
        "SELECT id FROM quote_item WHERE quote_id = 'Q1' LIMIT 1",
    );
    w.exec("hq", &format!("DELETE FROM quote_item WHERE id = {item}"));
    w.dock("hq");
    // Only Keith, who held it, gets a bundle carrying the delete.
    let carries = |node: &str| {
        let p = w.central.join("berth.toml");
        let _ = p;
        w.value("hq", &format!("SELECT COUNT(*) FROM berth_partial WHERE node = '{node}' AND change LIKE '%\"op\":\"D\"%'"))
    };
    assert_eq!(carries("keith"), "1");
    assert_eq!(carries("carl"), "0");
    assert_eq!(carries("greg"), "0");
    w.settle();
    assert_all(&w, &model);
    assert!(!has(
        &w,
        "keith",
        &format!("SELECT 1 FROM quote_item WHERE id = {item}")
    ));
}

/// A seeded story: reassignments and quote hand-overs at central, field edits at the nodes,
/// random docking order and lost bundles. After everything settles, every replica holds
/// exactly the oracle's projection.
#[test]
fn random_routing_story_matches_the_oracle() {
    random_story(&sample("docking.toml"), 3);
}

/// The seed's rule form, one pair at a time, works as written: the same story routed with
/// a model that has no set forms.
#[test]
fn pair_form_rules_route_the_same_story() {
    random_story(&pair_forms_only(), 1);
}

fn random_story(docking: &str, default_seeds: u64) {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    berth_tests::for_seeds(
        "BERTH_ROUTING_SEED",
        "BERTH_ROUTING_SEEDS",
        default_seeds,
        |seed| {
            let (w, model) = sales_with(docking);
            let mut rng = StdRng::seed_from_u64(seed);
            let nodes = ["keith", "carl", "greg"];
            let emps = ["E1", "E2", "E3", "E4", "E5"];
            let optys = ["O1", "O2", "O3", "O4", "O5"];
            let accounts = ["A1", "A2", "A3", "A4", "A5"];
            let positions = ["P-MGR", "P-NORTH", "P-SOUTH", "P-PRICING", "P-KEY"];
            for step in 0..60 {
                match rng.random_range(0..15) {
                    9 => {
                        // A quote moves to another opportunity: the activities on it move with
                        // it (they reach the opportunity through the quote).
                        let q = ["Q1", "Q2", "Q3", "Q4"][rng.random_range(0..4)];
                        let o = optys[rng.random_range(0..optys.len())];
                        w.exec("hq", &format!("UPDATE quote SET opty_id = (SELECT id FROM opty WHERE id = '{o}') WHERE id = '{q}'"));
                    }
                    10 => {
                        // An opportunity moves to another account (the mapping between the
                        // two objects changes).
                        let o = optys[rng.random_range(0..optys.len())];
                        let a = accounts[rng.random_range(0..accounts.len())];
                        w.exec(
                            "hq",
                            &format!("UPDATE opty SET account_id = '{a}' WHERE id = '{o}'"),
                        );
                    }
                    11 => {
                        // A position change (emp_postn is read by the account rule but is no
                        // member of it: every account is re-evaluated).
                        let e = emps[rng.random_range(0..emps.len())];
                        let p = positions[rng.random_range(0..positions.len())];
                        if rng.random_range(0..2) == 0 {
                            w.exec(
                                "hq",
                                &format!("INSERT OR IGNORE INTO emp_postn VALUES ('{e}', '{p}')"),
                            );
                        } else {
                            w.exec(
                            "hq",
                            &format!(
                                "DELETE FROM emp_postn WHERE emp_id = '{e}' AND position_id = '{p}'"
                            ),
                        );
                        }
                    }
                    12 => {
                        // A new opportunity at central, assigned to someone, with an activity.
                        let e = emps[rng.random_range(0..emps.len())];
                        let a = accounts[rng.random_range(0..accounts.len())];
                        w.exec("hq", &format!(
                        "INSERT INTO opty(id, account_id, name) VALUES ('N{step}', '{a}', 'New {step}');
                         INSERT INTO opty_emp VALUES ('N{step}', '{e}', 'owner');
                         INSERT INTO activity(id, account_id, opty_id, kind) VALUES ('NA{step}', '{a}', 'N{step}', 'call');"
                    ));
                    }
                    13 => {
                        // An opportunity is deleted with what hangs off it.
                        let o = optys[rng.random_range(0..optys.len())];
                        w.exec(
                            "hq",
                            &format!(
                                "DELETE FROM opty_emp WHERE opty_id = '{o}';
                         DELETE FROM opty_prod WHERE opty_id = '{o}';
                         UPDATE activity SET opty_id = NULL WHERE opty_id = '{o}';
                         UPDATE quote SET opty_id = NULL WHERE opty_id = '{o}';
                         DELETE FROM opty WHERE id = '{o}';"
                            ),
                        );
                    }
                    14 => {
                        // An account-position assignment comes or goes.
                        let a = accounts[rng.random_range(0..accounts.len())];
                        let p = positions[rng.random_range(0..positions.len())];
                        if rng.random_range(0..2) == 0 {
                            w.exec(
                                "hq",
                                &format!("INSERT OR IGNORE INTO acct_postn VALUES ('{a}', '{p}')"),
                            );
                        } else {
                            w.exec("hq", &format!("DELETE FROM acct_postn WHERE account_id = '{a}' AND position_id = '{p}'"));
                        }
                    }
                    0 | 1 => {
                        let o = optys[rng.random_range(0..optys.len())];
                        let e = emps[rng.random_range(0..emps.len())];
                        w.exec("hq", &format!("UPDATE opty_emp SET emp_id = '{e}' WHERE opty_id = '{o}' AND rowid = (SELECT MIN(rowid) FROM opty_emp WHERE opty_id = '{o}') AND NOT EXISTS (SELECT 1 FROM opty_emp WHERE opty_id = '{o}' AND emp_id = '{e}')"));
                    }
                    2 => {
                        let q = ["Q1", "Q2", "Q3", "Q4"][rng.random_range(0..4)];
                        let e = emps[rng.random_range(0..emps.len())];
                        w.exec(
                            "hq",
                            &format!("UPDATE quote SET owner_emp_id = '{e}' WHERE id = '{q}'"),
                        );
                    }
                    3 => {
                        let n = nodes[rng.random_range(0..nodes.len())];
                        let held = w.value(n, "SELECT id FROM opty ORDER BY random() LIMIT 1");
                        if held != "NULL" {
                            w.exec(
                            n,
                            &format!(
                                "UPDATE opty SET name = name || ' [{n} {step}]' WHERE id = {held}"
                            ),
                        );
                        }
                    }
                    4 => {
                        let n = nodes[rng.random_range(0..nodes.len())];
                        w.exec(
                            n,
                            &format!(
                                "UPDATE product SET price = {} WHERE id = 'P1'",
                                rng.random_range(1..1000)
                            ),
                        );
                    }
                    5 => {
                        // A node assigns its own employee to an opportunity (it may not see it
                        // yet): the node's write changes what it sees.
                        let n = nodes[rng.random_range(0..nodes.len())];
                        let o = ["O1", "O2", "O3", "O4"][rng.random_range(0..4)];
                        w.exec(
                        n,
                        &format!(
                            "PRAGMA foreign_keys = OFF; INSERT OR IGNORE INTO opty_emp(opty_id, emp_id, role) VALUES ('{o}', '{}', 'helper')",
                            employee(n)
                        ),
                    );
                    }
                    _ => {
                        let site = ["hq", "keith", "carl", "greg"][rng.random_range(0..4)];
                        let r = w.dock(site);
                        if rng.random_range(0..5) == 0 {
                            for p in r.written {
                                std::fs::remove_file(p).unwrap();
                            }
                        }
                    }
                }
            }
            w.settle();
            for n in nodes {
                assert_projection(&w, &model, n);
            }
        },
    );
}

/// Invariant 4: a node cannot change rows it cannot see, nor tables it may not write. The
/// change is refused as a `denied` conflict and undone at the node, which never learns the
/// hidden row's content.
#[test]
fn denied_writes_are_refused_and_undone() {
    let (w, model) = sales();
    assert!(!has(&w, "carl", "SELECT 1 FROM opty WHERE id = 'O1'"));
    w.exec(
        "carl",
        "INSERT INTO opty(id, account_id, name) VALUES ('O1', 'A2', 'I want this one');
         INSERT INTO commission(emp_id, rate) VALUES ('E2', 0.5);",
    );
    w.settle();
    assert_eq!(
        w.value("hq", "SELECT group_concat(kind || ':' || tbl) FROM (SELECT kind, tbl FROM berth_conflicts WHERE node = 'carl' ORDER BY tbl)"),
        "'denied:commission,denied:opty'"
    );
    assert_eq!(
        w.value("hq", "SELECT name FROM opty WHERE id = 'O1'"),
        "'Fleet renewal'",
        "central unchanged"
    );
    assert!(
        !has(&w, "carl", "SELECT 1 FROM opty WHERE id = 'O1'"),
        "undone, and the real row not handed over"
    );
    assert!(!has(&w, "carl", "SELECT 1 FROM commission"));
    assert_all(&w, &model);
}

/// A bundle signed by one node's key but claiming another node's identity is quarantined.
#[test]
fn forged_identity_is_refused() {
    use berth_bundle::{BundleHeader, BundleWriter, Compression, Party, SecretKey, StreamPosition};
    let (w, _model) = sales();
    let carl_key = SecretKey::from_text(
        &std::fs::read_to_string(w.dir("carl").join("keys/site.key")).unwrap(),
    )
    .unwrap();
    let forged = w
        .via
        .join(berth_bundle::naming::bundle_file_name("keith", "hq", 1));
    let file = std::fs::File::create(&forged).unwrap();
    let mut bw = BundleWriter::new(
        file,
        BundleHeader {
            sender: Party {
                site: "keith".into(),
                key_id: carl_key.public().key_id(),
            },
            recipients: vec!["hq".into()],
            created: 0,
            bundle_id: None,
            stream: Some(StreamPosition {
                seq: 1,
                log_from: 1,
                log_to: 1,
                requires: 0,
                acks: 0,
            }),
            schema_checksum: None,
            software_level: None,
            critical: vec![],
            extensions: Default::default(),
        },
    )
    .unwrap();
    let change = r#"{"pos":1,"t":"opty","k":["O1"],"op":"U","old":{"name":"Fleet renewal"},"new":{"id":"O1","name":"Forged"}}"#;
    bw.add_bytes(
        "payload/changes.jsonl",
        "changes",
        Compression::Deflate,
        format!("{change}\n").as_bytes(),
    )
    .unwrap();
    bw.finish(&carl_key).unwrap();
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Quarantined), 1, "{r:?}");
    assert!(
        r.incoming[0].detail.contains("keith") || r.incoming[0].detail.contains("signer"),
        "{r:?}"
    );
    assert_eq!(
        w.value("hq", "SELECT name FROM opty WHERE id = 'O1'"),
        "'Fleet renewal'"
    );
}

/// `docking apply`: a new model takes effect at the next dock; rows leave (and arrive) as the
/// new rules say. A model that takes a table out of `enterprise` is refused.
#[test]
fn applying_a_new_model_moves_rows_at_the_next_dock() {
    let (w, _old) = sales();
    assert!(
        has(&w, "greg", "SELECT 1 FROM quote WHERE id = 'Q3'"),
        "Greg owns Q3"
    );
    // The new model drops the quote-owner rule: quotes follow their opportunity only.
    let text = sample("docking.toml").replace(
        "[[object.rule]]\nsql = \"SELECT 'X' FROM quote WHERE id = :primary_row_id AND owner_emp_id = :attr_employee\"\nset_sql = \"\"\"\nSELECT q.id, na.node_id FROM quote q\n  JOIN berth_node_attr na ON na.name = 'employee' AND na.value = q.owner_emp_id\"\"\"\n",
        "",
    );
    assert_ne!(
        text,
        sample("docking.toml"),
        "the rule was found and removed"
    );
    let new_file = w.root.path().join("new-docking.toml");
    std::fs::write(&new_file, &text).unwrap();
    w.open("hq").apply_docking(&new_file).unwrap();
    w.settle();
    let model = DockingModel::from_toml(&text).unwrap();
    assert_all(&w, &model);
    assert!(
        !has(&w, "greg", "SELECT 1 FROM quote WHERE id = 'Q3'"),
        "left Greg's laptop"
    );
    let narrowing = w.root.path().join("narrowing.toml");
    std::fs::write(
        &narrowing,
        text.replace(
            "product = { visibility = \"enterprise\" }",
            "product = { visibility = \"central\" }",
        ),
    )
    .unwrap();
    let err = w
        .open("hq")
        .apply_docking(&narrowing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("would stop being enterprise"), "{err}");
}

/// A position change moves whole accounts in and out of a laptop.
#[test]
fn position_change_moves_whole_accounts() {
    let (w, model) = sales();
    assert!(!has(&w, "carl", "SELECT 1 FROM account WHERE id = 'A1'"));
    w.exec("hq", "UPDATE emp_postn SET position_id = 'P-NORTH' WHERE emp_id = 'E2' AND position_id = 'P-SOUTH'");
    w.settle();
    assert_all(&w, &model);
    assert!(
        has(&w, "carl", "SELECT 1 FROM account WHERE id = 'A1'"),
        "north accounts arrived"
    );
    assert!(
        !has(&w, "carl", "SELECT 1 FROM account WHERE id = 'A4'"),
        "south accounts left"
    );
}

/// A quote becoming visible brings its opportunity (the quote object rule's other side).
#[test]
fn a_quote_becoming_visible_brings_its_opportunity() {
    let (w, model) = sales();
    assert!(!has(&w, "greg", "SELECT 1 FROM opty WHERE id = 'O2'"));
    w.exec("hq", "UPDATE quote SET owner_emp_id = 'E3' WHERE id = 'Q2'");
    w.settle();
    assert_all(&w, &model);
    assert!(has(&w, "greg", "SELECT 1 FROM quote WHERE id = 'Q2'"));
    assert!(
        has(&w, "greg", "SELECT 1 FROM opty WHERE id = 'O2'"),
        "the quote brought its opportunity"
    );
}

/// A node's own change is not echoed back to it by the router.
#[test]
fn own_changes_are_not_routed_back() {
    let (w, _model) = sales();
    w.exec("keith", "UPDATE opty SET stage = 'won' WHERE id = 'O1'");
    w.dock("keith");
    w.dock("hq");
    let echoed = w.value(
        "hq",
        "SELECT COUNT(*) FROM berth_partial WHERE node = 'keith' AND change LIKE '%\"won\"%'",
    );
    assert_eq!(echoed, "0");
    let carl_sees_o1 = has(&w, "carl", "SELECT 1 FROM opty WHERE id = 'O1'");
    let dana = w.value(
        "hq",
        "SELECT COUNT(*) FROM berth_partial WHERE change LIKE '%\"won\"%'",
    );
    assert_eq!(
        dana,
        if carl_sees_o1 { "1" } else { "0" },
        "only nodes that see O1 get it"
    );
}

/// A batch never ends between a node's merged change and the marker that acknowledges it:
/// keith edits O4 just as central takes him off it, and the removal his own edit causes must
/// reach him after that marker (before it, he would keep his local row). Routed here with
/// batches of one entry, so without the alignment the boundary falls right there.
#[test]
fn a_batch_boundary_never_separates_a_merged_change_from_its_marker() {
    use berth_engine::route::router::{self, Evaluation, Plan};
    let (w, model) = sales();
    // keith sees O4 only as its support (E1 on opty_emp); its quote Q4 is E4's.
    assert!(has(&w, "keith", "SELECT 1 FROM opty WHERE id = 'O4'"));
    w.exec(
        "hq",
        "DELETE FROM opty_emp WHERE opty_id = 'O4' AND emp_id = 'E1'",
    );
    w.exec(
        "keith",
        "UPDATE opty SET name = 'Depots (keith)' WHERE id = 'O4'",
    );
    w.dock("keith");
    let merge = berth_engine::dock::DockOptions {
        upload: false,
        ..Default::default()
    };
    w.dock_with("hq", &w.via, &merge).unwrap();
    {
        let site = w.open("hq");
        let catalog = site.catalog().unwrap();
        let plan = Plan::new(&site.conn, &site.docking_model().unwrap().unwrap()).unwrap();
        let tx = rusqlite::Transaction::new_unchecked(
            &site.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .unwrap();
        router::route_in_batches(&tx, &catalog, Some(&plan), Evaluation::Set, 1).unwrap();
        tx.commit().unwrap();
    }
    w.settle();
    assert!(!has(&w, "keith", "SELECT 1 FROM opty WHERE id = 'O4'"));
    assert_all(&w, &model);
}

/// Regression (the simulation, seed 254 with intake crashes): a node's insert that central
/// merged, then deleted before any routing pass ran (central docked download-only, or
/// crashed between the merge and the routing), had no row left to route, so the node was
/// never recorded as its holder and the delete never reached it: the node kept the row.
#[test]
fn a_node_insert_deleted_at_central_before_routing_is_deleted_at_the_node() {
    let (w, model) = sales();
    w.exec(
        "keith",
        "INSERT INTO activity(id, opty_id, kind, note) VALUES ('K-1', 'O1', 'visit', 'by keith')",
    );
    w.dock("keith");
    let download_only = DockOptions {
        upload: false,
        ..DockOptions::default()
    };
    let r = w.dock_with("hq", &w.via, &download_only).unwrap();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(
        w.value("hq", "SELECT COUNT(*) FROM activity WHERE id = 'K-1'"),
        "1"
    );
    // Central's application removes it before anything is routed.
    w.exec("hq", "DELETE FROM activity WHERE id = 'K-1'");
    w.settle();
    assert!(!has(&w, "keith", "SELECT 1 FROM activity WHERE id = 'K-1'"));
    assert_all(&w, &model);
}

// ---------------------------------------------------------------------------------------
// Bounded routing runs (issue 20, item 2; seed 004's MaxBatchTxns and MaxTxns)
// ---------------------------------------------------------------------------------------

/// The sales world with `[routing]` set at central to `routing` (TOML lines), and a backlog
/// waiting to be routed: central's own writes (new activities on every opportunity, updates,
/// deletes, keith gaining O2 and losing O4, an enterprise row) and keith's insert, merged by
/// a download-only dock (a merged change, its marker, corrective-free).
fn backlog(routing: &str) -> (World, DockingModel) {
    let (w, model) = sales();
    set_routing(&w, routing);
    w.exec(
        "keith",
        "INSERT INTO activity(id, opty_id, kind, note) VALUES ('K-1', 'O1', 'visit', 'keith')",
    );
    w.dock("keith");
    let download_only = DockOptions {
        upload: false,
        ..DockOptions::default()
    };
    w.dock_with("hq", &w.via, &download_only).unwrap();
    w.exec(
        "hq",
        "WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < 40)
         INSERT INTO activity(id, opty_id, kind, note)
           SELECT 'B-' || x, 'O' || (x % 4 + 1), 'call', 'n' || x FROM i;
         UPDATE activity SET note = note || '!' WHERE id LIKE 'B-%' AND CAST(substr(id, 3) AS INTEGER) % 3 = 0;
         INSERT INTO opty_emp(opty_id, emp_id, role) VALUES ('O2', 'E1', 'help');
         DELETE FROM opty_emp WHERE opty_id = 'O4' AND emp_id = 'E1';
         UPDATE opty SET name = name || ' (2)';
         DELETE FROM activity WHERE id IN ('B-5', 'B-6', 'K-1');
         INSERT INTO product(id, name, price) VALUES ('PX', 'New', 1.5);",
    );
    (w, model)
}

/// Sets central's `[routing]` to `routing` (TOML lines).
fn set_routing(w: &World, routing: &str) {
    let cfg = w.central.join("berth.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}\n[routing]\n{routing}\n")).unwrap();
}

/// Docks every node of both worlds once, then asserts each node of `w` holds what the same
/// node of `one` holds.
fn dock_nodes_and_compare(one: &World, w: &World) {
    for site in [one, w] {
        for (n, _) in &site.nodes {
            site.dock(n);
        }
    }
    for (n, _) in &w.nodes {
        assert_eq!(w.dump(n), one.dump(n), "{n} after one dock");
    }
}

/// Each node's partial log entries at central: (node, position, change as stored).
type Partial = Vec<(String, i64, String)>;
/// Each node's (name, routing checkpoint, partial position).
type Checkpoints = Vec<(String, i64, i64)>;

/// Every node's partial log at central, and its routing checkpoint and partial position.
fn streams(w: &World) -> (Partial, Checkpoints) {
    let c = rusqlite::Connection::open(w.central.join("data.db")).unwrap();
    let partial = c
        .prepare("SELECT node, ppos, change FROM berth_partial ORDER BY node, ppos")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let peers = c
        .prepare("SELECT name, routed_pos, partial_pos FROM berth_peers WHERE role = 'node' ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    (partial, peers)
}

/// Progress of a dock, calling `on_set` with each report's count.
struct OnProgress<F: Fn(u64) + Send + Sync>(F);

impl<F: Fn(u64) + Send + Sync> std::fmt::Debug for OnProgress<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnProgress")
    }
}

impl<F: Fn(u64) + Send + Sync> berth_engine::progress::Progress for OnProgress<F> {
    fn begin(&self, _: &str, _: u64) {}
    fn set(&self, done: u64) {
        (self.0)(done)
    }
    fn end(&self) {}
}

fn with_progress(f: impl Fn(u64) + Send + Sync + 'static) -> DockOptions {
    DockOptions {
        progress: Some(std::sync::Arc::new(OnProgress(f))),
        ..DockOptions::default()
    }
}

/// Routing a backlog in batches of 3 entries, each committed, leaves every node holding
/// exactly, row for row, what it holds when one pass routes the backlog, and what the oracle
/// says. (The streams themselves differ: a batch settles visibility once, at its end, so
/// smaller batches send more intermediate states of the same rows.)
#[test]
fn routing_in_batches_brings_the_nodes_where_one_pass_does() {
    let (one, _) = backlog("batch_changes = 1000000");
    let r1 = one.dock("hq");
    assert_eq!(r1.routed.batches, 1, "{:?}", r1.routed);
    let (w, model) = backlog("batch_changes = 3");
    let r = w.dock("hq");
    assert!(r.routed.batches > 20, "{:?}", r.routed);
    assert_eq!((r.routed.entries, r.routed.behind), (r1.routed.entries, 0));
    for site in [&one, &w] {
        for (n, _) in &site.nodes {
            site.dock(n);
        }
    }
    for (n, _) in &w.nodes {
        assert_eq!(w.dump(n), one.dump(n), "{n} after one dock");
    }
    assert_all(&w, &model);
    w.settle();
    one.settle();
    for (n, _) in &w.nodes {
        assert_eq!(w.dump(n), one.dump(n), "{n} settled");
    }
    assert_all(&w, &model);
}

/// Between two batches the write lock is free: an application writer at central commits
/// with a short busy timeout while the pass goes on (with one transaction for the whole pass
/// it would wait for all of it). What it writes is routed by the next dock.
#[test]
fn central_writers_commit_between_routing_batches() {
    let (w, model) = backlog("batch_changes = 3");
    let db = w.central.join("data.db");
    let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = written.clone();
    let opts = with_progress(move |_| {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(std::time::Duration::from_millis(50))
            .unwrap();
        let id = format!("W-{}", log.lock().unwrap().len());
        let r = c.execute(
            "INSERT INTO activity(id, opty_id, kind, note) VALUES (?1, 'O1', 'call', 'between')",
            [&id],
        );
        log.lock().unwrap().push((id, r.map_err(|e| e.to_string())));
    });
    let r = w.dock_with("hq", &w.via, &opts).unwrap();
    let written = written.lock().unwrap().clone();
    // One write after each batch, and one as the pass ends.
    assert_eq!(written.len() as u64, r.routed.batches + 1);
    assert!(written.len() > 20, "{written:?}");
    assert!(written.iter().all(|(_, r)| r.is_ok()), "{written:?}");
    w.settle();
    assert_all(&w, &model);
    for (id, _) in &written {
        assert!(has(
            &w,
            "keith",
            &format!("SELECT 1 FROM activity WHERE id = '{id}'")
        ));
        assert!(!has(
            &w,
            "carl",
            &format!("SELECT 1 FROM activity WHERE id = '{id}'")
        ));
    }
}

/// An entry routed after a writer changed its row again between two batches still says
/// what it left (the old row of the writer's entry), not the row as the writer left it: the
/// chains of what the pass read are extended across what was journaled since.
#[test]
fn an_entry_routed_after_a_writer_changed_its_row_says_what_it_left() {
    let (w, _model) = backlog("batch_changes = 3");
    let db = w.central.join("data.db");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = done.clone();
    let opts = with_progress(move |_| {
        if !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            rusqlite::Connection::open(&db)
                .unwrap()
                .execute("UPDATE activity SET note = 'between' WHERE id = 'B-36'", [])
                .unwrap();
        }
    });
    w.dock_with("hq", &w.via, &opts).unwrap();
    assert!(done.load(std::sync::atomic::Ordering::SeqCst));
    let c = rusqlite::Connection::open(w.central.join("data.db")).unwrap();
    let notes: Vec<String> = c
        .prepare(
            "SELECT json_extract(change, '$.new.note') FROM berth_partial
             WHERE node = 'keith' AND json_extract(change, '$.t') = 'activity'
               AND json_extract(change, '$.k[0]') = 'B-36' ORDER BY ppos",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    // The backlog's update left 'n36!' and says so, though the row held the writer's
    // 'between' when it was routed. (The row reached keith whole, as it was when its
    // batch settled: a download reads the table, SPEC 2.8.)
    assert_eq!(notes.last().map(String::as_str), Some("n36!"), "{notes:?}");
    w.settle();
    assert!(has(
        &w,
        "keith",
        "SELECT 1 FROM activity WHERE id = 'B-36' AND note = 'between'"
    ));
}

/// A crash in the middle of a routing pass loses only the batch under way: the batches
/// committed before it stay (the checkpoints moved), the next dock routes the rest, and
/// every node's partial log is exactly, change for change, the one the same pass writes
/// without the crash: nothing lost, nothing twice.
#[test]
fn a_crash_during_routing_loses_only_the_batch_under_way() {
    let (one, _) = backlog("batch_changes = 3");
    one.dock("hq");
    let (w, model) = backlog("batch_changes = 3");
    let before = streams(&w).1;
    // The process dies right after the fifth batch committed, in the next batch's turn.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = calls.clone();
    let opts = with_progress(move |_| {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 4 {
            panic!("crash after batch 5");
        }
    });
    let (dir, via) = (w.central.clone(), w.via.clone());
    let crashed = std::thread::spawn(move || {
        let mut hq = berth_engine::site::Site::open(&dir).unwrap();
        berth_engine::dock::dock(&mut hq, &via, &opts)
    })
    .join();
    assert!(crashed.is_err(), "the dock died");
    let after = streams(&w).1;
    assert_ne!(before, after, "what the first batches routed stayed");
    let total = streams(&one).1;
    assert!(
        after.iter().zip(&total).any(|(a, t)| a.1 < t.1),
        "the pass did not finish: {after:?} / {total:?}"
    );
    let r = w.dock("hq");
    assert!(r.routed.entries > 0);
    assert_eq!(streams(&one), streams(&w));
    w.settle();
    assert_all(&w, &model);
}

/// `[routing] max_changes` caps what one dock routes; the dock says routing is behind, and
/// the next docks route the rest: the nodes then hold what they hold after one pass.
#[test]
fn a_capped_routing_run_leaves_the_rest_for_the_next_dock() {
    let (one, _) = backlog("batch_changes = 3");
    one.dock("hq");
    let (w, model) = backlog("batch_changes = 3\nmax_changes = 20");
    let r = w.dock("hq");
    assert!(
        r.routed.entries >= 20 && r.routed.entries < 30,
        "{:?}",
        r.routed
    );
    assert!(r.routed.behind > 0, "{:?}", r.routed);
    assert!(
        r.waits.iter().any(|s| s.starts_with("routing is behind")),
        "{:?}",
        r.waits
    );
    let mut docks = 1;
    while w.dock("hq").routed.behind > 0 {
        docks += 1;
        assert!(docks < 100);
    }
    assert!(docks >= 2, "{docks}");
    for site in [&one, &w] {
        for (n, _) in &site.nodes {
            site.dock(n);
        }
    }
    for (n, _) in &w.nodes {
        assert_eq!(w.dump(n), one.dump(n), "{n}");
    }
    w.settle();
    assert_all(&w, &model);
}

/// `max_changes = 0` is no cap (a dock allowed to route nothing would never catch up).
#[test]
fn a_routing_cap_of_zero_is_no_cap() {
    let (w, model) = backlog("batch_changes = 3\nmax_changes = 0");
    let r = w.dock("hq");
    assert!(r.routed.entries > 40, "{:?}", r.routed);
    assert_eq!(r.routed.behind, 0, "{:?}", r.routed);
    assert!(r.waits.is_empty(), "{:?}", r.waits);
    w.settle();
    assert_all(&w, &model);
}

// ---------------------------------------------------------------------------------------
// Batches that end inside a merged node bundle (issue 20, item 3: routing in bounded memory)
// ---------------------------------------------------------------------------------------

/// The sales world with `[routing]` set at central to `routing`, where central took keith
/// off O4 and then merged (download-only) keith's bundle of 16 changes made before he knew:
/// his edit of O4 and a new activity on it first (rows he keeps until central's removal
/// after the bundle's marker, SPEC 2.10), then twelve activities on O1 and two updates of
/// O1 (rows he holds and should).
fn merged_bundle(routing: &str) -> (World, DockingModel) {
    let (w, model) = sales();
    set_routing(&w, routing);
    w.exec(
        "hq",
        "DELETE FROM opty_emp WHERE opty_id = 'O4' AND emp_id = 'E1'",
    );
    w.exec(
        "keith",
        "UPDATE opty SET name = 'Depots (keith)' WHERE id = 'O4';
         INSERT INTO activity(id, opty_id, kind, note) VALUES ('K-O4', 'O4', 'visit', 'keith');
         WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < 12)
         INSERT INTO activity(id, opty_id, kind, note)
           SELECT 'K-' || x, 'O1', 'call', 'keith ' || x FROM i;
         UPDATE opty SET stage = 'won' WHERE id = 'O1';
         UPDATE opty SET amount = 7 WHERE id = 'O1';",
    );
    w.dock("keith");
    let download_only = DockOptions {
        upload: false,
        ..DockOptions::default()
    };
    let r = w.dock_with("hq", &w.via, &download_only).unwrap();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    (w, model)
}

/// Where in keith's partial log the marker of his merge is, and the last removals of O4
/// and of his activity on it.
fn marker_and_removals(w: &World) -> (i64, i64, i64) {
    let at = |filter: &str| -> i64 {
        w.value(
            "hq",
            &format!(
                "SELECT COALESCE(MAX(ppos), -1) FROM berth_partial WHERE node = 'keith' AND {filter}"
            ),
        )
        .parse()
        .unwrap()
    };
    (
        at("json_extract(change, '$.op') = 'A'"),
        at(
            "json_extract(change, '$.op') = 'D' AND json_extract(change, '$.t') = 'opty'
            AND json_extract(change, '$.k[0]') = 'O4'",
        ),
        at(
            "json_extract(change, '$.op') = 'D' AND json_extract(change, '$.t') = 'activity'
            AND json_extract(change, '$.k[0]') = 'K-O4'",
        ),
    )
}

/// Routing a merged node bundle in batches of 3 entries (each committed, the boundaries
/// inside the bundle) brings every node where one batch does, after one dock each: keith's
/// rows central decided about without knowing of his changes (his edit of O4 and his
/// activity on it) are removed after the bundle's marker, so he does not keep them (sent
/// before it, the removals would be ignored: his local changes would stand, SPEC 2.10).
#[test]
fn batches_inside_a_merged_bundle_settle_its_rows_after_the_marker() {
    let (one, _) = merged_bundle("batch_changes = 1000000");
    let r1 = one.dock("hq");
    assert_eq!(r1.routed.batches, 1, "{:?}", r1.routed);
    let (w, model) = merged_bundle("batch_changes = 3");
    let r = w.dock("hq");
    assert!(r.routed.batches >= 5, "{:?}", r.routed);
    assert_eq!(r.routed.entries, r1.routed.entries);
    for site in [&one, &w] {
        let (marker, o4, k_o4) = marker_and_removals(site);
        assert!(marker > 0, "the marker is routed");
        assert!(o4 > marker, "O4 removed after the marker: {o4} / {marker}");
        assert!(
            k_o4 > marker,
            "K-O4 removed after the marker: {k_o4} / {marker}"
        );
        assert_eq!(
            site.value("hq", "SELECT COUNT(*) FROM berth_route_later"),
            "0",
            "nothing left for later once the marker is routed"
        );
    }
    dock_nodes_and_compare(&one, &w);
    assert!(!has(&w, "keith", "SELECT 1 FROM opty WHERE id = 'O4'"));
    assert!(!has(
        &w,
        "keith",
        "SELECT 1 FROM activity WHERE id = 'K-O4'"
    ));
    assert!(has(&w, "keith", "SELECT 1 FROM activity WHERE id = 'K-12'"));
    assert_all(&w, &model);
    w.settle();
    assert_all(&w, &model);
}

/// A routing pass that stops inside a merged node bundle (`max_changes`, as a crash between
/// two batches does) keeps, committed with its last batch, the rows to settle after the
/// bundle's marker (`berth_route_later`); the next dock routes the marker and settles them:
/// the nodes end where one pass brings them.
#[test]
fn a_pass_stopped_inside_a_merged_bundle_keeps_what_waits_for_its_marker() {
    let (one, _) = merged_bundle("batch_changes = 1000000");
    one.dock("hq");
    let (w, model) = merged_bundle("batch_changes = 3\nmax_changes = 3");
    // The first batches: central's change, then keith's first changes (O4 and K-O4).
    let mut docks = 0;
    let mut kept = 0;
    loop {
        let r = w.dock("hq");
        docks += 1;
        assert!(docks < 50);
        let waiting: i64 = w
            .value(
                "hq",
                "SELECT COUNT(*) FROM berth_route_later WHERE node = 'keith'",
            )
            .parse()
            .unwrap();
        kept = kept.max(waiting);
        if r.routed.behind == 0 {
            break;
        }
    }
    assert!(kept >= 2, "O4 and K-O4 waited for the marker: {kept}");
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM berth_route_later"), "0");
    let (marker, o4, k_o4) = marker_and_removals(&w);
    assert!(o4 > marker && k_o4 > marker, "{marker} {o4} {k_o4}");
    dock_nodes_and_compare(&one, &w);
    assert!(!has(&w, "keith", "SELECT 1 FROM opty WHERE id = 'O4'"));
    w.settle();
    assert_all(&w, &model);
}
