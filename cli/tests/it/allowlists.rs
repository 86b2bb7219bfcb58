//! The allow-lists of SPEC 2.8, through the binary: what `send-sql` may run at central, what a
//! docking rule may be, and which attributes `node add` takes.

use crate::support::{add_node, berth, init_central, samples};
use predicates::prelude::*;
use rusqlite::Connection;
use std::path::Path;

const SCHEMA: &str = "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT, n INTEGER);";
const DATA: &str = "INSERT INTO t VALUES ('r1', 'orig', 0);";

fn db(hq: &Path) -> Connection {
    let c = Connection::open(hq.join("data.db")).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

fn one<T: rusqlite::types::FromSql>(hq: &Path, q: &str) -> T {
    db(hq).query_row(q, [], |r| r.get(0)).unwrap()
}

/// `berth send-sql --site hq --nodes a FILE` with `script` in FILE.
fn send_sql(root: &Path, hq: &Path, script: &str) -> assert_cmd::assert::Assert {
    let file = root.join("script.sql");
    std::fs::write(&file, script).unwrap();
    berth()
        .args(["send-sql", "--site"])
        .arg(hq)
        .args(["--nodes", "a"])
        .arg(&file)
        .current_dir(root)
        .assert()
}

/// A write by another client at central is captured: the triggers are in place.
fn assert_capture_on(hq: &Path, why: &str) {
    let before: i64 = one(hq, "SELECT count(*) FROM berth_log WHERE tbl = 't'");
    db(hq)
        .execute("UPDATE t SET n = n + 1 WHERE id = 'r1'", [])
        .unwrap();
    let after: i64 = one(hq, "SELECT count(*) FROM berth_log WHERE tbl = 't'");
    assert_eq!(after, before + 1, "capture is off after {why}");
}

/// Regression (issue 17, path 4): a script that ends, begins or releases a transaction,
/// attaches a database or sets a pragma escaped the trial transaction: it ran at central for
/// real, unjournaled, and left capture off. Each is now refused before it runs, naming the
/// statement; central's rows, its journal and its capture are as before.
#[test]
fn send_sql_refuses_statements_that_escape_the_trial_transaction() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let via = root.join("usb");
    std::fs::create_dir_all(&via).unwrap();
    let hq = init_central(root, SCHEMA, DATA);
    add_node(root, &hq, "a", &via);
    let evil = root.join("evil.db");
    let attach = format!(
        "UPDATE t SET v = 'escaped' WHERE id = 'r1';\nATTACH '{}' AS evil;\nCREATE TABLE evil.x(a);",
        evil.display()
    );
    let cases: Vec<(String, &str)> = vec![
        (
            "UPDATE t SET v = 'escaped' WHERE id = 'r1';\nCOMMIT;".into(),
            "statement 2 of the script is COMMIT",
        ),
        (
            "UPDATE t SET v = 'escaped' WHERE id = 'r1'; END;".into(),
            "statement 2 of the script is COMMIT (or END)",
        ),
        (
            "UPDATE t SET v = 'escaped' WHERE id = 'r1';\nROLLBACK;".into(),
            "is ROLLBACK",
        ),
        (
            "BEGIN;\nUPDATE t SET v = 'escaped' WHERE id = 'r1';".into(),
            "statement 1 of the script is BEGIN",
        ),
        (
            "SAVEPOINT x;\nUPDATE t SET v = 'escaped' WHERE id = 'r1';".into(),
            "is SAVEPOINT x",
        ),
        (
            "UPDATE t SET v = 'escaped' WHERE id = 'r1';\nRELEASE x;".into(),
            "is RELEASE x",
        ),
        (
            "UPDATE t SET v = 'escaped' WHERE id = 'r1';\nROLLBACK TO berth_try_sql;".into(),
            "is ROLLBACK TO berth_try_sql",
        ),
        (attach, "is ATTACH"),
        ("DETACH main;".into(), "is DETACH main"),
        (
            "PRAGMA foreign_keys=OFF;\nUPDATE t SET v = 'escaped' WHERE id = 'r1';".into(),
            "is PRAGMA foreign_keys = OFF",
        ),
        (
            "update t set v = 'escaped' where id = 'r1';\n/* harmless */ commit;".into(),
            "statement 2 of the script is COMMIT",
        ),
        (
            "update t set v = 'escaped' where id = 'r1'; -- then\n  end transaction".into(),
            "is COMMIT",
        ),
        (
            "update t set v = 'escaped' where id = 'r1'; rollback transaction;".into(),
            "is ROLLBACK",
        ),
        // A statement that needs an earlier one's table is prepared only after that one
        // ran (inside the trial savepoint); the refusal still comes before it runs.
        (
            "CREATE TABLE z(a);\nINSERT INTO z VALUES (1);\nUPDATE t SET v = 'escaped' WHERE id = 'r1';\nCOMMIT;".into(),
            "statement 4 of the script is COMMIT",
        ),
    ];
    for (script, says) in cases {
        send_sql(root, &hq, &script)
            .failure()
            .stderr(predicate::str::contains(says))
            .stderr(predicate::str::contains("send-sql does not allow"));
        assert_eq!(
            one::<String>(&hq, "SELECT v FROM t WHERE id = 'r1'"),
            "orig",
            "{script}"
        );
        assert_eq!(
            one::<i64>(&hq, "SELECT count(*) FROM berth_log WHERE op = 'S'"),
            0,
            "{script}"
        );
        assert_eq!(
            one::<i64>(&hq, "SELECT count(*) FROM sqlite_master WHERE name = 'z'"),
            0,
            "{script}"
        );
        assert!(!evil.exists(), "ATTACH created {}", evil.display());
        assert_capture_on(&hq, &script);
    }

    // Legitimate scripts still pass, and are journaled for the chosen node only.
    send_sql(
        root,
        &hq,
        "UPDATE t SET v = 'for a' WHERE id = 'r1';\n-- a comment\nINSERT INTO t(id, v) VALUES ('r2', 'new');\nCREATE TABLE scratch(a); INSERT INTO scratch VALUES (1); DROP TABLE scratch;",
    )
    .success()
    .stdout(predicate::str::contains("journaled for a"));
    assert_eq!(
        one::<String>(&hq, "SELECT v FROM t WHERE id = 'r1'"),
        "orig"
    );
    assert_eq!(one::<i64>(&hq, "SELECT count(*) FROM t"), 1);
    assert_eq!(
        one::<i64>(
            &hq,
            "SELECT count(*) FROM berth_log WHERE op = 'S' AND target = 'a'"
        ),
        1
    );
    assert_capture_on(&hq, "a legitimate script");
}

/// The sales sample's model with the SQL of the account object's first rule replaced.
fn with_first_rule(sql: &str) -> String {
    let text = std::fs::read_to_string(samples().join("docking.toml")).unwrap();
    let start = text.find("[[object.rule]]\nsql = \"\"\"").unwrap() + "[[object.rule]]\n".len();
    let open = "sql = \"\"\"".len();
    let end = start + open + text[start + open..].find("\"\"\"").unwrap() + 3;
    format!(
        "{}sql = \"\"\"\n{sql}\n\"\"\"{}",
        &text[..start],
        &text[end..]
    )
}

/// Regression (issue 17, path 5): a rule using ATTACH or PRAGMA passed `docking check` and
/// `docking apply` as read-only, and the ATTACH rule created a file at the next dock. Rules
/// are now held to the allow-list of SPEC 2.8 wherever a model comes in: `docking check`,
/// `docking apply` (the model in force is unchanged) and `init central --docking`.
#[test]
fn docking_rules_outside_the_allow_list_are_refused_everywhere() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let s = samples();
    let hq = root.join("hq");
    berth()
        .args(["init", "central"])
        .arg(&hq)
        .arg("--schema")
        .arg(s.join("schema.sql"))
        .arg("--data")
        .arg(s.join("data.sql"))
        .arg("--docking")
        .arg(s.join("docking.toml"))
        .assert()
        .success();
    // The sample itself passes.
    berth()
        .args(["docking", "check", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(predicate::str::contains("0 error(s)"));
    let in_force = std::fs::read(hq.join("docking.toml")).unwrap();
    let evil = root.join("evil.db");
    let cases: Vec<(String, &str)> = vec![
        (format!("ATTACH '{}' AS evil", evil.display()), "ATTACH"),
        ("DETACH main".into(), "DETACH main"),
        ("PRAGMA foreign_keys = OFF".into(), "PRAGMA foreign_keys"),
        ("PRAGMA table_info(account)".into(), "PRAGMA table_info"),
        ("BEGIN".into(), "BEGIN"),
        ("COMMIT".into(), "COMMIT"),
        ("SAVEPOINT s".into(), "SAVEPOINT s"),
        (
            "INSERT INTO account(id) VALUES ('evil')".into(),
            "INSERT INTO account",
        ),
        ("UPDATE account SET name = 'x'".into(), "UPDATE account"),
        ("DELETE FROM account".into(), "DELETE FROM account"),
        (
            "WITH q AS (SELECT 'evil') INSERT INTO account(id) SELECT * FROM q".into(),
            "INSERT INTO account",
        ),
        ("SELECT load_extension('evil')".into(), "load_extension()"),
    ];
    for (i, (sql, says)) in cases.into_iter().enumerate() {
        let bad = root.join(format!("bad{i}.toml"));
        std::fs::write(&bad, with_first_rule(&sql)).unwrap();
        let names_rule = predicate::str::contains("object \"account\" rule 1");
        berth()
            .args(["docking", "check", "--site"])
            .arg(&hq)
            .arg(&bad)
            .current_dir(root)
            .assert()
            .code(1)
            .stdout(names_rule.clone().and(predicate::str::contains(says)))
            .stdout(predicate::str::contains("rules and mappings may not"));
        berth()
            .args(["docking", "apply", "--site"])
            .arg(&hq)
            .arg(&bad)
            .current_dir(root)
            .assert()
            .failure()
            .stderr(names_rule.clone().and(predicate::str::contains(says)));
        assert_eq!(
            std::fs::read(hq.join("docking.toml")).unwrap(),
            in_force,
            "{sql}"
        );
        let hq2 = root.join(format!("hq2-{i}"));
        berth()
            .args(["init", "central"])
            .arg(&hq2)
            .arg("--schema")
            .arg(s.join("schema.sql"))
            .arg("--docking")
            .arg(&bad)
            .current_dir(root)
            .assert()
            .failure()
            .stderr(names_rule.and(predicate::str::contains(says)));
        assert!(!hq2.exists(), "{sql}");
        assert!(!evil.exists(), "{sql} created {}", evil.display());
    }
    // Central still docks: the model in force was never replaced.
    let via = root.join("usb");
    std::fs::create_dir_all(&via).unwrap();
    berth()
        .args(["dock", "--site"])
        .arg(&hq)
        .arg("--via")
        .arg(&via)
        .assert()
        .success();
    assert!(!evil.exists());
}

/// `node add --attr` takes only the attributes `[nodes] attributes` declares, and says which
/// those are.
#[test]
fn node_add_refuses_attributes_the_model_does_not_declare() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let s = samples();
    let (hq, laptop, via) = (root.join("hq"), root.join("laptop"), root.join("usb"));
    std::fs::create_dir_all(&via).unwrap();
    berth()
        .args(["init", "central"])
        .arg(&hq)
        .arg("--schema")
        .arg(s.join("schema.sql"))
        .arg("--data")
        .arg(s.join("data.sql"))
        .arg("--docking")
        .arg(s.join("docking.toml"))
        .assert()
        .success();
    berth()
        .args(["init", "node"])
        .arg(&laptop)
        .args(["--name", "alice", "--via"])
        .arg(&via)
        .assert()
        .success();
    let add = |attrs: &[&str]| {
        let mut c = berth();
        c.args(["node", "add", "alice", "--site"])
            .arg(&hq)
            .arg("--via")
            .arg(&via);
        for a in attrs {
            c.args(["--attr", a]);
        }
        c.assert()
    };
    add(&["employee=E1", "undeclared=1"])
        .failure()
        .stderr(predicate::str::contains("\"undeclared\" is not declared"))
        .stderr(predicate::str::contains("declared: employee"));
    add(&["Employee=E1"])
        .failure()
        .stderr(predicate::str::contains("declared: employee"));
    assert_eq!(
        one::<i64>(&hq, "SELECT count(*) FROM berth_peers WHERE name = 'alice'"),
        0
    );
    add(&["employee=E1"])
        .success()
        .stdout(predicate::str::contains("registered node"));
}
