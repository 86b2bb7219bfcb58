//! Schema migrations distributed through bundles (seed 000 claims 48-59, seed 004 "software
//! level"): the seed's full loop from a developer's copy to central to nodes at different
//! versions, pending local changes translated, gating by schema and by software level, and
//! failures that leave everything as it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::Disposition;
use berth_engine::dock::DockOptions;
use berth_engine::evolve::diff::{DiffOptions, Rename};
use berth_engine::evolve::history::{self, NewMigration};
use berth_engine::migrate;
use berth_engine::site::Site;
use berth_engine::status;
use berth_tests::{SCHEMA, World};
use std::path::{Path, PathBuf};

const DATA: &str = "
INSERT INTO account VALUES ('A1', 'Acme', 'north'), ('A2', 'Bolt', 'south');
INSERT INTO opty VALUES ('O1', 'A1', 'Big deal', 'Keith Palmer', 1000, NULL);
";

/// A developer's copy: a central of its own (no nodes) made from the same schema file, so
/// it starts at schema version 0 like the real central.
fn dev_copy(w: &World) -> Site {
    w.schema_copy("dev")
}

/// The developer changes the schema by hand and freezes it as the next migration.
fn develop(dev: &Site, name: &str, sql: &str, renames: Vec<Rename>, level: &str) -> i64 {
    let m = migrate::create_by_sql(
        dev,
        sql,
        &NewMigration {
            name,
            software_level: level,
            origin: "dev",
            diff: DiffOptions {
                allow_destructive: true,
                renames,
                ..DiffOptions::default()
            },
        },
    )
    .unwrap();
    m.version
}

/// Submits the developer's migration `version` and has central accept it.
fn ship(w: &World, dev: &Site, version: i64) -> PathBuf {
    let out = w.root.path().join("outbox");
    let file = migrate::submit(dev, "hq", version, &out, None).unwrap();
    let a = migrate::accept(&mut w.open("hq"), &file).unwrap();
    assert_eq!(a.migration.version, version);
    assert_eq!(a.submitter, "dev");
    file
}

fn schema_version(w: &World, site: &str) -> i64 {
    migrate::state(&w.open(site).conn).unwrap().version
}

fn checksum(w: &World, site: &str) -> String {
    migrate::state(&w.open(site).conn).unwrap().checksum
}

fn versions(w: &World, site: &str) -> Vec<i64> {
    history::migrations(&w.open(site).conn)
        .unwrap()
        .iter()
        .map(|m| m.version)
        .collect()
}

fn dock_via(w: &World, site: &str, via: &Path) -> berth_engine::dock::DockReport {
    w.dock_with(site, via, &DockOptions::default()).unwrap()
}

#[test]
fn seed_loop_developer_copy_to_central_to_three_nodes_at_different_versions() {
    let w = World::new(SCHEMA, DATA, &["a", "b", "c"]);
    let usb = w.root.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let dev = dev_copy(&w);

    // c works offline from the start: an insert captured under schema version 0.
    w.exec(
        "c",
        "INSERT INTO opty(id, account_id, name, sales_rep, amount) VALUES ('O9', 'A2', 'Field deal', 'Carl Lake', 50)",
    );

    // Migration 1: a new column with a default.
    let v1 = develop(
        &dev,
        "opty-stage",
        "ALTER TABLE opty ADD COLUMN stage TEXT DEFAULT 'open'",
        vec![],
        "1",
    );
    assert_eq!(v1, 1);
    ship(&w, &dev, 1);
    assert_eq!(schema_version(&w, "hq"), 1);
    w.exec("hq", "UPDATE opty SET stage = 'won' WHERE id = 'O1'");
    w.dock("hq");
    let r = w.dock("a");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(versions(&w, "a"), vec![1]);
    assert_eq!(
        w.value("a", "SELECT stage FROM opty WHERE id = 'O1'"),
        "'won'"
    );

    // b edits a column that migration 2 renames, before it knows of it.
    w.exec("b", "UPDATE account SET region = 'east' WHERE id = 'A1'");
    let v2 = develop(
        &dev,
        "territory",
        "ALTER TABLE account RENAME COLUMN region TO territory",
        vec!["account.region=territory".parse().unwrap()],
        "1",
    );
    ship(&w, &dev, v2);

    // Migration 3 needs a table rebuild (amount REAL -> TEXT), with a child table (opty_emp)
    // referencing nothing and opty referencing account: foreign keys off, checked after.
    let v3 = develop(
        &dev,
        "amount-text",
        "CREATE TABLE opty_new(id TEXT PRIMARY KEY, account_id TEXT REFERENCES account(id), name TEXT, sales_rep TEXT, amount TEXT, doc BLOB, stage TEXT DEFAULT 'open');
         INSERT INTO opty_new SELECT id, account_id, name, sales_rep, amount, doc, stage FROM opty;
         DROP TABLE opty; ALTER TABLE opty_new RENAME TO opty;",
        vec![],
        "1",
    );
    assert_eq!(v3, 3);

    // b docks now: it gets 1 and 2 (central is at 2), and its pending update follows the
    // rename.
    w.dock("hq");
    let r = w.dock("b");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(versions(&w, "b"), vec![1, 2]);
    assert_eq!(
        w.value("b", "SELECT territory FROM account WHERE id = 'A1'"),
        "'east'"
    );
    let log_old = w.value("b", "SELECT old FROM berth_log WHERE tbl = 'account'");
    assert!(
        log_old.contains("territory") && !log_old.contains("region"),
        "{log_old}"
    );
    ship(&w, &dev, v3);
    w.dock("hq");
    w.dock("b");
    w.dock("hq");
    assert_eq!(
        w.value("hq", "SELECT territory FROM account WHERE id = 'A1'"),
        "'east'",
        "b's change, captured under version 0, merged under its new name"
    );

    // c docks by USB only now: it lacks all three, gets exactly them in order, and its
    // insert captured under version 0 reaches central translated.
    dock_via(&w, "hq", &usb);
    let r = dock_via(&w, "c", &usb);
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(versions(&w, "c"), vec![1, 2, 3]);
    dock_via(&w, "hq", &usb);
    assert_eq!(
        w.value(
            "hq",
            "SELECT stage || ' ' || amount FROM opty WHERE id = 'O9'"
        ),
        "'open 50.0'"
    );

    // Everyone converges on the same schema and rows; central knows each node's version.
    w.settle();
    dock_via(&w, "hq", &usb);
    dock_via(&w, "c", &usb);
    w.settle();
    for n in ["a", "b", "c"] {
        assert_eq!(checksum(&w, n), checksum(&w, "hq"), "{n}'s schema");
        assert_eq!(versions(&w, n), vec![1, 2, 3], "{n}'s history");
    }
    w.assert_converged();
    let st = status::status(&w.open("hq")).unwrap();
    for p in &st.peers {
        assert_eq!(p.schema_version, Some(3), "{}: {p:?}", p.name);
    }
    assert_eq!(st.schema_version, 3);
    assert_eq!(w.conflicts(), 0);
}

#[test]
fn a_node_bundle_in_transit_across_a_migration_is_translated_at_central() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let dev = dev_copy(&w);
    // a's bundle is written under version 0 ...
    w.exec("a", "UPDATE account SET region = 'west' WHERE id = 'A2'");
    w.exec("a", "INSERT INTO account VALUES ('A7', 'Crane', 'west')");
    w.dock("a");
    // ... and central migrates before it arrives: a rename and a dropped column.
    develop(
        &dev,
        "territory",
        "ALTER TABLE account RENAME COLUMN region TO territory; ALTER TABLE opty DROP COLUMN doc",
        vec!["account.region=territory".parse().unwrap()],
        "1",
    );
    ship(&w, &dev, 1);
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(
        w.value(
            "hq",
            "SELECT group_concat(id || '=' || territory) FROM account WHERE territory = 'west'"
        ),
        "'A2=west,A7=west'"
    );
    w.settle();
    w.assert_converged();
    assert_eq!(w.conflicts(), 0);
}

#[test]
fn a_migration_needing_newer_software_waits_and_the_node_does_not_upload_until_migrated() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let dev = dev_copy(&w);
    // a's pending change, to a column the migration renames.
    w.exec(
        "a",
        "UPDATE opty SET sales_rep = 'Carl Lake' WHERE id = 'O1'",
    );
    develop(
        &dev,
        "rep",
        "ALTER TABLE opty RENAME COLUMN sales_rep TO owner",
        vec!["opty.sales_rep=owner".parse().unwrap()],
        "2",
    );
    ship(&w, &dev, 1);
    w.dock("hq");
    let r = w.dock("a");
    assert_eq!(r.count(Disposition::Held), 1, "{r:?}");
    let st = status::status(&w.open("a")).unwrap();
    assert!(
        st.held[0].reason.contains("software level 2"),
        "{:?}",
        st.held
    );
    assert_eq!(st.upload_waits, Some((0, 1)), "{st:?}");
    // What a wrote while behind stays at a: central still has the old value.
    w.dock("hq");
    assert_eq!(
        w.value("hq", "SELECT owner FROM opty WHERE id = 'O1'"),
        "'Keith Palmer'"
    );
    // The software arrives (here: the level is installed by hand, as an install would).
    w.exec(
        "a",
        "INSERT OR REPLACE INTO berth_meta(key, value) VALUES ('software_level', '2')",
    );
    let r = w.dock("a");
    // The held migration applies (a later bundle that only brings central's digests, SPEC
    // 2.15, may apply with it).
    assert!(
        r.incoming
            .iter()
            .any(|i| i.file.ends_with("_0000000002.berth.zip") && i.outcome == Disposition::Applied),
        "{r:?}"
    );
    assert_eq!(schema_version(&w, "a"), 1);
    assert_eq!(status::status(&w.open("a")).unwrap().upload_waits, None);
    w.dock("hq");
    assert_eq!(
        w.value("hq", "SELECT owner FROM opty WHERE id = 'O1'"),
        "'Carl Lake'",
        "the pending change merged under the column's new name"
    );
    w.settle();
    w.assert_converged();
}

#[test]
fn changes_captured_under_a_schema_the_receiver_lacks_wait_until_it_has_it() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let dev = dev_copy(&w);
    develop(
        &dev,
        "phone",
        "ALTER TABLE account ADD COLUMN phone TEXT",
        vec![],
        "1",
    );
    // The team's repository carries the migration; node a takes it from a checkout before
    // central does, and writes under the new schema.
    let repo = w.root.path().join("repo");
    migrate::export_dir(&dev.conn, &repo).unwrap();
    let done = migrate::import_dir(&mut w.open("a"), &repo).unwrap();
    assert_eq!(done.applied, vec![1]);
    w.exec("a", "UPDATE account SET phone = '555-0100' WHERE id = 'A1'");
    w.dock("a");
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Held), 1, "{r:?}");
    let st = status::status(&w.open("hq")).unwrap();
    assert!(
        st.held[0].reason.contains("does not have yet"),
        "{:?}",
        st.held
    );
    // Central takes the same history; the held bundle applies by itself.
    let done = migrate::import_dir(&mut w.open("hq"), &repo).unwrap();
    assert_eq!(done.applied, vec![1]);
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(
        w.value("hq", "SELECT phone FROM account WHERE id = 'A1'"),
        "'555-0100'"
    );
    // a already has migration 1: central's copy of it in the stream is recognised.
    w.settle();
    assert_eq!(versions(&w, "a"), vec![1]);
    w.assert_converged();
}

#[test]
fn a_migration_that_fails_at_a_node_leaves_its_schema_and_data_and_is_reported() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let dev = dev_copy(&w);
    // a's local insert duplicates a name: the unique index the migration adds cannot build.
    w.exec("a", "INSERT INTO account VALUES ('A8', 'Acme', 'north')");
    develop(
        &dev,
        "unique-names",
        "CREATE UNIQUE INDEX account_name ON account(name)",
        vec![],
        "1",
    );
    ship(&w, &dev, 1);
    w.dock("hq");
    let before = w.dump("a");
    let checksum_before = checksum(&w, "a");
    let r = w.dock("a");
    assert_eq!(r.count(Disposition::Retry), 1, "{r:?}");
    let why = format!("{r:?}");
    assert!(why.contains("UNIQUE") || why.contains("unique"), "{why}");
    assert_eq!(w.dump("a"), before, "data intact");
    assert_eq!(checksum(&w, "a"), checksum_before, "schema intact");
    assert_eq!(schema_version(&w, "a"), 0);
    // The user fixes the data; the next dock applies the migration.
    w.exec("a", "UPDATE account SET name = 'Acme East' WHERE id = 'A8'");
    let r = w.dock("a");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(schema_version(&w, "a"), 1);
    w.settle();
    w.assert_converged();
}

#[test]
fn central_refuses_a_migration_that_does_not_fit_and_changes_nothing() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let dev = dev_copy(&w);
    develop(
        &dev,
        "one",
        "ALTER TABLE account ADD COLUMN x TEXT",
        vec![],
        "1",
    );
    develop(
        &dev,
        "two",
        "ALTER TABLE account ADD COLUMN y TEXT",
        vec![],
        "1",
    );
    let out = w.root.path().join("outbox");
    // Version 2 before 1: out of order.
    let file = migrate::submit(&dev, "hq", 2, &out, None).unwrap();
    let err = migrate::accept(&mut w.open("hq"), &file).unwrap_err();
    assert!(err.to_string().contains("next version is 1"), "{err}");
    // A tampered bundle: one byte of the payload changed.
    let file = migrate::submit(&dev, "hq", 1, &out, None).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"ALTER ")
        .unwrap_or(bytes.len() / 2);
    bytes[at] ^= 0x20;
    let tampered = out.join("tampered.zip");
    std::fs::write(&tampered, &bytes).unwrap();
    assert!(migrate::accept(&mut w.open("hq"), &tampered).is_err());
    // Signed with another key than the one registered under the submitter's name: a node
    // named "dev" is not who signed it.
    let addressed_elsewhere = migrate::submit(&dev, "elsewhere", 1, &out, None).unwrap();
    let err = migrate::accept(&mut w.open("hq"), &addressed_elsewhere).unwrap_err();
    assert!(err.to_string().contains("not to hq"), "{err}");
    // A migration whose SQL fails on central's data changes nothing there.
    w.exec("hq", "INSERT INTO account VALUES ('A3', 'Acme', 'west')");
    drop(dev);
    let dev2 = Site::open(&w.root.path().join("dev")).unwrap();
    develop(
        &dev2,
        "unique",
        "CREATE UNIQUE INDEX account_name ON account(name)",
        vec![],
        "1",
    );
    assert_eq!(schema_version(&w, "hq"), 0);
    migrate::accept(
        &mut w.open("hq"),
        &migrate::submit(&dev2, "hq", 1, &out, None).unwrap(),
    )
    .unwrap();
    assert_eq!(schema_version(&w, "hq"), 1);
    let file = migrate::submit(&dev2, "hq", 2, &out, None).unwrap();
    migrate::accept(&mut w.open("hq"), &file).unwrap();
    let before = w.dump("hq");
    let log_before = w.value("hq", "SELECT count(*) FROM berth_log");
    let file = migrate::submit(&dev2, "hq", 3, &out, None).unwrap();
    let err = migrate::accept(&mut w.open("hq"), &file).unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    assert_eq!(schema_version(&w, "hq"), 2);
    assert_eq!(w.dump("hq"), before, "data intact");
    assert_eq!(
        w.value("hq", "SELECT count(*) FROM berth_log"),
        log_before,
        "nothing journaled"
    );
    assert_eq!(
        w.value(
            "hq",
            "SELECT count(*) FROM sqlite_master WHERE name = 'account_name'"
        ),
        "0"
    );
}

#[test]
fn an_exported_history_is_checked_before_anything_is_imported() {
    let w = World::new(SCHEMA, DATA, &[]);
    let dev = dev_copy(&w);
    develop(
        &dev,
        "one",
        "ALTER TABLE account ADD COLUMN x TEXT",
        vec![],
        "1",
    );
    develop(
        &dev,
        "two",
        "CREATE INDEX account_x ON account(x)",
        vec![],
        "1",
    );
    let repo = w.root.path().join("repo");
    let written = migrate::export_dir(&dev.conn, &repo).unwrap();
    assert_eq!(written.len(), 3, "{written:?}");
    // Exporting again rewrites only the index.
    assert_eq!(migrate::export_dir(&dev.conn, &repo).unwrap().len(), 1);
    let index = std::fs::read_to_string(repo.join(migrate::INDEX_FILE)).unwrap();
    // An SQL file edited after export.
    let sql = repo.join("0002_two.sql");
    let good = std::fs::read_to_string(&sql).unwrap();
    std::fs::write(&sql, good.replace("account_x", "account_y")).unwrap();
    let err = migrate::import_dir(&mut w.open("hq"), &repo).unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    std::fs::write(&sql, &good).unwrap();
    // Versions out of order in the index.
    std::fs::write(
        repo.join(migrate::INDEX_FILE),
        index.replacen("version = 1", "version = 9", 1),
    )
    .unwrap();
    let err = migrate::import_dir(&mut w.open("hq"), &repo).unwrap_err();
    assert!(err.to_string().contains("in order"), "{err}");
    // A file name that leaves the folder.
    std::fs::write(
        repo.join(migrate::INDEX_FILE),
        index.replace("0001_one.sql", "../0001_one.sql"),
    )
    .unwrap();
    let err = migrate::import_dir(&mut w.open("hq"), &repo).unwrap_err();
    assert!(err.to_string().contains("plain .sql"), "{err}");
    assert_eq!(schema_version(&w, "hq"), 0, "nothing imported");
    // Intact, it imports; a second import finds nothing new.
    std::fs::write(repo.join(migrate::INDEX_FILE), &index).unwrap();
    let done = migrate::import_dir(&mut w.open("hq"), &repo).unwrap();
    assert_eq!(done.applied, vec![1, 2]);
    let done = migrate::import_dir(&mut w.open("hq"), &repo).unwrap();
    assert_eq!((done.known, done.applied), (vec![1, 2], vec![]));
    // A history that disagrees with the site's is refused.
    let other = w.root.path().join("other");
    let alt = w.schema_copy("alt");
    develop(
        &alt,
        "one",
        "ALTER TABLE account ADD COLUMN z TEXT",
        vec![],
        "1",
    );
    migrate::export_dir(&alt.conn, &other).unwrap();
    let err = migrate::import_dir(&mut w.open("hq"), &other).unwrap_err();
    assert!(err.to_string().contains("disagree"), "{err}");
}

/// Writes a bundle from node `a` to `hq`, signed with a's real key, carrying `line`.
fn node_bundle(w: &World, seq: u64, schema: Option<i64>, line: &str) {
    use berth_bundle::{BundleHeader, BundleWriter, Compression, Party, SecretKey, StreamPosition};
    let key =
        SecretKey::from_text(&std::fs::read_to_string(w.dir("a").join("keys/site.key")).unwrap())
            .unwrap();
    let path = w
        .via
        .join(berth_bundle::naming::bundle_file_name("a", "hq", seq));
    let mut extensions = std::collections::BTreeMap::new();
    if let Some(v) = schema {
        extensions.insert(migrate::EXTENSION.to_string(), migrate::extension(v, None));
    }
    let mut bw = BundleWriter::new(
        std::fs::File::create(&path).unwrap(),
        BundleHeader {
            sender: Party {
                site: "a".into(),
                key_id: key.public().key_id(),
            },
            recipients: vec!["hq".into()],
            created: 0,
            bundle_id: None,
            stream: Some(StreamPosition {
                seq,
                log_from: 1,
                log_to: 1,
                requires: 0,
                acks: 0,
            }),
            schema_checksum: None,
            software_level: None,
            critical: vec![],
            extensions,
        },
    )
    .unwrap();
    bw.add_bytes(
        "payload/changes.jsonl",
        "changes",
        Compression::Deflate,
        format!("{line}\n").as_bytes(),
    )
    .unwrap();
    bw.finish(&key).unwrap();
}

#[test]
fn a_node_cannot_send_a_migration_and_a_schema_from_the_future_waits() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    // A migration from a node: only central sends them.
    let m = r#"{"pos":1,"t":"","k":[],"op":"M","new":{"version":1,"name":"evil","sql":"DROP TABLE account","checksum_before":"x","checksum_after":"y","software_level":"1","foreign_keys_off":0,"origin":"a","created":0,"renames":"[]"}}"#;
    node_bundle(&w, 1, Some(0), m);
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Quarantined), 1, "{r:?}");
    assert_eq!(w.value("hq", "SELECT count(*) FROM account"), "2");
    // Changes claiming a schema version central does not have wait, named.
    let u = r#"{"pos":1,"t":"account","k":["A1"],"op":"U","old":{"name":"Acme"},"new":{"id":"A1","name":"Acme Corp","region":"north"}}"#;
    node_bundle(&w, 2, Some(7), u);
    let r = w.dock("hq");
    assert_eq!(r.count(Disposition::Held), 1, "{r:?}");
    assert!(format!("{r:?}").contains("version 7"), "{r:?}");
    assert_eq!(
        w.value("hq", "SELECT name FROM account WHERE id = 'A1'"),
        "'Acme'"
    );
}

fn allow_executables(w: &World, site: &str) {
    let cfg = w.dir(site).join("berth.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace("allow_executables = false", "allow_executables = true");
    assert!(text.contains("allow_executables = true"), "{text}");
    std::fs::write(&cfg, text).unwrap();
}

/// Fills `account.code` from the name; fails at a site whose folder has no file `ok` when
/// the site's name is in FAIL_AT.
const FILL_CODES: &str = r#"#!/bin/sh
for s in $FAIL_AT; do
  if [ "$s" = "$BERTH_SITE_NAME" ] && [ ! -f "$BERTH_SITE_DIR/ok" ]; then echo "conversion failed at $s" >&2; exit 4; fi
done
sqlite3 "$BERTH_DATABASE" "UPDATE account SET code = upper(substr(name, 1, 3)) WHERE code IS NULL"
"#;

#[cfg(unix)]
#[test]
fn an_executable_step_runs_only_admin_signed_where_allowed_and_a_failure_restores_the_backup() {
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    allow_executables(&w, "hq");
    allow_executables(&w, "a");
    let admin = berth_bundle::SecretKey::generate();
    berth_engine::keychain::add_admin(&w.open("hq"), "dana", &admin.public()).unwrap();
    let dev = dev_copy(&w);
    let script = FILL_CODES.replace("$FAIL_AT", "a");
    let v = develop(
        &dev,
        "codes",
        "ALTER TABLE account ADD COLUMN code TEXT",
        vec![],
        "1",
    );
    let step = history::ExecStep::new(
        vec!["sh".into(), "fill.sh".into()],
        "fill.sh",
        script.as_bytes(),
    )
    .unwrap();
    history::attach_exec(&dev.conn, v, &step).unwrap();
    let out = w.root.path().join("outbox");
    // Not signed by an admin: refused at submit; signed by a key central does not know as
    // an admin: refused at accept.
    let err = migrate::submit(&dev, "hq", v, &out, None).unwrap_err();
    assert!(err.to_string().contains("admin key"), "{err}");
    let stranger = berth_bundle::SecretKey::generate();
    let file = migrate::submit(&dev, "hq", v, &out, Some(&stranger)).unwrap();
    let err = migrate::accept(&mut w.open("hq"), &file).unwrap_err();
    assert!(err.to_string().contains("not a registered admin"), "{err}");
    assert_eq!(schema_version(&w, "hq"), 0);
    // Signed by the admin: central runs it.
    let file = migrate::submit(&dev, "hq", v, &out, Some(&admin)).unwrap();
    migrate::accept(&mut w.open("hq"), &file).unwrap();
    assert_eq!(
        w.value("hq", "SELECT group_concat(code) FROM account"),
        "'ACM,BOL'"
    );
    // a: a later change of central's travels in the same bundle as the migration; the step
    // fails at a, so the backup taken before the bundle is put back: nothing of it stays.
    w.exec("hq", "UPDATE account SET region = 'east' WHERE id = 'A2'");
    w.dock("hq");
    let before = w.dump("a");
    let r = w.dock("a");
    assert_eq!(r.count(Disposition::Held), 1, "{r:?}");
    assert!(format!("{r:?}").contains("conversion failed at a"), "{r:?}");
    assert_eq!(w.dump("a"), before, "restored");
    assert_eq!(schema_version(&w, "a"), 0);
    // b does not allow executables: it waits, saying so.
    let r = w.dock("b");
    assert_eq!(r.count(Disposition::Held), 1, "{r:?}");
    assert!(format!("{r:?}").contains("allow_executables"), "{r:?}");
    assert_eq!(
        status::status(&w.open("b")).unwrap().upload_waits,
        Some((0, 1))
    );
    // a is fixed: the next dock applies the migration and runs the step.
    std::fs::write(w.dir("a").join("ok"), "").unwrap();
    let r = w.dock("a");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(schema_version(&w, "a"), 1);
    assert_eq!(
        w.value("a", "SELECT group_concat(code || region) FROM account"),
        "'ACMnorth,BOLeast'"
    );
    // b allows them now too.
    allow_executables(&w, "b");
    let r = w.dock("b");
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    w.settle();
    w.assert_converged();
    assert_eq!(w.conflicts(), 0);
    // A step that fails at central: the master database is restored, nothing is journaled.
    let v2 = develop(
        &dev,
        "more",
        "ALTER TABLE account ADD COLUMN code2 TEXT",
        vec![],
        "1",
    );
    let step = history::ExecStep::new(
        vec!["sh".into(), "fill.sh".into()],
        "fill.sh",
        FILL_CODES.replace("$FAIL_AT", "hq").as_bytes(),
    )
    .unwrap();
    history::attach_exec(&dev.conn, v2, &step).unwrap();
    let file = migrate::submit(&dev, "hq", v2, &out, Some(&admin)).unwrap();
    let log = w.value("hq", "SELECT count(*) FROM berth_log");
    let err = migrate::accept(&mut w.open("hq"), &file).unwrap_err();
    assert!(err.to_string().contains("restored"), "{err}");
    assert_eq!(schema_version(&w, "hq"), 1);
    assert_eq!(w.value("hq", "SELECT count(*) FROM berth_log"), log);
    assert_eq!(
        w.value(
            "hq",
            "SELECT count(*) FROM pragma_table_info('account') WHERE name = 'code2'"
        ),
        "0"
    );
}

#[test]
fn a_node_enrolled_after_migrations_starts_at_centrals_version_and_takes_the_next() {
    let w = World::new(SCHEMA, DATA, &[]);
    let dev = dev_copy(&w);
    develop(
        &dev,
        "territory",
        "ALTER TABLE account RENAME COLUMN region TO territory",
        vec!["account.region=territory".parse().unwrap()],
        "1",
    );
    develop(
        &dev,
        "phone",
        "ALTER TABLE account ADD COLUMN phone TEXT",
        vec![],
        "1",
    );
    ship(&w, &dev, 1);
    ship(&w, &dev, 2);
    // A new node: its extract is taken at version 2.
    let dir = w.root.path().join("late");
    let node = Site::init_node(&dir, "late").unwrap();
    let req = berth_engine::enroll::write_request(&node, &w.via).unwrap();
    drop(node);
    berth_engine::enroll::add_node(&mut w.open("hq"), "late", &req, &Default::default(), &w.via)
        .unwrap();
    std::fs::remove_file(&req).unwrap();
    let mut late = Site::open(&dir).unwrap();
    let r = berth_engine::dock::dock(&mut late, &w.via, &DockOptions::default()).unwrap();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    let st = migrate::state(&late.conn).unwrap();
    assert_eq!(st.version, 2);
    assert_eq!(st.checksum, checksum(&w, "hq"));
    drop(late);
    // The next migration reaches it as the only one it lacks.
    develop(
        &dev,
        "idx",
        "CREATE INDEX account_phone ON account(phone)",
        vec![],
        "1",
    );
    ship(&w, &dev, 3);
    w.dock("hq");
    let mut late = Site::open(&dir).unwrap();
    let r = berth_engine::dock::dock(&mut late, &w.via, &DockOptions::default()).unwrap();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    assert_eq!(
        history::migrations(&late.conn)
            .unwrap()
            .iter()
            .map(|m| m.version)
            .collect::<Vec<_>>(),
        vec![3]
    );
    assert_eq!(
        migrate::state(&late.conn).unwrap().checksum,
        checksum(&w, "hq")
    );
}

fn sales_sample(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../samples/sales")
            .join(name),
    )
    .unwrap()
}

#[test]
fn with_a_docking_model_a_migration_reaches_every_partial_replica_and_routing_goes_on() {
    use berth_engine::route::model::DockingModel;
    use std::collections::BTreeMap;
    let docking = sales_sample("docking.toml");
    let nodes: Vec<(&str, BTreeMap<String, String>)> = [("keith", "E1"), ("carl", "E2")]
        .iter()
        .map(|(n, e)| {
            (
                *n,
                BTreeMap::from([("employee".to_string(), e.to_string())]),
            )
        })
        .collect();
    let w = World::build(
        &sales_sample("schema.sql"),
        &sales_sample("data.sql"),
        Some(&docking),
        &nodes,
    );
    let model = DockingModel::from_toml(&docking).unwrap();
    let dev = dev_copy(&w);
    // keith edits his opportunity while central migrates.
    w.exec("keith", "UPDATE opty SET amount = 777 WHERE id = 'O1'");
    develop(
        &dev,
        "close-date",
        "ALTER TABLE opty ADD COLUMN close_date TEXT; CREATE INDEX opty_close ON opty(close_date)",
        vec![],
        "1",
    );
    ship(&w, &dev, 1);
    w.exec(
        "hq",
        "UPDATE opty SET close_date = '2026-12-01' WHERE id = 'O1'",
    );
    // A reassignment after the migration: O2 moves from carl to keith.
    w.exec(
        "hq",
        "UPDATE opty_emp SET emp_id = 'E1' WHERE opty_id = 'O2' AND emp_id = 'E2'",
    );
    w.settle();
    for n in ["keith", "carl"] {
        assert_eq!(schema_version(&w, n), 1, "{n}");
        assert_eq!(checksum(&w, n), checksum(&w, "hq"), "{n}");
        w.assert_matches_oracle(&model, n);
    }
    assert_eq!(
        w.value(
            "keith",
            "SELECT close_date || ' ' || amount FROM opty WHERE id = 'O1'"
        ),
        "'2026-12-01 777.0'"
    );
    // keith now holds O2 (carl keeps it through his quote Q2, the quote object rule).
    assert_eq!(
        w.value("keith", "SELECT count(*) FROM opty WHERE id = 'O2'"),
        "1"
    );
}

/// Regression (seeds 217 and 319 of an earlier simulation): a node bundle from before the
/// node migrated, delivered late, is still opened for the upgrade report it carries, and
/// recorded the node's old schema version at central over the newer one.
#[test]
#[cfg(unix)]
fn a_stale_node_bundle_does_not_lower_the_schema_version_central_records() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    let pkg = w.root.path().join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("install.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::write(
        pkg.join("package.toml"),
        "name = \"app-2\"\nlevel = \"2\"\ndescription = \"App 2\"\ndownload = \"forced\"\n\
         apply = \"immediate\"\ninstall = [\"sh\", \"install.sh\"]\n\n[[files]]\nname = \"install.sh\"\n",
    )
    .unwrap();
    let mut hq = w.open("hq");
    berth_engine::upgrade::central::publish(&mut hq, &pkg.join("package.toml")).unwrap();
    berth_engine::upgrade::central::activate(&mut hq, "app-2").unwrap();
    drop(hq);
    w.dock("hq");
    // a installs the package and reports it under schema version 0; that bundle is delayed.
    let stale = w.dock("a").written[0].clone();
    let stash = w.root.path().join("stale.berth.zip");
    std::fs::rename(&stale, &stash).unwrap();
    let dev = dev_copy(&w);
    develop(
        &dev,
        "note",
        "ALTER TABLE account ADD COLUMN note TEXT",
        vec![],
        "1",
    );
    ship(&w, &dev, 1);
    w.dock("hq");
    // a migrates and reports again from version 1.
    w.dock("a");
    w.dock("hq");
    let recorded = |w: &World| {
        w.value(
            "hq",
            "SELECT version FROM berth_peer_schema WHERE peer = 'a'",
        )
    };
    assert_eq!(recorded(&w), "1");
    // The stale bundle turns up: opened for its report, it must not take a back to 0.
    std::fs::rename(&stash, &stale).unwrap();
    let r = w.dock("hq");
    assert_eq!(r.incoming.len(), 1, "{r:?}");
    assert_eq!(recorded(&w), "1");
    let st = status::status(&w.open("hq")).unwrap();
    assert_eq!(st.peers[0].schema_version, Some(1), "{st:?}");
    w.settle();
    assert_eq!(recorded(&w), "1");
}
