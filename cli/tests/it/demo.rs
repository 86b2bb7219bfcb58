//! `berth demo` and `berth sample generate` through the real binary.

use crate::support::berth;
use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use std::path::Path;

/// Runs the command with `--json`, expects success, and returns what it printed.
fn json_of(cmd: &mut Command) -> Value {
    let a = cmd.arg("--json").assert().success();
    let out = &a.get_output().stdout;
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn the_demo_passes_every_check_and_says_so_in_json() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("demo");
    let v = json_of(berth().arg("demo").arg(&dir));
    assert_eq!(v["ok"], true, "{v:#}");
    let checks = v["checks"].as_array().unwrap();
    for c in checks {
        assert_eq!(c["ok"], true, "{c}");
    }
    for n in ["keith", "carl", "greg"] {
        let name = format!("{n} holds what the oracle projects from central");
        assert!(
            checks.iter().any(|c| c["name"] == name.as_str()),
            "no oracle check for {n}: {checks:?}"
        );
    }
    let sites = v["sites"].as_array().unwrap();
    let names: Vec<&str> = sites.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["hq", "keith", "carl", "greg"]);
    for s in sites {
        assert_eq!(s["schema_version"], 1, "{s}");
        assert!(s["rows"].as_i64().unwrap() > 0, "{s}");
        if s["role"] == "node" && cfg!(unix) {
            assert_eq!(s["software_level"], "2", "{s}");
        }
    }
    // A node holds only part of central.
    assert!(sites[1]["rows"].as_i64() < sites[0]["rows"].as_i64());
    // The seed's collision: greg's 'Greg Emerson' lost to carl's 'Carl Lake', recorded.
    let conflicts = v["conflicts"].as_array().unwrap();
    let c = conflicts
        .iter()
        .find(|c| c["node"] == "greg" && c["table"] == "opty")
        .unwrap_or_else(|| panic!("no conflict for greg on opty: {conflicts:?}"));
    assert_eq!(c["key"], serde_json::json!(["O1"]));
    assert_eq!(c["kind"], "update-update");
    assert_eq!(c["node_new"]["sales_rep"], "Greg Emerson");
    assert_eq!(c["central"]["sales_rep"], "Carl Lake");
    assert_eq!(sites[0]["conflicts"], 1);
    assert_eq!(sites[3]["conflicts"], 1, "greg's");
    // The sites are kept where the summary says.
    assert_eq!(v["dir"].as_str().map(Path::new), Some(dir.as_path()));
    for s in ["hq", "keith", "carl", "greg", "shared", "usb-stick"] {
        assert!(dir.join(s).is_dir(), "{s}");
    }
    // Greg docked from the stick: central's bundles for him reached him, and nothing is
    // left on the stick (everything was carried and taken in).
    assert!(
        std::fs::read_dir(dir.join("greg/archive"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("hq_to_greg_"))
    );
    assert_eq!(std::fs::read_dir(dir.join("usb-stick")).unwrap().count(), 0);
}

#[test]
fn the_demo_narrates_the_story_and_ends_with_the_table() {
    let d = tempfile::tempdir().unwrap();
    berth().arg("demo").arg(d.path()).assert().success().stdout(
        predicate::str::contains("Keith Palmer")
            .and(predicate::str::contains("conflict recorded at hq: greg"))
            .and(predicate::str::contains("after:  O4"))
            .and(predicate::str::contains("schema version 1"))
            .and(predicate::str::contains("checks passed"))
            .and(predicate::str::contains("USB stick")),
    );
}

#[test]
fn the_demo_tells_the_same_story_on_generated_data() {
    let d = tempfile::tempdir().unwrap();
    let v = json_of(
        berth()
            .arg("demo")
            .arg(d.path().join("demo"))
            .args(["--scale", "1", "--seed", "3"]),
    );
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["scale"], 1);
    let rows: Vec<i64> = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rows"].as_i64().unwrap())
        .collect();
    assert!(
        rows[0] > 30_000,
        "central holds the generated data: {rows:?}"
    );
    for r in &rows[1..] {
        assert!(
            *r > 200 && *r < rows[0] / 10,
            "a node holds its share: {rows:?}"
        );
    }
}

#[test]
fn the_demo_refuses_bad_input_before_making_anything() {
    let d = tempfile::tempdir().unwrap();
    berth()
        .arg("demo")
        .arg(d.path().join("demo"))
        .args(["--scale", "0"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--scale must be between 1"));
    assert!(!d.path().join("demo").exists());
}

#[test]
fn the_demo_refuses_a_folder_that_is_not_empty() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("notes.txt"), "mine").unwrap();
    berth()
        .arg("demo")
        .arg(d.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("is not empty"));
    assert_eq!(
        std::fs::read_to_string(d.path().join("notes.txt")).unwrap(),
        "mine"
    );
    // A file where the folder should be, and a seed without generated data.
    berth()
        .arg("demo")
        .arg(d.path().join("notes.txt"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("is not a folder"));
    berth()
        .args(["demo", "--seed", "3"])
        .arg(d.path().join("new"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("--scale"));
    assert!(!d.path().join("new").exists());
}

fn generate(out: &Path, scale: &str, seed: &str) -> Value {
    json_of(
        berth()
            .args([
                "sample", "generate", "--scale", scale, "--seed", seed, "--out",
            ])
            .arg(out),
    )
}

/// Loads a generated folder into a real SQLite with foreign keys on; returns its counts.
fn load(dir: &Path) -> std::collections::BTreeMap<String, i64> {
    let c = rusqlite::Connection::open_in_memory().unwrap();
    c.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    c.execute_batch(&std::fs::read_to_string(dir.join("schema.sql")).unwrap())
        .unwrap();
    c.execute_batch(&std::fs::read_to_string(dir.join("data.sql")).unwrap())
        .unwrap();
    let broken: i64 = c
        .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(broken, 0, "foreign_key_check");
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let n = c
                .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
                .unwrap();
            (t, n)
        })
        .collect()
}

#[test]
fn generated_data_loads_with_foreign_keys_on_is_deterministic_and_scales() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, c, big) = (
        d.path().join("a"),
        d.path().join("b"),
        d.path().join("c"),
        d.path().join("big"),
    );
    let va = generate(&a, "1", "5");
    generate(&b, "1", "5");
    generate(&c, "1", "6");
    let data = |p: &Path| std::fs::read(p.join("data.sql")).unwrap();
    assert_eq!(data(&a), data(&b), "same seed, same bytes");
    assert_ne!(data(&a), data(&c), "another seed, other data");
    assert_eq!(
        std::fs::read_to_string(a.join("schema.sql")).unwrap(),
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/sales/schema.sql")
        )
        .unwrap()
    );
    assert!(a.join("docking.toml").is_file());
    let counts = load(&a);
    for (t, n) in &counts {
        assert_eq!(va["counts"][t], *n, "{t}: the JSON says what SQLite holds");
    }
    assert!(
        counts["account"] >= 2000 && counts["opty"] >= 5000,
        "{counts:?}"
    );
    // Every opportunity is assigned (S_OPTY_EMP), so it routes to someone.
    assert!(counts["opty_emp"] >= counts["opty"], "{counts:?}");
    // The hand-written people are there, and hold generated work too.
    let vb = generate(&big, "2", "5");
    let gen_opty = |v: &Value| v["counts"]["opty"].as_i64().unwrap() - 5;
    assert_eq!(
        gen_opty(&vb),
        2 * gen_opty(&va),
        "scale 2 doubles the opportunities"
    );
    load(&big);
    // Writing again over its own output is fine.
    generate(&a, "1", "7");
}

#[test]
fn sample_generate_refuses_bad_input_clearly() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("thesis.tex"), "mine").unwrap();
    berth()
        .args(["sample", "generate", "--out"])
        .arg(d.path())
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("is not empty").and(predicate::str::contains("thesis.tex")),
        );
    let e = tempfile::tempdir().unwrap();
    std::fs::write(e.path().join("data.sql"), "INSERT INTO x VALUES (1);").unwrap();
    berth()
        .args(["sample", "generate", "--out"])
        .arg(e.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("did not write"));
    assert_eq!(
        std::fs::read_to_string(e.path().join("data.sql")).unwrap(),
        "INSERT INTO x VALUES (1);"
    );
    // A folder holding only someone's own schema.sql (a name the generator writes) is
    // not taken for its output: nothing is overwritten.
    let own = tempfile::tempdir().unwrap();
    std::fs::write(own.path().join("schema.sql"), "-- my schema").unwrap();
    berth()
        .args(["sample", "generate", "--out"])
        .arg(own.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("did not write"));
    assert_eq!(
        std::fs::read_to_string(own.path().join("schema.sql")).unwrap(),
        "-- my schema"
    );
    berth()
        .args(["sample", "generate", "--scale", "0", "--out"])
        .arg(d.path().join("new"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("--scale must be between 1"));
    assert!(!d.path().join("new").exists());
}

/// Issue 19, broken 1: a relative folder (as the README writes `--site laptop`). Install
/// programs and executable steps run in other folders, so every path berth hands them
/// (BERTH_SITE_DIR, BERTH_DATABASE, BERTH_PACKAGE_DIR) must be absolute: the demo's
/// upgrade and migration pass every check from a relative folder too.
#[test]
fn the_demo_passes_every_check_from_a_relative_folder() {
    let d = tempfile::tempdir().unwrap();
    let v = json_of(berth().current_dir(d.path()).arg("demo").arg("rel"));
    let failed: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != true)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(v["ok"], true);
    if cfg!(unix) {
        let keith = &v["sites"][1];
        assert_eq!(
            keith["software_level"], "2",
            "the upgrade installed: {keith}"
        );
    }
    assert!(d.path().join("rel/hq").is_dir());
}

/// Issue 19: `demo` without a folder says where it left its files and how to remove them.
#[test]
fn the_demo_without_a_folder_says_where_its_files_are_and_how_to_remove_them() {
    let d = tempfile::tempdir().unwrap();
    let out = berth()
        .arg("demo")
        .env("TMPDIR", d.path())
        .env("TMP", d.path())
        .env("TEMP", d.path())
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    let made: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made.len(), 1, "{made:?}");
    let dir = made[0].display().to_string();
    assert!(
        text.contains(&format!("berth demo in {dir} (a temporary folder")),
        "{text}"
    );
    let rm = if cfg!(windows) {
        format!("rmdir /s /q \"{dir}\"")
    } else {
        format!("rm -rf '{dir}'")
    };
    assert!(text.contains(&format!("remove it with `{rm}`")), "{text}");
}
