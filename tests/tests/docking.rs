//! Docking and merge stories across real sites (seed 004, Figures 1, 3, 4, 5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::Disposition;
use berth_engine::dock::{DockOptions, ExportStep, IntakeStep};
use berth_tests::{SCHEMA, World};
use std::fs;

const DATA: &str = "INSERT INTO account VALUES ('a1', 'Acme', 'north');
INSERT INTO opty VALUES ('o1', 'a1', 'Big deal', 'Keith Palmer', 1000, NULL);";

fn rep(w: &World, site: &str) -> String {
    w.value(site, "SELECT sales_rep FROM opty WHERE id = 'o1'")
}

/// The seed's collision, verbatim, with node A's change merged first.
#[test]
fn carl_lake_collision_a_first() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.exec(
        "a",
        "UPDATE opty SET sales_rep = 'Carl Lake' WHERE id = 'o1'",
    );
    w.exec(
        "b",
        "UPDATE opty SET sales_rep = 'Greg Emerson' WHERE id = 'o1'",
    );
    w.dock("a");
    w.dock("b");
    w.dock("hq");
    assert_eq!(rep(&w, "hq"), "'Carl Lake'");
    w.settle();
    w.assert_converged();
    assert_eq!(
        rep(&w, "b"),
        "'Carl Lake'",
        "b received the corrective change"
    );
    let s = w.open("hq");
    let c = berth_engine::conflict::conflicts(&s).unwrap();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].node, "b");
    assert_eq!(c[0].kind, "update-update");
    assert_eq!(c[0].columns, ["sales_rep"]);
    let rep = |r: &Option<berth_engine::value::Row>| r.as_ref().unwrap()["sales_rep"].clone();
    assert_eq!(rep(&c[0].node_old), "Keith Palmer");
    assert_eq!(rep(&c[0].node_new), "Greg Emerson");
    assert_eq!(rep(&c[0].central), "Carl Lake");
}

/// The same collision with node B's bundle merged first: B wins, A is corrected.
#[test]
fn carl_lake_collision_b_first() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.exec(
        "a",
        "UPDATE opty SET sales_rep = 'Carl Lake' WHERE id = 'o1'",
    );
    w.exec(
        "b",
        "UPDATE opty SET sales_rep = 'Greg Emerson' WHERE id = 'o1'",
    );
    w.dock("b");
    w.dock("hq");
    w.dock("a");
    w.dock("hq");
    assert_eq!(rep(&w, "hq"), "'Greg Emerson'");
    w.settle();
    w.assert_converged();
    assert_eq!(rep(&w, "a"), "'Greg Emerson'");
    assert_eq!(w.value("hq", "SELECT node FROM berth_conflicts"), "'a'");
}

/// Columns of the same update that do not collide still apply.
#[test]
fn column_level_merge_keeps_the_non_colliding_column() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.exec(
        "a",
        "UPDATE opty SET sales_rep = 'Carl Lake' WHERE id = 'o1'",
    );
    w.exec(
        "b",
        "UPDATE opty SET sales_rep = 'Greg Emerson', amount = 2500 WHERE id = 'o1'",
    );
    w.settle_in_order(&["a".into(), "b".into()]);
    w.assert_converged();
    assert_eq!(rep(&w, "hq"), "'Carl Lake'");
    assert_eq!(
        w.value("hq", "SELECT amount FROM opty WHERE id='o1'"),
        "2500.0"
    );
}

#[test]
fn update_of_a_row_deleted_at_central_is_corrected_by_a_delete() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("hq", "DELETE FROM opty WHERE id = 'o1'");
    w.exec("a", "UPDATE opty SET amount = 5 WHERE id = 'o1'");
    w.dock("a");
    w.dock("hq");
    assert_eq!(
        w.value("hq", "SELECT kind FROM berth_conflicts"),
        "'update-deleted'"
    );
    w.settle();
    w.assert_converged();
    assert_eq!(w.value("a", "SELECT COUNT(*) FROM opty"), "0");
}

#[test]
fn duplicate_insert_with_same_values_is_no_conflict() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    let ins = "INSERT INTO account VALUES ('a2', 'Globex', 'south')";
    w.exec("a", ins);
    w.exec("b", ins);
    w.settle();
    w.assert_converged();
    assert_eq!(w.conflicts(), 0);
}

#[test]
fn duplicate_insert_with_different_values_keeps_centrals_row() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.exec("a", "INSERT INTO account VALUES ('a2', 'Globex', 'south')");
    w.exec("b", "INSERT INTO account VALUES ('a2', 'Initech', 'east')");
    w.settle_in_order(&["a".into(), "b".into()]);
    w.assert_converged();
    assert_eq!(
        w.value("b", "SELECT name FROM account WHERE id='a2'"),
        "'Globex'"
    );
    assert_eq!(
        w.value("hq", "SELECT kind FROM berth_conflicts"),
        "'insert-exists'"
    );
}

#[test]
fn delete_of_a_modified_row_is_refused_and_the_row_restored() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.exec("a", "UPDATE opty SET amount = 7 WHERE id = 'o1'");
    w.exec("b", "DELETE FROM opty WHERE id = 'o1'");
    w.settle_in_order(&["a".into(), "b".into()]);
    w.assert_converged();
    assert_eq!(w.value("b", "SELECT amount FROM opty WHERE id='o1'"), "7.0");
    assert_eq!(
        w.value("hq", "SELECT kind FROM berth_conflicts"),
        "'delete-modified'"
    );
}

/// Dotmim.Sync #175: a delete then re-insert of the same key must sync.
#[test]
fn delete_then_reinsert_of_the_same_key_syncs() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.exec("a", "DELETE FROM opty WHERE id='o1'; INSERT INTO opty VALUES ('o1', 'a1', 'Reborn', 'Ann', 1, NULL);");
    w.settle();
    w.assert_converged();
    assert_eq!(
        w.value("b", "SELECT name FROM opty WHERE id='o1'"),
        "'Reborn'"
    );
    assert_eq!(w.conflicts(), 0);
}

#[test]
fn node_wins_policy_applies_the_nodes_value() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.set_policy("opty", "node-wins");
    w.exec(
        "a",
        "UPDATE opty SET sales_rep = 'Carl Lake' WHERE id = 'o1'",
    );
    w.exec(
        "b",
        "UPDATE opty SET sales_rep = 'Greg Emerson' WHERE id = 'o1'",
    );
    w.settle_in_order(&["a".into(), "b".into()]);
    w.assert_converged();
    assert_eq!(rep(&w, "hq"), "'Greg Emerson'");
    assert_eq!(
        w.value("hq", "SELECT resolution FROM berth_conflicts"),
        "'node-wins'"
    );
}

/// Latest-wins uses logical order: a change made after seeing the other wins, whoever docks first.
#[test]
fn latest_wins_follows_logical_order_not_docking_order() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.set_policy("opty", "latest-wins");
    // a changes the name; it reaches b; then b changes it again. b's change is later.
    w.exec("a", "UPDATE opty SET name = 'first' WHERE id = 'o1'");
    w.settle();
    w.exec("b", "UPDATE opty SET name = 'second' WHERE id = 'o1'");
    w.exec("a", "UPDATE opty SET amount = 1 WHERE id = 'o1'");
    w.settle_in_order(&["b".into(), "a".into()]);
    w.assert_converged();
    assert_eq!(
        w.value("hq", "SELECT name FROM opty WHERE id='o1'"),
        "'second'"
    );
}

/// A lost bundle loses nothing: the next bundle carries everything unacknowledged.
#[test]
fn lost_bundle_loses_nothing() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("a", "INSERT INTO account VALUES ('a2', 'Lost', 'x')");
    let r = w.dock("a");
    fs::remove_file(&r.written[0]).unwrap(); // the stick fell in the sea
    w.exec("a", "INSERT INTO account VALUES ('a3', 'Later', 'x')");
    w.dock("a");
    w.dock("hq");
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM account"), "3");
    w.settle();
    w.assert_converged();
}

/// A bundle delivered twice (or an older one after a newer one) applies once.
#[test]
fn duplicated_and_reordered_bundles_apply_once() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let stash = w.root.path().join("stash");
    fs::create_dir_all(&stash).unwrap();
    w.exec("a", "INSERT INTO account VALUES ('a2', 'One', 'x')");
    let first = w.dock("a").written[0].clone();
    fs::copy(&first, stash.join(first.file_name().unwrap())).unwrap();
    w.exec("a", "INSERT INTO account VALUES ('a3', 'Two', 'x'); UPDATE account SET name = 'One!' WHERE id = 'a2';");
    let second = w.dock("a").written[0].clone();
    // The newer bundle arrives first, then the older one, then the newer one again.
    w.dock("hq");
    fs::copy(stash.join(first.file_name().unwrap()), &first).unwrap();
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Duplicate), 1, "{r:?}");
    fs::copy(
        w.central.join("archive").join(second.file_name().unwrap()),
        &second,
    )
    .unwrap();
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Duplicate), 1, "{r:?}");
    assert_eq!(
        w.value("hq", "SELECT name FROM account WHERE id='a2'"),
        "'One!'"
    );
    // Two inserts and the update: each change travels as it was made, and applies once.
    assert_eq!(
        w.value("hq", "SELECT COUNT(*) FROM berth_log WHERE origin = 'a'"),
        "3"
    );
    assert_eq!(w.conflicts(), 0);
    w.settle();
    w.assert_converged();
}

/// A crash while taking bundles in (all in the spool, none applied; or one applied and
/// committed but not archived yet) loses nothing and applies nothing twice: the next dock
/// applies the spool, or recognises the applied bundle as a duplicate and archives it.
#[test]
fn a_crash_at_every_step_of_an_intake_loses_and_doubles_nothing() {
    for (i, step) in IntakeStep::ALL.into_iter().enumerate() {
        let w = World::new(SCHEMA, DATA, &["a"]);
        w.exec(
            "a",
            &format!("INSERT INTO account VALUES ('n{i}', 'Node', 'x')"),
        );
        w.dock("a");
        let crash = DockOptions {
            fail_intake: Some(step),
            ..DockOptions::default()
        };
        let err = w.dock_with("hq", &w.via, &crash).unwrap_err();
        assert!(
            matches!(err, berth_engine::EngineError::Injected("intake")),
            "{step:?}: {err}"
        );
        let applied = w.value(
            "hq",
            &format!("SELECT count(*) FROM account WHERE id = 'n{i}'"),
        );
        assert_eq!(
            applied,
            if step == IntakeStep::Applied {
                "1"
            } else {
                "0"
            },
            "{step:?}"
        );
        let spooled = fs::read_dir(w.dir("hq").join("spool")).unwrap().count();
        assert_eq!(spooled, 1, "{step:?}: the bundle waits in the spool");
        let r = w.dock("hq");
        let expect = if step == IntakeStep::Applied {
            Disposition::Duplicate
        } else {
            Disposition::Applied
        };
        assert_eq!(r.count(expect), 1, "{step:?}: {r:?}");
        assert_eq!(
            fs::read_dir(w.dir("hq").join("spool")).unwrap().count(),
            0,
            "{step:?}: the spool is empty"
        );
        w.settle();
        w.assert_converged();
        for site in ["a", "hq"] {
            assert_eq!(w.seqs_applied_twice(site), 0, "{step:?} at {site}");
        }
    }
}

/// A crash at any step of writing a bundle, at a node or at central, loses nothing and
/// doubles nothing: the site docks again normally and everything arrives once.
#[test]
fn a_crash_at_every_step_of_an_export_loses_and_doubles_nothing() {
    for (i, step) in ExportStep::ALL.into_iter().enumerate() {
        let w = World::new(SCHEMA, DATA, &["a"]);
        w.exec(
            "a",
            &format!("INSERT INTO account VALUES ('n{i}', 'Node', 'x')"),
        );
        w.exec(
            "hq",
            &format!("INSERT INTO account VALUES ('c{i}', 'Central', 'y')"),
        );
        let crash = DockOptions {
            fail_export: Some(step),
            ..DockOptions::default()
        };
        for site in ["a", "hq"] {
            match w.dock_with(site, &w.via, &crash) {
                // A node passes no routing step.
                Ok(_) => assert!(site == "a" && step == ExportStep::Routed, "{step:?}"),
                Err(e) => assert!(
                    matches!(e, berth_engine::EngineError::Injected(_)),
                    "{step:?} at {site}: {e}"
                ),
            }
        }
        w.settle();
        w.assert_converged();
        // A bundle left half-way in its `.part` file is cleaned up by the next export.
        let parts: Vec<_> = std::fs::read_dir(&w.via)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        assert!(parts.is_empty(), "{step:?}: {parts:?}");
        assert_eq!(
            w.value("hq", "SELECT count(*) FROM account"),
            "3",
            "{step:?}"
        );
        assert_eq!(w.conflicts(), 0, "{step:?}");
        for site in ["a", "hq"] {
            assert_eq!(
                w.seqs_applied_twice(site),
                0,
                "{step:?}: {site} applied two bundles with one sequence number"
            );
        }
    }
}

/// Regression: a crash after a bundle was renamed into the exchange folder but before it
/// was recorded as sent made the next dock write a different bundle under the same
/// sequence number (SPEC 2.8 numbers them 1, 2, ...), so the receiver applied two bundles
/// as one seq. The number is now taken before the bundle can reach the folder.
#[test]
fn a_bundle_written_before_a_crash_keeps_its_sequence_number() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("a", "INSERT INTO account VALUES ('a2', 'One', 'x')");
    let crash = DockOptions {
        fail_export: Some(ExportStep::Renamed),
        ..DockOptions::default()
    };
    assert!(w.dock_with("a", &w.via, &crash).is_err());
    assert_eq!(w.dock("hq").count(Disposition::Applied), 1);
    w.exec("a", "INSERT INTO account VALUES ('a3', 'Two', 'x')");
    let r = w.dock("a");
    assert_eq!(
        r.written[0].file_name().unwrap().to_string_lossy(),
        berth_bundle::naming::bundle_file_name("a", "hq", 2)
    );
    assert_eq!(w.dock("hq").count(Disposition::Applied), 1);
    assert_eq!(
        w.value(
            "hq",
            "SELECT group_concat(seq) FROM berth_applied WHERE peer = 'a'"
        ),
        "'1,2'"
    );
    w.settle();
    w.assert_converged();
}

/// A failure in the middle of an apply leaves no trace; the retry completes.
#[test]
fn interrupted_apply_leaves_no_trace_and_retry_succeeds() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("a", "INSERT INTO account VALUES ('a2', 'X', 'x'); INSERT INTO account VALUES ('a3', 'Y', 'y'); UPDATE opty SET amount = 3;");
    w.dock("a");
    let before = w.dump("hq");
    let log_before = w.value("hq", "SELECT COUNT(*) FROM berth_log");
    let opts = DockOptions {
        fail_after: Some(2),
        ..DockOptions::default()
    };
    let err = w.dock_with("hq", &w.via, &opts).unwrap_err();
    assert!(
        matches!(err, berth_engine::EngineError::Injected(_)),
        "{err}"
    );
    assert_eq!(w.dump("hq"), before);
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM berth_log"), log_before);
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM berth_applied"), "0");
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Applied), 1);
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM account"), "3");
    w.settle();
    w.assert_converged();
}

/// A node's own change is not echoed back to it, and its bundle acknowledges what it applied.
#[test]
fn own_changes_are_not_echoed_and_nodes_go_quiet() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("a", "INSERT INTO account VALUES ('a2', 'Mine', 'x')");
    w.dock("a");
    w.dock("hq");
    let r = w.dock("a");
    let applied = r
        .incoming
        .iter()
        .find(|i| i.outcome == Disposition::Applied)
        .unwrap();
    assert_eq!(
        applied.stats.applied, 0,
        "nothing of a's own came back: {r:?}"
    );
    assert_eq!(
        w.value(
            "a",
            "SELECT COUNT(*) FROM berth_log WHERE pos > 0 AND tbl <> ''"
        ),
        "1",
        "only the newest row is kept"
    );
    w.settle();
    let quiet = w.dock("a");
    assert!(
        quiet.written.is_empty() && quiet.incoming.is_empty(),
        "{quiet:?}"
    );
}

/// A bundle that needs positions the recipient has not applied waits, and applies once the
/// missing bundle arrives (here: central restored from a backup).
#[test]
fn bundle_after_a_gap_is_held_until_the_gap_is_filled() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let backup = w.root.path().join("hq-backup");
    copy_dir(&w.central, &backup);
    w.exec("a", "INSERT INTO account VALUES ('a2', 'First', 'x')");
    let first = w.dock("a").written[0].clone();
    let keep = w.root.path().join("first-copy");
    fs::create_dir_all(&keep).unwrap();
    fs::copy(&first, keep.join(first.file_name().unwrap())).unwrap();
    w.dock("hq");
    w.dock("a");
    w.exec("a", "INSERT INTO account VALUES ('a3', 'Second', 'x')");
    w.dock("a");
    // Central loses its disk and comes back from yesterday's backup.
    fs::remove_dir_all(&w.central).unwrap();
    copy_dir(&backup, &w.central);
    let r = w
        .dock_with(
            "hq",
            &w.via,
            &DockOptions {
                upload: false,
                ..DockOptions::default()
            },
        )
        .unwrap();
    assert_eq!(r.count(Disposition::Held), 1, "{r:?}");
    let st = berth_engine::status::status(&w.open("hq")).unwrap();
    assert_eq!(st.held.len(), 1);
    assert!(
        st.held[0].reason.contains("has not arrived"),
        "{}",
        st.held[0].reason
    );
    // A copy of the first bundle turns up again (say, on the courier's stick).
    fs::copy(backup_copy_of(&w, &first), &first).unwrap();
    let r = w
        .dock_with(
            "hq",
            &w.via,
            &DockOptions {
                upload: false,
                ..DockOptions::default()
            },
        )
        .unwrap();
    assert_eq!(r.count(Disposition::Applied), 2, "{r:?}");
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM account"), "3");
    assert!(
        berth_engine::status::status(&w.open("hq"))
            .unwrap()
            .held
            .is_empty()
    );
}

fn backup_copy_of(w: &World, first: &std::path::Path) -> std::path::PathBuf {
    w.root
        .path()
        .join("first-copy")
        .join(first.file_name().unwrap())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "berth.lock" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Regression (story seed 18): an update that changed nothing is never sent, so it must not
/// keep a node from applying central's delete of that row.
#[test]
fn noop_update_at_a_node_does_not_block_centrals_delete() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("a", "UPDATE account SET name = name WHERE id = 'a1'");
    w.exec(
        "hq",
        "DELETE FROM opty; DELETE FROM account WHERE id = 'a1'",
    );
    w.settle();
    w.assert_converged();
    assert_eq!(w.value("a", "SELECT COUNT(*) FROM account"), "0");
}

/// A central change made before central merged a node's change to the same column must not
/// overwrite it at the node (node-wins keeps the node's value everywhere).
#[test]
fn older_central_change_does_not_overwrite_a_pending_local_change() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.set_policy("opty", "node-wins");
    w.exec(
        "a",
        "UPDATE opty SET sales_rep = 'Carl Lake' WHERE id = 'o1'",
    );
    w.dock("a");
    w.dock("hq");
    w.exec(
        "b",
        "UPDATE opty SET sales_rep = 'Greg Emerson' WHERE id = 'o1'",
    );
    // b receives a's change (decided before central knew b's) while its own is pending.
    w.dock("b");
    assert_eq!(rep(&w, "b"), "'Greg Emerson'");
    w.settle();
    w.assert_converged();
    assert_eq!(rep(&w, "hq"), "'Greg Emerson'");
    assert!(w.value("b", "SELECT COUNT(*) FROM berth_overrides") != "0");
}

/// Regression (story seed 19): a partial corrective (only the colliding column) must not be
/// mistaken for a key change and replace the whole row at the node.
#[test]
fn partial_corrective_touches_only_the_colliding_column() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("hq", "UPDATE opty SET amount = 1 WHERE id = 'o1'");
    w.exec(
        "a",
        "UPDATE opty SET amount = 2, name = 'Mine' WHERE id = 'o1'",
    );
    w.dock("a");
    w.dock("hq");
    // Before the correction arrives, the node changes the name again.
    w.exec("a", "UPDATE opty SET name = 'Mine again' WHERE id = 'o1'");
    w.settle();
    w.assert_converged();
    assert_eq!(
        w.value(
            "a",
            "SELECT name || '/' || amount FROM opty WHERE id = 'o1'"
        ),
        "'Mine again/1.0'"
    );
}

/// A primary key changed by an application travels as a delete of the old key and an insert
/// of the new one, also when the row changes again before the node docks.
#[test]
fn key_change_at_a_node_moves_the_row_everywhere() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.exec("a", "INSERT INTO account VALUES ('a2', 'Globex', 'south')");
    w.settle();
    w.exec("a", "UPDATE account SET id = 'a3' WHERE id = 'a2'; UPDATE account SET id = 'a4', name = 'Moved' WHERE id = 'a3';");
    w.settle();
    w.assert_converged();
    assert_eq!(
        w.value(
            "b",
            "SELECT group_concat(id || ':' || name) FROM account WHERE id <> 'a1'"
        ),
        "'a4:Moved'"
    );
}

/// A central change that breaks a constraint of the node's database (here: a UNIQUE login a
/// pending local row already took) is not dropped or half-applied: the bundle waits in the
/// spool and `status` says why.
#[test]
fn central_change_refused_by_a_local_constraint_waits_visibly() {
    let schema = "CREATE TABLE emp(id TEXT PRIMARY KEY, login TEXT UNIQUE);";
    let w = World::new(schema, "", &["a"]);
    w.exec("hq", "INSERT INTO emp VALUES ('e1', 'kp')");
    w.exec("a", "INSERT INTO emp VALUES ('e9', 'kp')");
    w.dock("hq");
    let r = w
        .dock_with(
            "a",
            &w.via,
            &DockOptions {
                upload: false,
                ..DockOptions::default()
            },
        )
        .unwrap();
    assert_eq!(r.count(Disposition::Retry), 1, "{r:?}");
    let st = berth_engine::status::status(&w.open("a")).unwrap();
    assert_eq!(st.held.len(), 1);
    assert!(
        st.held[0].reason.contains("UNIQUE"),
        "{}",
        st.held[0].reason
    );
    assert_eq!(
        w.value("a", "SELECT COUNT(*) FROM emp WHERE id = 'e1'"),
        "0",
        "nothing half-applied"
    );
    // The node's row reaches central, which refuses it (constraint) and corrects the node;
    // the correction clears the way and everything settles.
    w.settle();
    w.assert_converged();
    assert_eq!(w.value("a", "SELECT group_concat(id) FROM emp"), "'e1'");
    assert_eq!(
        w.value("hq", "SELECT kind FROM berth_conflicts"),
        "'constraint'"
    );
    assert!(
        berth_engine::status::status(&w.open("a"))
            .unwrap()
            .held
            .is_empty()
    );
}

/// Central's stream to a node is its partial log: a lost bundle is re-sent with the same
/// changes, and what the node acknowledged is pruned.
#[test]
fn partial_log_is_resent_unchanged_and_pruned_once_acknowledged() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("hq", "INSERT INTO account VALUES ('c1', 'First', NULL)");
    let lost = w.dock("hq").written[0].clone();
    let first = std::fs::read(&lost).unwrap();
    std::fs::remove_file(&lost).unwrap();
    // The row changes again before the re-send: the routed change still carries what was
    // decided, and the new change follows it.
    w.exec("hq", "UPDATE account SET name = 'Second' WHERE id = 'c1'");
    let again = w.dock("hq").written[0].clone();
    assert_ne!(
        std::fs::read(&again).unwrap(),
        first,
        "a new bundle with more in it"
    );
    assert_eq!(
        w.value("hq", "SELECT COUNT(*) FROM berth_partial WHERE node = 'a'"),
        "2"
    );
    w.settle();
    w.assert_converged();
    assert_eq!(
        w.value("a", "SELECT name FROM account WHERE id = 'c1'"),
        "'Second'"
    );
    assert_eq!(
        w.value("hq", "SELECT COUNT(*) FROM berth_partial"),
        "0",
        "acknowledged entries are pruned"
    );
}

/// Regression (routing story): a lost acknowledgement-only bundle must be sent again, or
/// central keeps re-sending what the node already has and the node keeps skipping it.
#[test]
fn lost_acknowledgement_is_sent_again() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("hq", "INSERT INTO account VALUES ('c1', 'Central', NULL)");
    w.dock("hq");
    let ack = w.dock("a").written;
    assert_eq!(ack.len(), 1, "the node acknowledges what it applied");
    std::fs::remove_file(&ack[0]).unwrap();
    w.settle();
    w.assert_converged();
    assert_eq!(w.value("hq", "SELECT COUNT(*) FROM berth_partial"), "0");
}

/// Statements for chosen nodes (the appendix's SQLStatement records) reach exactly those
/// nodes and run there in order with the other changes; central does not run them.
#[test]
fn statements_reach_only_the_chosen_nodes() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    w.exec("hq", "UPDATE account SET region = 'west' WHERE id = 'a1'");
    let mut hq = w.open("hq");
    berth_engine::partial::send_sql(
        &mut hq.conn,
        &["a".to_string()],
        "UPDATE account SET name = 'Seen by a only' WHERE region = 'west';",
    )
    .unwrap();
    let err = berth_engine::partial::send_sql(
        &mut hq.conn,
        &["a".to_string()],
        "UPDATE nosuch SET x = 1;",
    )
    .unwrap_err();
    assert!(err.to_string().contains("nosuch"), "{err}");
    assert!(
        berth_engine::partial::send_sql(&mut hq.conn, &["zz".to_string()], "SELECT 1;").is_err()
    );
    drop(hq);
    w.settle();
    assert_eq!(
        w.value("a", "SELECT name FROM account WHERE id = 'a1'"),
        "'Seen by a only'",
        "ran after the region change"
    );
    assert_eq!(
        w.value("b", "SELECT name FROM account WHERE id = 'a1'"),
        "'Acme'"
    );
    assert_eq!(
        w.value("hq", "SELECT name FROM account WHERE id = 'a1'"),
        "'Acme'"
    );
    assert_eq!(
        w.value("a", "SELECT COUNT(*) FROM berth_log"),
        "0",
        "not captured at the node"
    );
}

/// Records what a progress receiver is told.
#[derive(Debug, Default)]
struct Recorded(std::sync::Mutex<Vec<String>>);

impl berth_engine::progress::Progress for Recorded {
    fn begin(&self, what: &str, total: u64) {
        self.0.lock().unwrap().push(format!("begin {what} {total}"));
    }
    fn set(&self, done: u64) {
        self.0.lock().unwrap().push(format!("set {done}"));
    }
    fn end(&self) {
        self.0.lock().unwrap().push("end".into());
    }
}

/// Long applies and writes report progress (the CLI draws it as bars on a terminal); small
/// ones do not.
#[test]
fn large_bundles_report_progress_while_written_and_applied() {
    let w = World::new(SCHEMA, "", &["n1"]);
    w.exec(
        "n1",
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000)
         INSERT INTO account(id, name) SELECT printf('a%05d', i), 'name' FROM c;",
    );
    let at_node = std::sync::Arc::new(Recorded::default());
    let opts = DockOptions {
        progress: Some(at_node.clone()),
        ..DockOptions::default()
    };
    w.dock_with("n1", &w.via, &opts).unwrap();
    let seen = at_node.0.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some("begin writing the bundle for hq 5000"),
        "{seen:?}"
    );
    assert!(seen.contains(&"set 4096".to_string()), "{seen:?}");
    assert_eq!(
        seen[seen.len() - 2..],
        ["set 5000".to_string(), "end".to_string()],
        "{seen:?}"
    );

    let at_hq = std::sync::Arc::new(Recorded::default());
    let opts = DockOptions {
        upload: false,
        progress: Some(at_hq.clone()),
        ..DockOptions::default()
    };
    let r = w.dock_with("hq", &w.via, &opts).unwrap();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    let seen = at_hq.0.lock().unwrap().clone();
    // Applying the changes as they stream out of the bundle (one pass: reading is applying).
    assert!(seen[0].starts_with("begin applying n1_to_hq_"), "{seen:?}");
    assert!(seen[0].ends_with(" 5000"), "{seen:?}");
    assert!(seen.contains(&"set 4096".to_string()), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("end"), "{seen:?}");

    // Once everything is acknowledged, a small dock says nothing.
    w.settle();
    w.exec("n1", "UPDATE account SET name = 'x' WHERE id = 'a00001'");
    let quiet = std::sync::Arc::new(Recorded::default());
    let opts = DockOptions {
        progress: Some(quiet.clone()),
        ..DockOptions::default()
    };
    w.dock_with("n1", &w.via, &opts).unwrap();
    assert!(quiet.0.lock().unwrap().is_empty());
}

/// Sets a stop flag as soon as work begins, as a signal arriving mid-apply would.
#[derive(Debug)]
struct StopOnBegin(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl berth_engine::progress::Progress for StopOnBegin {
    fn begin(&self, _: &str, _: u64) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    fn set(&self, _: u64) {}
    fn end(&self) {}
}

/// SIGINT/SIGTERM in the watcher: the bundle being applied finishes whole, the next one is
/// not started and waits in the spool for the next dock.
#[test]
fn a_stop_request_finishes_the_current_bundle_and_starts_no_other() {
    let w = World::new(SCHEMA, "", &["n1", "n2"]);
    w.exec(
        "n1",
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 5000)
         INSERT INTO account(id, name) SELECT printf('a%05d', i), 'name' FROM c;",
    );
    w.exec(
        "n2",
        "INSERT INTO account(id, name) VALUES ('b1', 'from n2')",
    );
    w.dock("n1");
    w.dock("n2");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opts = DockOptions {
        upload: false,
        progress: Some(std::sync::Arc::new(StopOnBegin(stop.clone()))),
        stop: Some(stop.clone()),
        ..DockOptions::default()
    };
    let r = w.dock_with("hq", &w.via, &opts).unwrap();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(w.value("hq", "SELECT count(*) FROM account"), "5000");
    let waiting = std::fs::read_dir(w.central.join("spool")).unwrap().count();
    assert_eq!(waiting, 1, "n2's bundle waits in the spool");
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(w.value("hq", "SELECT count(*) FROM account"), "5001");
}

/// A dock killed while copying a bundle into its spool leaves a `.part` copy there; the next
/// dock removes it (SPEC 1.9), and applies what arrived.
#[test]
fn a_killed_docks_spool_copy_is_removed() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let part = w
        .central
        .join("spool")
        .join("a_to_hq_0000000009.berth.zip.part");
    fs::write(&part, b"half a bundle").unwrap();
    w.exec("a", "INSERT INTO account VALUES ('a2', 'After', 'x')");
    w.dock("a");
    w.dock("hq");
    assert!(!part.exists(), "{} is still there", part.display());
    assert_eq!(
        w.value("hq", "SELECT name FROM account WHERE id='a2'"),
        "'After'"
    );
}

/// Central changes one column of a row a node has changed another column of, and the node
/// applies central's change before its own has been merged: the node's update still travels
/// as made (only its column), so central records no collision and keeps both (issue 15: the
/// row read at export held central's column too, a false update-update).
#[test]
fn a_local_update_travels_as_made_when_central_changed_another_column_first() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("a", "UPDATE opty SET name = 'Big deal (a)' WHERE id = 'o1'");
    w.exec("hq", "UPDATE opty SET amount = 20.0 WHERE id = 'o1'");
    w.dock("hq");
    // a takes central's amount in while its name change is still its own, then sends it;
    // central has changed the amount again by the time it merges it.
    w.dock("a");
    w.exec("hq", "UPDATE opty SET amount = 30.0 WHERE id = 'o1'");
    w.dock("hq");
    assert_eq!(w.conflicts(), 0);
    w.settle();
    w.assert_converged();
    assert_eq!(
        w.value(
            "hq",
            "SELECT name || '/' || amount FROM opty WHERE id = 'o1'"
        ),
        "'Big deal (a)/30.0'"
    );
}

/// Sets a site's `[retention] days` in its `berth.toml`.
fn set_retention(w: &World, site: &str, days: u32) {
    let path = w.dir(site).join("berth.toml");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, format!("{text}\n[retention]\ndays = {days}\n")).unwrap();
}

/// Makes everything a site archived and recorded as applied look `days` old.
fn age_archive(w: &World, site: &str, days: u64) {
    let back = std::time::Duration::from_secs(days * 86_400);
    let then = std::time::SystemTime::now() - back;
    for e in fs::read_dir(w.dir(site).join("archive")).unwrap() {
        let f = fs::File::options()
            .write(true)
            .open(e.unwrap().path())
            .unwrap();
        f.set_modified(then).unwrap();
    }
    w.exec(
        site,
        &format!(
            "UPDATE berth_applied SET at = unixepoch() - {}",
            back.as_secs()
        ),
    );
}

/// Issue 20: central's `archive/` and `berth_applied` no longer grow for ever. Past the
/// retention (`[retention] days`), a dock removes archived bundles and their rows, keeping
/// each peer's newest row; a copy of a pruned bundle delivered again is still a duplicate.
#[test]
fn retention_prunes_the_archive_and_applied_records_but_not_duplicate_detection() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    set_retention(&w, "hq", 7);
    let mut copies = Vec::new();
    for i in 0..3 {
        w.exec(
            "a",
            &format!("UPDATE opty SET amount = {i} WHERE id = 'o1'"),
        );
        let r = w.dock("a");
        let sent = r.written[0].clone();
        let copy = w.root.path().join(format!("copy-{i}"));
        fs::copy(&sent, &copy).unwrap();
        copies.push((copy, sent.file_name().unwrap().to_owned()));
        let r = w.dock("hq");
        assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    }
    let rows = |w: &World| w.value("hq", "SELECT count(*) FROM berth_applied WHERE peer = 'a'");
    let archived = |w: &World| fs::read_dir(w.dir("hq").join("archive")).unwrap().count();
    assert_eq!(rows(&w), "3");
    let before = archived(&w);
    assert!(before >= 3, "{before}");

    // Within the retention nothing goes.
    let r = w.dock("hq");
    assert_eq!((r.pruned.rows, r.pruned.files), (0, 0));
    age_archive(&w, "hq", 6);
    assert_eq!(w.dock("hq").pruned.rows, 0);
    assert_eq!(archived(&w), before);

    // Past it: every archived file, and every row but the newest of the peer.
    age_archive(&w, "hq", 8);
    let r = w.dock("hq");
    assert_eq!(r.pruned.rows, 2, "{r:?}");
    assert_eq!(r.pruned.files as usize, before);
    assert_eq!(rows(&w), "1");
    assert_eq!(archived(&w), 0);

    // The oldest bundle, delivered again: a duplicate, nothing applied twice.
    let (copy, name) = &copies[0];
    fs::copy(copy, w.via.join(name)).unwrap();
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Duplicate), 1, "{r:?}");
    assert_eq!(
        w.value("hq", "SELECT amount FROM opty WHERE id = 'o1'"),
        "2.0"
    );

    // `days = 0` keeps everything.
    set_retention(&w, "a", 0);
    age_archive(&w, "a", 400);
    let r = w.dock("a");
    assert_eq!((r.pruned.rows, r.pruned.files), (0, 0));
}

/// Issue 20 item 1 (seed 004: the log manager deletes what every node has processed):
/// central's log keeps only what some active node still needs; a node that has not docked
/// holds it back (and `status` says which), a revoked node no longer does.
#[test]
fn central_prunes_its_log_to_what_every_active_node_has_processed() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    let entries = |w: &World| -> i64 {
        w.value("hq", "SELECT count(*) FROM berth_log")
            .parse()
            .unwrap()
    };
    for i in 0..5 {
        w.exec(
            "hq",
            &format!("UPDATE opty SET amount = {i} WHERE id = 'o1'"),
        );
    }
    w.exec("a", "UPDATE account SET region = 'south' WHERE id = 'a1'");
    w.settle();
    assert_eq!(
        entries(&w),
        1,
        "every node processed everything: the newest entry stays"
    );
    let hold = berth_engine::status::status(&w.open("hq"))
        .unwrap()
        .log
        .unwrap();
    assert_eq!(hold.entries, 1);

    // b stays away: what it has not processed stays, whatever a does.
    w.exec("hq", "UPDATE opty SET amount = 100 WHERE id = 'o1'");
    w.exec("a", "UPDATE opty SET name = 'Bigger deal' WHERE id = 'o1'");
    for _ in 0..3 {
        w.dock("hq");
        w.dock("a");
    }
    w.dock("hq");
    assert!(
        entries(&w) > 2,
        "b has not received central's change nor a's"
    );
    let hold = berth_engine::status::status(&w.open("hq"))
        .unwrap()
        .log
        .unwrap();
    assert_eq!(hold.held_by.as_deref(), Some("b"));
    assert_eq!(hold.entries, entries(&w));

    // b comes back: it receives everything it missed, then the log shrinks again.
    w.settle();
    assert_eq!(
        w.value("b", "SELECT name FROM opty WHERE id = 'o1'"),
        "'Bigger deal'"
    );
    assert_eq!(
        w.value("b", "SELECT amount FROM opty WHERE id = 'o1'"),
        "100.0"
    );
    assert_eq!(entries(&w), 1);

    // A revoked node stops holding the log back.
    w.exec("hq", "UPDATE opty SET amount = 200 WHERE id = 'o1'");
    w.exec("hq", "UPDATE opty SET amount = 300 WHERE id = 'o1'");
    w.dock("hq");
    w.dock("a");
    w.dock("hq");
    w.dock("a");
    w.dock("hq");
    assert!(entries(&w) > 1);
    berth_engine::revoke::revoke_node(&w.open("hq"), "b").unwrap();
    w.dock("hq");
    assert_eq!(entries(&w), 1);
    let hold = berth_engine::status::status(&w.open("hq"))
        .unwrap()
        .log
        .unwrap();
    assert_eq!(hold.held_by.as_deref(), Some("a"));
}

/// Issue 21: the engine writes a bundle to be sealed or cut into volumes in the site's
/// staging folder and puts only its final form into the exchange folder. Every file of the
/// two streams found there: sealed when sealing was asked (not even a `.part` of the plain
/// bundle), never larger than the volume size when cutting was.
fn assert_final_form(w: &World, seal: bool, volume_size: Option<u64>, when: &str) {
    for e in fs::read_dir(&w.via).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("a_to_hq_") || name.starts_with("hq_to_a_")) {
            continue;
        }
        if seal {
            assert!(
                name.contains(".berth.zip.age"),
                "{when}: {name} is not sealed"
            );
        }
        if let Some(v) = volume_size {
            let len = e.metadata().unwrap().len();
            assert!(len <= v, "{when}: {name} holds {len} bytes, above {v}");
        }
    }
}

/// The bundles of one stream a reader lists in the exchange folder.
fn listed(w: &World, from: &str, to: &str) -> Vec<berth_engine::transport::Found> {
    berth_engine::transport::list(&w.via, Some(to))
        .unwrap()
        .into_iter()
        .filter(|f| f.sender == from)
        .collect()
}

/// Issue 21: a crash at any step of an export that seals, cuts into volumes, or both, at a
/// node or at central, never leaves a plain bundle (or a whole file meant to be cut) in the
/// exchange folder, and a volume set is listed whole or not at all. The next dock leaves
/// exactly one bundle of each stream there, in its final form, nothing half-written and
/// nothing staged; the recipient applies everything once.
#[test]
fn a_crash_at_every_step_of_a_sealed_or_cut_export_leaves_only_the_final_form() {
    let steps = ExportStep::ALL
        .into_iter()
        .chain([ExportStep::Piece])
        .collect::<Vec<_>>();
    for (seal, volume_size) in [(true, None), (false, Some(4096)), (true, Some(4096))] {
        // Whether a bundle was found cut into volumes (so cutting was exercised).
        let mut cut = false;
        for step in &steps {
            let step = *step;
            let when = format!("seal {seal}, volumes {volume_size:?}, {step:?}");
            let w = World::new(SCHEMA, DATA, &["a"]);
            // Enough incompressible text that a bundle takes several 4096-byte volumes.
            for (site, prefix) in [("a", "n"), ("hq", "c")] {
                w.exec(
                    site,
                    &format!(
                        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 60)
                         INSERT INTO account SELECT '{prefix}' || i, hex(randomblob(100)), 'x' FROM s"
                    ),
                );
            }
            let form = DockOptions {
                seal,
                volume_size,
                ..DockOptions::default()
            };
            let crash = DockOptions {
                fail_export: Some(step),
                ..form.clone()
            };
            for site in ["a", "hq"] {
                match w.dock_with(site, &w.via, &crash) {
                    // A node passes no routing step; a bundle not cut passes no piece.
                    Ok(_) => assert!(
                        (site == "a" && step == ExportStep::Routed)
                            || (step == ExportStep::Piece && volume_size.is_none()),
                        "{when} at {site}"
                    ),
                    Err(e) => assert!(
                        matches!(e, berth_engine::EngineError::Injected(_)),
                        "{when} at {site}: {e}"
                    ),
                }
                assert_final_form(&w, seal, volume_size, &format!("{when}, crash at {site}"));
            }
            if step == ExportStep::Piece && volume_size.is_some() {
                assert!(
                    listed(&w, "hq", "a").is_empty(),
                    "{when}: a set cut short is not listed"
                );
            }
            // The next docks, in the same form, without a crash.
            for (site, peer) in [("a", "hq"), ("hq", "a"), ("a", "hq")] {
                let r = w.dock_with(site, &w.via, &form).unwrap();
                assert_final_form(&w, seal, volume_size, &format!("{when}, then {site}"));
                let mine = listed(&w, site, peer);
                assert!(mine.len() <= 1, "{when}: {site} left {mine:?}");
                for f in &mine {
                    let name = f.path.file_name().unwrap().to_string_lossy().into_owned();
                    cut |= name.ends_with(".volumes");
                    assert_eq!(name.contains(".age"), seal, "{when}: {name}");
                }
                // Nothing half-written of this site's bundles, nothing staged.
                let leftovers: Vec<String> = fs::read_dir(&w.via)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{site}_to_")))
                    .filter(|n| {
                        n.ends_with(".part")
                            || berth_bundle::volume::parse_volume_name(n).is_some_and(|(b, _)| {
                                !w.via.join(berth_bundle::volume::index_name(b)).exists()
                            })
                    })
                    .collect();
                assert!(leftovers.is_empty(), "{when}: {leftovers:?}");
                let staged = w.dir(site).join(berth_engine::outgoing::STAGING);
                assert!(
                    !staged.exists() || fs::read_dir(&staged).unwrap().count() == 0,
                    "{when}: {site} left files staged"
                );
                assert_eq!(r.count(Disposition::Quarantined), 0, "{when}: {r:?}");
            }
            for site in ["a", "hq"] {
                let n = w.value(site, "SELECT count(*) FROM account");
                assert_eq!(n, "121", "{when}: every row once at {site}");
            }
            w.settle();
            w.assert_converged();
            assert_eq!(w.conflicts(), 0, "{when}");
            for site in ["a", "hq"] {
                assert_eq!(w.seqs_applied_twice(site), 0, "{when} at {site}");
            }
        }
        assert_eq!(cut, volume_size.is_some(), "seal {seal}");
    }
}

/// Issue 21: `node add --encrypt`'s extract is written sealed by the engine: only
/// `B.age` reaches the folder (the plain extract, every row of the node, never does, and
/// nothing stays staged), and the node opens and applies it.
#[test]
fn a_sealed_extract_reaches_the_folder_only_sealed() {
    let w = World::new(SCHEMA, DATA, &[]);
    let dir = w.root.path().join("late");
    let node = berth_engine::site::Site::init_node(&dir, "late").unwrap();
    let req = berth_engine::enroll::write_request(&node, &w.via).unwrap();
    drop(node);
    let added = berth_engine::enroll::add_node_with(
        &mut w.open("hq"),
        "late",
        &req,
        &Default::default(),
        &w.via,
        true,
    )
    .unwrap();
    fs::remove_file(&req).unwrap();
    let plain = berth_bundle::naming::bundle_file_name("hq", "late", 1);
    let sealed = berth_bundle::seal::sealed_name(&plain);
    assert_eq!(added.extract, w.via.join(&sealed));
    let names: Vec<String> = fs::read_dir(&w.via)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, std::slice::from_ref(&sealed));
    let staged = w.dir("hq").join(berth_engine::outgoing::STAGING);
    assert_eq!(fs::read_dir(&staged).unwrap().count(), 0);
    let bytes = fs::read(w.via.join(&sealed)).unwrap();
    assert!(bytes.starts_with(berth_bundle::seal::MAGIC));
    assert!(
        !bytes.windows(4).any(|x| x == b"Acme"),
        "the rows are sealed"
    );
    let mut late = berth_engine::site::Site::open(&dir).unwrap();
    let r = berth_engine::dock::dock(&mut late, &w.via, &DockOptions::default()).unwrap();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    let name: String = late
        .conn
        .query_row("SELECT name FROM account", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "Acme");
}
