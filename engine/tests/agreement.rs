#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The benchmarks' agreement checks, run as tests at a small size: what a bench measures must
//! also be right, and a bench run is rare. The scenarios and the checks are the benches' own
//! (their files are compiled in here as modules); only the sizes differ.
//!
//! - routing: the set-form evaluation routes every change to the same nodes, in the same
//!   order, as the per-pair evaluation (`same_output`);
//! - extract: a manager's extract holds exactly the rows a hand-written SQL extract for the
//!   same model copies, key by key (`floor_sql_once`);
//! - merge: central merges every change of a node's bundle with no collision, and the bundle
//!   carries exactly the node's changes (`merge_once`, `verify_unpack_parse_once`);
//! - capture: every insert and update is journaled (`run`);
//! - verify: both passes read every row, and `digest::compute` gives the digests the module
//!   doc defines, computed row by row (`by_definition`).
// Each bench file declares its own `support` module (it is a crate of its own there).
#![allow(clippy::duplicate_mod)]

#[path = "../benches/routing.rs"]
#[allow(dead_code, unused_imports)]
mod routing;

#[path = "../benches/merge.rs"]
#[allow(dead_code, unused_imports)]
mod merge;

#[path = "../benches/capture.rs"]
#[allow(dead_code, unused_imports)]
mod capture;

#[path = "../benches/verify.rs"]
#[allow(dead_code, unused_imports)]
mod verify;

#[test]
fn set_form_routing_agrees_with_per_pair_routing() {
    let root = tempfile::tempdir().unwrap();
    // 12 nodes (one per employee), 60 accounts, 240 opportunities, 120 quotes, 480
    // activities; 1,500 changes at central, every tenth a reassignment.
    let (nodes, unit, changes) = (12, 12, 1500);
    let dir = routing::central_with_nodes(&root.path().join("s"), nodes, nodes, unit);
    routing::write_changes(&dir, changes, nodes, unit);
    let routed = routing::same_output(&dir);
    // Every change goes somewhere: the check compared real decisions.
    assert!(
        routed >= changes,
        "only {routed} routed for {changes} changes"
    );
}

#[test]
fn the_extract_holds_exactly_what_a_hand_written_extract_copies() {
    // About 20,000 rows at central; the manager sees about a tenth of the accounts.
    let s = routing::extract_scenario_of(20_000);
    let (_, held, done, _keep) = routing::extract_once(&s);
    // A part of central, not nothing and not all of it: the two extracts select.
    assert!(
        held > 0 && held * 4 < s.rows,
        "the manager holds {held} of {} rows",
        s.rows
    );
    routing::floor_sql_once(&done);
}

#[test]
fn central_merges_every_change_of_a_bundle_without_collision() {
    let w = merge::work_of(500);
    let s = merge::scenario(&w);
    merge::verify_unpack_parse_once(&s, w.changes());
    merge::merge_once(&s, w.changes());
}

#[test]
fn capture_journals_every_insert_and_update() {
    let n = 500;
    let ids = capture::ids(n);
    let vals: Vec<(String, String)> = (0..n)
        .map(|i| (capture::value(i, 0), capture::value(i, 1)))
        .collect();
    capture::run(&ids, &vals, capture::Triggers::Berth);
}

#[test]
fn the_verify_computes_the_digests_the_definition_gives() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2_000;
    let conn = verify::build(&dir.path().join("node.db"), n);
    let tables = verify::tables();
    assert_eq!(verify::floor(&conn).0, n as u64);
    assert_eq!(verify::verify(&conn, &tables), n as u64);
    let scoped: Vec<_> = tables
        .iter()
        .map(|t| (t, berth_engine::digest::Scope::All))
        .collect();
    assert_eq!(
        berth_engine::digest::compute(&conn, &scoped).unwrap(),
        verify::by_definition(&conn, &tables)
    );
}
