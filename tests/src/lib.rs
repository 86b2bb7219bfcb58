//! A test harness of real sites: a central and nodes in a temporary folder, exchanging real
//! bundle files through a real exchange folder, with applications writing through their own
//! SQLite connections (or the `sqlite3` shell and Python).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::{DockOptions, DockReport, dock};
use berth_engine::enroll;
use berth_engine::route::model::DockingModel;
use berth_engine::route::oracle;
use berth_engine::site::{CentralInit, Site};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The schema most stories use.
pub const SCHEMA: &str = "
CREATE TABLE account(id TEXT PRIMARY KEY, name TEXT NOT NULL, region TEXT);
CREATE TABLE opty(id TEXT PRIMARY KEY, account_id TEXT REFERENCES account(id), name TEXT, sales_rep TEXT, amount REAL, doc BLOB);
CREATE TABLE opty_emp(opty_id TEXT NOT NULL, emp TEXT NOT NULL, role TEXT, PRIMARY KEY (opty_id, emp));
";

/// One deployment: central `hq` and named nodes, one exchange folder.
#[derive(Debug)]
pub struct World {
    /// Keeps the folder alive.
    pub root: tempfile::TempDir,
    /// The exchange folder.
    pub via: PathBuf,
    /// Central's folder.
    pub central: PathBuf,
    /// Node names and folders.
    pub nodes: Vec<(String, PathBuf)>,
}

/// A site's user tables, each as sorted rows of SQL-quoted values.
pub type Dump = BTreeMap<String, Vec<String>>;

impl World {
    /// Creates central from `schema` and `data`, enrolls `nodes` and applies their extracts.
    pub fn new(schema: &str, data: &str, nodes: &[&str]) -> World {
        let nodes: Vec<(&str, BTreeMap<String, String>)> =
            nodes.iter().map(|n| (*n, BTreeMap::new())).collect();
        World::build(schema, data, None, &nodes)
    }

    /// Like [`World::new`] with a docking model and node attributes (visibility routing).
    pub fn build(
        schema: &str,
        data: &str,
        docking: Option<&str>,
        nodes: &[(&str, BTreeMap<String, String>)],
    ) -> World {
        let mut root = tempfile::tempdir().unwrap();
        if std::env::var_os("BERTH_KEEP").is_some() {
            // Keep the sites for a post-mortem (the path is printed).
            root.disable_cleanup(true);
            eprintln!("world kept at {}", root.path().display());
        }
        let via = root.path().join("exchange");
        std::fs::create_dir_all(&via).unwrap();
        let schema_path = root.path().join("schema.sql");
        std::fs::write(&schema_path, schema).unwrap();
        let data_path = root.path().join("data.sql");
        std::fs::write(&data_path, data).unwrap();
        let central = root.path().join("hq");
        let docking_path = root.path().join("docking.toml");
        if let Some(d) = docking {
            std::fs::write(&docking_path, d).unwrap();
        }
        let (site, _) = Site::init_central(&CentralInit {
            dir: &central,
            name: Some("hq"),
            schema: &schema_path,
            docking: docking.map(|_| docking_path.as_path()),
            data: Some(&data_path),
        })
        .unwrap();
        let mut hq = site;
        let mut out = Vec::new();
        for (n, attrs) in nodes {
            let dir = root.path().join(n);
            let node = Site::init_node(&dir, n).unwrap();
            let req = enroll::write_request(&node, &via).unwrap();
            enroll::add_node(&mut hq, n, &req, attrs, &via).unwrap();
            std::fs::remove_file(&req).unwrap();
            drop(node);
            out.push((n.to_string(), dir));
        }
        drop(hq);
        let w = World {
            root,
            via,
            central,
            nodes: out,
        };
        for (n, _) in nodes {
            let r = w.dock(n);
            assert_eq!(r.count("applied"), 1, "extract applies at {n}: {r:?}");
        }
        w
    }

    /// The folder of a site by name (`hq` or a node).
    pub fn dir(&self, site: &str) -> PathBuf {
        if site == "hq" {
            return self.central.clone();
        }
        self.nodes
            .iter()
            .find(|(n, _)| n == site)
            .map(|(_, d)| d.clone())
            .unwrap()
    }

    /// Opens a site (taking its lock until dropped).
    pub fn open(&self, site: &str) -> Site {
        Site::open(&self.dir(site)).unwrap()
    }

    /// A central of its own named `name` (a developer's copy, no nodes, no data) made from
    /// the world's schema file, so it starts at central's first schema version.
    pub fn schema_copy(&self, name: &str) -> Site {
        let (site, _) = Site::init_central(&CentralInit {
            dir: &self.root.path().join(name),
            name: Some(name),
            schema: &self.root.path().join("schema.sql"),
            docking: None,
            data: None,
        })
        .unwrap();
        site
    }

    /// Docks a site through the shared exchange folder.
    pub fn dock(&self, site: &str) -> DockReport {
        self.dock_with(site, &self.via, &DockOptions::default())
            .unwrap()
    }

    /// Docks a site with options and folder of choice.
    pub fn dock_with(
        &self,
        site: &str,
        via: &Path,
        opts: &DockOptions,
    ) -> berth_engine::Result<DockReport> {
        let mut s = self.open(site);
        dock(&mut s, via, opts)
    }

    /// Runs SQL at a site through a plain SQLite connection, as an application would.
    pub fn exec(&self, site: &str, sql: &str) {
        let c = Connection::open(self.dir(site).join("data.db")).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c.execute_batch(sql)
            .unwrap_or_else(|e| panic!("{site}: {sql}: {e}"));
    }

    /// Reads one value.
    pub fn value(&self, site: &str, sql: &str) -> String {
        let c = Connection::open(self.dir(site).join("data.db")).unwrap();
        c.query_row(&format!("SELECT quote(({sql}))"), [], |r| r.get(0))
            .unwrap()
    }

    /// Docks every site, central between each node, until a full round moves nothing.
    /// Returns the number of rounds.
    pub fn settle(&self) -> usize {
        let names: Vec<String> = self.nodes.iter().map(|(n, _)| n.clone()).collect();
        self.settle_in_order(&names)
    }

    /// Like [`World::settle`] with the nodes docking in the given order.
    pub fn settle_in_order(&self, order: &[String]) -> usize {
        for round in 1..=20 {
            let mut moved = 0;
            for n in order {
                let r = self.dock(n);
                if round > 17 {
                    eprintln!("not settling, round {round}, {n}: {r:?}");
                }
                moved += r.written.len() + r.count("applied");
                let r = self.dock("hq");
                if round > 17 {
                    eprintln!("not settling, round {round}, hq: {r:?}");
                }
                moved += r.written.len() + r.count("applied");
            }
            if moved == 0 {
                return round;
            }
        }
        panic!("did not settle in 20 rounds");
    }

    /// Every user table of a site, rows sorted.
    pub fn dump(&self, site: &str) -> Dump {
        dump_db(&self.dir(site).join("data.db"))
    }

    /// Asserts every node holds exactly central's rows.
    pub fn assert_converged(&self) {
        let hq = self.dump("hq");
        for (n, _) in &self.nodes {
            assert_eq!(self.dump(n), hq, "node {n} differs from central");
        }
    }

    /// Sets a table's collision policy in central's berth.toml.
    pub fn set_policy(&self, table: &str, policy: &str) {
        let cfg = self.central.join("berth.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let line = format!("[policies]\n{table} = \"{policy}\"\n");
        std::fs::write(&cfg, text.replace("[policies]\n", &line)).unwrap();
    }

    /// Asserts `node` holds exactly what the reference oracle says it should (its name and
    /// attributes as registered at central), and that central's router state agrees: its
    /// instance set (S_DOBJ_INST) and its record of the rows the node holds.
    pub fn assert_matches_oracle(&self, model: &DockingModel, node: &str) {
        let central = Connection::open(self.central.join("data.db")).unwrap();
        let attrs: String = central
            .query_row(
                "SELECT attrs FROM berth_peers WHERE name = ?1",
                [node],
                |r| r.get(0),
            )
            .unwrap();
        let who = oracle::Node {
            name: node.to_string(),
            attributes: serde_json::from_str(&attrs).unwrap(),
        };
        let replica = Connection::open(self.dir(node).join("data.db")).unwrap();
        let differences = oracle::differences(&central, model, &who, &replica).unwrap();
        assert!(
            differences.is_empty(),
            "{node} differs from the oracle: {}",
            differences
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    /// How many sequence numbers of one peer's stream a site applied more than one bundle
    /// under (a bundle applied twice; 0 is right).
    pub fn seqs_applied_twice(&self, site: &str) -> i64 {
        self.value(
            site,
            "SELECT count(*) FROM (SELECT peer, seq FROM berth_applied GROUP BY peer, seq HAVING count(*) > 1)",
        )
        .parse()
        .unwrap()
    }

    /// Number of conflicts recorded at central.
    pub fn conflicts(&self) -> i64 {
        self.value("hq", "SELECT COUNT(*) FROM berth_conflicts")
            .parse()
            .unwrap()
    }
}

/// Runs `f` for the seeds a seeded test should run: seed `$ONE` alone when that variable
/// is set (a replay), else seeds `0..$MANY` (default `default`). Each seed is announced
/// with how to replay it; a failing seed does not stop the others, and every failing seed
/// is listed at the end with its replay line (then the test fails).
pub fn for_seeds(one: &str, many: &str, default: u64, mut f: impl FnMut(u64)) {
    let only: Option<u64> = std::env::var(one).ok().and_then(|v| v.parse().ok());
    let n: u64 = std::env::var(many)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let mut failed = Vec::new();
    let seeds = only.map_or(0..n, |s| s..s + 1);
    let count = seeds.end - seeds.start;
    let started = std::time::Instant::now();
    for seed in seeds {
        eprintln!("seed {seed} (replay: {one}={seed})");
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        if run.is_err() {
            failed.push(seed);
        }
    }
    eprintln!(
        "{count} seeds in {:.1} s, {} failed",
        started.elapsed().as_secs_f64(),
        failed.len()
    );
    for seed in &failed {
        eprintln!("failed: seed {seed}, replay: {one}={seed}");
    }
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}

/// Dumps the user tables of a database file.
pub fn dump_db(path: &Path) -> Dump {
    let c = Connection::open(path).unwrap();
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'berth_%' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Dump::new();
    for t in tables {
        let cols: Vec<String> = c
            .prepare(&format!(
                "SELECT name FROM pragma_table_info('{t}') ORDER BY cid"
            ))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let expr = cols
            .iter()
            .map(|c| format!("quote(\"{c}\")"))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let mut rows: Vec<String> = c
            .prepare(&format!("SELECT {expr} FROM \"{t}\""))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.sort();
        out.insert(t, rows);
    }
    out
}
