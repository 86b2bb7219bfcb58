//! `berth schema` and `berth migration` through the real binary.

use crate::support::{berth, py_query as query};
use predicates::prelude::*;
use std::path::{Path, PathBuf};

const SCHEMA: &str = "CREATE TABLE acct(id TEXT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE opty(id TEXT PRIMARY KEY, acct TEXT REFERENCES acct(id) ON DELETE CASCADE, rep TEXT, amount INTEGER);
CREATE INDEX opty_rep ON opty(rep);
";

/// A central site with two rows, written by a plain SQLite connection (not berth).
fn central(d: &Path) -> PathBuf {
    std::fs::write(d.join("s.sql"), SCHEMA).unwrap();
    let hq = d.join("hq");
    berth()
        .args(["init", "central"])
        .arg(&hq)
        .arg("--schema")
        .arg(d.join("s.sql"))
        .assert()
        .success();
    exec(
        &hq,
        "INSERT INTO acct VALUES ('A', 'Acme'); INSERT INTO opty VALUES ('O1', 'A', 'bob', 5);",
    );
    hq
}

/// Runs SQL through Python's sqlite3: a foreign client, not berth.
fn exec_db(db: &Path, sql: &str) {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"])
        .arg(db)
        .arg(sql)
        .status()
        .unwrap_or_else(|e| panic!("this test needs python3 ({e}); .ci/run installs it"))
        .success();
    assert!(ok, "python3 could not run {sql}");
}

fn exec(site: &Path, sql: &str) {
    exec_db(&site.join("data.db"), sql);
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap()
}

#[test]
fn snapshot_records_once_and_reports_version_and_checksum() {
    let d = tempfile::tempdir().unwrap();
    let hq = central(d.path());
    let first = berth()
        .args(["schema", "snapshot", "--json", "--site"])
        .arg(&hq)
        .assert()
        .success();
    let v = json(&first.get_output().stdout);
    assert_eq!(v["version"], 0);
    // `init central` recorded the baseline (version 0) already.
    assert_eq!(v["new"], false);
    assert_eq!(v["checksum"].as_str().unwrap().len(), 64);
    assert_eq!(v["snapshot"]["tables"].as_array().unwrap().len(), 2);
    berth()
        .args(["schema", "snapshot", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("unchanged")
                .and(predicate::str::contains(v["checksum"].as_str().unwrap())),
        );
    // A change without a migration is not silently taken as the new base.
    exec(&hq, "ALTER TABLE acct ADD COLUMN region TEXT");
    berth()
        .args(["schema", "snapshot", "--site"])
        .arg(&hq)
        .assert()
        .failure()
        .stderr(predicate::str::contains("migration create"));
}

#[test]
fn diff_to_a_sql_file_prints_the_migration_and_honours_renames() {
    let d = tempfile::tempdir().unwrap();
    let hq = central(d.path());
    let to = d.path().join("next.sql");
    std::fs::write(
        &to,
        "CREATE TABLE acct(id TEXT PRIMARY KEY, name TEXT NOT NULL, region TEXT);
         CREATE TABLE opty(id TEXT PRIMARY KEY, acct TEXT REFERENCES acct(id) ON DELETE CASCADE, sales_rep TEXT, amount REAL);
         CREATE INDEX opty_rep ON opty(sales_rep);",
    )
    .unwrap();
    // Without the hint, rep -> sales_rep is a drop and an add: refused, with the hint named.
    berth()
        .args(["schema", "diff", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("drop column opty.rep")
                .and(predicate::str::contains("--rename opty.rep=sales_rep")),
        );
    let out = berth()
        .args(["schema", "diff", "--rename", "opty.rep=sales_rep", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .success();
    let script = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        script.contains("ALTER TABLE \"acct\" ADD COLUMN region TEXT;"),
        "{script}"
    );
    assert!(script.contains("PRAGMA foreign_keys=OFF;"), "{script}");
    assert!(
        script.contains("SELECT rowid, \"id\", \"acct\", \"rep\", \"amount\" FROM \"opty\""),
        "{script}"
    );
    // The printed script runs in a plain SQLite connection and keeps the rows.
    let copy = d.path().join("copy.db");
    std::fs::copy(hq.join("data.db"), &copy).unwrap();
    exec_db(&copy, &script);
    assert_eq!(query(&copy, "SELECT sales_rep FROM opty"), "bob");
    // --json has the steps.
    let out = berth()
        .args([
            "schema",
            "diff",
            "--json",
            "--rename",
            "opty.rep=sales_rep",
            "--site",
        ])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .success();
    let v = json(&out.get_output().stdout);
    assert_eq!(v["foreign_keys_off"], true);
    let kinds: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["add-column", "rebuild", "create-index"]);
}

#[test]
fn a_to_file_that_does_not_parse_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let hq = central(d.path());
    let bad = d.path().join("broken.sql");
    std::fs::write(&bad, "CREATE TABLE opty(id TEXT PRIMARY KEY,, rep TEXT);").unwrap();
    berth()
        .args(["schema", "diff", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&bad)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("broken.sql").and(predicate::str::contains("syntax error")),
        );
    let junk = d.path().join("junk.json");
    std::fs::write(&junk, "{\"not\": \"a snapshot\"}").unwrap();
    berth()
        .args(["schema", "diff", "--site"])
        .arg(&hq)
        .arg("--from")
        .arg(&junk)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("junk.json")
                .and(predicate::str::contains("not a schema snapshot")),
        );
}

#[test]
fn migration_create_freezes_the_change_since_the_last_snapshot() {
    let d = tempfile::tempdir().unwrap();
    let hq = central(d.path());
    let snap = berth()
        .args(["schema", "snapshot", "--json", "--site"])
        .arg(&hq)
        .assert()
        .success();
    let before = json(&snap.get_output().stdout)["checksum"]
        .as_str()
        .unwrap()
        .to_string();
    berth()
        .args(["migration", "create", "--name", "nothing", "--site"])
        .arg(&hq)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not changed"));
    exec(
        &hq,
        "ALTER TABLE acct ADD COLUMN region TEXT DEFAULT 'north';
         CREATE VIEW big AS SELECT id FROM opty WHERE amount > 3;",
    );
    let out = berth()
        .args([
            "migration",
            "create",
            "--name",
            "regions",
            "--requires-software",
            "2",
            "--json",
            "--site",
        ])
        .arg(&hq)
        .assert()
        .success();
    let m = json(&out.get_output().stdout);
    assert_eq!(m["version"], 1);
    assert_eq!(m["checksum_before"], before.as_str());
    assert_eq!(m["software_level"], "2");
    assert_eq!(m["origin"], "hq");
    assert!(
        m["sql"].as_str().unwrap().contains("CREATE VIEW big"),
        "{m}"
    );
    berth()
        .args(["schema", "snapshot", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("schema version 1").and(predicate::str::contains(
                m["checksum_after"].as_str().unwrap(),
            )),
        );
    let list = berth()
        .args(["migration", "list", "--json", "--site"])
        .arg(&hq)
        .assert()
        .success();
    assert_eq!(json(&list.get_output().stdout).as_array().unwrap().len(), 1);
    // A destructive change is refused unless allowed.
    exec(&hq, "DROP VIEW big; DROP TABLE opty;");
    berth()
        .args(["migration", "create", "--name", "drop-opty", "--site"])
        .arg(&hq)
        .assert()
        .failure()
        .stderr(predicate::str::contains("drop table opty"));
    berth()
        .args([
            "migration",
            "create",
            "--name",
            "drop-opty",
            "--allow-destructive",
            "--site",
        ])
        .arg(&hq)
        .assert()
        .success()
        .stdout(predicate::str::contains("migration 2"));
}

fn run_ok(args: &[&str], paths: &[&Path]) -> String {
    let mut c = berth();
    c.args(args);
    for p in paths {
        c.arg(p);
    }
    let out = c.assert().success();
    String::from_utf8_lossy(&out.get_output().stdout).into_owned()
}

#[test]
fn a_developer_migration_travels_to_central_and_a_node_through_the_commands() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let hq = central(root);
    let via = root.join("via");
    std::fs::create_dir_all(&via).unwrap();
    let node = root.join("laptop");
    run_ok(
        &["init", "node", "--name", "laptop", "--via"],
        &[&via, &node],
    );
    run_ok(
        &["node", "add", "laptop", "--via"],
        &[&via, Path::new("--site"), &hq],
    );
    run_ok(&["dock", "--via"], &[&via, Path::new("--site"), &node]);
    // Central with nodes: its schema does not change behind berth's back.
    berth()
        .args(["migration", "create", "--name", "x", "--site"])
        .arg(&hq)
        .assert()
        .failure()
        .stderr(predicate::str::contains("--to FILE"));
    // The developer's copy: a central of its own from the same schema file.
    let dev = root.join("dev");
    run_ok(
        &["init", "central", "--name", "dev", "--schema"],
        &[&root.join("s.sql"), &dev],
    );
    let change = root.join("change.sql");
    std::fs::write(
        &change,
        "ALTER TABLE acct ADD COLUMN region TEXT DEFAULT 'north';",
    )
    .unwrap();
    let out = run_ok(
        &[
            "migration",
            "create",
            "--name",
            "regions",
            "--json",
            "--sql",
        ],
        &[&change, Path::new("--site"), &dev],
    );
    assert_eq!(json(out.as_bytes())["version"], 1);
    // Submitted into the exchange folder: central's dock says it waits, and for what.
    let out = run_ok(
        &["migration", "submit", "--to", "hq", "--out"],
        &[&via, Path::new("--site"), &dev],
    );
    assert!(out.contains("migration accept"), "{out}");
    let file = via.join("dev_to_hq_migration_0001.zip");
    let out = run_ok(&["dock", "--via"], &[&via, Path::new("--site"), &hq]);
    assert!(
        out.contains("migration 1 submitted by dev waits")
            && out.contains("berth migration accept --site")
            && !out.contains("nothing to do"),
        "{out}"
    );
    let out = run_ok(&["migration", "accept", "--json", "--site"], &[&hq, &file]);
    assert_eq!(json(out.as_bytes())["migration"]["version"], 1);
    // Accepting it twice is refused, naming why.
    berth()
        .args(["migration", "accept", "--site"])
        .arg(&hq)
        .arg(&file)
        .assert()
        .failure()
        .stderr(predicate::str::contains("next version is 2"));
    let out = run_ok(&["dock", "--via"], &[&via, Path::new("--site"), &hq]);
    assert!(!out.contains("submitted by dev"), "{out}");
    run_ok(&["dock", "--via"], &[&via, Path::new("--site"), &node]);
    assert_eq!(
        query(
            &node.join("data.db"),
            "SELECT count(*) FROM pragma_table_info('acct') WHERE name = 'region'"
        ),
        "1"
    );
    run_ok(&["dock", "--via"], &[&via, Path::new("--site"), &hq]);
    let st = json(run_ok(&["status", "--json", "--site"], &[&hq]).as_bytes());
    assert_eq!(st["schema_version"], 1);
    assert_eq!(st["peers"][0]["schema_version"], 1, "{st}");
    let text = run_ok(&["status", "--site"], &[&node]);
    assert!(text.contains("version 1"), "{text}");
    // The history as files for version control, and back.
    let repo = root.join("repo");
    run_ok(
        &["migration", "export", "--dir"],
        &[&repo, Path::new("--site"), &hq],
    );
    assert!(repo.join("0001_regions.sql").is_file());
    let out = run_ok(
        &["migration", "import", "--dir"],
        &[&repo, Path::new("--site"), &dev],
    );
    assert!(
        out.contains("1 migrations already here, 0 applied"),
        "{out}"
    );
    std::fs::write(repo.join("0001_regions.sql"), "DROP TABLE acct;").unwrap();
    berth()
        .args(["migration", "import", "--dir"])
        .arg(&repo)
        .arg("--site")
        .arg(&dev)
        .assert()
        .failure()
        .stderr(predicate::str::contains("sha256"));
}

/// A schema as applications write it: comments after columns, between them, inside a CHECK
/// and a type, before the closing paren, inside an index, a view and a trigger, and at the
/// ends of statements; literals whose spaces matter. `{N}` is the type of `n`, `{EXTRA}`
/// more columns.
const COMMENTED: &str = "CREATE TABLE t( -- after the opening paren
  id TEXT PRIMARY KEY, -- the key
  /* before a column */ name TEXT NOT NULL /* between constraints */ DEFAULT 'a  b', -- spaces
  n {N} CHECK (n /* inside a CHECK */ >= 0 -- a line comment inside a CHECK
  ),
  code VARCHAR /* inside a type */ (10),
  note TEXT CHECK (note <> '   '){EXTRA} -- before the closing paren
  -- a line of its own
) /* after the closing paren */; -- at the end of the statement
CREATE INDEX t_n ON t(n -- inside an index
) WHERE n > 0; -- after an index
CREATE VIEW v AS SELECT id, -- inside a view
  name FROM t /* at the end of a view */;
CREATE TABLE log(id TEXT PRIMARY KEY, k TEXT);
CREATE TRIGGER t_log AFTER INSERT ON t BEGIN -- inside a trigger
  INSERT INTO log(id, k) VALUES (NEW.id, 'made'); /* between trigger statements */
  UPDATE t SET note = 'x' WHERE id = NEW.id -- a line comment before END
  ;
END; -- after a trigger
";

fn commented(n: &str, extra: &str) -> String {
    COMMENTED.replace("{N}", n).replace("{EXTRA}", extra)
}

#[test]
fn a_schema_with_comments_inits_diffs_and_migrates_to_exactly_the_target() {
    let d = tempfile::tempdir().unwrap();
    let v1 = d.path().join("v1.sql");
    std::fs::write(&v1, commented("INTEGER", "")).unwrap();
    let hq = d.path().join("hq");
    berth()
        .args(["init", "central"])
        .arg(&hq)
        .arg("--schema")
        .arg(&v1)
        .assert()
        .success();
    exec(
        &hq,
        "INSERT INTO t(id, n, note) VALUES ('a', 1, 'p'), ('b', 2, NULL);",
    );
    let nothing = |to: &Path| {
        berth()
            .args(["schema", "diff", "--site"])
            .arg(&hq)
            .arg("--to")
            .arg(to)
            .assert()
            .success()
            .stdout(predicate::str::contains("nothing to do"));
    };
    nothing(&v1);

    // v2 rebuilds t (n becomes REAL), so the commented trigger and view are created again.
    let v2 = d.path().join("v2.sql");
    std::fs::write(&v2, commented("REAL", "")).unwrap();
    let out = berth()
        .args(["schema", "diff", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&v2)
        .assert()
        .success();
    let script = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(script.contains("CREATE TRIGGER t_log"), "{script}");
    // The printed plan runs in a plain copy of the schema with the rows.
    let copy = d.path().join("copy.db");
    exec_db(&copy, &commented("INTEGER", ""));
    exec_db(&copy, "INSERT INTO t(id, n) VALUES ('a', 1), ('b', 2);");
    exec_db(&copy, &script);
    assert_eq!(
        query(&copy, "SELECT group_concat(n, ',') FROM t"),
        "1.0,2.0"
    );
    berth()
        .args(["migration", "create", "--name", "real-n", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&v2)
        .assert()
        .success();
    nothing(&v2);

    // v3 adds a column (ALTER TABLE .. ADD COLUMN, its text with its comment).
    let v3 = d.path().join("v3.sql");
    std::fs::write(
        &v3,
        commented(
            "REAL",
            ",\n  extra TEXT /* new */ DEFAULT 'q  r' -- a new column\n",
        ),
    )
    .unwrap();
    berth()
        .args(["migration", "create", "--name", "extra", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&v3)
        .assert()
        .success()
        .stdout(predicate::str::contains("ADD COLUMN extra TEXT /* new */"));
    nothing(&v3);

    // The rows survived; the literals kept their spaces; the re-created trigger fires.
    let db = hq.join("data.db");
    assert_eq!(
        query(
            &db,
            "SELECT group_concat(id || ':' || name || ':' || n || ':' || note || ':' || extra, ',') FROM t"
        ),
        "a:a  b:1.0:x:q  r,b:a  b:2.0:x:q  r"
    );
    exec(&hq, "INSERT INTO t(id, n) VALUES ('c', 3);");
    assert_eq!(query(&db, "SELECT note FROM t WHERE id = 'c'"), "x");
    assert_eq!(query(&db, "SELECT count(*) FROM log"), "3");
}

#[test]
fn a_new_unique_not_null_column_is_refused_without_a_fill_and_filled_per_row_with_one() {
    let d = tempfile::tempdir().unwrap();
    let hq = central(d.path());
    exec(&hq, "INSERT INTO acct VALUES ('B', 'Bolt');");
    let to = d.path().join("next.sql");
    std::fs::write(
        &to,
        SCHEMA.replace(
            "name TEXT NOT NULL)",
            "name TEXT NOT NULL, code TEXT NOT NULL UNIQUE CHECK (length(code) >= 3))",
        ),
    )
    .unwrap();
    // The zero ('') would collide in the second row and fails the CHECK: refused even with
    // destructive steps allowed, and the message says how to fill.
    for cmd in [
        &["schema", "diff", "--allow-destructive", "--site"][..],
        &[
            "migration",
            "create",
            "--name",
            "codes",
            "--allow-destructive",
            "--site",
        ][..],
    ] {
        berth()
            .args(cmd)
            .arg(&hq)
            .arg("--to")
            .arg(&to)
            .assert()
            .failure()
            .stderr(
                predicate::str::contains("new column acct.code is in the primary key or a UNIQUE")
                    .and(predicate::str::contains("--fill TABLE.COLUMN=SQL-EXPR")),
            );
    }
    // A constant fill the CHECK refuses is refused before anything runs ...
    berth()
        .args([
            "migration",
            "create",
            "--name",
            "codes",
            "--fill",
            "acct.code='A'",
            "--site",
        ])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("fill \"acct.code='A'\"")
                .and(predicate::str::contains("length(code) >= 3")),
        );
    // ... one that reads the row is checked row by row as the table is copied: the first
    // row it fails rolls everything back.
    berth()
        .args([
            "migration",
            "create",
            "--name",
            "codes",
            "--fill",
            "acct.code=id",
            "--site",
        ])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("CHECK constraint failed")
                .and(predicate::str::contains("nothing was changed")),
        );
    berth()
        .args(["schema", "diff", "--fill", "acct.code='A-' || id", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .success()
        .stdout(predicate::str::contains("('A-' || id)"));
    berth()
        .args([
            "migration",
            "create",
            "--name",
            "codes",
            "--fill",
            "acct.code='A-' || lower(id) || '-' || name",
            "--site",
        ])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .success();
    let db = hq.join("data.db");
    assert_eq!(
        query(
            &db,
            "SELECT group_concat(code, ',') FROM (SELECT code FROM acct ORDER BY id)"
        ),
        "A-a-Acme,A-b-Bolt"
    );
    assert_eq!(query(&db, "SELECT count(*) FROM opty"), "1");
    berth()
        .args(["schema", "diff", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to do"));
}

#[test]
fn the_printed_plan_says_it_is_for_a_plain_copy_and_which_command_applies_it_to_a_site() {
    let d = tempfile::tempdir().unwrap();
    let hq = central(d.path());
    let to = d.path().join("next.sql");
    // Drops a column that the capture triggers name.
    std::fs::write(
        &to,
        SCHEMA
            .replace(", rep TEXT", "")
            .replace("CREATE INDEX opty_rep ON opty(rep);\n", ""),
    )
    .unwrap();
    let out = berth()
        .args(["schema", "diff", "--allow-destructive", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .success();
    let script = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        script.contains("plain copy of the schema")
            && script.contains("berth migration create --site SITE --name NAME --to FILE"),
        "{script}"
    );
    // It runs on a plain copy of the schema (the note is SQL comments) ...
    let copy = d.path().join("copy.db");
    exec_db(&copy, SCHEMA);
    exec_db(&copy, &script);
    // ... and the command it names applies it to the site, capture and all.
    berth()
        .args([
            "migration",
            "create",
            "--name",
            "no-rep",
            "--allow-destructive",
            "--site",
        ])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .success();
    berth()
        .args(["schema", "diff", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("plain copy of the schema").and(
            predicate::str::contains("berth migration create --site SITE"),
        ));
    let json_out = berth()
        .args(["schema", "diff", "--json", "--site"])
        .arg(&hq)
        .arg("--to")
        .arg(&to)
        .assert()
        .success();
    assert!(
        json(&json_out.get_output().stdout)["note"]
            .as_str()
            .unwrap()
            .contains("migration create")
    );
}
