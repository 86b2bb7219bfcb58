//! The crash loop of issue 15, through the real `berth` binary: `berth dock` is killed with
//! SIGKILL at random moments, at least 100 times, at a central and two nodes, while foreign
//! SQLite clients (the system `sqlite3` shell and Python's `sqlite3`, separate processes) keep
//! writing at all three sites. Every write goes into a ledger with its intended effect; each
//! site writes only rows it owns, so the final state is exactly the ledger's. After the loop
//! every site docks normally until nothing moves, and then every site holds exactly the
//! ledger's state (nothing lost, nothing doubled, nothing resurrected), central recorded no
//! collision (there is none in this workload), no bundle is left in a spool and no bundle was
//! applied twice.
//!
//! Each turn of the loop starts `berth dock` at one site (one turn in five at a second site
//! too, both through the shared exchange folder, as two watchers on a synced folder would;
//! `BERTH_CRASH_SOLO` turns that off),
//! runs foreign writes beside it, and kills it after a seeded fraction of how long the
//! latest docks left to finish took (at most 80 ms; one turn in eight is left to finish).
//! A kill counts only when the process died of SIGKILL. A foreign write checks that each of
//! its statements changed exactly one row: one that does not found a row of its own that
//! berth had changed behind its back, and is reported with the rows' write history.
//!
//! `BERTH_CRASH_SEED` (decimal or 0x-hex) replays a seed's ledger (the kill moments are timing,
//! not seed); `BERTH_CRASH_KILLS` raises the number of kills that must hit a running dock
//! (default 100); `BERTH_CRASH_WORKLOAD=basic` writes only inserts and updates (the full
//! workload adds deletes, re-inserts, key changes and update-then-delete chains).

use rusqlite::types::Value as SqlValue;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SCHEMA: &str = "CREATE TABLE item(id TEXT PRIMARY KEY, owner TEXT NOT NULL, v INTEGER, note TEXT);\n\
CREATE TABLE tally(site TEXT NOT NULL, k TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY(site, k));\n";
const SITES: [&str; 3] = ["hq", "alice", "bob"];
const NODES: [&str; 2] = ["alice", "bob"];
const DEFAULT_SEED: u64 = 0x00B3_27C4_A5C0_0015;
/// A killed dock runs at most this long (less while docks finish sooner).
const MAX_DELAY_MS: u64 = 80;

/// Python's sqlite3 as an application uses it: autocommit unless the write asks for a
/// transaction; prints each statement's row count (or the error) on its own line.
const PY_DRIVER: &str = "import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
tx = sys.argv[2] == '1'
if tx:
    c.execute('BEGIN IMMEDIATE')
for s in sys.argv[3:]:
    try:
        print(c.execute(s).rowcount)
    except Exception as e:
        print('ERR', e)
if tx:
    c.execute('COMMIT')
c.close()
";

/// The loop's choices, from one seed.
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(rand::SeedableRng::seed_from_u64(seed))
    }
    fn below(&mut self, n: u64) -> u64 {
        rand::RngExt::random_range(&mut self.0, 0..n)
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Null,
    Int(i64),
    Text(String),
    /// Anything else read back (a real or a blob: this workload writes none).
    Other(String),
}

impl Val {
    fn lit(&self) -> String {
        match self {
            Val::Null => "NULL".into(),
            Val::Int(i) => i.to_string(),
            Val::Text(s) => format!("'{}'", s.replace('\'', "''")),
            Val::Other(s) => s.clone(),
        }
    }
    fn from_sql(v: SqlValue) -> Val {
        match v {
            SqlValue::Null => Val::Null,
            SqlValue::Integer(i) => Val::Int(i),
            SqlValue::Text(s) => Val::Text(s),
            other => Val::Other(format!("{other:?}")),
        }
    }
}

fn text(s: &str) -> Val {
    Val::Text(s.to_string())
}

fn show_row(row: Option<&Row>) -> String {
    match row {
        None => "(absent)".into(),
        Some(r) => format!(
            "({})",
            r.iter().map(Val::lit).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// (table, key): an item's id, or a tally's `site/k`.
type Key = (&'static str, String);
type Row = Vec<Val>;
type State = BTreeMap<Key, Row>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    Shell,
    Python,
}

#[derive(Clone, Copy, PartialEq)]
enum Workload {
    Basic,
    Full,
}

/// One statement, the rows it must change and what it does to the ledger's state.
struct Stmt {
    sql: String,
    effects: Vec<(Key, Option<Row>)>,
}

/// One foreign client process: a few statements, in one transaction or in autocommit.
struct Write {
    n: usize,
    site: &'static str,
    client: Client,
    tx: bool,
    when: String,
    stmts: Vec<Stmt>,
}

impl Write {
    fn describe(&self) -> String {
        format!(
            "write #{} at {} ({}{}, {}): {}",
            self.n,
            self.site,
            match self.client {
                Client::Shell => "sqlite3 shell",
                Client::Python => "python3",
            },
            if self.tx { ", one transaction" } else { "" },
            self.when,
            self.stmts
                .iter()
                .map(|s| s.sql.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// Every write, with the state it means to leave.
struct Ledger {
    workload: Workload,
    writes: Vec<Write>,
    model: State,
    fresh: BTreeMap<&'static str, u64>,
    /// Each site's recently written item ids: chains hit them again before the next dock.
    recent: BTreeMap<&'static str, Vec<String>>,
    /// Each site's own ids that were deleted (or re-keyed away) and are absent: re-inserted.
    gone: BTreeMap<&'static str, Vec<String>>,
}

impl Ledger {
    fn new(workload: Workload) -> Ledger {
        Ledger {
            workload,
            writes: Vec::new(),
            model: State::new(),
            fresh: BTreeMap::new(),
            recent: BTreeMap::new(),
            gone: BTreeMap::new(),
        }
    }

    fn own_items(&self, site: &str) -> Vec<String> {
        self.model
            .iter()
            .filter(|((t, _), row)| *t == "item" && row[1] == text(site))
            .map(|((_, k), _)| k.clone())
            .collect()
    }

    fn fresh_id(&mut self, site: &'static str) -> String {
        let n = self.fresh.entry(site).or_insert(0);
        *n += 1;
        format!("{site}-{n}")
    }

    fn touch(&mut self, site: &'static str, id: &str) {
        let r = self.recent.entry(site).or_default();
        r.retain(|x| x != id);
        r.push(id.to_string());
        if r.len() > 4 {
            r.remove(0);
        }
    }

    /// An existing own item: half the time one written lately.
    fn target(&mut self, rng: &mut Rng, site: &'static str) -> Option<String> {
        let own = self.own_items(site);
        if own.is_empty() {
            return None;
        }
        let recent: Vec<String> = self
            .recent
            .get(site)
            .map(|r| {
                r.iter()
                    .filter(|id| self.model.contains_key(&("item", (*id).clone())))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !recent.is_empty() && rng.one_in(2) {
            return Some(recent[rng.below(recent.len() as u64) as usize].clone());
        }
        Some(own[rng.below(own.len() as u64) as usize].clone())
    }

    fn value(rng: &mut Rng) -> Val {
        if rng.one_in(10) {
            Val::Null
        } else {
            Val::Int(rng.below(200_000) as i64 - 1_000)
        }
    }

    fn note(&self, rng: &mut Rng) -> Val {
        let n = self.writes.len();
        match rng.below(8) {
            0 => Val::Null,
            1 => text(&format!("it's #{n}")),
            2 => text(&format!("ünïcødé ✓ #{n}")),
            3 => text(""),
            _ => text(&format!("note #{n}")),
        }
    }

    fn push(&mut self, stmts: &mut Vec<Stmt>, sql: String, effects: Vec<(Key, Option<Row>)>) {
        for (k, row) in &effects {
            match row {
                Some(r) => self.model.insert(k.clone(), r.clone()),
                None => self.model.remove(k),
            };
        }
        stmts.push(Stmt { sql, effects });
    }

    fn insert(&mut self, rng: &mut Rng, stmts: &mut Vec<Stmt>, site: &'static str, id: String) {
        self.gone.entry(site).or_default().retain(|x| *x != id);
        let row = vec![text(&id), text(site), Self::value(rng), self.note(rng)];
        let sql = format!(
            "INSERT INTO item(id, owner, v, note) VALUES ({}, {}, {}, {})",
            row[0].lit(),
            row[1].lit(),
            row[2].lit(),
            row[3].lit()
        );
        self.touch(site, &id);
        self.push(stmts, sql, vec![(("item", id), Some(row))]);
    }

    fn update(&mut self, rng: &mut Rng, stmts: &mut Vec<Stmt>, site: &'static str, id: String) {
        let mut row = self.model[&("item", id.clone())].clone();
        let sets = match rng.below(3) {
            0 => {
                row[2] = Self::value(rng);
                format!("v = {}", row[2].lit())
            }
            1 => {
                row[3] = self.note(rng);
                format!("note = {}", row[3].lit())
            }
            _ => {
                row[2] = Self::value(rng);
                row[3] = self.note(rng);
                format!("v = {}, note = {}", row[2].lit(), row[3].lit())
            }
        };
        let sql = format!("UPDATE item SET {sets} WHERE id = {}", text(&id).lit());
        self.touch(site, &id);
        self.push(stmts, sql, vec![(("item", id), Some(row))]);
    }

    fn delete(&mut self, stmts: &mut Vec<Stmt>, site: &'static str, id: String) {
        let sql = format!("DELETE FROM item WHERE id = {}", text(&id).lit());
        self.gone.entry(site).or_default().push(id.clone());
        self.push(stmts, sql, vec![(("item", id), None)]);
    }

    fn rekey(&mut self, stmts: &mut Vec<Stmt>, site: &'static str, id: String) {
        let new_id = self.fresh_id(site);
        let mut row = self.model[&("item", id.clone())].clone();
        row[0] = text(&new_id);
        let sql = format!(
            "UPDATE item SET id = {} WHERE id = {}",
            text(&new_id).lit(),
            text(&id).lit()
        );
        self.gone.entry(site).or_default().push(id.clone());
        self.touch(site, &new_id);
        self.push(
            stmts,
            sql,
            vec![(("item", id), None), (("item", new_id), Some(row))],
        );
    }

    fn tally(&mut self, rng: &mut Rng, stmts: &mut Vec<Stmt>, site: &'static str) {
        let k = format!("c{}", rng.below(3));
        let key: Key = ("tally", format!("{site}/{k}"));
        let (sql, n) = match self.model.get(&key) {
            Some(row) => {
                let Val::Int(n) = row[2] else { unreachable!() };
                (
                    format!("UPDATE tally SET n = n + 1 WHERE site = '{site}' AND k = '{k}'"),
                    n + 1,
                )
            }
            None => (
                format!("INSERT INTO tally(site, k, n) VALUES ('{site}', '{k}', 1)"),
                1,
            ),
        };
        self.push(
            stmts,
            sql,
            vec![(key, Some(vec![text(site), text(&k), Val::Int(n)]))],
        );
    }

    /// One operation of the workload, one or two statements.
    fn op(&mut self, rng: &mut Rng, stmts: &mut Vec<Stmt>, site: &'static str) {
        let roll = rng.below(100);
        let roll = match self.workload {
            Workload::Basic => [0, 20, 25, 90][roll as usize % 4],
            Workload::Full => roll,
        };
        if roll >= 83 {
            return self.tally(rng, stmts, site);
        }
        let gone = self.gone.get(site).cloned().unwrap_or_default();
        if (50..57).contains(&roll) && !gone.is_empty() {
            let id = gone[rng.below(gone.len() as u64) as usize].clone();
            return self.insert(rng, stmts, site, id);
        }
        let target = if roll < 20 {
            None
        } else {
            self.target(rng, site)
        };
        let Some(id) = target else {
            let id = self.fresh_id(site);
            return self.insert(rng, stmts, site, id);
        };
        match roll {
            20..40 => self.update(rng, stmts, site, id),
            40..50 => self.delete(stmts, site, id),
            57..67 => {
                // Update, then delete, in the same write (the other writes of a chain
                // between two docks come from `target` choosing recent rows).
                self.update(rng, stmts, site, id.clone());
                self.delete(stmts, site, id);
            }
            67..72 => {
                let id = self.fresh_id(site);
                self.insert(rng, stmts, site, id.clone());
                if rng.one_in(2) {
                    self.update(rng, stmts, site, id);
                } else {
                    self.delete(stmts, site, id);
                }
            }
            72..77 => {
                self.delete(stmts, site, id.clone());
                self.insert(rng, stmts, site, id);
            }
            77..83 => self.rekey(stmts, site, id),
            _ => self.update(rng, stmts, site, id),
        }
    }

    /// Plans the next write at `site` (its intended effects enter the ledger's state now).
    fn plan(&mut self, rng: &mut Rng, site: &'static str, when: String) -> usize {
        let mut stmts = Vec::new();
        for _ in 0..1 + rng.below(3) {
            self.op(rng, &mut stmts, site);
        }
        let client = if rng.below(5) < 3 {
            Client::Shell
        } else {
            Client::Python
        };
        let tx = rng.one_in(2);
        let n = self.writes.len() + 1;
        self.writes.push(Write {
            n,
            site,
            client,
            tx,
            when,
            stmts,
        });
        n - 1
    }

    /// The writes that touched `key`, oldest first, with the state each left.
    fn history(&self, key: &Key) -> Vec<(usize, Option<Row>)> {
        let mut out = Vec::new();
        for (i, w) in self.writes.iter().enumerate() {
            let mut last = None;
            for s in &w.stmts {
                for (k, row) in &s.effects {
                    if k == key {
                        last = Some(row.clone());
                    }
                }
            }
            if let Some(row) = last {
                out.push((i, row));
            }
        }
        out
    }
}

impl Ledger {
    /// The key and, through key changes, every key its row was re-keyed from.
    fn lineage(&self, key: &Key) -> BTreeSet<Key> {
        let mut out = BTreeSet::from([key.clone()]);
        let mut grew = true;
        while grew {
            grew = false;
            for s in self.writes.iter().flat_map(|w| &w.stmts) {
                if let [(from, None), (to, Some(_))] = s.effects.as_slice()
                    && out.contains(to)
                    && out.insert(from.clone())
                {
                    grew = true;
                }
            }
        }
        out
    }

    /// The key's writes in short: `I` insert, `U` update, `D` delete, `K` key change (away
    /// or into), e.g. `I#3 U#9 U+D#12`.
    fn trail(&self, key: &Key) -> String {
        let mut out = Vec::new();
        for w in &self.writes {
            let ops: Vec<&str> = w
                .stmts
                .iter()
                .filter_map(|s| {
                    let (_, row) = s.effects.iter().find(|(k, _)| k == key)?;
                    Some(if s.sql.contains("SET id =") {
                        if row.is_some() { "K<-" } else { "K->" }
                    } else if s.sql.starts_with("INSERT") {
                        "I"
                    } else if s.sql.starts_with("DELETE") {
                        "D"
                    } else {
                        "U"
                    })
                })
                .collect();
            if !ops.is_empty() {
                out.push(format!("{}#{}", ops.join("+"), w.n));
            }
        }
        out.join(" ")
    }
}

struct World {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl World {
    fn site(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn ex(&self) -> PathBuf {
        self.root.join("ex")
    }
    fn db(&self, name: &str) -> PathBuf {
        self.site(name).join("data.db")
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

fn berth_ok(args: &[&std::ffi::OsStr]) -> Output {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "berth {:?} failed: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Central `hq` and nodes `alice` and `bob`, enrolled and holding their extracts, through
/// the exchange folder `ex`.
fn setup() -> World {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("ex")).unwrap();
    std::fs::write(root.join("schema.sql"), SCHEMA).unwrap();
    let w = World { _dir: dir, root };
    let os = |p: &Path| p.as_os_str().to_owned();
    berth_ok(&[
        "init".as_ref(),
        "central".as_ref(),
        &os(&w.site("hq")),
        "--schema".as_ref(),
        &os(&w.root.join("schema.sql")),
    ]);
    for n in NODES {
        berth_ok(&[
            "init".as_ref(),
            "node".as_ref(),
            &os(&w.site(n)),
            "--name".as_ref(),
            n.as_ref(),
            "--via".as_ref(),
            &os(&w.ex()),
        ]);
        berth_ok(&[
            "node".as_ref(),
            "add".as_ref(),
            n.as_ref(),
            "--site".as_ref(),
            &os(&w.site("hq")),
            "--via".as_ref(),
            &os(&w.ex()),
        ]);
        berth_ok(&[
            "dock".as_ref(),
            "--site".as_ref(),
            &os(&w.site(n)),
            "--via".as_ref(),
            &os(&w.ex()),
        ]);
    }
    w
}

/// The form each site's killed docks write their bundles in (issue 21: the engine seals and
/// cuts while it writes, so a kill at any moment must leave no plain bundle where a sealed
/// one was asked, and no half set): central seals and cuts, alice cuts, bob seals.
fn form(site: &str) -> &'static [&'static str] {
    match site {
        "hq" => &["--encrypt", "--volume-size", "4096"],
        "alice" => &["--volume-size", "4096"],
        _ => &["--encrypt"],
    }
}

/// The names and sizes of the files in a folder.
fn files_in(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            let len = e.metadata().map_or(0, |m| m.len());
            (e.file_name().to_string_lossy().into_owned(), len)
        })
        .collect()
}

/// Files in the exchange folder that break the form of [`form`], whatever moment a dock was
/// killed at: a bundle (or its `.part`) of a sealing site that is not sealed, a file of a
/// cutting site larger than the volume size. `before` are the setup's files.
fn not_in_form(ex: &Path, before: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, len) in files_in(ex) {
        let Some(site) = SITES
            .into_iter()
            .find(|s| name.starts_with(&format!("{s}_to_")))
        else {
            continue;
        };
        let args = form(site);
        if before.contains(&name) {
            continue;
        }
        if args.contains(&"--encrypt") && !name.contains(".berth.zip.age") {
            out.push(format!(
                "{name} in the exchange folder: {site} seals its bundles"
            ));
        }
        if args.contains(&"--volume-size") && len > 4096 {
            out.push(format!(
                "{name} in the exchange folder holds {len} bytes: {site} cuts at 4096"
            ));
        }
    }
    out
}

fn spawn_dock(w: &World, site: &str) -> Child {
    Command::new(bin())
        .arg("dock")
        .arg("--site")
        .arg(w.site(site))
        .arg("--via")
        .arg(w.ex())
        .args(form(site))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A foreign write that did not do what the ledger says it did.
struct Failed {
    /// The rows of its statements that did not each change one row.
    keys: Vec<Key>,
    why: String,
}

/// Runs one write through its foreign client; returns what went other than intended.
fn run_write(w: &World, write: &Write) -> Option<Failed> {
    let db = w.db(write.site);
    let out = match write.client {
        Client::Shell => {
            let mut script = String::from(".timeout 10000\n");
            if write.tx {
                script.push_str("BEGIN IMMEDIATE;\n");
            }
            for s in &write.stmts {
                writeln!(script, "{};\nSELECT changes();", s.sql).unwrap();
            }
            if write.tx {
                script.push_str("COMMIT;\n");
            }
            let mut child = Command::new("sqlite3")
                .arg(&db)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the sqlite3 shell is required (issue 15: no silent skips)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
        Client::Python => Command::new("python3")
            .arg("-c")
            .arg(PY_DRIVER)
            .arg(&db)
            .arg(if write.tx { "1" } else { "0" })
            .args(write.stmts.iter().map(|s| s.sql.as_str()))
            .output()
            .expect("python3 is required (issue 15: no silent skips)"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let counts: Vec<&str> = stdout.lines().collect();
    let failed: Vec<Key> = write
        .stmts
        .iter()
        .enumerate()
        .filter(|(i, _)| counts.get(*i) != Some(&"1"))
        .flat_map(|(_, s)| s.effects.iter().map(|(k, _)| k.clone()))
        .collect();
    if out.status.success() && stderr.trim().is_empty() && failed.is_empty() {
        return None;
    }
    Some(Failed {
        keys: failed,
        why: format!(
            "{}: the writer's statements did not each change one row (row counts {:?}, exit {:?}, stderr {:?}): \
         a row it owns was not as it last wrote it",
            write.describe(),
            counts,
            out.status.code(),
            stderr.trim()
        ),
    })
}

/// Every row a query returns, each value as read back.
fn rows_of(c: &rusqlite::Connection, sql: &str) -> Vec<Vec<Val>> {
    let mut q = c.prepare(sql).unwrap();
    let n = q.column_count();
    q.query_map([], |r| {
        (0..n)
            .map(|i| r.get::<_, SqlValue>(i).map(Val::from_sql))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn read_state(db: &Path) -> State {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut state = State::new();
    for row in rows_of(&c, "SELECT id, owner, v, note FROM item ORDER BY id") {
        let key = match &row[0] {
            Val::Text(s) => s.clone(),
            other => other.lit(),
        };
        state.insert(("item", key), row);
    }
    for row in rows_of(&c, "SELECT site, k, n FROM tally ORDER BY site, k") {
        let key = format!(
            "{}/{}",
            row[0].lit().trim_matches('\''),
            row[1].lit().trim_matches('\'')
        );
        state.insert(("tally", key), row);
    }
    state
}

/// How far a site's streams are: (bundles applied, bundles written), summed over its peers.
fn progress(db: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COALESCE(SUM(in_seq), 0), COALESCE(SUM(out_seq), 0) FROM berth_peers",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

fn status(w: &World, site: &str) -> serde_json::Value {
    let out = berth_ok(&[
        "status".as_ref(),
        "--json".as_ref(),
        "--site".as_ref(),
        w.site(site).as_os_str(),
    ]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// True when no site has anything unacknowledged, unrouted or held.
fn quiet(w: &World) -> bool {
    SITES.iter().all(|s| {
        let st = status(w, s);
        st["held"].as_array().is_some_and(|h| h.is_empty())
            && st["peers"].as_array().unwrap().iter().all(|p| {
                p["pending_out"] == 0
                    && p["held_in"] == 0
                    && (p["routing_lag"].is_null() || p["routing_lag"] == 0)
            })
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => {
            let s = s.trim();
            s.strip_prefix("0x")
                .map(|h| u64::from_str_radix(h, 16))
                .unwrap_or_else(|| s.parse())
                .unwrap_or_else(|_| panic!("{name}={s} is not a number"))
        }
        _ => default,
    }
}

/// What happened to one dock process.
enum Ended {
    Killed,
    Finished,
    Failed(String),
}

fn end_dock(mut child: Child, kill: bool) -> Ended {
    if kill && child.try_wait().unwrap().is_none() {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.signal() == Some(9) {
        Ended::Killed
    } else if out.status.success() {
        Ended::Finished
    } else {
        Ended::Failed(format!(
            "exit {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[test]
fn kill_9_during_docks_loses_doubles_and_resurrects_nothing() {
    let started = Instant::now();
    let seed = env_u64("BERTH_CRASH_SEED", DEFAULT_SEED);
    let kills_wanted = env_u64("BERTH_CRASH_KILLS", 100);
    let workload = match std::env::var("BERTH_CRASH_WORKLOAD").as_deref() {
        Ok("basic") => Workload::Basic,
        Ok("full") | Err(_) => Workload::Full,
        Ok(other) => panic!("BERTH_CRASH_WORKLOAD={other}: basic or full"),
    };
    let replay = format!(
        "BERTH_CRASH_SEED={seed:#x} BERTH_CRASH_KILLS={kills_wanted} BERTH_CRASH_WORKLOAD={} \
         cargo test -p berth-cli --test it crashloop -- --nocapture",
        if workload == Workload::Basic {
            "basic"
        } else {
            "full"
        }
    );
    println!("crash loop seed {seed:#x}; replay: {replay}");
    let mut rng = Rng::new(seed);
    let w = setup();
    // What the setup's plain docks left in the folder is not the loop's.
    let plain_before: BTreeSet<String> = files_in(&w.ex()).into_iter().map(|f| f.0).collect();
    let mut ledger = Ledger::new(workload);
    // What went wrong while the loop ran: docks that failed without being killed, and
    // foreign writes (by ledger index) that found a row of their own not as they left it.
    let mut anomalies: Vec<String> = Vec::new();
    let mut write_anomalies: BTreeMap<usize, Failed> = BTreeMap::new();
    let (mut kills, mut finished, mut iterations, mut during) = (0u64, 0u64, 0u64, 0u64);
    let mut full_runs: Vec<u128> = Vec::new();
    let mut stages: BTreeMap<&str, u64> = BTreeMap::new();

    let write =
        |ledger: &mut Ledger, rng: &mut Rng, site, when: String, found: &mut BTreeMap<_, _>| {
            let i = ledger.plan(rng, site, when);
            if let Some(a) = run_write(&w, &ledger.writes[i]) {
                found.insert(i, a);
            }
        };

    // Every site starts with rows of its own.
    for site in SITES {
        for _ in 0..3 {
            write(
                &mut ledger,
                &mut rng,
                site,
                "before the loop".into(),
                &mut write_anomalies,
            );
        }
    }

    let concurrent = std::env::var_os("BERTH_CRASH_SOLO").is_none();
    while (kills < kills_wanted || iterations < kills_wanted) && iterations < kills_wanted * 10 {
        iterations += 1;
        let site = rng.pick(&SITES);
        let mut docking = vec![site];
        // Two sites docking through one folder at once: a bundle may vanish under one's
        // intake (its sender pruned it); that is not an error (SPEC 2.9).
        if rng.one_in(5) && concurrent {
            let other = rng.pick(&SITES);
            if other != site {
                docking.push(other);
            }
        }
        let to_completion = rng.one_in(8);
        // The moment of the kill: a seeded fraction of a bound that follows how long the
        // latest docks left to finish took (the slowest of the last 8, plus a fifth), so that
        // kills fall anywhere in a dock's life, from its start to its last write, and most of
        // them hit a running dock. The ledger does not depend on it.
        let recent = &full_runs[full_runs.len().saturating_sub(8)..];
        let bound = recent.iter().max().map_or(MAX_DELAY_MS, |m| {
            (*m as u64 * 6 / 5).clamp(10, MAX_DELAY_MS)
        });
        let delay = rng.below(1001) * bound / 1000;
        let write_at = rng.below(1001) * delay / 1000;
        let writes_during = rng.below(3);
        let write_sites: Vec<&'static str> = (0..writes_during)
            .map(|_| {
                if rng.one_in(2) {
                    site
                } else {
                    rng.pick(&SITES)
                }
            })
            .collect();
        let writes_after: Vec<&'static str> = (0..rng.below(3)).map(|_| rng.pick(&SITES)).collect();

        // The writes during the docks are planned now, in ledger order, and run one after
        // another beside the docks, so that they neither delay the kill nor race each other.
        let planned: Vec<usize> = write_sites
            .iter()
            .map(|ws| {
                ledger.plan(
                    &mut rng,
                    ws,
                    format!("during docks of {} (loop {iterations})", docking.join("+")),
                )
            })
            .collect();
        during += planned.len() as u64;
        let progress_before: Vec<(i64, i64)> = docking.iter().map(|s| progress(&w.db(s))).collect();
        let t0 = Instant::now();
        let children: Vec<(&str, Child)> =
            docking.iter().map(|s| (*s, spawn_dock(&w, s))).collect();
        let writes = &ledger.writes;
        let found: Vec<(usize, Failed)> = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(write_at).saturating_sub(t0.elapsed()));
                planned
                    .iter()
                    .filter_map(|i| run_write(&w, &writes[*i]).map(|a| (*i, a)))
                    .collect::<Vec<_>>()
            });
            if !to_completion {
                std::thread::sleep(Duration::from_millis(delay).saturating_sub(t0.elapsed()));
            }
            for ((s, child), before) in children.into_iter().zip(&progress_before) {
                match end_dock(child, !to_completion) {
                    Ended::Killed => {
                        kills += 1;
                        let after = progress(&w.db(s));
                        let stage = if after.1 > before.1 {
                            "after recording a bundle written"
                        } else if after.0 > before.0 {
                            "after committing an apply, before recording a bundle written"
                        } else {
                            "before committing any apply or write"
                        };
                        *stages.entry(stage).or_insert(0u64) += 1;
                    }
                    Ended::Finished => finished += 1,
                    Ended::Failed(why) => {
                        anomalies.push(format!(
                            "loop {iterations}: a dock at {s} that was not killed failed: {why}"
                        ));
                    }
                }
            }
            if to_completion {
                full_runs.push(t0.elapsed().as_millis());
            }
            writer.join().unwrap()
        });
        write_anomalies.extend(found);
        anomalies.extend(
            not_in_form(&w.ex(), &plain_before)
                .into_iter()
                .map(|a| format!("loop {iterations}: {a}")),
        );
        for ws in writes_after {
            write(
                &mut ledger,
                &mut rng,
                ws,
                format!("between docks (after loop {iterations})"),
                &mut write_anomalies,
            );
        }
    }
    full_runs.sort_unstable();
    let loop_time = started.elapsed();
    println!("where the kills fell: {stages:?}");
    println!(
        "loop: {iterations} iterations, {kills} docks killed while running, {finished} finished, \
         {} writes ({during} during docks), {:.1}s; docks left to finish took {}..{} ms (median {})",
        ledger.writes.len(),
        loop_time.as_secs_f64(),
        full_runs.first().unwrap_or(&0),
        full_runs.last().unwrap_or(&0),
        full_runs.get(full_runs.len() / 2).unwrap_or(&0)
    );

    // Quiescence: every site docks normally, in rounds, until nothing is unacknowledged or
    // held anywhere and a whole round changes no replica.
    let mut rounds = 0;
    let mut before: Vec<State> = SITES.iter().map(|s| read_state(&w.db(s))).collect();
    let mut settled = false;
    while rounds < 12 && !settled {
        rounds += 1;
        for s in ["alice", "bob", "hq"] {
            if let Ended::Failed(why) = end_dock(spawn_dock(&w, s), false) {
                anomalies.push(format!(
                    "quiescence round {rounds}: dock at {s} failed: {why}"
                ));
            }
        }
        let now: Vec<State> = SITES.iter().map(|s| read_state(&w.db(s))).collect();
        settled = now == before && quiet(&w);
        before = now;
    }
    let mut failures: Vec<String> = Vec::new();
    if !settled {
        failures.push(format!(
            "no quiescence after {rounds} rounds of normal docks: {}",
            SITES
                .iter()
                .map(|s| status(&w, s).to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }

    // The collisions central recorded (there should be none: every row has one writer).
    let mut collisions: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    let hq = status(&w, "hq");
    if hq["conflicts"] != 0 {
        let out = berth_ok(&[
            "conflicts".as_ref(),
            "--json".as_ref(),
            "--site".as_ref(),
            w.site("hq").as_os_str(),
        ]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for c in list.as_array().unwrap() {
            let table = if c["table"] == "item" {
                "item"
            } else {
                "tally"
            };
            let parts: Vec<String> =
                serde_json::from_str::<Vec<serde_json::Value>>(c["key"].as_str().unwrap_or("[]"))
                    .unwrap_or_default()
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect();
            collisions
                .entry((table, parts.join("/")))
                .or_default()
                .push(format!(
                    "{} of {}'s change (node old {}, central {})",
                    c["kind"].as_str().unwrap_or("?"),
                    c["node"].as_str().unwrap_or("?"),
                    c["node_old"],
                    c["central"]
                ));
        }
    }
    let collision_count: usize = collisions.values().map(Vec::len).sum();
    if collision_count > 0 {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for c in collisions.values().flatten() {
            *kinds.entry(c.split(' ').next().unwrap_or("?")).or_default() += 1;
        }
        failures.push(format!(
            "central recorded {collision_count} collision(s) ({kinds:?}) on {} row(s), in a \
             workload where every row has one writer: each is false (listed with its row below)",
            collisions.len()
        ));
    }

    // Every site against the ledger, key by key.
    let states: Vec<State> = SITES.iter().map(|s| read_state(&w.db(s))).collect();
    let mut keys: BTreeSet<Key> = ledger.model.keys().cloned().collect();
    keys.extend(collisions.keys().cloned());
    for st in &states {
        keys.extend(st.keys().cloned());
    }
    let mut verdicts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut cascades = 0;
    for key in &keys {
        let want = ledger.model.get(key);
        let mut wrong: BTreeMap<(&str, String), Vec<&str>> = BTreeMap::new();
        for (i, st) in states.iter().enumerate() {
            let got = st.get(key);
            if got == want {
                continue;
            }
            let history = ledger.history(key);
            let verdict = match (want, got) {
                (None, Some(_)) if history.is_empty() => "PHANTOM",
                (None, Some(_)) => "RESURRECTED",
                (Some(_), None) => "LOST",
                _ if key.0 == "tally" => match (&want.unwrap()[2], &got.unwrap()[2]) {
                    (Val::Int(a), Val::Int(b)) if b > a => "DOUBLED",
                    _ => "LOST",
                },
                _ => "REVERTED",
            };
            let earlier = history
                .iter()
                .rev()
                .skip(1)
                .find(|(_, row)| row.as_ref() == got)
                .map(|(wi, _)| format!(" = the state write #{} left", wi + 1))
                .unwrap_or_default();
            wrong
                .entry((verdict, format!("{}{earlier}", show_row(got))))
                .or_default()
                .push(SITES[i]);
        }
        let noted = collisions.get(key);
        if wrong.is_empty() && noted.is_none() {
            continue;
        }
        let mut line = format!(
            "{} {}: ledger {} [writes {}]",
            key.0,
            key.1,
            show_row(want),
            ledger.trail(key)
        );
        for ((verdict, got), sites) in &wrong {
            *verdicts.entry(verdict).or_default() += 1;
            write!(line, "\n    {verdict} at {}: holds {got}", sites.join(", ")).unwrap();
        }
        for c in noted.into_iter().flatten() {
            write!(line, "\n    collision recorded at hq: {c}").unwrap();
        }
        let lineage = ledger.lineage(key);
        let failed: Vec<String> = write_anomalies
            .iter()
            .filter(|(_, f)| f.keys.iter().any(|k| lineage.contains(k)))
            .map(|(i, _)| format!("#{}", i + 1))
            .collect();
        if !failed.is_empty() {
            cascades += 1;
            write!(
                line,
                "\n    (follows the failed write {} of this row or the row it was re-keyed from)",
                failed.join(", ")
            )
            .unwrap();
        }
        if let Some((i, _)) = ledger.history(key).last() {
            write!(line, "\n    last write: {}", ledger.writes[*i].describe()).unwrap();
        }
        failures.push(line);
    }
    if !verdicts.is_empty() {
        failures.push(format!(
            "rows differing from the ledger: {} ({cascades} of them after a failed write at their writer)",
            verdicts
                .iter()
                .map(|(v, n)| format!("{n} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    // No bundle left in a spool; no bundle applied twice.
    for s in SITES {
        let spool = w.site(s).join("spool");
        let left: Vec<String> = std::fs::read_dir(&spool)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if !left.is_empty() {
            failures.push(format!(
                "{s}'s spool still holds {left:?} (SPEC 1.9: a crash's `.part` copies are removed too)"
            ));
        }
        let c = rusqlite::Connection::open(w.db(s)).unwrap();
        let mut q = c
            .prepare("SELECT peer, seq, COUNT(*) FROM berth_applied GROUP BY peer, seq HAVING COUNT(*) > 1")
            .unwrap();
        let twice: Vec<(String, i64, i64)> = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for (peer, seq, n) in twice {
            failures.push(format!("{s} applied {peer}'s bundle seq {seq} {n} times"));
        }
    }

    let stale: Vec<String> = std::fs::read_dir(w.ex())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    if !stale.is_empty() {
        failures.push(format!(
            "the exchange folder still holds {stale:?} (SPEC 1.9: the sender removes them)"
        ));
    }
    if kills < kills_wanted {
        failures.push(format!(
            "only {kills} of the kills hit a running dock ({kills_wanted} wanted in {iterations} iterations)"
        ));
    }
    println!(
        "quiescence in {rounds} rounds; total {:.1}s",
        started.elapsed().as_secs_f64()
    );
    for a in &anomalies {
        println!("ANOMALY {a}");
    }
    for (i, a) in &write_anomalies {
        let keys: BTreeSet<&Key> = ledger.writes[*i]
            .stmts
            .iter()
            .flat_map(|s| s.effects.iter().map(|(k, _)| k))
            .collect();
        println!(
            "FAILED WRITE {} [writes of its rows: {}]",
            a.why,
            keys.iter()
                .map(|k| format!("{} {}: {}", k.0, k.1, ledger.trail(k)))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    for f in &failures {
        println!("FAILURE {f}");
    }
    assert!(
        anomalies.is_empty() && write_anomalies.is_empty() && failures.is_empty(),
        "{} failed docks and {} failed foreign writes during the loop, {} failures after quiescence \
         (above); replay: {replay}",
        anomalies.len(),
        write_anomalies.len(),
        failures.len()
    );
}
