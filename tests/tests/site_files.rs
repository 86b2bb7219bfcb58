//! The site's own files (issue 16, part 3): `berth.toml`, `keys/` and `data.db` belong
//! together, and a site whose files do not is refused with both sides named, never repaired
//! quietly (a re-created empty database made central's bundles "not trusted").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::EngineError;
use berth_engine::site::Site;
use berth_tests::{SCHEMA, World};
use std::fs;
use std::path::Path;

const DATA: &str = "INSERT INTO account VALUES ('a1', 'Acme', 'north');";

/// Checkpoints and removes the WAL, so `data.db` alone is the database.
fn settle_db(dir: &Path) {
    let c = rusqlite::Connection::open(dir.join("data.db")).unwrap();
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
        .unwrap();
    drop(c);
    for x in ["data.db-wal", "data.db-shm"] {
        let _ = fs::remove_file(dir.join(x));
    }
}

fn refused(dir: &Path) -> String {
    match Site::open(dir) {
        Err(e @ EngineError::SiteFiles { .. }) => e.to_string(),
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("{} opened", dir.display()),
    }
}

#[test]
fn a_missing_data_db_is_refused_not_recreated() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let dir = w.dir("a");
    for x in ["data.db", "data.db-wal", "data.db-shm"] {
        let _ = fs::remove_file(dir.join(x));
    }
    let why = refused(&dir);
    assert!(why.contains("database is missing"), "{why}");
    assert!(!dir.join("data.db").exists(), "not re-created");
}

#[test]
fn an_empty_data_db_is_refused() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let dir = w.dir("a");
    settle_db(&dir);
    fs::write(dir.join("data.db"), b"").unwrap();
    let why = refused(&dir);
    assert!(why.contains("database is empty"), "{why}");
    assert_eq!(fs::metadata(dir.join("data.db")).unwrap().len(), 0);
}

#[test]
fn another_nodes_data_db_copied_in_is_refused_naming_both() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    settle_db(&w.dir("a"));
    settle_db(&w.dir("b"));
    fs::copy(w.dir("b").join("data.db"), w.dir("a").join("data.db")).unwrap();
    let why = refused(&w.dir("a"));
    assert!(why.contains("\"a\"") && why.contains("\"b\""), "{why}");
    assert!(why.contains("key"), "the key differs too: {why}");
}

#[test]
fn centrals_data_db_copied_into_a_node_is_refused_naming_both() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    settle_db(&w.dir("a"));
    settle_db(&w.dir("hq"));
    fs::copy(w.dir("hq").join("data.db"), w.dir("a").join("data.db")).unwrap();
    let why = refused(&w.dir("a"));
    assert!(
        why.contains("node site") && why.contains("central site"),
        "{why}"
    );
}

#[test]
fn a_same_named_node_of_another_deployment_is_refused_by_its_key() {
    let here = World::new(SCHEMA, DATA, &["a"]);
    let there = World::new(SCHEMA, DATA, &["a"]);
    settle_db(&here.dir("a"));
    settle_db(&there.dir("a"));
    fs::copy(
        there.dir("a").join("data.db"),
        here.dir("a").join("data.db"),
    )
    .unwrap();
    let why = refused(&here.dir("a"));
    assert!(why.contains("keys/site.key"), "{why}");
}

#[test]
fn berth_toml_edited_to_another_name_or_role_is_refused_naming_both() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let cfg = w.dir("a").join("berth.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, text.replace("name = \"a\"", "name = \"zed\"")).unwrap();
    let why = refused(&w.dir("a"));
    assert!(why.contains("\"zed\"") && why.contains("\"a\""), "{why}");
    fs::write(&cfg, text.replace("role = \"node\"", "role = \"central\"")).unwrap();
    let why = refused(&w.dir("a"));
    assert!(
        why.contains("central site") && why.contains("node site"),
        "{why}"
    );
    fs::write(&cfg, &text).unwrap();
    w.open("a");
}

#[test]
fn a_site_from_before_the_check_records_its_identity_at_first_open() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec(
        "a",
        "DELETE FROM berth_meta WHERE key IN ('role', 'name', 'site_key')",
    );
    let s = w.open("a");
    let meta = |k: &str| berth_engine::store::meta(&s.conn, k).unwrap();
    assert_eq!(meta("role").as_deref(), Some("node"));
    assert_eq!(meta("name").as_deref(), Some("a"));
    assert_eq!(meta("site_key"), Some(s.public_key().to_hex()));
    drop(s);
    // Central's peers are nodes: a database without records whose peers say otherwise is
    // refused rather than adopted.
    w.exec(
        "a",
        "DELETE FROM berth_meta WHERE key IN ('role', 'name', 'site_key')",
    );
    let cfg = w.dir("a").join("berth.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, text.replace("role = \"node\"", "role = \"central\"")).unwrap();
    let why = refused(&w.dir("a"));
    assert!(why.contains("records no role"), "{why}");
}

#[test]
fn centrals_rotated_key_still_opens_its_database() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    berth_engine::keychain::rotate(w.open("hq")).unwrap();
    let s = w.open("hq");
    assert_eq!(
        berth_engine::store::meta(&s.conn, "site_key").unwrap(),
        Some(s.public_key().to_hex())
    );
    drop(s);
    w.exec("a", "INSERT INTO account VALUES ('a2', 'After', 'x')");
    w.settle();
    assert_eq!(
        w.value("hq", "SELECT name FROM account WHERE id = 'a2'"),
        "'After'"
    );
}
