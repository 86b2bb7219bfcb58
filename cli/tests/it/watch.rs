//! `berth watch` and the transports, through the real binary: real folders, a real notify
//! watcher process, real bundles, real mail files. Waits have generous timeouts; nothing
//! asserts how fast anything happens.

use crate::support::{berth, files, py_query as query, shell_exec as exec};
use predicates::prelude::PredicateBooleanExt;
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, v TEXT, b BLOB);";
const WAIT: Duration = Duration::from_secs(120);

fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("berth")
}

/// Central `hq` and node `alice` (site folder `laptop`), enrolled through `usb`.
struct Pair {
    root: tempfile::TempDir,
}

impl Pair {
    fn new() -> Pair {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::write(r.join("s.sql"), SCHEMA).unwrap();
        for d in ["usb", "inbox", "inbox2", "side"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        berth()
            .args(["init", "central"])
            .arg(r.join("hq"))
            .arg("--schema")
            .arg(r.join("s.sql"))
            .assert()
            .success();
        let pair = Pair { root };
        pair.enroll("laptop", "usb").success();
        berth()
            .args(["dock", "--site"])
            .arg(pair.p("laptop"))
            .arg("--via")
            .arg(pair.p("usb"))
            .assert()
            .success();
        pair
    }

    /// `berth init node DIR --name alice` with its request in `via`, then `berth node add
    /// alice` at hq: what node add did.
    fn enroll(&self, dir: &str, via: &str) -> assert_cmd::assert::Assert {
        berth()
            .args(["init", "node"])
            .arg(self.p(dir))
            .args(["--name", "alice", "--via"])
            .arg(self.p(via))
            .assert()
            .success();
        berth()
            .args(["node", "add", "alice", "--site"])
            .arg(self.p("hq"))
            .arg("--via")
            .arg(self.p(via))
            .assert()
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// A node change captured and written as alice's next bundle into `side/`, sealed to
    /// hq (`dock --encrypt`); returns the sealed file.
    fn sealed_bundle(&self, sql: &str) -> PathBuf {
        exec(&self.p("laptop/data.db"), sql);
        berth()
            .args(["dock", "--upload-only", "--encrypt", "--site"])
            .arg(self.p("laptop"))
            .arg("--via")
            .arg(self.p("side"))
            .assert()
            .success();
        self.p("side").join("alice_to_hq_0000000001.berth.zip.age")
    }

    /// A node change captured and written as alice's next bundle into `side/`; returns it.
    fn node_bundle(&self, sql: &str) -> PathBuf {
        exec(&self.p("laptop/data.db"), sql);
        self.node_dock(&[])
    }

    fn node_dock(&self, extra: &[&str]) -> PathBuf {
        berth()
            .args(["dock", "--upload-only", "--site"])
            .arg(self.p("laptop"))
            .arg("--via")
            .arg(self.p("side"))
            .args(extra)
            .assert()
            .success();
        let mut found: Vec<PathBuf> = fs::read_dir(self.p("side"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().to_string();
                n.starts_with("alice_to_hq_") && n.ends_with(".berth.zip")
            })
            .collect();
        found.sort();
        found.pop().expect("a node bundle")
    }

    fn hq(&self, q: &str) -> String {
        query(&self.p("hq/data.db"), q)
    }

    fn watch(&self, site: &str, args: &[&str]) -> Watcher {
        Watcher::start(&self.p(site), args)
    }
}

/// A running `berth watch --json` with its events.
struct Watcher {
    child: Child,
    lines: mpsc::Receiver<Value>,
    events: Vec<Value>,
    /// Scan markers dropped so far ([`Watcher::rescanned`]).
    markers: u32,
}

impl Watcher {
    fn start(site: &Path, args: &[&str]) -> Watcher {
        Watcher::start_env(site, args, &[])
    }

    /// [`Watcher::start`] with environment variables set for the watcher.
    fn start_env(site: &Path, args: &[&str], env: &[(&str, &Path)]) -> Watcher {
        let mut child = std::process::Command::new(bin())
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .arg("watch")
            .arg("--site")
            .arg(site)
            .arg("--json")
            .args(
                [
                    ("--settle-ms", "300"),
                    ("--debounce-ms", "300"),
                    ("--poll", "1"),
                ]
                .iter()
                .filter(|(k, _)| !args.contains(k))
                .flat_map(|(k, v)| [*k, *v]),
            )
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("watch: {line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let mut w = Watcher {
            child,
            lines: rx,
            events: Vec::new(),
            markers: 0,
        };
        w.wait_for("started", |_| true);
        w
    }

    /// Waits (generously) for an event of this kind matching `f`; returns it.
    fn wait_for(&mut self, event: &str, f: impl Fn(&Value) -> bool) -> Value {
        let matches = |v: &Value| v["event"] == event && f(v);
        if let Some(v) = self.events.iter().find(|v| matches(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.events.push(v.clone());
                    if matches(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("no {event} event; saw {:#?}", self.events),
            }
        }
    }

    fn file_event(&mut self, event: &str, file: &str) -> Value {
        let file = file.to_string();
        self.wait_for(event, move |v| {
            v["file"].as_str().is_some_and(|f| f.ends_with(&file))
        })
    }

    /// Every event seen so far (and whatever arrived meanwhile).
    fn drain(&mut self) -> &[Value] {
        while let Ok(v) = self.lines.try_recv() {
            self.events.push(v);
        }
        &self.events
    }

    /// Waits until the watcher (of site `hq`) has run a whole scan of `folder`, and the dock
    /// that follows it, begun after this call: the proof that it looked, before a check that
    /// something did not happen. No sleep: every scan reports an unreadable volume index
    /// addressed to the site as `waiting` when it first sees it, so a marker index is dropped
    /// and its event awaited, then a second one; the second is seen by a later scan than the
    /// first, which began after this call. The markers are removed again.
    fn rescanned(&mut self, folder: &Path) {
        for _ in 0..2 {
            self.markers += 1;
            let marker = format!("alice_to_hq_{:010}.berth.zip.volumes", 9000 + self.markers);
            fs::write(folder.join(&marker), b"scan marker, not an index [[[").unwrap();
            let seen = self.file_event("waiting", &marker);
            assert!(
                seen["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("unreadable volume index")),
                "{seen}"
            );
            fs::remove_file(folder.join(&marker)).unwrap();
        }
    }

    fn count(&mut self, event: &str, file: &str) -> usize {
        self.drain()
            .iter()
            .filter(|v| {
                v["event"] == event && v["file"].as_str().is_some_and(|f| f.ends_with(file))
            })
            .count()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (generously) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `berth status --json`, retried while a watcher's turn holds the site.
fn status_json(site: &Path) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let out = berth()
            .args(["status", "--json", "--site"])
            .arg(site)
            .output()
            .unwrap();
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "status kept failing");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().to_string()
}

#[test]
fn a_bundle_written_in_pieces_under_a_temporary_name_is_applied_once_and_sync_tool_names_are_ignored()
 {
    let w = Pair::new();
    let b = w.node_bundle("INSERT INTO item VALUES('a', 'one', NULL)");
    let bytes = fs::read(&b).unwrap();
    let inbox = w.p("inbox");
    // Other programs' half-written files carrying the same bytes: never to be touched.
    let decoys = [
        format!(".syncthing.{}.tmp", name(&b)),
        format!("~syncthing~{}.tmp", name(&b)),
        format!("{}.crdownload", name(&b)),
        "~$report.docx".to_string(),
        ".~lock.report.odt#".to_string(),
    ];
    for d in &decoys {
        fs::write(inbox.join(d), &bytes).unwrap();
    }
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap()]);
    let part = inbox.join(format!("{}.part", name(&b)));
    let mut f = fs::File::create(&part).unwrap();
    for chunk in bytes.chunks(bytes.len() / 3 + 1) {
        f.write_all(chunk).unwrap();
        f.sync_all().unwrap();
        std::thread::sleep(Duration::from_millis(400));
    }
    drop(f);
    fs::rename(&part, inbox.join(name(&b))).unwrap();
    watcher.file_event("applied", &name(&b));
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 'a'"), "one");
    // After a later rescan and dock: the bundle is not applied twice, the decoys stay.
    watcher.wait_for("written", |_| true);
    watcher.rescanned(&inbox);
    assert_eq!(watcher.count("applied", &name(&b)), 1);
    assert_eq!(
        w.hq("SELECT COUNT(*) FROM berth_applied WHERE peer = 'alice'"),
        "1"
    );
    for d in &decoys {
        assert!(inbox.join(d).exists(), "{d} was touched");
    }
    assert!(files(&w.p("hq/quarantine")).is_empty());
    assert!(files(&w.p("hq/archive")).contains(&name(&b)));
}

#[test]
fn a_bundle_written_slowly_under_its_final_name_is_not_read_before_it_is_complete() {
    let w = Pair::new();
    let b = w.node_bundle("INSERT INTO item VALUES('s', 'slow', NULL)");
    let bytes = fs::read(&b).unwrap();
    let inbox = w.p("inbox");
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap(), "--grace", "120"]);
    let dest = inbox.join(name(&b));
    let mut f = fs::File::create(&dest).unwrap();
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half]).unwrap();
    f.sync_all().unwrap();
    // Longer than the settle time: size and time are stable, but the zip does not read yet;
    // and it is still not taken at a later scan.
    watcher.file_event("waiting", &name(&b));
    watcher.rescanned(&inbox);
    assert!(dest.exists(), "taken before it was complete");
    assert!(files(&w.p("hq/quarantine")).is_empty());
    f.write_all(&bytes[half..]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    watcher.file_event("applied", &name(&b));
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 's'"), "slow");
    assert!(files(&w.p("hq/quarantine")).is_empty());
}

#[test]
fn a_corrupt_bundle_is_quarantined_with_a_reason_and_the_next_good_one_applies() {
    let w = Pair::new();
    let b1 = w.node_bundle("INSERT INTO item VALUES('c1', 'first', NULL)");
    let inbox = w.p("inbox");
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap(), "--grace", "2"]);
    // Tampered: one byte of the signed payload flipped.
    let mut bad = fs::read(&b1).unwrap();
    let at = bad.len() / 3;
    bad[at] ^= 0x40;
    fs::write(inbox.join(name(&b1)), &bad).unwrap();
    watcher.file_event("quarantined", &name(&b1));
    // Garbage under a bundle's name: waited for (it might still be arriving), then refused.
    let junk = "alice_to_hq_0000000077.berth.zip";
    fs::write(inbox.join(junk), b"this is not a zip file at all").unwrap();
    watcher.file_event("quarantined", junk);
    let q = files(&w.p("hq/quarantine"));
    assert!(q.contains(&format!("{}.reason.txt", name(&b1))), "{q:?}");
    assert!(q.contains(&format!("{junk}.reason.txt")), "{q:?}");
    let reason =
        fs::read_to_string(w.p("hq/quarantine").join(format!("{junk}.reason.txt"))).unwrap();
    assert!(reason.contains("can never be applied"), "{reason}");
    // The good copy still applies.
    fs::copy(&b1, inbox.join(name(&b1))).unwrap();
    watcher.file_event("applied", &name(&b1));
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 'c1'"), "first");
}

#[test]
fn bundles_out_of_order_and_through_two_folders_apply_once_each() {
    let w = Pair::new();
    let b1 = w.node_bundle("INSERT INTO item VALUES('o1', 'first', NULL)");
    let keep = w.p("b1.zip");
    fs::rename(&b1, &keep).unwrap();
    let b2 = w.node_bundle("INSERT INTO item VALUES('o2', 'second', NULL)");
    assert!(name(&b2) > name(&b1));
    let (in1, in2) = (w.p("inbox"), w.p("inbox2"));
    let mut watcher = w.watch(
        "hq",
        &[
            "--via",
            in1.to_str().unwrap(),
            "--via",
            in2.to_str().unwrap(),
        ],
    );
    fs::copy(&b2, in1.join(name(&b2))).unwrap();
    watcher.file_event("applied", &name(&b2));
    fs::copy(&keep, in2.join(name(&b1))).unwrap();
    fs::copy(&b2, in2.join(name(&b2))).unwrap();
    watcher.file_event("duplicate", &name(&b1));
    watcher.file_event("duplicate", &name(&b2));
    assert_eq!(w.hq("SELECT COUNT(*) FROM item"), "2");
    assert_eq!(
        w.hq("SELECT group_concat(v) FROM (SELECT v FROM item ORDER BY id)"),
        "first,second"
    );
    assert_eq!(watcher.count("applied", &name(&b2)), 1);
    assert_eq!(watcher.count("applied", &name(&b1)), 0);
    assert_eq!(
        w.hq("SELECT COUNT(*) FROM berth_applied WHERE peer = 'alice'"),
        "1"
    );
}

#[test]
fn polling_mode_works_without_events() {
    let w = Pair::new();
    let b = w.node_bundle("INSERT INTO item VALUES('p', 'polled', NULL)");
    let inbox = w.p("inbox");
    let mut watcher = w.watch(
        "hq",
        &[
            "--via",
            inbox.to_str().unwrap(),
            "--no-events",
            "--poll",
            "0.5",
        ],
    );
    fs::copy(&b, inbox.join(name(&b))).unwrap();
    watcher.file_event("applied", &name(&b));
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 'p'"), "polled");
}

#[test]
fn a_folder_created_after_the_start_is_watched_once_it_appears() {
    let w = Pair::new();
    let b = w.node_bundle("INSERT INTO item VALUES('late', 'folder', NULL)");
    let later = w.p("later");
    let mut watcher = w.watch("hq", &["--via", later.to_str().unwrap()]);
    watcher.wait_for("waiting", |_| true);
    fs::create_dir_all(&later).unwrap();
    fs::copy(&b, later.join(name(&b))).unwrap();
    watcher.file_event("applied", &name(&b));
}

#[test]
fn the_watcher_killed_during_an_apply_and_restarted_finishes_without_duplicates() {
    let w = Pair::new();
    let b = w.node_bundle(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 20000) \
         INSERT INTO item SELECT 'k' || i, 'v' || i, NULL FROM c",
    );
    let inbox = w.p("inbox");
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap()]);
    fs::copy(&b, inbox.join(name(&b))).unwrap();
    watcher.file_event("taken", &name(&b));
    // SIGKILL (no chance to clean up) while the bundle is being applied or just after.
    watcher.child.kill().unwrap();
    watcher.child.wait().unwrap();
    drop(watcher);
    let _again = w.watch("hq", &["--via", inbox.to_str().unwrap()]);
    // Whether the kill landed before, during or after the commit, the restarted watcher
    // ends with the bundle applied exactly once and the spool empty.
    wait_until("the bundle applied once and the spool empty", || {
        w.hq("SELECT COUNT(*) FROM berth_applied WHERE peer = 'alice'") == "1"
            && files(&w.p("hq/spool"))
                .iter()
                .all(|f| !f.ends_with(".berth.zip"))
    });
    assert_eq!(w.hq("SELECT COUNT(*) FROM item"), "20000");
    assert_eq!(
        w.hq("SELECT COUNT(*) FROM berth_applied WHERE peer = 'alice'"),
        "1"
    );
    assert!(
        files(&w.p("hq/spool"))
            .iter()
            .all(|f| !f.ends_with(".berth.zip"))
    );
}

#[test]
fn the_node_watcher_writes_a_burst_of_local_writes_and_applies_what_central_sends() {
    let w = Pair::new();
    let usb = w.p("usb");
    let mut watcher = w.watch(
        "laptop",
        &["--via", usb.to_str().unwrap(), "--debounce-ms", "3000"],
    );
    for i in 0..5 {
        exec(
            &w.p("laptop/data.db"),
            &format!("INSERT INTO item VALUES('n{i}', 'burst', NULL)"),
        );
    }
    watcher.wait_for("written", |v| {
        v["file"]
            .as_str()
            .is_some_and(|f| f.contains("alice_to_hq_"))
    });
    // On a slow machine the burst may span two bundles (the second contains the first).
    wait_until("central holds the burst", || {
        berth()
            .args(["dock", "--site"])
            .arg(w.p("hq"))
            .arg("--via")
            .arg(&usb)
            .assert()
            .success();
        w.hq("SELECT COUNT(*) FROM item WHERE v = 'burst'") == "5"
    });
    // Central's own change comes back through the folder and the watcher applies it.
    exec(
        &w.p("hq/data.db"),
        "INSERT INTO item VALUES('h1', 'from hq', NULL)",
    );
    berth()
        .args(["dock", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(&usb)
        .assert()
        .success();
    watcher.wait_for("applied", |v| {
        v["file"]
            .as_str()
            .is_some_and(|f| f.contains("hq_to_alice_"))
    });
    wait_until("the node applied central's change", || {
        query(
            &w.p("laptop/data.db"),
            "SELECT COUNT(*) FROM item WHERE id = 'h1'",
        ) == "1"
    });
    assert_eq!(
        query(&w.p("laptop/data.db"), "SELECT v FROM item WHERE id = 'h1'"),
        "from hq"
    );
}

#[test]
fn one_watcher_per_site() {
    let w = Pair::new();
    let inbox = w.p("inbox");
    let _first = w.watch("hq", &["--via", inbox.to_str().unwrap()]);
    berth()
        .args(["watch", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(&inbox)
        .timeout(Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "another `berth watch` already runs",
        ));
    // status still works while the watcher runs (between its turns), and says what it does.
    wait_until("status shows the running watcher", || {
        let out = berth()
            .args(["status", "--site"])
            .arg(w.p("hq"))
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("watcher: running")
    });
    let v = status_json(&w.p("hq"));
    assert_eq!(v["watcher"]["running"], true);
    assert_eq!(v["watcher"]["last"][0]["event"], "started");
}

/// Every file a dock's report names as written exists (it names what sealing or splitting
/// left, not the file they replaced).
fn written_files_exist(out: &[u8]) -> Vec<PathBuf> {
    let out = String::from_utf8_lossy(out);
    let written: Vec<PathBuf> = out
        .lines()
        .filter_map(|l| l.strip_prefix("written"))
        .map(|p| PathBuf::from(p.trim()))
        .collect();
    assert!(!written.is_empty(), "{out}");
    for p in &written {
        assert!(
            p.exists(),
            "{} is named but does not exist: {out}",
            p.display()
        );
    }
    written
}

fn big_bundle(w: &Pair) -> PathBuf {
    exec(
        &w.p("laptop/data.db"),
        "INSERT INTO item VALUES('big', 'blob', randomblob(60000))",
    );
    let out = berth()
        .args(["dock", "--upload-only", "--site"])
        .arg(w.p("laptop"))
        .arg("--via")
        .arg(w.p("side"))
        .args(["--volume-size", "16384"])
        .assert()
        .success();
    let written = written_files_exist(&out.get_output().stdout);
    assert!(written.len() >= 4, "the index and its volumes: {written:?}");
    let index = files(&w.p("side"))
        .into_iter()
        .find(|f| f.ends_with(".berth.zip.volumes"))
        .expect("the bundle was split");
    w.p("side").join(index)
}

#[test]
fn split_volumes_wait_for_a_missing_piece_then_rejoin_through_the_watcher() {
    let w = Pair::new();
    let index = big_bundle(&w);
    let bundle = name(&index).trim_end_matches(".volumes").to_string();
    let pieces: Vec<String> = files(&w.p("side"))
        .into_iter()
        .filter(|f| f.starts_with(&bundle) && !f.ends_with(".volumes"))
        .collect();
    assert!(pieces.len() >= 3, "{pieces:?}");
    assert!(
        !w.p("side").join(&bundle).exists(),
        "the whole file is replaced by its volumes"
    );
    let inbox = w.p("inbox");
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap()]);
    // The courier's stick was pulled out before the last piece was copied.
    for f in pieces
        .iter()
        .take(pieces.len() - 1)
        .chain(std::iter::once(&name(&index)))
    {
        fs::copy(w.p("side").join(f), inbox.join(f)).unwrap();
    }
    let waiting = watcher.file_event("waiting", &name(&index));
    assert!(
        waiting["detail"]
            .as_str()
            .unwrap()
            .contains("waiting for 1 of"),
        "{waiting}"
    );
    // A garbage index is reported, never read as a set.
    let junk = "alice_to_hq_0000000099.berth.zip.volumes";
    fs::write(inbox.join(junk), b"format = \"x\" [[[").unwrap();
    let w2 = watcher.file_event("waiting", junk);
    assert!(
        w2["detail"]
            .as_str()
            .unwrap()
            .contains("unreadable volume index"),
        "{w2}"
    );
    watcher.rescanned(&inbox);
    assert_eq!(
        w.hq("SELECT COUNT(*) FROM item"),
        "0",
        "nothing half-applied"
    );
    let last = pieces.last().unwrap();
    fs::copy(w.p("side").join(last), inbox.join(last)).unwrap();
    watcher.file_event("applied", &bundle);
    assert_eq!(w.hq("SELECT length(b) FROM item WHERE id = 'big'"), "60000");
    assert!(
        files(&inbox).iter().all(|f| !f.starts_with(&bundle)),
        "the pieces were taken: {:?}",
        files(&inbox)
    );
}

#[test]
fn berth_dock_joins_volumes_and_quarantines_a_damaged_set() {
    let w = Pair::new();
    let index = big_bundle(&w);
    let bundle = name(&index).trim_end_matches(".volumes").to_string();
    // A damaged copy first: one byte of the second piece flipped.
    let damaged = w.p("damaged");
    fs::create_dir_all(&damaged).unwrap();
    for f in files(&w.p("side")) {
        fs::copy(w.p("side").join(&f), damaged.join(&f)).unwrap();
    }
    let second = damaged.join(format!("{bundle}.002"));
    let mut bytes = fs::read(&second).unwrap();
    bytes[10] ^= 1;
    fs::write(&second, bytes).unwrap();
    berth()
        .args(["dock", "--download-only", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(&damaged)
        .assert()
        .code(3)
        .stdout(
            predicates::str::contains("quarantined")
                .and(predicates::str::contains(".002 does not match its sha256")),
        );
    let reason = fs::read_to_string(
        w.p("hq/quarantine")
            .join(format!("{}.reason.txt", name(&index))),
    )
    .unwrap();
    assert!(
        reason.contains(".002 does not match its sha256"),
        "{reason}"
    );
    assert_eq!(w.hq("SELECT COUNT(*) FROM item"), "0");
    // The intact set joins and applies.
    berth()
        .args(["dock", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(w.p("side"))
        .assert()
        .success();
    assert_eq!(w.hq("SELECT length(b) FROM item WHERE id = 'big'"), "60000");
    assert!(files(&w.p("side")).iter().all(|f| !f.starts_with(&bundle)));
}

/// Mails `bundle` with `berth bundle mail` and delivers the message into `maildir` the
/// Maildir way: written in tmp/ as `msg`, then moved into new/.
fn mail_into_maildir(w: &Pair, bundle: &Path, maildir: &Path, msg: &str) {
    let eml = w.p(&format!("side/{msg}.eml"));
    berth()
        .args(["bundle", "mail"])
        .arg(bundle)
        .args(["--to", "hq@example.org", "--out"])
        .arg(&eml)
        .assert()
        .success();
    fs::copy(&eml, maildir.join("tmp").join(msg)).unwrap();
    fs::rename(maildir.join("tmp").join(msg), maildir.join("new").join(msg)).unwrap();
}

#[test]
fn an_eml_file_and_a_maildir_deliver_bundles_and_garbage_mail_is_quarantined() {
    let w = Pair::new();
    let b1 = w.node_bundle("INSERT INTO item VALUES('m1', 'by eml', NULL)");
    let keep = w.p("b1.zip");
    fs::rename(&b1, &keep).unwrap();
    let inbox = w.p("inbox");
    let maildir = w.p("Maildir");
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let mut watcher = w.watch(
        "hq",
        &[
            "--via",
            inbox.to_str().unwrap(),
            "--via",
            &format!("maildir:{}", maildir.display()),
        ],
    );
    // Garbage first: the watcher says why and goes on.
    fs::write(inbox.join("junk.eml"), b"\x00\x01 not a message \xff").unwrap();
    watcher.file_event("quarantined", "junk.eml");
    assert!(w.p("hq/quarantine/junk.eml.reason.txt").exists());

    let eml = w.p("side/msg.eml");
    berth()
        .args(["bundle", "mail"])
        .arg(&keep)
        .args([
            "--to",
            "Head Office <hq@example.org>",
            "--from",
            "Zoë Ärger <alice@example.org>",
            "--out",
        ])
        .arg(&eml)
        .assert()
        .success();
    let text = fs::read_to_string(&eml).unwrap();
    // Display names parsed, not taken for the address; a non-ASCII one encoded (RFC 2047).
    assert!(
        text.contains("To: \"Head Office\" <hq@example.org>")
            || text.contains("To: Head Office <hq@example.org>"),
        "{text}"
    );
    assert!(text.contains("From: =?utf-8?"), "{text}");
    assert!(!text.contains("<Head") && !text.contains('Ä'), "{text}");
    // A mailbox berth cannot read is refused, naming it.
    berth()
        .args(["bundle", "mail"])
        .arg(&keep)
        .args(["--to", "Head Office <hq@example.org", "--out"])
        .arg(w.p("side/bad.eml"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("not a mail address"));
    fs::rename(&eml, inbox.join("msg.eml")).unwrap();
    watcher.wait_for("mail", |v| v["file"] == "msg.eml");
    watcher.wait_for("applied", |_| true);
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 'm1'"), "by eml");
    assert!(w.p("hq/archive/msg.eml").exists());

    let b2 = w.node_bundle("INSERT INTO item VALUES('m2', 'by maildir', NULL)");
    let msg = "1700000000.M1P1.berth-test";
    mail_into_maildir(&w, &b2, &maildir, msg);
    watcher.file_event("applied", &name(&b2));
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 'm2'"), "by maildir");
    assert!(
        maildir.join("new").join(msg).exists(),
        "a mailbox is read, never changed"
    );

    // Forwarded: the bundle's message attached whole (message/rfc822) to another.
    let b3 = w.node_bundle("INSERT INTO item VALUES('m3', 'forwarded', NULL)");
    let inner = w.p("side/inner.eml");
    berth()
        .args(["bundle", "mail"])
        .arg(&b3)
        .args(["--to", "hq@example.org", "--out"])
        .arg(&inner)
        .assert()
        .success();
    let forwarded = format!(
        "From: bob@example.org\r\nTo: hq@example.org\r\nSubject: Fwd: berth bundle\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"fwd-boundary\"\r\n\r\n\
         --fwd-boundary\r\nContent-Type: text/plain\r\n\r\nsee the forwarded message\r\n\
         --fwd-boundary\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n\
         {}\r\n--fwd-boundary--\r\n",
        fs::read_to_string(&inner).unwrap()
    );
    let msg = "1700000001.M2P1.berth-test";
    fs::write(maildir.join("tmp").join(msg), forwarded).unwrap();
    fs::rename(maildir.join("tmp").join(msg), maildir.join("new").join(msg)).unwrap();
    watcher.file_event("applied", &name(&b3));
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 'm3'"), "forwarded");
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_watcher_cleanly() {
    let w = Pair::new();
    let inbox = w.p("inbox");
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap()]);
    let pid = watcher.child.id().to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(ok.success());
    watcher.wait_for("stopped", |_| true);
    let status = watcher.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let state: Value =
        serde_json::from_str(&fs::read_to_string(w.p("hq/watch.json")).unwrap()).unwrap();
    assert_eq!(state["running"], false);
    // The lock is free again.
    let _again = w.watch("hq", &["--via", inbox.to_str().unwrap()]);
}

fn dir_with(w: &Pair, dir: &str, file: &Path, bytes: &[u8]) -> PathBuf {
    let d = w.p(dir);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(name(file)), bytes).unwrap();
    d
}

#[test]
fn an_encrypted_bundle_opens_only_with_the_recipients_key() {
    let w = Pair::new();
    exec(
        &w.p("laptop/data.db"),
        "INSERT INTO item VALUES('e1', 'top-secret-value', NULL)",
    );
    let out = berth()
        .args(["dock", "--upload-only", "--encrypt", "--site"])
        .arg(w.p("laptop"))
        .arg("--via")
        .arg(w.p("side"))
        .assert()
        .success();
    let sealed = w.p("side").join("alice_to_hq_0000000001.berth.zip.age");
    assert_eq!(
        written_files_exist(&out.get_output().stdout),
        std::slice::from_ref(&sealed)
    );
    // `bundle inspect` says what a sealed file is and how to open it.
    berth()
        .args(["bundle", "inspect"])
        .arg(&sealed)
        .assert()
        .success()
        .stdout(
            predicates::str::contains("sealed")
                .and(predicates::str::contains("recipient  hq"))
                .and(predicates::str::contains("--age-identity")),
        );
    assert!(
        files(&w.p("side"))
            .iter()
            .all(|f| !f.ends_with(".berth.zip")),
        "no plain copy left"
    );
    let bytes = fs::read(&sealed).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n-> X25519 "));
    assert!(
        !bytes.windows(4).any(|x| x == b"PK\x03\x04"),
        "no zip inside in the clear"
    );
    assert!(!bytes.windows(16).any(|x| x == b"top-secret-value"));

    // Another site that calls itself hq, with its own key: cannot open it; told why.
    berth()
        .args(["init", "central"])
        .arg(w.p("impostor"))
        .args(["--name", "hq", "--schema"])
        .arg(w.p("s.sql"))
        .assert()
        .success();
    let d = dir_with(&w, "to-impostor", &sealed, &bytes);
    berth()
        .args(["dock", "--download-only", "--site"])
        .arg(w.p("impostor"))
        .arg("--via")
        .arg(&d)
        .assert()
        .code(3)
        .stdout(
            predicates::str::contains("quarantined")
                .and(predicates::str::contains("sealed to another recipient")),
        );
    let why = fs::read_to_string(
        w.p("impostor/quarantine")
            .join(format!("{}.reason.txt", name(&sealed))),
    )
    .unwrap();
    assert!(why.contains("sealed to another recipient"), "{why}");

    // Tampered ciphertext: refused whole, nothing applied.
    let mut bad = bytes.clone();
    let at = bad.len() - 40;
    bad[at] ^= 0x01;
    let d = dir_with(&w, "tampered", &sealed, &bad);
    // Just written, it may still be arriving: left where it is, and said so.
    berth()
        .args(["dock", "--download-only", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(&d)
        .assert()
        .success()
        .stdout(predicates::str::contains("waiting"));
    assert!(d.join(name(&sealed)).exists());
    // Unchanged past the grace time: quarantined, reported, exit 3.
    fs::File::options()
        .write(true)
        .open(d.join(name(&sealed)))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(300))
        .unwrap();
    berth()
        .args(["dock", "--download-only", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(&d)
        .assert()
        .code(3)
        .stdout(predicates::str::contains("quarantined"));
    let why = fs::read_to_string(
        w.p("hq/quarantine")
            .join(format!("{}.reason.txt", name(&sealed))),
    )
    .unwrap();
    assert!(why.contains("damaged or was tampered"), "{why}");
    assert_eq!(w.hq("SELECT COUNT(*) FROM item"), "0");
    assert!(
        files(&w.p("hq/spool"))
            .iter()
            .all(|f| !f.ends_with(".berth.zip"))
    );

    // The real recipient, through the watcher, by mail: opened, verified, applied.
    let inbox = w.p("inbox");
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap(), "--encrypt"]);
    berth()
        .args(["bundle", "mail"])
        .arg(&sealed)
        .args(["--to", "hq@example.org", "--out"])
        .arg(inbox.join("sealed.eml"))
        .assert()
        .success();
    watcher.wait_for("mail", |v| v["file"] == "sealed.eml");
    watcher.wait_for("applied", |_| true);
    assert_eq!(
        w.hq("SELECT v FROM item WHERE id = 'e1'"),
        "top-secret-value"
    );
    // Central's answer to alice is sealed to alice's key, and her dock opens it.
    let reply = watcher.wait_for("written", |v| {
        v["file"]
            .as_str()
            .is_some_and(|f| f.ends_with(".berth.zip.age"))
    });
    let reply = PathBuf::from(reply["file"].as_str().unwrap());
    berth()
        .args(["dock", "--site"])
        .arg(w.p("laptop"))
        .arg("--via")
        .arg(reply.parent().unwrap())
        .assert()
        .success();
    assert!(
        files(&w.p("laptop/archive"))
            .iter()
            .any(|f| f.starts_with("hq_to_alice_"))
    );
    assert!(files(&w.p("laptop/quarantine")).is_empty());
}

#[test]
fn a_revoked_nodes_bundles_are_refused_from_then_on_and_it_gets_nothing_more() {
    let w = Pair::new();
    let before = w.node_bundle("INSERT INTO item VALUES('r1', 'before', NULL)");
    berth()
        .args(["node", "revoke", "alice", "--site"])
        .arg(w.p("hq"))
        .assert()
        .success()
        .stdout(predicates::str::contains("revoked node alice"));
    berth()
        .args(["node", "revoke", "alice", "--site"])
        .arg(w.p("hq"))
        .assert()
        .success()
        .stdout(predicates::str::contains("already revoked"));
    // Signed before the revocation, arriving after: refused all the same (stated policy).
    let out = berth()
        .args(["dock", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(w.p("side"))
        .assert()
        .code(3)
        .get_output()
        .stdout
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("quarantined"));
    let why = fs::read_to_string(
        w.p("hq/quarantine")
            .join(format!("{}.reason.txt", name(&before))),
    )
    .unwrap();
    assert!(
        why.contains("unknown-signer") || why.contains("not trusted") || why.contains("signer"),
        "{why}"
    );
    assert_eq!(w.hq("SELECT COUNT(*) FROM item"), "0");
    // Central writes nothing more for alice.
    exec(
        &w.p("hq/data.db"),
        "INSERT INTO item VALUES('h', 'for everyone', NULL)",
    );
    berth()
        .args(["dock", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(w.p("usb"))
        .assert()
        .success();
    assert!(
        files(&w.p("usb"))
            .iter()
            .all(|f| !f.starts_with("hq_to_alice_")),
        "{:?}",
        files(&w.p("usb"))
    );
    berth()
        .args(["node", "revoke", "nobody", "--site"])
        .arg(w.p("hq"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("nobody"));
}

/// The sequence numbers of hq's bundles to alice waiting in `dir`.
fn to_alice(dir: &Path) -> Vec<u64> {
    files(dir)
        .iter()
        .filter_map(|f| berth_bundle::naming::parse_bundle_file_name(f))
        .filter(|(from, to, _)| from == "hq" && to == "alice")
        .map(|(_, _, seq)| seq)
        .collect()
}

/// A stolen laptop's name is given to its replacement: the new machine gets the name's
/// rows, its writes arrive and central's reach it; nothing signed by the revoked key is
/// taken, the revoked key is never registered again, and nothing central wrote to it (its
/// extract, its stream) is applied by the new machine.
#[test]
fn a_revoked_name_is_enrolled_again_with_a_new_key_and_the_old_one_stays_out() {
    let w = Pair::new();
    let dock = |site: &str, via: &str| crate::support::dock(&w.p(site), &w.p(via));
    let laptop = w.p("laptop/data.db");
    let hq = w.p("hq/data.db");
    exec(
        &laptop,
        "INSERT INTO item VALUES('a1', 'alice before the theft', NULL)",
    );
    dock("laptop", "usb").success();
    dock("hq", "usb").success();
    exec(
        &hq,
        "INSERT INTO item VALUES('h1', 'central, not yet at alice', NULL)",
    );
    dock("hq", "usb").success();
    let written = to_alice(&w.p("usb"));
    assert!(!written.is_empty(), "{:?}", files(&w.p("usb")));
    // Kept aside, as a copy on another stick would be: the old extract and stream.
    fs::create_dir_all(w.p("stick")).unwrap();
    for f in files(&w.p("laptop/archive"))
        .into_iter()
        .chain(files(&w.p("usb")))
        .filter(|f| f.starts_with("hq_to_alice_"))
    {
        let from = if w.p("usb").join(&f).exists() {
            "usb"
        } else {
            "laptop/archive"
        };
        fs::copy(w.p(from).join(&f), w.p("stick").join(&f)).unwrap();
    }
    berth()
        .args(["node", "revoke", "alice", "--site"])
        .arg(w.p("hq"))
        .assert()
        .success()
        .stdout(predicates::str::contains("berth node add alice"));
    exec(
        &hq,
        "INSERT INTO item VALUES('h2', 'central, after the revocation', NULL)",
    );
    // Whoever holds the stolen laptop writes, docks, and asks to be enrolled again.
    exec(&laptop, "INSERT INTO item VALUES('t1', 'the thief', NULL)");
    dock("laptop", "usb").success();
    let site = berth_engine::site::Site::open(&w.p("laptop")).unwrap();
    let again = berth_engine::enroll::write_request(&site, &w.p("inbox2")).unwrap();
    drop(site);
    berth()
        .args(["node", "add", "alice", "--site"])
        .arg(w.p("hq"))
        .arg("--request")
        .arg(&again)
        .arg("--out")
        .arg(w.p("inbox2"))
        .assert()
        .failure()
        .stderr(predicates::str::contains("which was revoked"));
    // The replacement machine.
    w.enroll("laptop2", "usb")
        .success()
        .stdout(predicates::str::contains("replaces the revoked key"));
    let waiting = to_alice(&w.p("usb"));
    assert_eq!(
        waiting.len(),
        1,
        "only the new extract waits: {:?}",
        files(&w.p("usb"))
    );
    assert!(
        waiting[0] > *written.iter().max().unwrap(),
        "the new extract {waiting:?} numbers after what the revoked key was sent {written:?}"
    );
    // The old extract reaches the new machine first: refused, nothing applied.
    let old_extract = files(&w.p("stick"))
        .into_iter()
        .filter(|f| berth_bundle::naming::parse_bundle_file_name(f).is_some_and(|(_, _, s)| s == 1))
        .collect::<Vec<_>>();
    assert_eq!(old_extract.len(), 1, "{:?}", files(&w.p("stick")));
    fs::create_dir_all(w.p("stick1")).unwrap();
    fs::copy(
        w.p("stick").join(&old_extract[0]),
        w.p("stick1").join(&old_extract[0]),
    )
    .unwrap();
    dock("laptop2", "stick1").code(3);
    let why = fs::read_to_string(
        w.p("laptop2/quarantine")
            .join(format!("{}.reason.txt", old_extract[0])),
    )
    .unwrap();
    assert!(why.contains("not this site's key"), "{why}");
    // Then its own: the name's rows as central has them, the thief's write not among them.
    dock("laptop2", "usb").success();
    let laptop2 = w.p("laptop2/data.db");
    assert_eq!(
        query(
            &laptop2,
            "SELECT group_concat(id, ',') FROM (SELECT id FROM item ORDER BY id)"
        ),
        "a1,h1,h2"
    );
    // The revoked key's stream, delivered late: duplicates, nothing changes.
    dock("laptop2", "stick").success();
    assert_eq!(query(&laptop2, "SELECT COUNT(*) FROM item"), "3");
    // Central refuses the thief's bundle, and takes the new machine's writes.
    exec(
        &laptop2,
        "INSERT INTO item VALUES('n1', 'alice on the new machine', NULL)",
    );
    exec(
        &laptop2,
        "UPDATE item SET v = 'edited on the new machine' WHERE id = 'a1'",
    );
    dock("laptop2", "usb").success();
    dock("hq", "usb").code(3);
    assert_eq!(
        query(
            &hq,
            "SELECT group_concat(id || '=' || v, ';') FROM (SELECT * FROM item ORDER BY id)"
        ),
        "a1=edited on the new machine;h1=central, not yet at alice;h2=central, after the revocation;n1=alice on the new machine"
    );
    exec(&hq, "UPDATE item SET v = 'central again' WHERE id = 'n1'");
    dock("hq", "usb").success();
    dock("laptop2", "usb").success();
    assert_eq!(
        query(&laptop2, "SELECT v FROM item WHERE id = 'n1'"),
        "central again"
    );
    assert_eq!(
        query(&laptop2, "SELECT COUNT(*) FROM item WHERE id = 't1'"),
        "0"
    );
}

#[test]
fn a_sealed_bundle_written_slowly_into_a_watched_folder_is_taken_whole() {
    let w = Pair::new();
    let sealed =
        w.sealed_bundle("INSERT INTO item VALUES('s1', 'sealed and slow', randomblob(200000))");
    let bytes = fs::read(&sealed).unwrap();
    assert!(bytes.len() > 3 * 65536, "several age chunks");
    let inbox = w.p("inbox");
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap(), "--grace", "120"]);
    let dest = inbox.join(name(&sealed));
    let mut f = fs::File::create(&dest).unwrap();
    // Cut a little past the first 64 KiB chunk: what is there authenticates, but no chunk is
    // marked as the last one, so the file is unfinished.
    let cut = 65536 + 16 + 200;
    f.write_all(&bytes[..cut]).unwrap();
    f.sync_all().unwrap();
    watcher.file_event("waiting", &name(&sealed));
    watcher.rescanned(&inbox);
    assert!(dest.exists(), "taken before it was complete");
    assert!(files(&w.p("hq/quarantine")).is_empty());
    f.write_all(&bytes[cut..]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    watcher.file_event("applied", "alice_to_hq_0000000001.berth.zip");
    assert_eq!(
        w.hq("SELECT v FROM item WHERE id = 's1'"),
        "sealed and slow"
    );
}

#[test]
fn a_bundle_sealed_by_the_age_tool_to_the_sites_recipient_is_opened_and_applied() {
    need_age();
    let w = Pair::new();
    let plain = w.node_bundle("INSERT INTO item VALUES('x1', 'sealed by age(1)', NULL)");
    let out = berth()
        .args(["keys", "show", "--json"])
        .arg(w.p("hq"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let recipient = v["age_recipient"].as_str().unwrap().to_string();
    assert!(recipient.starts_with("age1"));
    let d = w.p("from-age");
    fs::create_dir_all(&d).unwrap();
    let sealed = d.join(format!("{}.age", name(&plain)));
    let ok = std::process::Command::new("age")
        .args(["-r", &recipient, "-o"])
        .arg(&sealed)
        .arg(&plain)
        .status()
        .unwrap();
    assert!(ok.success());
    berth()
        .args(["dock", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(&sealed)
        .assert()
        .success();
    assert_eq!(
        w.hq("SELECT v FROM item WHERE id = 'x1'"),
        "sealed by age(1)"
    );
}

/// `keys show --age-identity` prints what the age tool needs to open a bundle sealed to the
/// site, as the README promises.
#[test]
fn the_age_tool_opens_a_sealed_bundle_with_the_sites_age_identity() {
    need_age();
    let w = Pair::new();
    let sealed = w.sealed_bundle("INSERT INTO item VALUES('a1', 'for age', NULL)");
    let out = berth()
        .args(["keys", "show", "--age-identity"])
        .arg(w.p("hq"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap();
    assert!(id.starts_with("AGE-SECRET-KEY-1"), "{id}");
    fs::write(w.p("id.txt"), &id).unwrap();
    let plain = w.p("opened.berth.zip");
    let ok = std::process::Command::new("age")
        .args(["-d", "-i"])
        .arg(w.p("id.txt"))
        .arg("-o")
        .arg(&plain)
        .arg(&sealed)
        .status()
        .unwrap();
    assert!(ok.success());
    berth()
        .args(["bundle", "inspect"])
        .arg(&plain)
        .assert()
        .success()
        .stdout(predicates::str::contains("sender     alice"));
}

/// Fails the test, saying why, when the age tool is not installed.
fn need_age() {
    assert!(
        std::process::Command::new("age")
            .arg("--version")
            .output()
            .is_ok(),
        "this test needs the age tool, which is not installed; .ci/run installs it"
    );
}

fn key_id(dir: &Path) -> String {
    let out = berth()
        .args(["keys", "show", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["key_id"].as_str().unwrap().to_string()
}

#[test]
fn a_node_offline_through_two_rotations_follows_the_chain_and_refuses_the_retired_key() {
    let w = Pair::new();
    let k0 = key_id(&w.p("hq"));
    // A bundle central signed with its first key, kept aside (a stale copy on some stick).
    exec(
        &w.p("hq/data.db"),
        "INSERT INTO item VALUES('h0', 'before', NULL)",
    );
    berth()
        .args(["dock", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(w.p("usb"))
        .assert()
        .success();
    let old = files(&w.p("usb"))
        .into_iter()
        .find(|f| f.starts_with("hq_to_alice_"))
        .unwrap();
    fs::rename(w.p("usb").join(&old), w.p("inbox").join(&old)).unwrap();
    for _ in 0..2 {
        berth()
            .args(["keys", "rotate", "--site"])
            .arg(w.p("hq"))
            .assert()
            .success()
            .stdout(predicates::str::contains("central key rotated"));
    }
    let k2 = key_id(&w.p("hq"));
    assert_ne!(k0, k2);
    // Alice, not yet told, seals her change to the key she knows (k0): central still opens it.
    exec(
        &w.p("laptop/data.db"),
        "INSERT INTO item VALUES('n1', 'sealed to k0', NULL)",
    );
    berth()
        .args(["dock", "--upload-only", "--encrypt", "--site"])
        .arg(w.p("laptop"))
        .arg("--via")
        .arg(w.p("usb"))
        .assert()
        .success();
    exec(
        &w.p("hq/data.db"),
        "INSERT INTO item VALUES('h1', 'after', NULL)",
    );
    berth()
        .args(["dock", "--site"])
        .arg(w.p("hq"))
        .arg("--via")
        .arg(w.p("usb"))
        .assert()
        .success();
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 'n1'"), "sealed to k0");
    // Central's new bundle is signed by k2 and carries k0 -> k1 -> k2: alice follows it.
    berth()
        .args(["dock", "--site"])
        .arg(w.p("laptop"))
        .arg("--via")
        .arg(w.p("usb"))
        .assert()
        .success();
    let node = w.p("laptop/data.db");
    assert_eq!(query(&node, "SELECT v FROM item WHERE id = 'h1'"), "after");
    assert_eq!(query(&node, "SELECT v FROM item WHERE id = 'h0'"), "before");
    let out = berth()
        .args(["status", "--json", "--site"])
        .arg(w.p("laptop"))
        .output()
        .unwrap();
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["peers"][0]["key_id"], k2.as_str(), "{st}");
    // The stale bundle signed by the retired key k0 is refused now.
    berth()
        .args(["dock", "--download-only", "--site"])
        .arg(w.p("laptop"))
        .arg("--via")
        .arg(w.p("inbox"))
        .assert()
        .code(3);
    let why =
        fs::read_to_string(w.p("laptop/quarantine").join(format!("{old}.reason.txt"))).unwrap();
    assert!(
        why.contains(k0.trim_start_matches("ed25519:")) || why.contains("signer"),
        "{why}"
    );
}

#[test]
fn a_sealed_initial_extract_opens_only_at_its_node() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::write(r.join("s.sql"), SCHEMA).unwrap();
    fs::write(
        r.join("d.sql"),
        "INSERT INTO item VALUES('secret-row', 'payroll', NULL);",
    )
    .unwrap();
    fs::create_dir_all(r.join("usb")).unwrap();
    berth()
        .args(["init", "central"])
        .arg(r.join("hq"))
        .arg("--schema")
        .arg(r.join("s.sql"))
        .arg("--data")
        .arg(r.join("d.sql"))
        .assert()
        .success();
    berth()
        .args(["init", "node"])
        .arg(r.join("laptop"))
        .args(["--name", "alice", "--via"])
        .arg(r.join("usb"))
        .assert()
        .success();
    berth()
        .args(["node", "add", "alice", "--encrypt", "--site"])
        .arg(r.join("hq"))
        .arg("--via")
        .arg(r.join("usb"))
        .assert()
        .success();
    let sealed = r.join("usb/hq_to_alice_0000000001.berth.zip.age");
    let bytes = fs::read(&sealed).unwrap();
    assert!(!bytes.windows(7).any(|x| x == b"payroll"));
    assert!(!r.join("usb/hq_to_alice_0000000001.berth.zip").exists());
    berth()
        .args(["dock", "--site"])
        .arg(r.join("laptop"))
        .arg("--via")
        .arg(r.join("usb"))
        .assert()
        .success();
    assert_eq!(
        query(
            &r.join("laptop/data.db"),
            "SELECT v FROM item WHERE id = 'secret-row'"
        ),
        "payroll"
    );
}

/// Issue 16 part 1 at the watcher: a tool dropped one of central's capture triggers while
/// the watcher runs. A node's bundle that arrives is not applied (it would be merged with
/// capture broken, so what it sets off would never reach the nodes): the watcher reports
/// the error naming the table and what to do, and the bundle waits in the spool. Once
/// `berth capture restore` put the trigger back, the next bundle's cycle applies both.
#[test]
fn the_watcher_applies_nothing_while_capture_is_broken() {
    let w = Pair::new();
    let b1 = w.node_bundle("INSERT INTO item VALUES('g1', 'first', NULL)");
    let inbox = w.p("inbox");
    let mut watcher = w.watch("hq", &["--via", inbox.to_str().unwrap()]);
    exec(&w.p("hq/data.db"), "DROP TRIGGER berth_upd_item;");
    fs::copy(&b1, inbox.join(name(&b1))).unwrap();
    let e = watcher.wait_for("error", |v| {
        v["detail"].as_str().is_some_and(|d| d.contains("item"))
    });
    let detail = e["detail"].as_str().unwrap();
    assert!(detail.contains("capture restore"), "{detail}");
    assert_eq!(w.hq("SELECT COUNT(*) FROM item WHERE id = 'g1'"), "0");
    assert_eq!(watcher.count("applied", &name(&b1)), 0);
    berth()
        .args(["capture", "restore", "--site"])
        .arg(w.p("hq"))
        .assert()
        .success();
    let b2 = w.node_bundle("INSERT INTO item VALUES('g2', 'second', NULL)");
    fs::copy(&b2, inbox.join(name(&b2))).unwrap();
    watcher.file_event("applied", &name(&b2));
    assert_eq!(
        w.hq("SELECT COUNT(*) FROM item WHERE id IN ('g1', 'g2')"),
        "2"
    );
}

/// Issue 19, broken 4: the help's own example, `--via maildir:~/Maildir`, watches the
/// Maildir in the home folder (no shell expands `~` after `maildir:`), and a Maildir that
/// is not there is an error that says so, instead of a watcher that watches nothing.
#[test]
fn maildir_in_the_home_folder_is_watched_and_a_missing_one_is_an_error() {
    let w = Pair::new();
    berth()
        .args(["watch", "--site"])
        .arg(w.p("hq"))
        .args(["--via", "maildir:~/NoSuchMaildir", "--out"])
        .arg(w.p("inbox"))
        .env("HOME", w.p(""))
        .assert()
        .failure()
        .stderr(predicates::str::contains("NoSuchMaildir is not a Maildir"));
    let maildir = w.p("Maildir");
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let inbox = w.p("inbox");
    let mut watcher = Watcher::start_env(
        &w.p("hq"),
        &[
            "--via",
            "maildir:~/Maildir",
            "--out",
            inbox.to_str().unwrap(),
        ],
        &[("HOME", w.p("").as_path())],
    );
    let b = w.node_bundle("INSERT INTO item VALUES('h1', 'home maildir', NULL)");
    mail_into_maildir(&w, &b, &maildir, "1700000001.M1P1.berth-test");
    watcher.file_event("applied", &name(&b));
    assert_eq!(w.hq("SELECT v FROM item WHERE id = 'h1'"), "home maildir");
}
