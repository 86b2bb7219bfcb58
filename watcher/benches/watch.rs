#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! One large bundle through the watcher against `dock` on the same bundle (issue 7).
//!
//! A node writes `BERTH_BENCH_MB` rows of 1 MiB random blobs (default 256) and uploads them in
//! one bundle. Two identical copies of central then take that bundle:
//! - **floor**: `dock` (download only) with the bundle already in the folder, as
//!   `berth dock --download-only` does;
//! - **watcher**: `watch::run` on a folder; timed from the bundle's rename into the folder to
//!   the watcher's `applied` event, so it includes the settle time (`settle`, 1 s as in the
//!   binary's default) once.
//!
//! Target: watcher <= 1.2x the floor's time. `BERTH_BENCH_PAIRS` (default 3) interleaved
//! pairs, each on fresh copies of central (the copy is not timed); the medians are printed.
//! `docs/bench-watch-throughput.sh` measures the same through the real binary (1 GiB), and
//! `docs/bench-watch.sh` the latency of small drops.
//!
//! `cargo bench -p berth-watcher --bench watch`. Not criterion: one pair at the default size
//! takes about ten seconds, and criterion's minimum of ten samples per side adds nothing the
//! interleaved pairs do not already show.

use berth_engine::dock::Disposition;
use berth_engine::dock::{DockOptions, dock};
use berth_engine::enroll;
use berth_engine::site::{CentralInit, Site};
use berth_watcher::watch::{self, Source, WatchOptions};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// The engine's bench helpers (folder copies, size knobs), shared rather than copied.
#[path = "../../engine/benches/support/mod.rs"]
mod support;
use support::{copy_dir, env};

/// Central `hq` (template), and the node's one large bundle.
fn setup(root: &Path, mb: u64) -> (PathBuf, PathBuf) {
    let schema = root.join("schema.sql");
    fs::write(
        &schema,
        "CREATE TABLE item(id TEXT PRIMARY KEY, v TEXT, b BLOB);",
    )
    .unwrap();
    let hq_dir = root.join("hq");
    let (mut hq, _) = Site::init_central(&CentralInit {
        dir: &hq_dir,
        name: Some("hq"),
        schema: &schema,
        docking: None,
        data: None,
    })
    .unwrap();
    let usb = root.join("usb");
    fs::create_dir_all(&usb).unwrap();
    let laptop_dir = root.join("laptop");
    let laptop = Site::init_node(&laptop_dir, "alice").unwrap();
    let req = enroll::write_request(&laptop, &usb).unwrap();
    enroll::add_node(&mut hq, "alice", &req, &BTreeMap::new(), &usb).unwrap();
    fs::remove_file(&req).unwrap();
    drop((hq, laptop));
    let mut laptop = Site::open(&laptop_dir).unwrap();
    dock(&mut laptop, &usb, &DockOptions::default()).unwrap();
    drop(laptop);
    let c = rusqlite::Connection::open(laptop_dir.join("data.db")).unwrap();
    c.execute(
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ?1)
         INSERT INTO item SELECT 'k' || i, 'v', randomblob(1048576) FROM c",
        [mb as i64],
    )
    .unwrap();
    drop(c);
    let side = root.join("side");
    fs::create_dir_all(&side).unwrap();
    let mut laptop = Site::open(&laptop_dir).unwrap();
    let up = DockOptions {
        download: false,
        ..DockOptions::default()
    };
    let r = dock(&mut laptop, &side, &up).unwrap();
    let bundle = r.written.into_iter().next().unwrap();
    // Central has taken the enrollment acknowledgement; the node's bundle is all that is left.
    let mut hq = Site::open(&hq_dir).unwrap();
    dock(&mut hq, &usb, &DockOptions::default()).unwrap();
    (hq_dir, bundle)
}

fn rows(site: &Path) -> i64 {
    let c = rusqlite::Connection::open(site.join("data.db")).unwrap();
    c.query_row("SELECT count(*) FROM item", [], |r| r.get(0))
        .unwrap()
}

fn run_dock(root: &Path, template: &Path, bundle: &Path, mb: u64) -> Duration {
    let site = root.join("hq-dock");
    let via = root.join("dock-in");
    let _ = fs::remove_dir_all(&site);
    let _ = fs::remove_dir_all(&via);
    copy_dir(template, &site);
    fs::create_dir_all(&via).unwrap();
    fs::copy(bundle, via.join(bundle.file_name().unwrap())).unwrap();
    let start = Instant::now();
    let mut s = Site::open(&site).unwrap();
    let opts = DockOptions {
        upload: false,
        ..DockOptions::default()
    };
    let r = dock(&mut s, &via, &opts).unwrap();
    let took = start.elapsed();
    assert_eq!(r.count(Disposition::Applied), 1, "{r:?}");
    drop(s);
    assert_eq!(rows(&site), mb as i64);
    took
}

fn run_watch(root: &Path, template: &Path, bundle: &Path, mb: u64) -> Duration {
    let site = root.join("hq-watch");
    let via = root.join("watch-in");
    let _ = fs::remove_dir_all(&site);
    let _ = fs::remove_dir_all(&via);
    copy_dir(template, &site);
    fs::create_dir_all(&via).unwrap();
    let name = bundle.file_name().unwrap();
    // Copied beside the folder first (same file system), so the timed part starts with a
    // rename, as a sync tool finishing its download does.
    let staged = root.join("staged.tmp");
    fs::copy(bundle, &staged).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<&'static str>();
    let opts = WatchOptions::new(site.clone(), vec![Source::Folder(via.clone())]);
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            watch::run(&opts, &stop, &mut |e| {
                let _ = tx.send(e.event.as_str());
            })
            .unwrap();
        })
    };
    // Started: the first event.
    loop {
        if rx.recv().unwrap() == "started" {
            break;
        }
    }
    let start = Instant::now();
    fs::rename(&staged, via.join(name)).unwrap();
    loop {
        match rx.recv_timeout(Duration::from_secs(600)).unwrap() {
            "applied" => break,
            "held" | "quarantined" | "error" => panic!("the watcher did not apply the bundle"),
            _ => {}
        }
    }
    let took = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap();
    assert_eq!(rows(&site), mb as i64);
    took
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo test --benches` runs bench targets with `--test`: nothing to check there.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    let mb = env("BERTH_BENCH_MB", 256);
    let pairs = env("BERTH_BENCH_PAIRS", 3).max(1);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (template, bundle) = setup(root, mb);
    let size = fs::metadata(&bundle).unwrap().len();
    let (mut docks, mut watches) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        // Alternate which side meets the other's dirty pages first.
        if i % 2 == 0 {
            docks.push(run_dock(root, &template, &bundle, mb).as_secs_f64());
            watches.push(run_watch(root, &template, &bundle, mb).as_secs_f64());
        } else {
            watches.push(run_watch(root, &template, &bundle, mb).as_secs_f64());
            docks.push(run_dock(root, &template, &bundle, mb).as_secs_f64());
        }
        println!(
            "watch/pair {i}: dock {:.2} s, watcher {:.2} s",
            docks[i as usize], watches[i as usize]
        );
    }
    let (d, w) = (median(docks), median(watches));
    println!(
        "watch: bundle {} MiB ({mb} rows of 1 MiB): dock {d:.2} s, watcher {w:.2} s (incl. 1 s settle), watcher/dock {:.2}x (target <= 1.2x; {pairs} interleaved pairs, medians)",
        size / 1_048_576,
        w / d
    );
}
