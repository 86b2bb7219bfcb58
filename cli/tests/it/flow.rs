//! The user's commands from DESIGN.md, run through the real `berth` binary.

use crate::support::{berth, enroll, py_query as query, samples, shell_exec};
use predicates::prelude::*;
use std::path::Path;

fn sql(db: &Path, stmt: &str) {
    shell_exec(db, stmt);
}

#[test]
fn a_schema_without_a_primary_key_is_refused_by_name() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("s.sql"),
        "CREATE TABLE ok(id TEXT PRIMARY KEY); CREATE TABLE loose(a, b);",
    )
    .unwrap();
    berth()
        .args(["init", "central"])
        .arg(d.path().join("hq"))
        .arg("--schema")
        .arg(d.path().join("s.sql"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("loose").and(predicate::str::contains("PRIMARY KEY")));
    assert!(
        !d.path().join("hq").join("data.db").exists(),
        "nothing half-created"
    );
}

#[test]
fn integer_keys_get_a_warning() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("s.sql"),
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v);",
    )
    .unwrap();
    berth()
        .args(["init", "central"])
        .arg(d.path().join("hq"))
        .arg("--schema")
        .arg(d.path().join("s.sql"))
        .assert()
        .success()
        .stderr(
            predicate::str::contains("warning")
                .and(predicate::str::contains("INTEGER PRIMARY KEY")),
        );
}

/// `rounds` rounds of docks of `sites`, in order, through `via`.
fn dock_rounds(rounds: usize, sites: &[&Path], via: &Path) {
    for _ in 0..rounds {
        for site in sites {
            berth()
                .arg("dock")
                .arg("--site")
                .arg(site)
                .arg("--via")
                .arg(via)
                .assert()
                .success();
        }
    }
}

/// Every site holds opportunity o1 with this sales rep.
fn assert_rep(sites: &[&Path], rep: &str) {
    for site in sites {
        assert_eq!(
            query(
                &site.join("data.db"),
                "SELECT sales_rep FROM opty WHERE id = 'o1'"
            ),
            rep,
            "{}",
            site.display()
        );
    }
}

/// `berth conflicts --json --site SITE`, which must succeed.
fn conflicts_json(site: &Path) -> serde_json::Value {
    let out = berth()
        .args(["conflicts", "--json", "--site"])
        .arg(site)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_documented_user_flow_works_end_to_end() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let usb = root.join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    std::fs::write(
        root.join("schema.sql"),
        "CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT, sales_rep TEXT);",
    )
    .unwrap();
    std::fs::write(
        root.join("data.sql"),
        "INSERT INTO opty VALUES ('o1', 'Deal', 'Keith Palmer');",
    )
    .unwrap();
    let (hq, laptop, tablet) = (root.join("hq"), root.join("laptop"), root.join("tablet"));
    berth()
        .args(["init", "central"])
        .arg(&hq)
        .arg("--schema")
        .arg(root.join("schema.sql"))
        .arg("--data")
        .arg(root.join("data.sql"))
        .assert()
        .success();
    for (dir, name) in [(&laptop, "alice"), (&tablet, "bob")] {
        berth()
            .args(["init", "node"])
            .arg(dir)
            .args(["--name", name, "--via"])
            .arg(&usb)
            .assert()
            .success()
            .stdout(predicate::str::contains("enrollment request"));
        berth()
            .args(["node", "add", name, "--site"])
            .arg(&hq)
            .arg("--via")
            .arg(&usb)
            .args(["--attr", "employee=E1"])
            .assert()
            .success()
            .stdout(predicate::str::contains("registered node"));
        berth()
            .args(["dock", "--site"])
            .arg(dir)
            .arg("--via")
            .arg(&usb)
            .assert()
            .success();
    }
    // Approving the same node twice is refused.
    berth()
        .args(["node", "add", "alice", "--site"])
        .arg(&hq)
        .arg("--via")
        .arg(&usb)
        .assert()
        .failure();
    sql(
        &laptop.join("data.db"),
        "UPDATE opty SET sales_rep = 'Carl Lake' WHERE id = 'o1';",
    );
    sql(
        &tablet.join("data.db"),
        "UPDATE opty SET sales_rep = 'Greg Emerson' WHERE id = 'o1';",
    );
    dock_rounds(3, &[&laptop, &tablet, &hq], &usb);
    assert_rep(&[&hq, &laptop, &tablet], "Carl Lake");
    let out = berth()
        .args(["status", "--json", "--site"])
        .arg(&hq)
        .output()
        .unwrap();
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["role"], "central");
    assert_eq!(st["conflicts"], 1);
    assert_eq!(st["peers"].as_array().unwrap().len(), 2);
    let c = conflicts_json(&hq);
    let c = &c["conflicts"][0];
    assert_eq!(c["node"], "bob");
    assert_eq!(c["kind"], "update-update");
    // Values, not JSON text inside JSON; the losing side is named with its value.
    assert_eq!(c["key"], serde_json::json!(["o1"]));
    assert_eq!(c["columns"], serde_json::json!(["sales_rep"]));
    assert_eq!(c["node_new"]["sales_rep"], "Greg Emerson");
    assert_eq!(c["central"]["sales_rep"], "Carl Lake");
    assert_eq!(c["lost"]["side"], "node");
    assert_eq!(c["lost"]["values"]["sales_rep"], "Greg Emerson");
    assert!(c["resolved"].is_null());
    let id = c["id"].as_i64().unwrap().to_string();
    berth()
        .args(["conflicts", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("lost     node's sales_rep='Greg Emerson'").and(
                predicate::str::contains(format!("berth conflicts resolve {id} --take node")),
            ),
        );
    // The admin takes bob's side: written at central as a new change, it reaches every node.
    berth()
        .args(["conflicts", "resolve", &id, "--take", "node", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(predicate::str::contains("sales_rep='Greg Emerson'"));
    dock_rounds(2, &[&hq, &laptop, &tablet], &usb);
    assert_rep(&[&hq, &laptop, &tablet], "Greg Emerson");
    assert_eq!(
        conflicts_json(&hq)["conflicts"][0]["resolved"]["took"],
        "node"
    );
    // At a node, the overrides: central's change met alice's write central had not merged.
    for (site, set) in [
        (&laptop, "sales_rep = 'Alice'"),
        (&hq, "sales_rep = 'Dana', name = 'Big deal'"),
    ] {
        sql(
            &site.join("data.db"),
            &format!("UPDATE opty SET {set} WHERE id = 'o1';"),
        );
    }
    dock_rounds(1, &[&hq], &usb);
    berth()
        .args(["dock", "--download-only", "--site"])
        .arg(&laptop)
        .arg("--via")
        .arg(&usb)
        .assert()
        .success();
    let o = conflicts_json(&laptop);
    let o = &o["overrides"][0];
    assert_eq!(o["table"], "opty");
    assert_eq!(o["key"], serde_json::json!(["o1"]));
    assert_eq!(o["row"]["sales_rep"], "Alice", "{o}");
    assert_eq!(o["row"]["name"], "Big deal", "{o}");
    berth()
        .args(["conflicts", "--site"])
        .arg(&laptop)
        .assert()
        .success()
        .stdout(predicate::str::contains("override #1 opty [\"o1\"]"));
    // The node shows central's key id, to compare with what the admin sees at central.
    let hq_key = berth()
        .args(["keys", "show", "--json"])
        .arg(&hq)
        .output()
        .unwrap();
    let hq_key: serde_json::Value = serde_json::from_slice(&hq_key.stdout).unwrap();
    berth()
        .args(["status", "--site"])
        .arg(&laptop)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("alice (node)")
                .and(predicate::str::contains(hq_key["key_id"].as_str().unwrap())),
        );
    assert_eq!(st["peers"][0]["held_in"], 0);
    // A second dock of a running site is refused while the first holds the lock.
    let _held = std::fs::File::options()
        .write(true)
        .open(hq.join("berth.lock"))
        .unwrap();
    _held.try_lock().unwrap();
    berth()
        .args(["dock", "--site"])
        .arg(&hq)
        .arg("--via")
        .arg(&usb)
        .assert()
        .failure()
        .stderr(predicate::str::contains("busy"));
}

#[test]
fn dock_reports_a_missing_exchange_folder() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("s.sql"),
        "CREATE TABLE t(id TEXT PRIMARY KEY);",
    )
    .unwrap();
    berth()
        .args(["init", "central"])
        .arg(d.path().join("hq"))
        .arg("--schema")
        .arg(d.path().join("s.sql"))
        .assert()
        .success();
    berth()
        .args(["dock", "--site"])
        .arg(d.path().join("hq"))
        .arg("--via")
        .arg(d.path().join("nowhere"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("nowhere"));
}

/// Admins who prefer explicit files: `--request FILE`, `--out FILE`, and `dock --via FILE`.
#[test]
fn explicit_request_and_extract_files_work() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let (stick, mail) = (root.join("stick"), root.join("mail"));
    std::fs::create_dir_all(&stick).unwrap();
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::write(
        root.join("s.sql"),
        "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT);",
    )
    .unwrap();
    std::fs::write(root.join("d.sql"), "INSERT INTO t VALUES ('x', 'hello');").unwrap();
    let (hq, laptop) = (root.join("hq"), root.join("laptop"));
    berth()
        .args(["init", "central"])
        .arg(&hq)
        .arg("--schema")
        .arg(root.join("s.sql"))
        .arg("--data")
        .arg(root.join("d.sql"))
        .assert()
        .success();
    berth()
        .args(["init", "node"])
        .arg(&laptop)
        .args(["--name", "alice", "--via"])
        .arg(&stick)
        .assert()
        .success();
    let request = stick.join("alice_to_all_0000000000.berth.zip");
    let extract = mail.join("for-alice.zip");
    berth()
        .args(["node", "add", "alice", "--site"])
        .arg(&hq)
        .arg("--request")
        .arg(&request)
        .arg("--out")
        .arg(&extract)
        .assert()
        .success()
        .stdout(predicate::str::contains("for-alice.zip"));
    assert!(extract.is_file());
    berth()
        .args(["dock", "--site"])
        .arg(&laptop)
        .arg("--via")
        .arg(&extract)
        .assert()
        .success()
        .stdout(predicate::str::contains("applied"));
    assert_eq!(
        query(&laptop.join("data.db"), "SELECT v FROM t WHERE id = 'x'"),
        "hello"
    );
    // A bundle for someone else is refused by name.
    berth()
        .args(["dock", "--site"])
        .arg(&hq)
        .arg("--via")
        .arg(&extract)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not to hq"));
}

/// `berth init central` with the sales sample's schema, data and docking model.
fn init_sample_central(hq: &Path) {
    let s = samples();
    berth()
        .args(["init", "central"])
        .arg(hq)
        .arg("--schema")
        .arg(s.join("schema.sql"))
        .arg("--data")
        .arg(s.join("data.sql"))
        .arg("--docking")
        .arg(s.join("docking.toml"))
        .assert()
        .success();
}

/// `init central --docking` validates the model, and `berth docking check` reports findings.
#[test]
fn docking_models_are_checked_against_the_schema() {
    let d = tempfile::tempdir().unwrap();
    let hq = d.path().join("hq");
    let s = samples();
    init_sample_central(&hq);
    berth()
        .args(["docking", "check", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 error(s)"));
    let bad = d.path().join("bad.toml");
    let text = std::fs::read_to_string(s.join("docking.toml")).unwrap();
    std::fs::write(
        &bad,
        text.replace("primary_table = \"opty\"", "primary_table = \"nosuch\""),
    )
    .unwrap();
    let out = berth()
        .args(["docking", "check", "--json", "--site"])
        .arg(&hq)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["errors"].as_u64().unwrap() >= 1);
    assert!(v["findings"].to_string().contains("nosuch"), "{v}");
    // A central site is not created from a model that does not fit its schema.
    berth()
        .args(["init", "central"])
        .arg(d.path().join("hq2"))
        .arg("--schema")
        .arg(s.join("schema.sql"))
        .arg("--docking")
        .arg(&bad)
        .assert()
        .failure()
        .stderr(predicate::str::contains("nosuch"));
    assert!(!d.path().join("hq2").exists());
}

/// The sample's central `hq` and node `alice` (folder `laptop`, employee E1), enrolled
/// through `usb`; the extract waits there: (hq, laptop, usb).
fn sample_with_alice(root: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (hq, laptop, usb) = (root.join("hq"), root.join("laptop"), root.join("usb"));
    std::fs::create_dir_all(&usb).unwrap();
    init_sample_central(&hq);
    enroll(&hq, &laptop, "alice", &usb, &["employee=E1"]);
    (hq, laptop, usb)
}

/// `berth explain` says whether a row is visible to a node and through which instances.
#[test]
fn explain_names_the_instances_behind_an_answer() {
    let d = tempfile::tempdir().unwrap();
    let (hq, _, _) = sample_with_alice(d.path());
    berth()
        .args(["explain", "--site"])
        .arg(&hq)
        .args(["--node", "alice", "opty", "O1"])
        .assert()
        .success()
        .stdout(
            predicate::str::starts_with("visible:").and(predicate::str::contains("opportunity")),
        );
    let out = berth()
        .args(["explain", "--json", "--site"])
        .arg(&hq)
        .args(["--node", "alice", "opty", "O2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["visible"], false);
    // Instance ids are key values, not JSON text inside JSON.
    assert!(
        e["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == serde_json::json!(["O2"])),
        "{e}"
    );
    // The rule chain: a quote item of Q4 reaches alice through its quote, its opportunity
    // O4 and the S_OPTY_EMP rule.
    berth()
        .args(["explain", "--site"])
        .arg(&hq)
        .args(["--node", "alice", "quote_item", "QI6"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("is visible with opportunity [\"O4\"]")
                .and(predicate::str::contains("SQL rule matching alice")),
        );
    // Status shows alice's instance set and routing lag.
    let out = berth()
        .args(["status", "--json", "--site"])
        .arg(&hq)
        .output()
        .unwrap();
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let alice = &st["peers"][0];
    assert_eq!(alice["name"], "alice");
    assert!(alice["instances"].as_i64().unwrap() >= 3, "{alice}");
    assert_eq!(alice["routing_lag"], 0, "{alice}");
    sql(
        &hq.join("data.db"),
        "UPDATE opty SET stage = 'won' WHERE id = 'O4'",
    );
    berth()
        .args(["status", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(predicate::str::contains("1 log entries not routed yet"));
    berth()
        .args(["explain", "--site"])
        .arg(&hq)
        .args(["--node", "nobody", "opty", "O1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("nobody"));
}

fn ids(db: &Path) -> String {
    query(
        db,
        "SELECT group_concat(id, ',') FROM (SELECT id FROM opty ORDER BY id)",
    )
}

/// `berth node set`: a node's attributes change at central, and its rows follow at the next
/// docks (those the new attributes show arrive, those they hide leave).
#[test]
fn node_set_changes_attributes_and_rows_follow() {
    let d = tempfile::tempdir().unwrap();
    let (hq, laptop, usb) = sample_with_alice(d.path());
    let dock = |site: &Path| {
        crate::support::dock(site, &usb).success();
    };
    dock(&laptop);
    assert_eq!(ids(&laptop.join("data.db")), "O1,O4");
    // A misspelt attribute is refused, as at node add.
    berth()
        .args(["node", "set", "alice", "--site"])
        .arg(&hq)
        .args(["--attr", "employe=E2"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("not declared"));
    berth()
        .args(["node", "set", "alice", "--site"])
        .arg(&hq)
        .args(["--attr", "employee=E2"])
        .assert()
        .success()
        .stdout(predicate::str::contains("employee=E2 (were employee=E1)"));
    for _ in 0..2 {
        dock(&hq);
        dock(&laptop);
    }
    assert_eq!(ids(&laptop.join("data.db")), "O2");
    let out = berth()
        .args(["node", "set", "alice", "--json", "--site"])
        .arg(&hq)
        .args(["--attr", "employee=E2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["attributes"]["employee"], "E2");
    berth()
        .args(["node", "set", "nobody", "--site"])
        .arg(&hq)
        .args(["--attr", "employee=E2"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("nobody"));
}

/// A revoked name given to a new machine for another employee: central's record of what the
/// name holds starts again from the new extract, so the new machine holds exactly what its
/// attributes show, gets central's changes to those rows, and nothing of the revoked
/// machine's rows is routed to it.
#[test]
fn a_revoked_name_enrolled_again_holds_exactly_what_its_attributes_show() {
    let d = tempfile::tempdir().unwrap();
    let (hq, laptop, usb) = sample_with_alice(d.path());
    let dock = |site: &Path| {
        crate::support::dock(site, &usb).success();
    };
    dock(&laptop);
    assert_eq!(ids(&laptop.join("data.db")), "O1,O4");
    berth()
        .args(["node", "revoke", "alice", "--site"])
        .arg(&hq)
        .assert()
        .success();
    let laptop2 = d.path().join("laptop2");
    enroll(&hq, &laptop2, "alice", &usb, &["employee=E2"]);
    dock(&laptop2);
    let db2 = laptop2.join("data.db");
    assert_eq!(ids(&db2), "O2");
    let hq_db = hq.join("data.db");
    assert_eq!(
        query(
            &hq_db,
            "SELECT COUNT(*) FROM berth_node_rows WHERE node = 'alice' AND tbl = 'opty'"
        ),
        "1",
        "central's record of alice's opportunities is the new extract's"
    );
    sql(
        &hq_db,
        "UPDATE opty SET name = 'renamed at central' WHERE id = 'O2'",
    );
    sql(
        &hq_db,
        "UPDATE opty SET name = 'not for alice now' WHERE id = 'O4'",
    );
    dock(&hq);
    assert_eq!(
        query(
            &hq_db,
            "SELECT COUNT(*) FROM berth_partial WHERE node = 'alice' AND change LIKE '%\"O4\"%'"
        ),
        "0",
        "a change to a row the revoked machine held is not routed to the new one"
    );
    dock(&laptop2);
    assert_eq!(
        query(&db2, "SELECT name FROM opty WHERE id = 'O2'"),
        "renamed at central"
    );
    assert_eq!(ids(&db2), "O2");
}

/// A table without a PRIMARY KEY: `init central` refuses it naming both ways out; made
/// `local` (or given a key) it is accepted, and `docking check` says what the model does
/// with such tables.
#[test]
fn tables_without_a_key_are_refused_unless_local_or_keyed_and_docking_check_says_which() {
    let d = tempfile::tempdir().unwrap();
    let schema = d.path().join("schema.sql");
    std::fs::write(
        &schema,
        "CREATE TABLE t(id TEXT PRIMARY KEY);
         CREATE TABLE kv(k TEXT, v TEXT);
         CREATE TABLE link(a TEXT NOT NULL, b TEXT NOT NULL, UNIQUE (a, b));",
    )
    .unwrap();
    let model = d.path().join("docking.toml");
    let write_model = |kv: &str| {
        std::fs::write(
            &model,
            format!(
                "version = 1\n[tables]\nt = {{ visibility = \"enterprise\" }}\nkv = {{ visibility = \"{kv}\" }}\n\
                 link = {{ visibility = \"enterprise\", key = [\"a\", \"b\"] }}\n"
            ),
        )
        .unwrap();
    };
    let init = || {
        berth()
            .args(["init", "central"])
            .arg(d.path().join("hq"))
            .arg("--schema")
            .arg(&schema)
            .arg("--docking")
            .arg(&model)
            .assert()
    };
    write_model("enterprise");
    init()
        .failure()
        .stderr(predicate::str::contains("table \"kv\" has no PRIMARY KEY"))
        .stderr(predicate::str::contains("visibility = \"local\""))
        .stderr(predicate::str::contains("key = [\"col\""));
    write_model("local");
    init().success();
    berth()
        .args(["docking", "check", "--site"])
        .arg(d.path().join("hq"))
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "never captured or sent; each site keeps its own rows): kv",
        ))
        .stdout(predicate::str::contains(
            "link: rows identified by key (a, b)",
        ))
        .stdout(predicate::str::contains("0 error(s)"));
}
