//! The allow-lists of SPEC 2.8, through the binary: what `send-sql` may run at central, what a
//! docking rule may be, and which attributes `node add` takes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{add_node, berth, init_central};
use predicates::prelude::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

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
