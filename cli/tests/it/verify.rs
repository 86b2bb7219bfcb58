//! `berth verify` and the site's own files, through the binary (issue 16, part 3).

use crate::support::{berth, init_central};
use predicates::prelude::*;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A central `hq` whose `item` table fills a few hundred pages.
fn central(root: &Path) -> PathBuf {
    init_central(
        root,
        "CREATE TABLE item(id TEXT PRIMARY KEY, v TEXT);",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
         INSERT INTO item SELECT 'k' || i, hex(randomblob(60)) FROM n;",
    )
}

fn verify(site: &Path) -> assert_cmd::assert::Assert {
    berth().arg("verify").arg("--site").arg(site).assert()
}

#[test]
fn verify_reports_a_damaged_page_found_by_quick_check() {
    let root = tempfile::tempdir().unwrap();
    let hq = central(root.path());
    verify(&hq)
        .success()
        .stdout(predicate::str::contains("site-files   ok"))
        .stdout(predicate::str::contains("quick-check  ok"));
    // One b-tree page of the user's table, in the middle of the file, overwritten.
    let db = hq.join("data.db");
    let bytes = fs::read(&db).unwrap();
    let page_size = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65536,
        n => usize::from(n),
    };
    let pages = bytes.len() / page_size;
    assert!(pages > 50, "{pages} pages");
    let mut f = fs::File::options().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(((pages / 2) * page_size) as u64))
        .unwrap();
    f.write_all(&[0x5a; 64]).unwrap();
    drop(f);
    verify(&hq)
        .code(1)
        .stdout(predicate::str::contains("quick-check  FAILED"));
    let out = berth()
        .args(["verify", "--json", "--site"])
        .arg(&hq)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let quick = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "quick-check")
        .unwrap()
        .clone();
    assert_eq!(quick["ok"], false, "{v}");
    assert!(!quick["detail"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn a_missing_database_is_refused_by_dock_and_reported_by_verify() {
    let root = tempfile::tempdir().unwrap();
    let hq = central(root.path());
    let via = root.path().join("usb");
    fs::create_dir_all(&via).unwrap();
    for x in ["data.db", "data.db-wal", "data.db-shm"] {
        let _ = fs::remove_file(hq.join(x));
    }
    berth()
        .args(["dock", "--site"])
        .arg(&hq)
        .arg("--via")
        .arg(&via)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("database is missing"));
    assert!(!hq.join("data.db").exists(), "not re-created");
    verify(&hq)
        .code(1)
        .stdout(predicate::str::contains("site-files   FAILED"))
        .stdout(predicate::str::contains("database is missing"));
    assert!(!hq.join("data.db").exists(), "verify creates nothing");
}

#[test]
fn a_renamed_site_is_refused_naming_both_names() {
    let root = tempfile::tempdir().unwrap();
    let hq = central(root.path());
    let cfg = hq.join("berth.toml");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, text.replace("name = \"hq\"", "name = \"head\"")).unwrap();
    berth()
        .args(["status", "--site"])
        .arg(&hq)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("\"head\"").and(predicate::str::contains("\"hq\"")));
    verify(&hq)
        .code(1)
        .stdout(predicate::str::contains("\"head\"").and(predicate::str::contains("\"hq\"")));
}

fn dock(site: &Path, via: &Path) {
    crate::support::dock(site, via).success();
}

/// Issue 16 part 2 through the binary: a row changed at a node with the triggers dropped (as
/// the `sqlite3` shell does it), the triggers put back with `berth capture restore`: the next
/// dock finds the difference (`verify` names the table and bucket), central's repair puts
/// its row back, `berth repair --list` shows the node's value kept aside, and `--reapply`
/// sends it on as an ordinary change that reaches central.
#[test]
fn a_hand_edit_is_found_repaired_kept_and_can_be_written_back() {
    let root = tempfile::tempdir().unwrap();
    let hq = init_central(
        root.path(),
        "CREATE TABLE item(id TEXT PRIMARY KEY, v TEXT);",
        "INSERT INTO item VALUES ('k1', 'one'), ('k2', 'two'), ('k3', 'three');",
    );
    let via = root.path().join("via");
    fs::create_dir_all(&via).unwrap();
    let a = crate::support::add_node(root.path(), &hq, "a", &via);
    for _ in 0..2 {
        dock(&a, &via);
        dock(&hq, &via);
    }
    dock(&a, &via);
    verify(&a)
        .success()
        .stdout(predicate::str::contains("replica      ok"));
    let shell = "sqlite3";
    let triggers = std::process::Command::new(shell)
        .arg(a.join("data.db"))
        .arg("SELECT group_concat('DROP TRIGGER ' || name || ';', ' ') FROM sqlite_master WHERE type = 'trigger';")
        .output()
        .unwrap();
    let drops = String::from_utf8(triggers.stdout).unwrap();
    let edit = std::process::Command::new(shell)
        .arg(a.join("data.db"))
        .arg(format!(
            "{drops} UPDATE item SET v = 'by hand' WHERE id = 'k2';"
        ))
        .status()
        .unwrap();
    assert!(edit.success());
    berth()
        .args(["capture", "restore", "--site"])
        .arg(&a)
        .assert()
        .success();
    dock(&a, &via); // compares, reports
    verify(&a)
        .code(1)
        .stdout(predicate::str::contains("replica      FAILED"))
        .stdout(predicate::str::contains("item bucket"));
    dock(&hq, &via); // answers with the repair
    dock(&a, &via); // applies it
    verify(&a).success().stdout(predicate::str::contains(
        "row(s) a repair replaced are kept aside",
    ));
    let out = berth()
        .args(["repair", "--list", "--json", "--site"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(out.status.success());
    let kept: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kept = kept.as_array().unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["node_row"]["v"], "by hand");
    assert_eq!(kept[0]["central_row"]["v"], "two");
    berth()
        .args(["status", "--site"])
        .arg(&a)
        .assert()
        .success()
        .stdout(predicate::str::contains("kept       1 row(s)"));
    let id = kept[0]["id"].as_i64().unwrap().to_string();
    berth()
        .args(["repair", "--reapply", &id, "--site"])
        .arg(&a)
        .assert()
        .success()
        .stdout(predicate::str::contains("written back as a local change"));
    berth()
        .args(["repair", "--reapply", &id, "--site"])
        .arg(&a)
        .assert()
        .failure()
        .stderr(predicate::str::contains("berth repair --list"));
    dock(&a, &via);
    dock(&hq, &via);
    let v = std::process::Command::new(shell)
        .arg(hq.join("data.db"))
        .arg("SELECT v FROM item WHERE id = 'k2';")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(v.stdout).unwrap().trim(), "by hand");
    berth()
        .args(["status", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(predicate::str::contains("replica    a: rows match"));
}
