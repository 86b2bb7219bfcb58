#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Peak memory of a dock (issue 20, item 3): a node makes N row changes with plain SQL, docks
//! (writes one bundle), and central docks that one bundle. Each dock runs in a child process
//! (this bench binary again, `BERTH_BENCH_MEM_CHILD` selecting what it does) that prints its
//! own peak resident memory (`VmHWM`, Linux). The floor, in the same run: the same child
//! opening the same site and reading its status, nothing else (what the process costs without
//! the bundle). Target: the dock's peak well under 100 MB at 200k and at 2M changes.
//!
//! The scenario is built through the public API, as `engine/benches/merge.rs` builds it:
//! central with a table `item` seeded with N/5 rows, a node enrolled and its extract applied,
//! then at the node N/5 updates of those rows and 4N/5 inserts (one SQL statement each, through
//! the capture triggers).
//!
//! Then central's routing pass over the N changes it merged (`route::run::route`, as its next
//! dock runs it) and that dock (upload only: now only the nodes' bundles) are measured the
//! same way, against central's floor.
//!
//! **With a docking model** (`BERTH_BENCH_MEM_MODEL=sales`): central has the sales sample's
//! schema and docking model, 100 opportunities of employee E1 (the first 10 shared with E2) and
//! N/5 activities on them; node `alice` (E1) makes N/5 updates of those activities and 4N/5
//! inserts of new ones, and a second node `bob` (E2) is enrolled too, so the routing pass
//! sends him the changes on the opportunities he sees and keeps what each node holds, row by
//! row (the router's holdings), for every change.
//!
//! `cargo bench -p berth-engine --bench memory`; `BERTH_BENCH_MEM_CHANGES=200000,2000000` the
//! sizes (default 200000; 2M builds in several minutes).

use berth_engine::dock::Disposition;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use berth_engine::dock::{DockOptions, dock};
use berth_engine::enroll;
use berth_engine::site::{CentralInit, Site};
use criterion::Criterion;

#[path = "support/mod.rs"]
mod support;

const CHILD: &str = "BERTH_BENCH_MEM_CHILD";
const SCHEMA: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, n INTEGER, v TEXT);\n";
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/sales");

/// Whether the scenario has the sales docking model (`BERTH_BENCH_MEM_MODEL=sales`).
fn with_model() -> bool {
    std::env::var("BERTH_BENCH_MEM_MODEL").is_ok_and(|v| v == "sales")
}

/// The sales scenario's rows at central: two employees, 100 opportunities of E1's (the first
/// 10 shared with E2) on 100 accounts, and `acts` activities on them.
fn sales_data(acts: usize) -> String {
    format!(
        "INSERT INTO employee(id, name) VALUES ('E1', 'Alice'), ('E2', 'Bob');
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < 100)
         INSERT INTO account(id, name, region) SELECT 'A' || i, 'Account ' || i, 'north' FROM c;
         INSERT INTO opty(id, account_id, name, amount) SELECT 'O' || substr(id, 2), id, 'Deal ' || id, 1 FROM account;
         INSERT INTO opty_emp(opty_id, emp_id, role) SELECT id, 'E1', 'owner' FROM opty;
         INSERT INTO opty_emp(opty_id, emp_id, role)
           SELECT id, 'E2', 'help' FROM opty WHERE CAST(substr(id, 2) AS INTEGER) < 10;
         WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {acts})
         INSERT INTO activity(id, opty_id, kind, note)
           SELECT printf('%016x', i), 'O' || (i % 100), 'call', 'seed activity ' || i FROM c;\n"
    )
}

/// Enrolls node `name` (employee `employee`) at central and applies its extract.
fn enrolled(hq: &mut Site, root: &Path, name: &str, employee: &str, via: &Path) -> Site {
    let mut node = Site::init_node(&root.join(name), name).unwrap();
    let request = enroll::write_request(&node, via).unwrap();
    let attrs = std::collections::BTreeMap::from([("employee".to_string(), employee.to_string())]);
    enroll::add_node(hq, name, &request, &attrs, via).unwrap();
    fs::remove_file(&request).unwrap();
    let first = DockOptions {
        upload: false,
        ..DockOptions::default()
    };
    let report = dock(&mut node, via, &first).unwrap();
    assert_eq!(
        report.count(Disposition::Applied),
        1,
        "extract applied: {report:?}"
    );
    node
}

/// `VmHWM` of this process in kB (Linux), else 0.
fn peak_kb() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Child mode: `<what> <site dir> <exchange folder>`; prints `peak_kb=<n>` and a summary.
fn child(spec: &str) {
    let mut parts = spec.splitn(3, '\u{1f}');
    let (what, dir, via) = (
        parts.next().unwrap(),
        PathBuf::from(parts.next().unwrap()),
        PathBuf::from(parts.next().unwrap()),
    );
    let mut site = Site::open(&dir).unwrap();
    let detail = match what {
        "floor" => {
            let s = berth_engine::status::status(&site).unwrap();
            format!("status of {}: {} peers", site.name(), s.peers.len())
        }
        "upload" | "download" => {
            let opts = DockOptions {
                upload: what == "upload",
                download: what == "download",
                ..DockOptions::default()
            };
            let report = dock(&mut site, &via, &opts).unwrap();
            if what == "download" {
                let [incoming] = report.incoming.as_slice() else {
                    panic!("one incoming bundle expected: {report:?}");
                };
                assert_eq!(incoming.outcome, Disposition::Applied, "{incoming:?}");
                format!("{} changes applied", incoming.stats.applied)
            } else {
                format!("{} written", report.written.len())
            }
        }
        "route" => {
            // The routing pass alone, as central's dock runs it (then nothing is left to
            // route: the next upload dock only writes the bundles).
            let catalog = site.catalog().unwrap();
            let model = site.docking_model().unwrap();
            let plan = berth_engine::route::router::plan_for(&site.conn, model.as_ref()).unwrap();
            let routed = berth_engine::route::run::route(
                &site.conn,
                &catalog,
                plan.as_ref(),
                &site.config.routing,
                &None,
            )
            .unwrap();
            format!(
                "{} entries routed in {} batches",
                routed.entries, routed.batches
            )
        }
        other => panic!("unknown child mode {other}"),
    };
    println!("peak_kb={}", peak_kb());
    println!("{detail}");
}

/// Runs this binary in child mode; its peak in kB and the wall time.
fn measure(what: &str, dir: &Path, via: &Path) -> (u64, f64) {
    let spec = format!("{what}\u{1f}{}\u{1f}{}", dir.display(), via.display());
    let t = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD, spec)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child {what} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kb = stdout
        .lines()
        .find_map(|l| l.strip_prefix("peak_kb="))
        .and_then(|v| v.parse().ok())
        .unwrap();
    (kb, secs)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Builds central and an enrolled node whose log holds `n` changes; returns (central, node, via).
fn world(root: &Path, n: usize) -> (PathBuf, PathBuf, PathBuf) {
    let updates = n / 5;
    let inserts = n - updates;
    let model = with_model();
    let (schema, data, via) = (
        root.join("schema.sql"),
        root.join("data.sql"),
        root.join("via"),
    );
    if model {
        fs::copy(Path::new(SAMPLE).join("schema.sql"), &schema).unwrap();
        fs::write(&data, sales_data(updates)).unwrap();
    } else {
        fs::write(&schema, SCHEMA).unwrap();
        fs::write(
            &data,
            format!(
                "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {updates})
                 INSERT INTO item(id, n, v) SELECT printf('%016x', i), i, 'seed row ' || i FROM c;\n"
            ),
        )
        .unwrap();
    }
    let docking = Path::new(SAMPLE).join("docking.toml");
    fs::create_dir_all(&via).unwrap();
    let hq_dir = root.join("hq");
    let (mut hq, _warnings) = Site::init_central(&CentralInit {
        dir: &hq_dir,
        name: Some("hq"),
        schema: &schema,
        docking: model.then_some(docking.as_path()),
        data: Some(&data),
    })
    .unwrap();
    let node = enrolled(&mut hq, root, "alice", "E1", &via);
    if model {
        enrolled(&mut hq, root, "bob", "E2", &via);
    }
    let t = Instant::now();
    let sql = if model {
        format!(
            "BEGIN;
             WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {updates})
             UPDATE activity SET note = 'activity ' || i || ' round 1: pallet of ' || (i % 97)
               || ' boxes, dock ' || (i % 13) FROM c WHERE activity.id = printf('%016x', c.i);
             WITH RECURSIVE c(i) AS (SELECT {updates} UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {n})
             INSERT INTO activity(id, opty_id, kind, note) SELECT printf('%016x', i), 'O' || (i % 100),
               'visit', 'activity ' || i || ' round 0: pallet of ' || (i % 97) || ' boxes, dock '
               || (i % 13) FROM c;
             COMMIT;"
        )
    } else {
        format!(
            "BEGIN;
             WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {updates})
             UPDATE item SET n = i * 2 + 1, v = 'item ' || i || ' round 1: pallet of ' || (i % 97)
               || ' boxes, dock ' || (i % 13) FROM c WHERE item.id = printf('%016x', c.i);
             WITH RECURSIVE c(i) AS (SELECT {updates} UNION ALL SELECT i + 1 FROM c WHERE i + 1 < {n})
             INSERT INTO item(id, n, v) SELECT printf('%016x', i), i, 'item ' || i
               || ' round 0: pallet of ' || (i % 97) || ' boxes, dock ' || (i % 13) FROM c;
             COMMIT;"
        )
    };
    node.conn.execute_batch(&sql).unwrap();
    eprintln!(
        "node wrote {inserts} inserts + {updates} updates in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    (hq_dir, root.join("alice"), via)
}

fn run(n: usize) {
    let root = tempfile::tempdir().unwrap();
    let (hq, node, via) = world(root.path(), n);
    let (node_floor, _) = measure("floor", &node, &via);
    let (node_peak, node_secs) = measure("upload", &node, &via);
    let bundle: u64 = fs::read_dir(&via)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let (hq_floor, _) = measure("floor", &hq, &via);
    let (hq_peak, hq_secs) = measure("download", &hq, &via);
    // Central's next dock routes the N changes it merged (to no one else: the node's own
    // changes do not go back to it) and writes the node its acknowledgement.
    let (route_peak, route_secs) = measure("route", &hq, &via);
    let (write_peak, write_secs) = measure("upload", &hq, &via);
    println!(
        "memory/{}{n}: bundle {:.1} MB; node writing it: peak {:.1} MB ({node_secs:.1}s), floor \
         {:.1} MB, ratio {:.2}x; central docking it: peak {:.1} MB ({hq_secs:.1}s), floor {:.1} MB, \
         ratio {:.2}x; central routing them: peak {:.1} MB ({route_secs:.1}s), ratio {:.2}x; \
         central writing the nodes' bundles: peak {:.1} MB ({write_secs:.1}s), ratio {:.2}x",
        if with_model() { "sales/" } else { "" },
        bundle as f64 / 1e6,
        mb(node_peak),
        mb(node_floor),
        node_peak as f64 / node_floor.max(1) as f64,
        mb(hq_peak),
        mb(hq_floor),
        hq_peak as f64 / hq_floor.max(1) as f64,
        mb(route_peak),
        route_peak as f64 / hq_floor.max(1) as f64,
        mb(write_peak),
        write_peak as f64 / hq_floor.max(1) as f64,
    );
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let sizes = std::env::var("BERTH_BENCH_MEM_CHANGES").unwrap_or_else(|_| "200000".into());
    for n in sizes.split(',').filter_map(|s| s.trim().parse().ok()) {
        run(n);
    }
    Criterion::default().configure_from_args().final_summary();
}
