//! The `berth` binary driven as a user would: bundle verify and inspect on the
//! test vectors of `bundle-format/tests/vectors/`, key generation, and help texts.

use crate::support::berth;
use std::path::{Path, PathBuf};

use predicates::prelude::*;

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bundle-format/tests/vectors")
}

fn trusted_pub() -> PathBuf {
    vectors_dir().join("trusted.pub")
}

struct Vector {
    name: String,
    expect: String,
    bytes: Vec<u8>,
}

/// Every vector: the `expect:` line and the raw bundle after the `---` line
/// (format in the vectors' README).
fn vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(vectors_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "vector") {
            continue;
        }
        let file = std::fs::read(&path).unwrap();
        let sep = b"\n---\n";
        let at = file.windows(sep.len()).position(|w| w == sep).unwrap();
        let header = std::str::from_utf8(&file[..at]).unwrap();
        let expect = header
            .lines()
            .find_map(|l| l.strip_prefix("expect: "))
            .unwrap()
            .to_owned();
        out.push(Vector {
            name: path.file_stem().unwrap().to_string_lossy().into_owned(),
            expect,
            bytes: file[at + sep.len()..].to_vec(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(
        out.len() > 40,
        "vectors missing from {}",
        vectors_dir().display()
    );
    out
}

/// Writes the raw bundle of `v` to `dir/<name>.berth.zip` (the CLI reads bundles, not vectors).
fn bundle_file(dir: &Path, v: &Vector) -> PathBuf {
    let path = dir.join(format!("{}.berth.zip", v.name));
    std::fs::write(&path, &v.bytes).unwrap();
    path
}

fn vector(name: &str) -> Vector {
    vectors().into_iter().find(|v| v.name == name).unwrap()
}

#[test]
fn verify_accepts_valid_and_names_the_kind_of_every_hostile_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for v in vectors() {
        let file = bundle_file(tmp.path(), &v);
        let out = berth()
            .args(["bundle", "verify"])
            .arg(&file)
            .arg("--trust")
            .arg(format!("hq={}", trusted_pub().display()))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        // `--trust hq=FILE` binds the key to site hq, as the library test of the vectors does.
        let expect = v.expect.as_str();
        let ok = if expect == "ok" {
            out.status.success() && stdout.starts_with("ok: ") && stdout.lines().count() == 1
        } else {
            !out.status.success()
                && stdout.lines().count() == 1
                && stdout.starts_with(&format!("invalid ({expect}): "))
                && stdout.contains(&format!("{}.berth.zip", v.name))
        };
        if !ok {
            failures.push(format!(
                "{}: expected {expect}, got {} with stdout {stdout:?} stderr {:?}",
                v.name,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn verify_refuses_a_valid_bundle_signed_by_an_untrusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    berth()
        .args(["keys", "generate", "--name", "stranger", "--out"])
        .arg(tmp.path())
        .assert()
        .success();
    let file = bundle_file(tmp.path(), &vector("ok-one-entry"));
    berth()
        .args(["bundle", "verify"])
        .arg(&file)
        .arg("--trust")
        .arg(tmp.path().join("stranger.pub"))
        .assert()
        .failure()
        .stdout(predicate::str::starts_with("invalid (unknown-signer): "));
    // several --trust files: one of them is the signer
    berth()
        .args(["bundle", "verify"])
        .arg(&file)
        .arg("--trust")
        .arg(tmp.path().join("stranger.pub"))
        .arg(trusted_pub())
        .assert()
        .success();
}

#[test]
fn inspect_prints_the_unverified_summary_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let file = bundle_file(tmp.path(), &vector("ok-several-entries"));
    berth()
        .args(["bundle", "inspect"])
        .arg(&file)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("UNVERIFIED")
                .and(predicate::str::contains("b0000000000000000000000000000001"))
                .and(predicate::str::contains("sender     hq"))
                .and(predicate::str::contains("recipients alice"))
                .and(predicate::str::contains("payload/extract/orders.jsonl")),
        );

    let out = berth()
        .args(["bundle", "inspect", "--json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["bundle_id"], "b0000000000000000000000000000001");
    assert_eq!(json["sender"]["site"], "hq");
    assert_eq!(json["entries"].as_array().unwrap().len(), 4);

    // a bad signature does not stop inspect (it shows, unverified) ...
    let forged = bundle_file(tmp.path(), &vector("bad-signature-manifest-edited"));
    berth()
        .args(["bundle", "inspect"])
        .arg(&forged)
        .assert()
        .success()
        .stdout(predicate::str::contains("UNVERIFIED"));
    // ... but what cannot be opened fails with the reason
    let junk = bundle_file(tmp.path(), &vector("not-a-zip"));
    berth()
        .args(["bundle", "inspect"])
        .arg(&junk)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a zip archive"));
}

#[test]
fn keys_generate_then_show_the_same_key_id() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    let out = berth()
        .args(["keys", "generate", "--name", "x", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key id "))
        .unwrap()
        .to_owned();
    assert!(key_id.starts_with("ed25519:"), "{stdout}");

    for file in ["x.pub", "x.key"] {
        berth()
            .args(["keys", "show"])
            .arg(dir.join(file))
            .assert()
            .success()
            .stdout(predicate::str::contains(&key_id));
    }
    let out = berth()
        .args(["keys", "show", "--json"])
        .arg(dir.join("x.pub"))
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["key_id"], key_id.as_str());

    // never overwrites a secret key
    berth()
        .args(["keys", "generate", "--name", "x", "--out"])
        .arg(&dir)
        .assert()
        .failure();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("x.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");
    }
}

#[test]
fn keys_show_reads_the_vectors_signer() {
    let out = berth()
        .args(["keys", "show"])
        .arg(vectors_dir().join("TEST-ONLY-signer.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let from_secret = String::from_utf8(out.stdout).unwrap();
    berth()
        .args(["keys", "show"])
        .arg(trusted_pub())
        .assert()
        .success()
        .stdout(from_secret);
}

/// The subcommands listed under `Commands:` in a help text (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_help_text_has_an_example() {
    // Walks the whole command tree, so a new subcommand without an example fails here.
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    let mut missing = Vec::new();
    while let Some(path) = todo.pop() {
        let out = berth().args(&path).arg("--help").output().unwrap();
        assert!(out.status.success(), "berth {} --help", path.join(" "));
        let help = String::from_utf8(out.stdout).unwrap();
        if !help.contains("Example") {
            missing.push(format!("berth {} --help", path.join(" ")));
        }
        for sub in subcommands(&help) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} help texts found");
    assert!(missing.is_empty(), "no example in: {}", missing.join(", "));
}

/// Issue 19, broken 3: output into a pipe whose reader has gone (`berth ... | head -1`)
/// ends the command quietly with the status a shell gives a program SIGPIPE ended (141),
/// not a panic (exit 101 and a backtrace hint on stderr). Both printing paths: plain text
/// (`println!`) and `--json`.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let root = tempfile::tempdir().unwrap();
    let hq =
        crate::support::init_central(root.path(), "CREATE TABLE item(id TEXT PRIMARY KEY);", "");
    for json in [false, true] {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"));
        cmd.args(["status", "--site"]).arg(&hq);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command has written anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "json {json}: {stderr}");
        assert_eq!(out.status.code(), Some(141), "json {json}: {stderr}");
    }
}

/// Issue 19, broken 5: a node named `all` (the recipient of every enrollment request) or
/// named like central is refused with a message saying why, at `init` and at `node add`,
/// and nothing is enrolled.
#[test]
fn names_that_already_mean_something_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::write(r.join("s.sql"), "CREATE TABLE item(id TEXT PRIMARY KEY);").unwrap();
    std::fs::create_dir_all(r.join("via")).unwrap();
    berth()
        .args(["init", "node"])
        .arg(r.join("n1"))
        .args(["--name", "all", "--via"])
        .arg(r.join("via"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("\"all\" cannot be used"))
        .stderr(predicate::str::contains("choose another name"));
    assert!(!r.join("n1/berth.toml").exists());
    berth()
        .args(["init", "central"])
        .arg(r.join("c1"))
        .args(["--name", "all", "--schema"])
        .arg(r.join("s.sql"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("\"all\" cannot be used"));
    let hq = crate::support::init_central(r, "CREATE TABLE item(id TEXT PRIMARY KEY);", "");
    berth()
        .args(["init", "node"])
        .arg(r.join("twin"))
        .args(["--name", "hq", "--via"])
        .arg(r.join("via"))
        .assert()
        .success();
    berth()
        .args(["node", "add", "hq", "--site"])
        .arg(&hq)
        .arg("--via")
        .arg(r.join("via"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("central's own name"));
    let hq_to_hq = std::fs::read_dir(r.join("via"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("hq_to_hq")
        })
        .count();
    assert_eq!(hq_to_hq, 0, "no extract written");
}

/// Issue 19, unhelpful 1: one message, each cause said once: an OS error used to be printed
/// twice (`No such file or directory (os error 2): No such file or directory (os error
/// 2)`), an SQL error of a bad schema three times.
#[test]
fn an_error_says_each_cause_once() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = berth()
        .args(["init", "central"])
        .arg(r.join("hq"))
        .arg("--schema")
        .arg(r.join("missing.sql"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.sql"), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    std::fs::write(
        r.join("bad.sql"),
        "CREATE TABLE t(id TEXT PRIMARY KEY, x BOGUS(;\n",
    )
    .unwrap();
    let out = berth()
        .args(["init", "central"])
        .arg(r.join("hq"))
        .arg("--schema")
        .arg(r.join("bad.sql"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.sql"), "{err}");
    assert_eq!(err.matches("syntax error").count(), 1, "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("berth:")).count(),
        1,
        "{err}"
    );
}

/// Issue 19, unhelpful 2: a dock with nothing to do because someone else has to act first
/// says what waits and the command that unblocks it, in text and in `--json`, instead of
/// "nothing to do": a node before central added it, and central with a request waiting.
#[test]
fn a_dock_says_what_waits_and_how_to_unblock_it() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("via")).unwrap();
    crate::support::init_central(r, "CREATE TABLE item(id TEXT PRIMARY KEY);", "");
    berth()
        .args(["init", "node"])
        .arg(r.join("n1"))
        .args(["--name", "n1", "--via"])
        .arg(r.join("via"))
        .assert()
        .success();
    let dock = |site: &str| {
        let mut c = berth();
        c.args(["dock", "--site"])
            .arg(r.join(site))
            .arg("--via")
            .arg(r.join("via"));
        c
    };
    dock("n1")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "has not been added at central yet",
        ))
        .stdout(predicate::str::contains("berth node add n1"))
        .stdout(predicate::str::contains("nothing to do").not());
    dock("hq")
        .assert()
        .success()
        .stdout(predicate::str::contains("node n1 asks to be added"))
        .stdout(predicate::str::contains("berth node add n1 --site"));
    let out = dock("hq").arg("--json").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["waits"][0]
            .as_str()
            .unwrap()
            .contains("node n1 asks to be added"),
        "{v}"
    );
    berth()
        .args(["node", "add", "n1", "--site"])
        .arg(r.join("hq"))
        .arg("--via")
        .arg(r.join("via"))
        .assert()
        .success();
    // Central writes and docks again before the node took its extract: the new bundle does
    // not replace the extract (it carries none of its rows).
    let ok = std::process::Command::new("sqlite3")
        .arg(r.join("hq/data.db"))
        .arg("INSERT INTO item VALUES ('x1');")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    dock("hq")
        .assert()
        .success()
        .stdout(predicate::str::contains("asks to be added").not());
    assert!(r.join("via/hq_to_n1_0000000001.berth.zip").exists());
    dock("n1")
        .assert()
        .success()
        .stdout(predicate::str::contains("has not been added").not());
    let out = std::process::Command::new("sqlite3")
        .arg(r.join("n1/data.db"))
        .arg("SELECT id FROM item;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x1");
}

/// `--help` lists the exit statuses, 3 included.
#[test]
fn help_lists_the_exit_statuses() {
    berth().arg("--help").assert().success().stdout(
        predicate::str::contains("Exit status:")
            .and(predicate::str::contains("  3 "))
            .and(predicate::str::contains("141")),
    );
}

/// The log: silent by default; -v shows what a dock did and the progress of a routing pass
/// after a large change (no bar is drawn without a terminal); RUST_LOG decides when set; -q
/// leaves only errors.
#[test]
fn verbose_and_rust_log_show_the_log_and_routing_progress() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let hq = crate::support::init_central(root, "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT);", "");
    let via = root.join("via");
    std::fs::create_dir_all(&via).unwrap();
    let node = crate::support::add_node(root, &hq, "n1", &via);
    // `berth [FLAGS] dock --site SITE --via VIA`.
    let dock = |flags: &[&str], site: &Path| {
        let mut c = berth();
        c.args(flags)
            .args(["dock", "--site"])
            .arg(site)
            .arg("--via")
            .arg(&via);
        c
    };
    dock(&[], &node).assert().success().stderr("");
    let ok = std::process::Command::new("sqlite3")
        .arg(hq.join("data.db"))
        .arg(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
             INSERT INTO t SELECT 'k' || i, 'v' FROM n;",
        )
        .status()
        .unwrap_or_else(|e| panic!("this test needs the sqlite3 shell ({e})"))
        .success();
    assert!(ok);
    dock(&["-v"], &hq).assert().success().stderr(
        predicate::str::contains("routing to the nodes: ")
            .and(predicate::str::contains("routing to the nodes: done"))
            .and(predicate::str::contains("written")),
    );
    dock(&[], &node)
        .env("RUST_LOG", "debug")
        .assert()
        .success()
        .stderr(predicate::str::contains("dock starts"));
    dock(&["-q"], &node).assert().success().stderr("");
}

/// The README's session and migration examples run as written (with the stick a folder of
/// the test's): every command exists and the migration starts from a site it creates.
/// (Unix: the examples are sh, and `samples` is linked into the test's folder.)
#[cfg(unix)]
#[test]
fn the_readme_examples_run_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    std::fs::create_dir_all(root.join("usb")).unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples"),
        root.join("samples"),
    )
    .unwrap();
    let blocks: Vec<&str> = readme
        .split("```sh\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .filter(|b| b.contains("$B "))
        .collect();
    assert_eq!(blocks.len(), 2, "the session and the migration: {blocks:?}");
    for block in blocks {
        let script = block.replace("\\\n", " ").replace("/tmp/usb", "usb");
        for line in script
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("B="))
        {
            let out = std::process::Command::new("sh")
                .args(["-c", line])
                .current_dir(root)
                .env("B", assert_cmd::cargo::cargo_bin("berth"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "README line failed: {line}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(root.join("app/db/migrations/migrations.toml").exists());
}

/// `migration create --help`'s example runs on a copy of the sample: the column it adds is
/// one the sample does not have yet.
#[test]
fn the_migration_create_help_example_runs_on_the_sample() {
    let help = berth()
        .args(["migration", "create", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let alter = help
        .lines()
        .find_map(|l| l.trim().strip_prefix("sqlite3 dev/data.db "))
        .unwrap_or_else(|| panic!("no sqlite3 line in the example: {help}"))
        .trim_matches('\'')
        .to_string();
    let create: Vec<String> = help
        .lines()
        .find(|l| l.contains("migration create --site dev") && !l.contains("--sql"))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    let d = tempfile::tempdir().unwrap();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/sales");
    let dev = d.path().join("dev");
    berth()
        .args(["init", "central"])
        .arg(&dev)
        .arg("--schema")
        .arg(samples.join("schema.sql"))
        .assert()
        .success();
    berth()
        .args(["schema", "snapshot", "--site"])
        .arg(&dev)
        .assert()
        .success();
    let ok = std::process::Command::new("sqlite3")
        .arg(dev.join("data.db"))
        .arg(&alter)
        .status()
        .unwrap_or_else(|e| panic!("this test needs the sqlite3 shell ({e})"))
        .success();
    assert!(ok, "{alter}");
    berth()
        .args(&create)
        .current_dir(d.path())
        .assert()
        .success();
}

/// Every file and folder under `dir` handed to `uid`.
#[cfg(unix)]
fn chown_tree(dir: &Path, uid: u32) {
    std::os::unix::fs::chown(dir, Some(uid), Some(uid)).unwrap();
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Issue 19, a read-only stick: a download-only dock applies from a folder berth cannot
/// write (the bundle stays there); a dock that must write its bundle there names the folder
/// and what to do, with the OS error said once. The permission is real: the tests run as
/// root, which no folder mode stops, so under root berth runs as `nobody` (uid 65534) on a
/// tree handed to it; otherwise as the user running the tests.
#[cfg(unix)]
#[test]
fn a_read_only_stick_applies_and_a_dock_that_must_write_there_says_what_to_do() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    const NOBODY: u32 = 65534;
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let hq = crate::support::init_central(
        root,
        "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT);",
        "INSERT INTO t VALUES ('a', 'from hq');",
    );
    let usb = root.join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let node = crate::support::add_node(root, &hq, "n1", &usb);
    // Files the test makes belong to whoever runs it.
    let as_root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(root).unwrap()) == 0;
    if as_root {
        chown_tree(root, NOBODY);
    }
    std::fs::set_permissions(&usb, std::fs::Permissions::from_mode(0o555)).unwrap();
    let dock = |args: &[&str]| {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"));
        c.arg("dock")
            .args(args)
            .arg("--site")
            .arg(&node)
            .arg("--via")
            .arg(&usb);
        if as_root {
            c.uid(NOBODY).gid(NOBODY);
        }
        assert_cmd::Command::from_std(c).assert()
    };
    let left: Vec<_> = std::fs::read_dir(&usb).unwrap().collect();
    dock(&["--download-only"])
        .success()
        .stdout(predicate::str::contains("applied"));
    assert_eq!(
        std::fs::read_dir(&usb).unwrap().count(),
        left.len(),
        "the bundle stays on the read-only stick"
    );
    let db = node.join("data.db");
    let q = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT v FROM t WHERE id = 'a'")
        .output()
        .unwrap_or_else(|e| panic!("this test needs the sqlite3 shell ({e})"));
    assert_eq!(String::from_utf8_lossy(&q.stdout).trim(), "from hq");
    // Docked again: nothing breaks on the bundle left behind.
    dock(&["--download-only"]).success();
    // A local change to send: the folder must be written, and cannot be.
    let ok = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("INSERT INTO t VALUES ('b', 'from n1')")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    if as_root {
        chown_tree(&node, NOBODY);
    }
    let out = dock(&[]).failure();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains(&format!("{} cannot be written", usb.display()))
            && err.contains("--download-only")
            && err.contains("write-protect"),
        "{err}"
    );
    assert_eq!(err.matches("Permission denied").count(), 1, "{err}");
    std::fs::set_permissions(&usb, std::fs::Permissions::from_mode(0o755)).unwrap();
}
