//! `berth upgrade ...` through the real binary, with the sample package of `samples/upgrade/`.

use crate::support::{berth, enroll};
use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

/// Runs `cmd`, which must succeed, and parses what it prints as JSON.
fn json(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

fn dock(site: &Path, usb: &Path) -> assert_cmd::assert::Assert {
    crate::support::dock(site, usb).success()
}

/// `berth init central DIR` with a one-table schema written beside DIR.
fn init_central(hq: &Path) {
    let schema = hq.with_file_name("schema.sql");
    std::fs::write(
        &schema,
        "CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);",
    )
    .unwrap();
    berth()
        .args(["init", "central"])
        .arg(hq)
        .arg("--schema")
        .arg(&schema)
        .assert()
        .success();
}

/// Central `hq` and node `alice` (folder `laptop`), enrolled through `usb`, the extract
/// applied: (hq, laptop, usb).
fn central_and_alice(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let usb = root.join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let (hq, laptop) = (root.join("hq"), root.join("laptop"));
    init_central(&hq);
    enroll(&hq, &laptop, "alice", &usb, &[]);
    dock(&laptop, &usb);
    (hq, laptop, usb)
}

/// The sample package with its `package.toml` changed by `edit` (each change must apply),
/// published and activated at `hq`.
fn publish_sample_as(root: &Path, hq: &Path, edit: impl Fn(&str) -> String) {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/upgrade");
    let pkg = root.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    for f in ["install.sh", "RELEASE-NOTES.txt"] {
        std::fs::copy(sample.join(f), pkg.join(f)).unwrap();
    }
    let original = std::fs::read_to_string(sample.join("package.toml")).unwrap();
    let toml = edit(&original);
    assert_ne!(toml, original, "the edit changed nothing");
    std::fs::write(pkg.join("package.toml"), toml).unwrap();
    berth()
        .args(["upgrade", "publish"])
        .arg(pkg.join("package.toml"))
        .arg("--site")
        .arg(hq)
        .assert()
        .success();
    berth()
        .args(["upgrade", "activate", "fieldapp-2", "--site"])
        .arg(hq)
        .assert()
        .success();
}

#[test]
fn the_sample_package_is_published_announced_deferred_applied_and_reported() {
    let d = tempfile::tempdir().unwrap();
    let (hq, laptop, usb) = central_and_alice(d.path());

    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/upgrade/package.toml");
    // Only central publishes.
    berth()
        .args(["upgrade", "publish"])
        .arg(&sample)
        .arg("--site")
        .arg(&laptop)
        .assert()
        .failure()
        .stderr(predicate::str::contains("central"));
    berth()
        .args(["upgrade", "publish"])
        .arg(&sample)
        .arg("--site")
        .arg(&hq)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "published fieldapp-2 (level 2, 2 files",
        ));
    berth()
        .args(["upgrade", "activate", "fieldapp-2", "--site"])
        .arg(&hq)
        .assert()
        .success();
    dock(&hq, &usb);
    // No terminal: the deferrable package takes its default (defer) and reminds.
    dock(&laptop, &usb).stdout(
        predicate::str::contains("upgrade reminder")
            .and(predicate::str::contains("berth upgrade apply fieldapp-2")),
    );
    dock(&hq, &usb);
    berth()
        .args(["upgrade", "status", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(predicate::str::contains("alice").and(predicate::str::contains("deferred")));
    #[cfg(unix)]
    {
        berth()
            .args(["upgrade", "apply", "fieldapp-2", "--site"])
            .arg(&laptop)
            .assert()
            .success()
            .stdout(predicate::str::contains("level 2 installed"));
        assert!(
            std::fs::read_to_string(laptop.join("installed-software.txt"))
                .unwrap()
                .starts_with("fieldapp-2 2 ")
        );
        dock(&laptop, &usb);
        dock(&hq, &usb);
        let v = json(
            berth()
                .args(["upgrade", "status", "--json", "--site"])
                .arg(&hq),
        );
        assert_eq!(v[0]["name"], "fieldapp-2");
        assert_eq!(v[0]["nodes"][0]["node"], "alice");
        assert_eq!(v[0]["nodes"][0]["state"], "applied");
        assert_eq!(v[0]["nodes"][0]["exit_code"], 0);
        berth()
            .args(["upgrade", "status", "--site"])
            .arg(&laptop)
            .assert()
            .success()
            .stdout(predicate::str::contains("software level 2"));
        berth()
            .args(["status", "--site"])
            .arg(&laptop)
            .assert()
            .success()
            .stdout(predicate::str::contains("software   2"));
    }
}

#[test]
fn an_admin_submits_the_sample_package_and_central_accepts_it() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let hq = root.join("hq");
    init_central(&hq);
    let keys = root.join("keys");
    berth()
        .args(["keys", "generate", "--name", "ann", "--out"])
        .arg(&keys)
        .assert()
        .success();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/upgrade/package.toml");
    let outbox = root.join("outbox");
    let submit = || {
        berth()
            .args(["upgrade", "submit"])
            .arg(&sample)
            .arg("--admin-key")
            .arg(keys.join("ann.key"))
            .args(["--as", "ann", "--to", "hq", "--out"])
            .arg(&outbox)
            .assert()
            .success()
            .stdout(predicate::str::contains("berth upgrade accept"))
    };
    submit();
    let bundle = std::fs::read_dir(&outbox)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // Lying in the exchange folder, it is what central's dock says waits.
    berth()
        .args(["dock", "--site"])
        .arg(&hq)
        .arg("--via")
        .arg(&outbox)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("submitted by ann waits")
                .and(predicate::str::contains("berth upgrade accept --site"))
                .and(predicate::str::contains("nothing to do").not()),
        );
    // Not yet an admin at central: refused, with what to do.
    berth()
        .args(["upgrade", "accept", "--site"])
        .arg(&hq)
        .arg(&bundle)
        .assert()
        .failure()
        .stderr(predicate::str::contains("berth keys admin"));
    berth()
        .args(["keys", "admin", "--site"])
        .arg(&hq)
        .args(["--name", "ann"])
        .arg(keys.join("ann.pub"))
        .assert()
        .success();
    let v = json(
        berth()
            .args(["upgrade", "accept", "--json", "--site"])
            .arg(&hq)
            .arg(&bundle),
    );
    assert_eq!(v["admin"], "ann");
    assert_eq!(v["package"]["name"], "fieldapp-2");
    berth()
        .args(["upgrade", "activate", "fieldapp-2", "--site"])
        .arg(&hq)
        .assert()
        .success();
}

/// Issue 19, broken 2: a package whose install command is the shipped program itself
/// (`install = ["install.sh"]`, no `sh` in front) installs: the file berth stores for the
/// node is made executable before it runs (it used to fail with "Permission denied").
#[cfg(unix)]
#[test]
fn an_install_program_shipped_in_the_package_runs() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let (hq, laptop, usb) = central_and_alice(root);
    publish_sample_as(root, &hq, |toml| {
        toml.replace(
            "install = [\"sh\", \"install.sh\"]",
            "install = [\"install.sh\"]",
        )
        .replace("apply = \"deferrable\"", "apply = \"immediate\"")
    });
    dock(&hq, &usb);
    dock(&laptop, &usb);
    assert!(
        std::fs::read_to_string(laptop.join("installed-software.txt"))
            .unwrap_or_else(|e| panic!("the install did not run: {e}"))
            .starts_with("fieldapp-2 2 ")
    );
    berth()
        .args(["status", "--site"])
        .arg(&laptop)
        .assert()
        .success()
        .stdout(predicate::str::contains("software   2"));
}

/// An optional package whose prompt defaults to defer, met by docks with no terminal (and a
/// stdin left open, as a scheduler may): no dock waits for an answer, `upgrade apply` asks
/// for the files, the next docks bring them; `dock --json` says whether anything happened;
/// central lists each file with its hash; a failed install names the site to retry with.
#[test]
fn an_unattended_dock_never_waits_and_upgrade_apply_asks_for_a_deferred_download() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let (hq, laptop, usb) = central_and_alice(root);
    publish_sample_as(root, &hq, |toml| {
        toml.replace(
            "download = \"forced\"",
            "download = \"optional\"\ndownload_default = \"defer\"",
        )
        .replace("timeout = 30", "timeout = 600")
        .replace(
            "install = [\"sh\", \"install.sh\"]",
            "install = [\"sh\", \"-c\", \"exit 7\"]",
        )
    });
    let v = json(
        berth()
            .args(["upgrade", "status", "--json", "--site"])
            .arg(&hq),
    );
    let files = v[0]["file_list"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{v}");
    assert_eq!(files[0]["sha256"].as_str().unwrap().len(), 64, "{v}");
    berth()
        .args(["upgrade", "status", "--site"])
        .arg(&hq)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("file install.sh").and(predicate::str::contains("sha256")),
        );
    dock(&hq, &usb);
    // A stdin that stays open but is no terminal: the dock answers by default at once.
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
        .args(["dock", "--site"])
        .arg(&laptop)
        .arg("--via")
        .arg(&usb)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = {
        let _stdin = child.stdin.take();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert!(child.wait().unwrap().success());
        out
    };
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the dock waited"
    );
    assert!(out.contains("download deferred"), "{out}");
    // Asked for by hand; the next docks bring the files.
    berth()
        .args(["upgrade", "apply", "fieldapp-2", "--site"])
        .arg(&laptop)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("asked for")
                .and(predicate::str::contains("berth dock --site")),
        );
    let first = json(
        berth()
            .args(["dock", "--json", "--site"])
            .arg(&laptop)
            .arg("--via")
            .arg(&usb),
    );
    assert_eq!(first["happened"], true, "the request was sent: {first}");
    dock(&hq, &usb);
    dock(&laptop, &usb);
    let v = json(
        berth()
            .args(["upgrade", "status", "--json", "--site"])
            .arg(&laptop),
    );
    assert_eq!(v["packages"][0]["files"], true, "{v}");
    // The install fails: the hint says how to retry, with the site.
    berth()
        .args(["upgrade", "apply", "fieldapp-2", "--site"])
        .arg(&laptop)
        .assert()
        .failure()
        .stdout(predicate::str::contains(format!(
            "berth upgrade apply fieldapp-2 --site {}",
            laptop.display()
        )));
    // Nothing left to do: --json says so.
    dock(&laptop, &usb);
    dock(&hq, &usb);
    dock(&laptop, &usb);
    let idle = json(
        berth()
            .args(["dock", "--json", "--site"])
            .arg(&hq)
            .arg("--via")
            .arg(&usb),
    );
    assert_eq!(idle["happened"], false, "{idle}");
}
