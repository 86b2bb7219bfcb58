//! A test harness of real sites: a central and nodes in a temporary folder, exchanging real
//! bundle files through a real exchange folder, with applications writing through their own
//! SQLite connections (or the `sqlite3` shell and Python).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::dock::Disposition;
use berth_engine::dock::{DockOptions, DockReport, dock};
use berth_engine::enroll;
use berth_engine::route::model::DockingModel;
use berth_engine::route::oracle;
use berth_engine::site::{CentralInit, Site};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A docking model for a table `item` with an `owner` column: `limited`, nodes may write,
/// a node sees the items whose owner is its `owner` attribute.
pub const OWNER_MODEL: &str = include_str!("../fixtures/owner/docking.toml");

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
            assert_eq!(
                r.count(Disposition::Applied),
                1,
                "extract applies at {n}: {r:?}"
            );
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
                moved += r.written.len() + r.count(Disposition::Applied);
                let r = self.dock("hq");
                if round > 17 {
                    eprintln!("not settling, round {round}, hq: {r:?}");
                }
                moved += r.written.len() + r.count(Disposition::Applied);
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

/// A file of the sales sample (`samples/sales/NAME`).
pub fn sample(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../samples/sales")
            .join(name),
    )
    .unwrap()
}

/// A docking model with every `set_sql` taken out: the seed's pair forms only.
pub fn pair_forms_only(model: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in model.lines() {
        let t = line.trim_start();
        if skipping {
            skipping = !t.contains(r#"""""#);
            continue;
        }
        if let Some(rest) = t.strip_prefix("set_sql = ") {
            skipping = rest.starts_with(r#"""""#) && rest.matches(r#"""""#).count() == 1;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        !out.lines().any(|l| l.trim_start().starts_with("set_sql")),
        "{out}"
    );
    out
}

/// Writes into the exchange folder a `changes` bundle from `from` to `to`, signed with
/// `from`'s real key, carrying `lines` at the stream position given: what a site could
/// forge with its own key.
pub fn forge(
    w: &World,
    from: &str,
    to: &str,
    stream: berth_bundle::StreamPosition,
    lines: &[String],
) -> PathBuf {
    forge_with(w, from, to, stream, lines, &[])
}

/// [`forge`] with more entries after the changes: (name, kind, bytes) each.
pub fn forge_with(
    w: &World,
    from: &str,
    to: &str,
    stream: berth_bundle::StreamPosition,
    lines: &[String],
    entries: &[(&str, &str, Vec<u8>)],
) -> PathBuf {
    use berth_bundle::{BundleHeader, BundleWriter, Compression, Party, SecretKey, naming};
    let key =
        SecretKey::from_text(&std::fs::read_to_string(w.dir(from).join("keys/site.key")).unwrap())
            .unwrap();
    let path = w.via.join(naming::bundle_file_name(from, to, stream.seq));
    let mut bw = BundleWriter::new(
        std::fs::File::create(&path).unwrap(),
        BundleHeader {
            sender: Party {
                site: from.into(),
                key_id: key.public().key_id(),
            },
            recipients: vec![to.into()],
            created: 0,
            bundle_id: None,
            stream: Some(stream),
            schema_checksum: None,
            software_level: None,
            critical: vec![],
            extensions: Default::default(),
        },
    )
    .unwrap();
    let mut payload = lines.join("\n");
    if !lines.is_empty() {
        payload.push('\n');
    }
    bw.add_bytes(
        "payload/changes.jsonl",
        "changes",
        Compression::Deflate,
        payload.as_bytes(),
    )
    .unwrap();
    for (entry, kind, bytes) in entries {
        bw.add_bytes(entry, kind, Compression::Deflate, bytes)
            .unwrap();
    }
    bw.finish(&key).unwrap();
    path
}

/// Runs `f` for the seeds a seeded test should run: seed `$ONE` alone when that variable
/// is set (a replay), else seeds `0..$MANY` (default `default`). Each seed is announced
/// with how to replay it; a failing seed does not stop the others, and every failing seed
/// is listed at the end with its replay line (then the test fails).
pub fn for_seeds(one: &str, many: &str, default: u64, f: impl FnMut(u64)) {
    run_seeds(one, None, many, default, f);
}

/// Like [`for_seeds`], the range starting at seed `$FIRST` (default 0): seeds
/// `$FIRST..$FIRST + $MANY`, so that processes can share out a long run
/// (`FIRST=0 MANY=500` in one, `FIRST=500 MANY=500` in another).
pub fn for_seeds_from(one: &str, first: &str, many: &str, default: u64, f: impl FnMut(u64)) {
    run_seeds(one, Some(first), many, default, f);
}

fn run_seeds(one: &str, first: Option<&str>, many: &str, default: u64, mut f: impl FnMut(u64)) {
    let var = |name: &str| -> Option<u64> {
        let v = std::env::var(name).ok()?;
        Some(
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a seed number")),
        )
    };
    let only = var(one);
    let start = first.and_then(var).unwrap_or(0);
    let n = var(many).unwrap_or(default);
    let mut failed = Vec::new();
    let seeds = only.map_or(start..start + n, |s| s..s + 1);
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

/// The command `name`, after checking it runs; a missing tool fails the test.
pub fn tool(name: &str) -> String {
    match std::process::Command::new(name).arg("--version").output() {
        Ok(o) if o.status.success() => name.to_string(),
        Ok(o) => panic!(
            "`{name} --version` failed ({}): this test needs {name}; .ci/run installs it",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "this test needs `{name}`, which is not installed ({e}); .ci/run installs it \
             (a missing tool fails the test, it is not skipped)"
        ),
    }
}

/// The user tables of a database (not berth's, not SQLite's), by name.
pub fn user_tables(c: &Connection) -> Vec<String> {
    c.prepare("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'berth_%' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Dumps the user tables of a database file.
pub fn dump_db(path: &Path) -> Dump {
    let c = Connection::open(path).unwrap();
    let tables = user_tables(&c);
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

/// A value exactly as SQLite stored it: its storage class and its bytes (reals as their bit
/// pattern, text as raw bytes whatever they hold), so two values compare equal only when
/// they are the same value.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Val {
    /// NULL.
    Null,
    /// INTEGER.
    Int(i64),
    /// REAL, by its bits.
    Real(u64),
    /// TEXT, its bytes.
    Text(Vec<u8>),
    /// BLOB.
    Blob(Vec<u8>),
}

impl Val {
    /// Reads a column of a result row.
    pub fn read(v: rusqlite::types::ValueRef<'_>) -> Val {
        use rusqlite::types::ValueRef;
        match v {
            ValueRef::Null => Val::Null,
            ValueRef::Integer(i) => Val::Int(i),
            ValueRef::Real(f) => Val::Real(f.to_bits()),
            ValueRef::Text(t) => Val::Text(t.to_vec()),
            ValueRef::Blob(b) => Val::Blob(b.to_vec()),
        }
    }

    /// The value as stored, for reading it with rusqlite's and berth's own functions.
    pub fn as_ref(&self) -> rusqlite::types::ValueRef<'_> {
        use rusqlite::types::ValueRef;
        match self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(*i),
            Val::Real(b) => ValueRef::Real(f64::from_bits(*b)),
            Val::Text(t) => ValueRef::Text(t),
            Val::Blob(b) => ValueRef::Blob(b),
        }
    }

    /// The value as a JSON key element, as berth spells keys in `berth_conflicts.pk` (its
    /// wire form, SPEC 2.5).
    pub fn key_json(&self) -> serde_json::Value {
        berth_engine::value::from_sql(self.as_ref())
    }
}

impl std::fmt::Debug for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Null => write!(f, "NULL"),
            Val::Int(i) => write!(f, "integer {i}"),
            Val::Real(b) => write!(f, "real {:?} (bits {b:016x})", f64::from_bits(*b)),
            Val::Text(t) => write!(f, "text x'{}' {:?}", hex(t), String::from_utf8_lossy(t)),
            Val::Blob(b) => write!(f, "blob x'{}'", hex(b)),
        }
    }
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Null => write!(f, "NULL"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Real(b) => write!(f, "{:?} (bits {b:016x})", f64::from_bits(*b)),
            Val::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => write!(f, "'{}'", s.replace('\'', "''")),
                Err(_) => write!(f, "CAST(X'{}' AS TEXT)", hex(t)),
            },
            Val::Blob(b) => write!(f, "X'{}'", hex(b)),
        }
    }
}

/// Upper-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// One row: column name to value.
pub type TypedRow = BTreeMap<String, Val>;

/// Every user table of a database: table, then key (a JSON array, as `berth_conflicts.pk`
/// spells it), then row.
pub type Rows = BTreeMap<String, BTreeMap<String, TypedRow>>;

/// Reads every user table of a database file exactly (see [`Val`]).
pub fn typed_rows(path: &Path) -> Rows {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let tables = user_tables(&c);
    let mut out = Rows::new();
    for t in tables {
        let info: Vec<(String, i64)> = c
            .prepare(&format!(
                "SELECT name, pk FROM pragma_table_info('{t}') ORDER BY cid"
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut pk: Vec<(i64, usize)> = info
            .iter()
            .enumerate()
            .filter(|(_, (_, k))| *k > 0)
            .map(|(i, (_, k))| (*k, i))
            .collect();
        pk.sort();
        let cols = info
            .iter()
            .map(|(n, _)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut st = c.prepare(&format!("SELECT {cols} FROM \"{t}\"")).unwrap();
        let mut rows = st.query([]).unwrap();
        let table = out.entry(t.clone()).or_default();
        while let Some(r) = rows.next().unwrap() {
            let vals: Vec<Val> = (0..info.len())
                .map(|i| Val::read(r.get_ref(i).unwrap()))
                .collect();
            let key: Vec<serde_json::Value> = if pk.is_empty() {
                vec![]
            } else {
                pk.iter().map(|(_, i)| vals[*i].key_json()).collect()
            };
            let row: TypedRow = info.iter().map(|(n, _)| n.clone()).zip(vals).collect();
            table.insert(serde_json::to_string(&key).unwrap(), row);
        }
    }
    out
}

/// How an application reaches a site's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Writer {
    /// A plain connection of the SQLite berth links, with SQLite's default settings.
    App,
    /// The system's `sqlite3` shell (another SQLite than berth's).
    Shell,
    /// `python3` with its `sqlite3` module (another SQLite than berth's).
    Python,
}

/// A statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    /// NULL.
    Null,
    /// INTEGER.
    Int(i64),
    /// REAL (bound exactly where the writer binds; the shell gets the shortest literal that
    /// reads back as the same double, and `9e999` / `-9e999` for the infinities). Not NaN:
    /// SQLite stores NULL for it.
    Real(f64),
    /// TEXT.
    Text(String),
    /// TEXT given as its bytes, which need not be UTF-8 (`FF 41`, a lone surrogate
    /// `ED A0 80`): berth's connection binds them as text, the shell writes
    /// `CAST(X'..' AS TEXT)`, Python binds `bytes` under `CAST(? AS TEXT)` (its `str`
    /// cannot hold them). SQLite stores the bytes as they are.
    RawText(Vec<u8>),
    /// BLOB.
    Blob(Vec<u8>),
}

impl Param {
    /// As an SQL literal.
    pub fn literal(&self) -> String {
        match self {
            Param::Null => "NULL".into(),
            Param::Int(i) => i.to_string(),
            Param::Real(f) if f.is_nan() => panic!("SQLite stores no NaN"),
            // SQLite reads a literal too large for a double as an infinity.
            Param::Real(f) if f.is_infinite() => if *f > 0.0 { "9e999" } else { "-9e999" }.into(),
            Param::Real(f) => format!("{f:e}"),
            Param::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Param::RawText(b) => format!("CAST(X'{}' AS TEXT)", hex(b)),
            Param::Blob(b) => format!("X'{}'", hex(b)),
        }
    }

    /// Its placeholder in the SQL Python runs: bytes become text only through a cast.
    fn python_placeholder(&self) -> String {
        match self {
            Param::RawText(_) => "CAST(? AS TEXT)".into(),
            _ => "?".into(),
        }
    }

    fn python(&self) -> serde_json::Value {
        match self {
            Param::Null => serde_json::Value::Null,
            Param::Int(i) => serde_json::json!({ "i": i }),
            Param::Real(f) => serde_json::json!({ "r": hex(&f.to_le_bytes()) }),
            Param::Text(t) => serde_json::json!({ "t": t }),
            Param::RawText(b) | Param::Blob(b) => serde_json::json!({ "b": hex(b) }),
        }
    }
}

impl rusqlite::ToSql for Param {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Param::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Param::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Param::Real(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
            Param::Text(t) => ToSqlOutput::Borrowed(ValueRef::Text(t.as_bytes())),
            Param::RawText(b) => ToSqlOutput::Borrowed(ValueRef::Text(b)),
            Param::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// One application statement with its `?` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Stmt {
    /// SQL with `?` placeholders (no `?` elsewhere).
    pub sql: String,
    /// Values for the placeholders, in order.
    pub params: Vec<Param>,
}

impl Stmt {
    /// A statement without parameters.
    pub fn sql(sql: impl Into<String>) -> Stmt {
        Stmt {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    /// The statement with its parameters written in as literals.
    pub fn inline(&self) -> String {
        self.substitute(Param::literal)
    }

    /// The SQL with each `?` replaced by what `each` makes of its parameter.
    fn substitute(&self, each: impl Fn(&Param) -> String) -> String {
        let mut out = String::new();
        let mut params = self.params.iter();
        for ch in self.sql.chars() {
            if ch == '?' {
                out.push_str(&each(params.next().expect("a parameter per ?")));
            } else {
                out.push(ch);
            }
        }
        out
    }
}

/// The script `python3` runs for [`Writer::Python`]: the statements in one transaction, as
/// an application using the standard `sqlite3` module would (its default isolation).
const PYTHON_WRITER: &str = r#"
import json, sqlite3, struct, sys
def value(p):
    if p is None:
        return None
    (k, x), = p.items()
    if k == "i":
        return x
    if k == "r":
        return struct.unpack("<d", bytes.fromhex(x))[0]
    if k == "t":
        return x
    return bytes.fromhex(x)
c = sqlite3.connect(sys.argv[1], timeout=10)
for sql, params in json.loads(sys.argv[2]):
    c.execute(sql, [value(p) for p in params])
c.commit()
c.close()
"#;

/// The path of the Python interpreter (resolved once: `python3` may be a slow shim).
fn python() -> &'static Path {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sqlite3, sys; print(sys.executable)"])
            .output()
            .unwrap_or_else(|e| panic!("python3 is needed (with its sqlite3 module): {e}"));
        assert!(
            out.status.success(),
            "python3 with its sqlite3 module is needed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// The system's `sqlite3` shell.
pub const SQLITE3_SHELL: &str = "/usr/bin/sqlite3";

impl World {
    /// A connection to a site's database as an application opens it: SQLite's default
    /// settings (foreign keys off, which the SQLite berth links would turn on), waiting
    /// for locks.
    pub fn app(&self, site: &str) -> Connection {
        let c = Connection::open(self.dir(site).join("data.db")).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        c
    }

    /// Runs statements at a site through `writer`, as an application would: through
    /// [`World::app`] or a foreign SQLite (the `sqlite3` shell, Python's `sqlite3`), in one
    /// transaction for the shell and Python, one at a time for the plain connection. A
    /// `PRAGMA` must come first (it is run before the transaction). Fails the test when a
    /// statement fails or the tool is missing.
    pub fn write(&self, site: &str, writer: Writer, stmts: &[Stmt]) {
        let db = self.dir(site).join("data.db");
        let all = || {
            stmts
                .iter()
                .map(Stmt::inline)
                .collect::<Vec<_>>()
                .join("; ")
        };
        match writer {
            Writer::App => {
                let c = self.app(site);
                for s in stmts {
                    c.execute(&s.sql, rusqlite::params_from_iter(&s.params))
                        .unwrap_or_else(|e| panic!("{site}: {}: {e}", s.inline()));
                }
            }
            Writer::Shell => {
                use std::io::Write;
                let (pragmas, rest): (Vec<&Stmt>, Vec<&Stmt>) =
                    stmts.iter().partition(|s| s.sql.starts_with("PRAGMA"));
                let mut script = String::from(".bail on\n.timeout 10000\n");
                for s in pragmas {
                    script.push_str(&format!("{};\n", s.inline()));
                }
                script.push_str("BEGIN;\n");
                for s in rest {
                    script.push_str(&format!("{};\n", s.inline()));
                }
                script.push_str("COMMIT;\n");
                let mut child = std::process::Command::new(SQLITE3_SHELL)
                    .arg(&db)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("the sqlite3 shell {SQLITE3_SHELL} is needed: {e}"));
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(script.as_bytes())
                    .unwrap();
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success() && out.stderr.is_empty(),
                    "{site}: sqlite3 shell: {}: {}",
                    all(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Writer::Python => {
                let batch: Vec<serde_json::Value> = stmts
                    .iter()
                    .map(|s| {
                        serde_json::json!([
                            s.substitute(Param::python_placeholder),
                            s.params.iter().map(Param::python).collect::<Vec<_>>()
                        ])
                    })
                    .collect();
                let out = std::process::Command::new(python())
                    .args(["-c", PYTHON_WRITER])
                    .arg(&db)
                    .arg(serde_json::to_string(&batch).unwrap())
                    .output()
                    .unwrap_or_else(|e| panic!("python3 is needed: {e}"));
                assert!(
                    out.status.success(),
                    "{site}: python3 sqlite3: {}: {}",
                    all(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Every user table of a site exactly (see [`typed_rows`]).
    pub fn rows(&self, site: &str) -> Rows {
        typed_rows(&self.dir(site).join("data.db"))
    }
}
