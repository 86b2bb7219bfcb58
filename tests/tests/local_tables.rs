//! Tables without a primary key (issue 18): `local` tables are part of the schema
//! (versioned, migrated, checksummed) but never captured or sent, so every site keeps its
//! own rows; a table without a key may instead name one (NOT NULL columns with a UNIQUE
//! index). Anything else is refused, and the message names both ways.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::evolve::diff::DiffOptions;
use berth_engine::evolve::history::NewMigration;
use berth_engine::evolve::snapshot;
use berth_engine::site::{CentralInit, Site};
use berth_engine::{guard, migrate};
use berth_tests::World;
use std::collections::BTreeMap;

const SCHEMA: &str = "
CREATE TABLE item(id TEXT PRIMARY KEY, name TEXT);
CREATE TABLE cache(k TEXT, v TEXT);
";

const MODEL: &str = "version = 1
[tables]
item = { visibility = \"enterprise\", node_write = true }
cache = { visibility = \"local\" }
";

/// `migration create --to` at central: the live schema to `target`.
fn migrate_hq(
    w: &World,
    name: &'static str,
    target: &snapshot::Snapshot,
) -> berth_engine::Result<berth_engine::evolve::history::Migration> {
    migrate::create_from_target(
        &w.open("hq"),
        target,
        &NewMigration {
            name,
            software_level: "1",
            origin: "hq",
            diff: DiffOptions::default(),
        },
    )
}

fn rows(w: &World, site: &str, sql: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(w.dir(site).join("data.db")).unwrap();
    let mut st = c.prepare(sql).unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

fn logged(w: &World, site: &str, table: &str) -> i64 {
    w.value(
        site,
        &format!("SELECT count(*) FROM berth_log WHERE tbl = '{table}'"),
    )
    .parse()
    .unwrap()
}

fn assert_sound(w: &World, site: &str) {
    let g = guard::check(&w.open(site)).unwrap();
    assert!(g.is_sound(), "{site}: {g:?}");
    assert!(g.unreplicated.is_empty(), "{site}: {g:?}");
}

fn world() -> World {
    let nodes = [("a", BTreeMap::new())];
    World::build(
        SCHEMA,
        "INSERT INTO cache VALUES ('hq', 'central');",
        Some(MODEL),
        &nodes,
    )
}

/// [`world`] with one more table, `secret`, that never leaves central.
fn world_with_secret() -> World {
    let nodes = [("a", BTreeMap::new())];
    World::build(
        &format!("{SCHEMA}CREATE TABLE secret(id TEXT PRIMARY KEY);"),
        "",
        Some(&format!("{MODEL}secret = {{ visibility = \"central\" }}\n")),
        &nodes,
    )
}

#[test]
fn local_tables_keep_their_rows_at_each_site_across_a_migration_and_a_dock() {
    let w = world();
    // The node has the table (the schema is one), but none of central's rows.
    assert!(rows(&w, "a", "SELECT k FROM cache").is_empty());
    for site in ["hq", "a"] {
        let triggers = w.value(
            site,
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'cache'",
        );
        assert_eq!(
            triggers, "0",
            "{site}: a local table has no capture triggers"
        );
        assert_sound(&w, site);
    }
    w.exec(
        "a",
        "INSERT INTO cache VALUES ('a', 'node'); INSERT INTO item VALUES ('i1', 'x');",
    );
    w.exec("hq", "INSERT INTO cache VALUES ('hq2', 'central')");
    assert_eq!(logged(&w, "a", "cache") + logged(&w, "hq", "cache"), 0);
    w.settle();
    assert_eq!(
        w.value("hq", "SELECT name FROM item WHERE id = 'i1'"),
        "'x'"
    );
    assert_eq!(
        rows(&w, "hq", "SELECT k FROM cache ORDER BY k"),
        ["hq", "hq2"]
    );
    assert_eq!(rows(&w, "a", "SELECT k FROM cache"), ["a"]);

    // A migration that changes the local table applies at every site; the rows stay each
    // site's own.
    let target = snapshot::from_sql(&format!(
        "{SCHEMA}\nCREATE TABLE cache2(k TEXT, v TEXT, at INTEGER);
         DROP TABLE cache; ALTER TABLE cache2 RENAME TO cache;
         CREATE INDEX cache_k ON cache(k);"
    ))
    .unwrap();
    let m = migrate_hq(&w, "cache gets a time", &target).unwrap();
    w.settle();
    for site in ["hq", "a"] {
        let s = w.open(site);
        assert_eq!(
            migrate::state(&s.conn).unwrap().version,
            m.version,
            "{site}"
        );
        assert_eq!(
            snapshot::read(&s.conn).unwrap().checksum().unwrap(),
            m.checksum_after,
            "{site}"
        );
        drop(s);
        assert_sound(&w, site);
    }
    assert_eq!(
        rows(&w, "hq", "SELECT k FROM cache ORDER BY k"),
        ["hq", "hq2"]
    );
    assert_eq!(rows(&w, "a", "SELECT k FROM cache"), ["a"]);
    // Still never captured after the migration recreated capture; replicated tables still flow.
    w.exec(
        "a",
        "UPDATE cache SET at = 1; INSERT INTO item VALUES ('i2', 'y');",
    );
    assert_eq!(logged(&w, "a", "cache"), 0);
    w.settle();
    assert_eq!(
        w.value("hq", "SELECT name FROM item WHERE id = 'i2'"),
        "'y'"
    );
    assert_eq!(
        w.value("hq", "SELECT count(*) FROM cache WHERE at IS NOT NULL"),
        "0"
    );
}

fn init(dir: &std::path::Path, schema: &str, model: Option<&str>) -> berth_engine::Result<Site> {
    std::fs::create_dir_all(dir).unwrap();
    let schema_path = dir.join("schema.sql");
    std::fs::write(&schema_path, schema).unwrap();
    let model_path = dir.join("model.toml");
    if let Some(m) = model {
        std::fs::write(&model_path, m).unwrap();
    }
    Site::init_central(&CentralInit {
        dir: &dir.join("hq"),
        name: Some("hq"),
        schema: &schema_path,
        docking: model.map(|_| model_path.as_path()),
        data: None,
    })
    .map(|(s, _)| s)
}

#[test]
fn a_table_without_a_key_is_refused_and_the_message_names_both_ways() {
    let root = tempfile::tempdir().unwrap();
    let without_model = init(&root.path().join("1"), SCHEMA, None)
        .unwrap_err()
        .to_string();
    let undeclared = "version = 1\n[tables]\nitem = { visibility = \"enterprise\" }\n\
                      cache = { visibility = \"enterprise\" }\n";
    let with_model = init(&root.path().join("2"), SCHEMA, Some(undeclared))
        .unwrap_err()
        .to_string();
    for err in [without_model, with_model] {
        assert!(err.contains("cache"), "{err}");
        assert!(err.contains("has no PRIMARY KEY"), "{err}");
        assert!(err.contains("\"local\""), "{err}");
        assert!(err.contains("key = ["), "{err}");
    }
    // The same schema with the table local is accepted.
    init(&root.path().join("3"), SCHEMA, Some(MODEL)).unwrap();
}

const KEYED_SCHEMA: &str = "
CREATE TABLE link(a TEXT NOT NULL, b TEXT NOT NULL, note TEXT);
CREATE UNIQUE INDEX link_ab ON link(a, b);
";

fn keyed_model(key: &str) -> String {
    format!(
        "version = 1\n[tables]\nlink = {{ visibility = \"enterprise\", node_write = true, key = {key} }}\n"
    )
}

#[test]
fn a_named_key_must_be_not_null_columns_with_a_unique_index_on_exactly_them() {
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (r#"["a"]"#, "no UNIQUE index has exactly the key columns"),
        (r#"["a", "note"]"#, "may be NULL"),
        (r#"["a", "zz"]"#, "not a column"),
        ("[]", "names no column"),
    ];
    for (i, (key, expect)) in cases.iter().enumerate() {
        let err = init(
            &root.path().join(i.to_string()),
            KEYED_SCHEMA,
            Some(&keyed_model(key)),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(expect), "{key}: {err}");
    }
    let with_pk = "CREATE TABLE link(a TEXT PRIMARY KEY, b TEXT NOT NULL);";
    let err = init(
        &root.path().join("pk"),
        with_pk,
        Some(&keyed_model(r#"["b"]"#)),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("only for tables without one"), "{err}");
}

#[test]
fn a_table_replicated_by_its_named_key_syncs_inserts_updates_and_deletes() {
    let model = keyed_model(r#"["a", "b"]"#);
    let nodes = [("n", BTreeMap::new())];
    let w = World::build(
        KEYED_SCHEMA,
        "INSERT INTO link VALUES ('x', '1', 'central');",
        Some(&model),
        &nodes,
    );
    assert_eq!(
        w.value("n", "SELECT note FROM link WHERE a = 'x'"),
        "'central'"
    );
    w.exec(
        "n",
        "INSERT INTO link VALUES ('y', '2', 'node'); UPDATE link SET note = 'edited' WHERE a = 'x';",
    );
    w.settle();
    assert_eq!(
        rows(&w, "hq", "SELECT a || b || note FROM link ORDER BY a"),
        ["x1edited", "y2node"]
    );
    w.exec(
        "hq",
        "DELETE FROM link WHERE a = 'y'; UPDATE link SET b = '9' WHERE a = 'x';",
    );
    w.settle();
    assert_eq!(
        rows(&w, "n", "SELECT a || b || note FROM link"),
        ["x9edited"]
    );
    w.assert_converged();
    for site in ["hq", "n"] {
        assert_sound(&w, site);
    }
}

#[test]
fn docking_apply_keeps_the_class_of_an_existing_table() {
    let w = world_with_secret();
    let file = w.root.path().join("new.toml");
    std::fs::write(
        &file,
        format!("{MODEL}secret = {{ visibility = \"local\" }}\n"),
    )
    .unwrap();
    let err = w.open("hq").apply_docking(&file).unwrap_err().to_string();
    assert!(
        err.contains("table secret would change from replicated by its PRIMARY KEY to local"),
        "{err}"
    );
    // A table that does not exist yet may be declared local ahead of the migration that
    // creates it: it is never captured at central, and the node learns it from the stream.
    std::fs::write(
        &file,
        format!("{MODEL}secret = {{ visibility = \"central\" }}\nscratch = {{ visibility = \"local\" }}\n"),
    )
    .unwrap();
    w.open("hq").apply_docking(&file).unwrap();
    let target = snapshot::from_sql(&format!(
        "{SCHEMA}CREATE TABLE secret(id TEXT PRIMARY KEY);\nCREATE TABLE scratch(line TEXT);"
    ))
    .unwrap();
    migrate_hq(&w, "scratch", &target).unwrap();
    w.settle();
    w.exec("a", "INSERT INTO scratch VALUES ('mine')");
    w.exec("hq", "INSERT INTO scratch VALUES ('ours')");
    w.settle();
    assert_eq!(rows(&w, "a", "SELECT line FROM scratch"), ["mine"]);
    assert_eq!(rows(&w, "hq", "SELECT line FROM scratch"), ["ours"]);
    for site in ["hq", "a"] {
        assert_sound(&w, site);
    }
}

#[test]
fn a_named_key_can_root_a_docking_object_and_route_its_rows() {
    let schema = "CREATE TABLE item(id TEXT NOT NULL, owner TEXT, name TEXT);
                  CREATE UNIQUE INDEX item_id ON item(id);";
    let model = berth_tests::OWNER_MODEL.replace(
        "item = { visibility = \"limited\", node_write = true }",
        "item = { visibility = \"limited\", node_write = true, key = [\"id\"] }",
    );
    let attrs = |o: &str| BTreeMap::from([("owner".to_string(), o.to_string())]);
    let w = World::build(
        schema,
        "INSERT INTO item VALUES ('i1', 'ann', 'one'), ('i2', 'bob', 'two');",
        Some(&model),
        &[("ann", attrs("ann")), ("bob", attrs("bob"))],
    );
    assert_eq!(rows(&w, "ann", "SELECT id FROM item"), ["i1"]);
    assert_eq!(rows(&w, "bob", "SELECT id FROM item"), ["i2"]);
    w.exec("hq", "UPDATE item SET owner = 'bob' WHERE id = 'i1'");
    w.exec("bob", "UPDATE item SET name = 'two!' WHERE id = 'i2'");
    w.settle();
    assert!(rows(&w, "ann", "SELECT id FROM item").is_empty());
    assert_eq!(
        rows(&w, "bob", "SELECT id FROM item ORDER BY id"),
        ["i1", "i2"]
    );
    assert_eq!(
        w.value("hq", "SELECT name FROM item WHERE id = 'i2'"),
        "'two!'"
    );
}

#[test]
fn a_migration_that_creates_a_table_without_a_key_is_refused_naming_both_ways() {
    let w = world();
    let before = migrate::state(&w.open("hq").conn).unwrap();
    let target =
        snapshot::from_sql(&format!("{SCHEMA}CREATE TABLE audit(at TEXT, what TEXT);")).unwrap();
    let err = migrate_hq(&w, "audit", &target).unwrap_err().to_string();
    assert!(
        err.contains("audit") && err.contains("has no PRIMARY KEY"),
        "{err}"
    );
    assert!(
        err.contains("\"local\"") && err.contains("key = ["),
        "{err}"
    );
    let after = migrate::state(&w.open("hq").conn).unwrap();
    assert_eq!(
        (after.version, after.checksum),
        (before.version, before.checksum)
    );
}

#[test]
fn a_local_declaration_withdrawn_before_the_table_exists_is_withdrawn_at_the_nodes_too() {
    let w = world();
    let file = w.root.path().join("new.toml");
    std::fs::write(
        &file,
        format!("{MODEL}later = {{ visibility = \"local\" }}\n"),
    )
    .unwrap();
    w.open("hq").apply_docking(&file).unwrap();
    w.settle();
    // Changed minds: `later` is to be replicated. A replicated table cannot be declared
    // before it exists, so the model goes back to the first one until the migration.
    std::fs::write(&file, MODEL).unwrap();
    w.open("hq").apply_docking(&file).unwrap();
    let target = snapshot::from_sql(&format!(
        "{SCHEMA}CREATE TABLE later(id TEXT PRIMARY KEY, v TEXT);"
    ))
    .unwrap();
    migrate_hq(&w, "later", &target).unwrap();
    std::fs::write(
        &file,
        format!("{MODEL}later = {{ visibility = \"enterprise\", node_write = true }}\n"),
    )
    .unwrap();
    w.open("hq").apply_docking(&file).unwrap();
    w.settle();
    w.exec("a", "INSERT INTO later VALUES ('x', 'from a')");
    w.settle();
    assert_eq!(rows(&w, "hq", "SELECT v FROM later"), ["from a"]);
    for site in ["hq", "a"] {
        assert_sound(&w, site);
    }
}
