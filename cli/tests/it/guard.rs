//! The capture guard (SPEC 2.4.1) through the real binary, with the real tools that rebuild
//! tables: `sqlite-utils transform` and the `sqlite3` shell. A missing tool fails the test.

use crate::support::{add_node, berth, files, init_central};
use predicates::prelude::*;
use std::path::{Path, PathBuf};

/// `sqlite-utils` beside `$BERTH_PYTHON` (the venv .ci/run makes), else on the PATH.
fn sqlite_utils() -> PathBuf {
    let beside = std::env::var_os("BERTH_PYTHON")
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(|d| d.join("sqlite-utils")))
        .filter(|p| p.exists());
    let exe = beside.unwrap_or_else(|| PathBuf::from("sqlite-utils"));
    match std::process::Command::new(&exe).arg("--version").output() {
        Ok(o) if o.status.success() => exe,
        other => panic!(
            "this test needs sqlite-utils ({other:?}): run .ci/run (it installs it into \
             .ci/venv and sets BERTH_PYTHON); a missing tool fails the test, it is not skipped"
        ),
    }
}

fn tool_ok(cmd: &mut std::process::Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `sqlite-utils ARGS` on a site's data.db.
fn su(site: &Path, args: &[&str]) {
    let mut c = std::process::Command::new(sqlite_utils());
    c.arg(args[0]).arg(site.join("data.db")).args(&args[1..]);
    tool_ok(&mut c);
}

/// Runs SQL through the sqlite3 shell (a foreign client).
fn shell(site: &Path, sql: &str) {
    let mut c = std::process::Command::new("sqlite3");
    c.args(["-cmd", ".timeout 10000"])
        .arg(site.join("data.db"))
        .arg(sql);
    tool_ok(&mut c);
}

fn query(site: &Path, q: &str) -> String {
    let c = rusqlite::Connection::open(site.join("data.db")).unwrap();
    c.query_row(q, [], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .unwrap_or_default()
}

struct Two {
    _d: tempfile::TempDir,
    usb: PathBuf,
    hq: PathBuf,
    laptop: PathBuf,
}

/// Central `hq` with a `dogs` table and node `laptop` holding its extract.
fn two() -> Two {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let usb = root.join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let hq = init_central(
        &root,
        "CREATE TABLE dogs(id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER);",
        "INSERT INTO dogs VALUES ('d1', 'Rex', 3);",
    );
    let laptop = add_node(&root, &hq, "laptop", &usb);
    let t = Two {
        _d: d,
        usb,
        hq,
        laptop,
    };
    dock(&t, &t.laptop).success();
    assert_eq!(
        query(&t.laptop, "SELECT name FROM dogs WHERE id = 'd1'"),
        "Rex"
    );
    t
}

fn dock(t: &Two, site: &Path) -> assert_cmd::assert::Assert {
    crate::support::dock(site, &t.usb)
}

fn status_json(site: &Path) -> serde_json::Value {
    let out = berth()
        .args(["status", "--json", "--site"])
        .arg(site)
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).unwrap()
}

/// Central changes a dog and writes laptop's bundle into the exchange folder.
fn central_renames_rex(t: &Two) {
    shell(&t.hq, "UPDATE dogs SET name = 'Rex II' WHERE id = 'd1';");
    dock(t, &t.hq).success();
}

#[test]
fn transform_at_a_node_stops_every_dock_until_capture_is_restored() {
    let t = two();
    central_renames_rex(&t);
    su(&t.laptop, &["transform", "dogs"]);
    // Not journaled: the triggers went with the rebuilt table.
    shell(&t.laptop, "INSERT INTO dogs VALUES ('lost', 'Ghost', 1);");
    let before = files(&t.usb);
    let spool_before = files(&t.laptop.join("spool"));
    for _ in 0..2 {
        dock(&t, &t.laptop).failure().stderr(
            predicate::str::contains("table dogs: capture triggers missing")
                .and(predicate::str::contains("berth_ins_dogs"))
                .and(predicate::str::contains("nothing was applied or exported"))
                .and(predicate::str::contains("berth capture restore")),
        );
    }
    assert_eq!(files(&t.usb), before, "nothing taken in, nothing written");
    assert_eq!(files(&t.laptop.join("spool")), spool_before);
    assert_eq!(
        query(&t.laptop, "SELECT name FROM dogs WHERE id = 'd1'"),
        "Rex",
        "central's bundle was not applied"
    );
    let st = status_json(&t.laptop);
    assert_eq!(st["capture"]["tables"][0]["table"], "dogs", "{st}");
    assert_eq!(
        st["capture"]["tables"][0]["problems"][0]["kind"],
        "triggers-missing"
    );
    berth()
        .args(["status", "--site"])
        .arg(&t.laptop)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("capture    STOPPED").and(predicate::str::contains("dogs")),
        );
    berth()
        .args(["capture", "check", "--site"])
        .arg(&t.laptop)
        .assert()
        .failure();

    // The documented remedy: the table is as recorded, so the triggers are reinstalled, and
    // the user is told that the write made meanwhile was not recorded.
    berth()
        .args(["capture", "restore", "--site"])
        .arg(&t.laptop)
        .assert()
        .success()
        .stdout(predicate::str::contains("dogs").and(predicate::str::contains("not recorded")));
    shell(&t.laptop, "INSERT INTO dogs VALUES ('d2', 'Fido', 2);");
    dock(&t, &t.laptop).success();
    assert_eq!(
        query(&t.laptop, "SELECT name FROM dogs WHERE id = 'd1'"),
        "Rex II"
    );
    dock(&t, &t.hq).success();
    assert_eq!(
        query(&t.hq, "SELECT name FROM dogs WHERE id = 'd2'"),
        "Fido",
        "a write made after the restore reaches central"
    );
}

#[test]
fn a_renamed_column_at_a_node_is_refused_with_the_remedy_not_with_no_such_column() {
    let t = two();
    central_renames_rex(&t);
    su(
        &t.laptop,
        &["transform", "dogs", "--rename", "name", "title"],
    );
    dock(&t, &t.laptop).failure().stderr(
        predicate::str::contains("table dogs: columns changed")
            .and(predicate::str::contains("title"))
            .and(predicate::str::contains(
                "a node never changes its schema itself",
            ))
            .and(predicate::str::contains("no such column").not()),
    );
    // Restoring is refused while the table differs from the recorded one.
    berth()
        .args(["capture", "restore", "--site"])
        .arg(&t.laptop)
        .assert()
        .failure()
        .stderr(predicate::str::contains("columns changed"));
    // Undo, restore, dock: central's change applies.
    su(
        &t.laptop,
        &["transform", "dogs", "--rename", "title", "name"],
    );
    berth()
        .args(["capture", "restore", "--site"])
        .arg(&t.laptop)
        .assert()
        .success();
    dock(&t, &t.laptop).success();
    assert_eq!(
        query(&t.laptop, "SELECT name FROM dogs WHERE id = 'd1'"),
        "Rex II"
    );
}

#[test]
fn a_dropped_trigger_is_refused_by_name() {
    let t = two();
    shell(&t.laptop, "DROP TRIGGER berth_upd_dogs;");
    dock(&t, &t.laptop)
        .failure()
        .stderr(predicate::str::contains(
            "table dogs: capture triggers missing (berth_upd_dogs)",
        ));
}

#[test]
fn a_type_change_at_central_is_refused_with_the_migration_command() {
    let t = two();
    su(&t.hq, &["transform", "dogs", "--type", "age", "text"]);
    dock(&t, &t.hq).failure().stderr(
        predicate::str::contains("changed outside a migration")
            .and(predicate::str::contains("dogs"))
            .and(predicate::str::contains("age"))
            .and(predicate::str::contains("berth migration create"))
            .and(predicate::str::contains("--to FILE")),
    );
    assert!(
        !files(&t.usb).iter().any(|f| f.starts_with("hq_to_laptop")),
        "central exported nothing"
    );
}

#[test]
fn a_table_made_by_a_tool_is_reported_as_not_replicated_and_docks_go_on() {
    let t = two();
    let json = t.laptop.join("cats.json");
    std::fs::write(&json, r#"[{"id": "c1", "name": "Tom"}]"#).unwrap();
    let mut c = std::process::Command::new(sqlite_utils());
    c.arg("insert")
        .arg(t.laptop.join("data.db"))
        .arg("cats")
        .arg(&json)
        .args(["--pk", "id"]);
    tool_ok(&mut c);
    let st = status_json(&t.laptop);
    assert_eq!(st["capture"]["unreplicated"], serde_json::json!(["cats"]));
    assert!(
        st["capture"]["tables"].as_array().unwrap().is_empty(),
        "{st}"
    );
    berth()
        .args(["status", "--site"])
        .arg(&t.laptop)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("table      cats: not replicated")
                .and(predicate::str::contains("berth migration create")),
        );
    shell(&t.laptop, "UPDATE dogs SET age = 4 WHERE id = 'd1';");
    dock(&t, &t.laptop).success();
    dock(&t, &t.hq).success();
    assert_eq!(
        query(&t.hq, "SELECT CAST(age AS TEXT) FROM dogs WHERE id = 'd1'"),
        "4"
    );
}

#[test]
fn an_unchanged_site_reports_capture_ok_and_docks_as_before() {
    let t = two();
    let st = status_json(&t.laptop);
    assert_eq!(st["capture"]["tables"], serde_json::json!([]));
    assert_eq!(st["capture"]["schema"], serde_json::Value::Null);
    berth()
        .args(["status", "--site"])
        .arg(&t.hq)
        .assert()
        .success()
        .stdout(predicate::str::contains("capture    ok"));
    shell(&t.laptop, "UPDATE dogs SET age = 5 WHERE id = 'd1';");
    dock(&t, &t.laptop).success();
    dock(&t, &t.hq).success();
    assert_eq!(
        query(&t.hq, "SELECT CAST(age AS TEXT) FROM dogs WHERE id = 'd1'"),
        "5"
    );
}

/// Rewrites a capture trigger with the text an earlier berth might have installed (a comment
/// stands in for the difference), through the sqlite3 shell.
fn older_trigger_text(site: &Path, trigger: &str) -> String {
    let sql = query(
        site,
        &format!("SELECT sql FROM sqlite_master WHERE name = '{trigger}'"),
    );
    let older = sql.replacen(" BEGIN", " BEGIN /* berth 0.1 */", 1);
    assert_ne!(older, sql);
    shell(site, &format!("DROP TRIGGER {trigger}; {older};"));
    sql
}

/// A site checked by no guard yet (from before it) whose triggers an earlier berth wrote:
/// the first dock brings them to this version's text and goes on; a site the guard has
/// checked before is refused for the same difference (a tool's, then).
#[test]
fn triggers_of_an_earlier_berth_are_brought_up_to_date_once_then_guarded() {
    let t = two();
    let current = older_trigger_text(&t.laptop, "berth_key_dogs");
    shell(
        &t.laptop,
        "DELETE FROM berth_meta WHERE key = 'capture_guard';",
    );
    dock(&t, &t.laptop).success();
    assert_eq!(
        query(
            &t.laptop,
            "SELECT sql FROM sqlite_master WHERE name = 'berth_key_dogs'"
        ),
        current,
        "the first check installed this version's text"
    );
    older_trigger_text(&t.laptop, "berth_key_dogs");
    dock(&t, &t.laptop)
        .failure()
        .stderr(predicate::str::contains("berth_key_dogs"));
}

/// A site the guard found sound under an earlier berth whose trigger text differs (its
/// fingerprint recorded, but no `capture_text`, or another version's): the first dock after
/// the upgrade brings the triggers to this version's text and goes on; a later difference is
/// a tool's and is refused.
#[test]
fn triggers_checked_by_an_earlier_berth_are_brought_up_to_date_after_an_upgrade() {
    let t = two();
    assert_eq!(
        query(
            &t.laptop,
            "SELECT CAST(count(*) AS TEXT) FROM berth_meta WHERE key = 'capture_guard'"
        ),
        "1",
        "the guard recorded a sound check"
    );
    let current = older_trigger_text(&t.laptop, "berth_pre_dogs");
    shell(
        &t.laptop,
        "DELETE FROM berth_meta WHERE key = 'capture_text';",
    );
    dock(&t, &t.laptop).success();
    assert_eq!(
        query(
            &t.laptop,
            "SELECT sql FROM sqlite_master WHERE name = 'berth_pre_dogs'"
        ),
        current,
        "the first check after the upgrade installed this version's text"
    );
    older_trigger_text(&t.laptop, "berth_pre_dogs");
    dock(&t, &t.laptop)
        .failure()
        .stderr(predicate::str::contains("berth_pre_dogs"));
}
