//! What the binary's tests share: the `berth` command and the steps that make a central and
//! its nodes, each asserted to succeed.
#![allow(dead_code, clippy::unwrap_used)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};

/// The `berth` binary of this build.
pub fn berth() -> Command {
    Command::cargo_bin("berth").unwrap()
}

/// `berth init central DIR` in `root/hq`, with `schema` and `data` written beside it.
pub fn init_central(root: &Path, schema: &str, data: &str) -> PathBuf {
    std::fs::write(root.join("schema.sql"), schema).unwrap();
    std::fs::write(root.join("data.sql"), data).unwrap();
    let hq = root.join("hq");
    berth()
        .args(["init", "central"])
        .arg(&hq)
        .arg("--schema")
        .arg(root.join("schema.sql"))
        .arg("--data")
        .arg(root.join("data.sql"))
        .assert()
        .success();
    hq
}

/// `berth init node` in `root/NAME`, then `berth node add` at central: the node's extract
/// waits in `via` for its first dock.
pub fn add_node(root: &Path, hq: &Path, name: &str, via: &Path) -> PathBuf {
    let node = root.join(name);
    enroll(hq, &node, name, via, &[]);
    node
}

/// `berth init node NODE --name NAME --via VIA`, then `berth node add NAME` at `hq` with
/// `attrs` (`K=V` each): the node's extract waits in `via` for its first dock.
pub fn enroll(hq: &Path, node: &Path, name: &str, via: &Path, attrs: &[&str]) {
    berth()
        .args(["init", "node"])
        .arg(node)
        .args(["--name", name, "--via"])
        .arg(via)
        .assert()
        .success();
    let mut add = berth();
    add.args(["node", "add", name, "--site"])
        .arg(hq)
        .arg("--via")
        .arg(via);
    for a in attrs {
        add.args(["--attr", a]);
    }
    add.assert().success();
}

/// `berth dock --site SITE --via VIA`, not yet asserted (what succeeds is asserted by the
/// caller, with what it prints).
pub fn dock(site: &Path, via: &Path) -> assert_cmd::assert::Assert {
    berth()
        .args(["dock", "--site"])
        .arg(site)
        .arg("--via")
        .arg(via)
        .assert()
}

/// The sales sample (`samples/sales`): schema, data and docking model.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/sales")
}

/// Writes through the sqlite3 shell: a foreign client, never berth (foreign keys off, the
/// shell's default). A missing shell fails the test.
pub fn shell_exec(db: &Path, stmt: &str) {
    let ok = std::process::Command::new("sqlite3")
        .args(["-cmd", ".timeout 10000"])
        .arg(db)
        .arg(stmt)
        .status()
        .unwrap_or_else(|e| panic!("this test needs the sqlite3 shell ({e}); .ci/run installs it"))
        .success();
    assert!(ok, "the sqlite3 shell could not run {stmt}");
}

/// The first column of the first row `q` answers, read through Python's sqlite3 (a foreign
/// client), as Python prints it. A query Python cannot run fails the test.
pub fn py_query(db: &Path, q: &str) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])"])
        .arg(db)
        .arg(q)
        .output()
        .unwrap_or_else(|e| panic!("this test needs python3 ({e}); .ci/run installs it"));
    assert!(
        out.status.success(),
        "python3 could not run {q}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The names of the entries of `dir`, sorted (none when it does not exist).
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
