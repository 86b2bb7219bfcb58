//! Any writer is captured: the `sqlite3` shell and Python's `sqlite3` module (Debian's
//! SQLite 3.40, not ours) write to a replica, and the changes reach central.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_tests::{SCHEMA, World, tool};
use std::process::Command;

const DATA: &str = "INSERT INTO account VALUES ('a1', 'Acme', 'north');";

#[test]
fn sqlite3_shell_writes_are_captured_and_merged() {
    tool("sqlite3");
    let w = World::new(SCHEMA, DATA, &["a"]);
    let db = w.dir("a").join("data.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("INSERT INTO opty VALUES ('o9', 'a1', 'From the shell', 'Ann', 12.5, x'CAFE'); UPDATE account SET region = 'west' WHERE id = 'a1'; SELECT sqlite_version();")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "foreign sqlite3 version {}",
        String::from_utf8_lossy(&out.stdout).trim()
    );
    w.settle();
    w.assert_converged();
    assert_eq!(
        w.value("hq", "SELECT hex(doc) FROM opty WHERE id='o9'"),
        "'CAFE'"
    );
    assert_eq!(
        w.value("hq", "SELECT region FROM account WHERE id='a1'"),
        "'west'"
    );
}

#[test]
fn python_sqlite3_writes_are_captured_and_merged() {
    tool("python3");
    let w = World::new(SCHEMA, DATA, &["a", "b"]);
    let db = w.dir("b").join("data.db");
    let script = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("INSERT INTO account VALUES ('p1', 'Python Ltd', NULL)")
c.execute("INSERT INTO opty_emp VALUES ('o1', 'E7', 'lead')")
c.execute("UPDATE opty_emp SET role = 'owner' WHERE opty_id = 'o1' AND emp = 'E7'")
c.execute("DELETE FROM account WHERE id = 'p1'")
c.execute("INSERT INTO account VALUES ('p2', 'Unicode Ωmega ''quoted''', 'süd')")
c.commit()
print(sqlite3.sqlite_version)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.settle();
    w.assert_converged();
    assert_eq!(
        w.value("a", "SELECT role FROM opty_emp WHERE emp = 'E7'"),
        "'owner'"
    );
    assert_eq!(
        w.value("a", "SELECT COUNT(*) FROM account WHERE id = 'p1'"),
        "0"
    );
    assert_eq!(
        w.value("a", "SELECT name FROM account WHERE id = 'p2'"),
        "'Unicode Ωmega ''quoted'''"
    );
}

/// Rows written while applying a bundle are not captured again at a node.
#[test]
fn applied_changes_are_not_captured_again() {
    let w = World::new(SCHEMA, DATA, &["a"]);
    w.exec("hq", "INSERT INTO account VALUES ('c1', 'Central', NULL)");
    w.dock("hq");
    w.dock("a");
    assert_eq!(w.value("a", "SELECT COUNT(*) FROM berth_log"), "0");
    assert_eq!(
        w.value("a", "SELECT name FROM account WHERE id='c1'"),
        "'Central'"
    );
}
