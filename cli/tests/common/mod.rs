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
    berth()
        .args(["init", "node"])
        .arg(&node)
        .args(["--name", name, "--via"])
        .arg(via)
        .assert()
        .success();
    berth()
        .args(["node", "add", name, "--site"])
        .arg(hq)
        .arg("--via")
        .arg(via)
        .assert()
        .success();
    node
}
