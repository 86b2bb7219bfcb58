//! The simulation (issue 8, part 3; issue 15): central and four nodes of the sales sample
//! (with two tables of every value class added, `memo` and `memo_line`, and `wide`, of 70
//! columns), seeded and reproducible. Random application writes at every site, random docking order, and bundles
//! lost, duplicated, delayed, reordered and torn (a copy cut off half way, as a stick pulled
//! out). Crashes are injected at every step of a dock: taking bundles in ([`IntakeStep`]:
//! all moved into the spool, none applied; one committed but not yet archived), in the
//! middle of applying a bundle (after 0-5 changes) and at each step of writing one
//! ([`ExportStep`], the bundle plain, sealed, cut into volumes or both); each crash step asserts the dock failed with the injected crash (or did
//! not reach it), never with another error; the site docks normally later.
//!
//! Applications write like applications: through a plain connection with SQLite's default
//! settings (foreign keys off unless the step turns them on), and one write in four through
//! a foreign SQLite, the system's `sqlite3` shell or Python's `sqlite3` (a missing tool fails
//! the test). The write mix: field edits, activities inserted and deleted, reassignments that
//! move opportunities between laptops, quotes moving, positions changing, nodes writing what
//! they may not; and on `memo`/`memo_line`: NULLs, blobs (empty too), integers at the
//! extremes, reals that need 17 significant digits and the infinities (the shell writes
//! `9e999`, `-9e999`), text with quotes and non-ASCII and text that is not UTF-8 (a lone
//! surrogate as CESU-8 writes it, Latin-1, an overlong and a cut sequence: the shell writes
//! `CAST(X'..' AS TEXT)`, Python binds bytes under `CAST(? AS TEXT)`), key changes, chains
//! of update then delete and update then key change, `INSERT OR REPLACE` (over a key, and
//! displacing a row through a UNIQUE column), UPSERT, and foreign-key cascades (`ON DELETE
//! CASCADE`, `ON UPDATE CASCADE`) with foreign keys turned on. On `wide` (an INTEGER PRIMARY
//! KEY, 68 columns of the four storage classes in turn): inserts of every column, updates of
//! a few (in half of them one past the 64th), deletes, key changes of the rowid, the same
//! chains, REPLACE and UPSERT; central edits any site's wide rows as it does memos. Each
//! seed prints how many rows each writer left holding an infinity, text that is not UTF-8,
//! and a wide row changed past its 64th column.
//!
//! Every application write is in a ledger: the rows it changed at its site, read back
//! exactly (storage class, bytes, bits) before and after, and what its site had seen of the
//! other sites' writes when it wrote (central: each node's log position it had merged; a
//! node: the state of central's last routing pass it had applied). Two writes to a row are
//! concurrent when the later one's site had not seen the earlier one.
//!
//! In the middle of every run, at a random step, central migrates its schema (a column added
//! to `opty`, and in half of the seeds `activity.note` renamed to `remark`) while one node's
//! bundle from the old schema is on its way and another node holds changes captured under
//! it; and (on Unix) an upgrade package is published and installed at every node at another
//! random step. In about a third of the seeds the migration needs the software level that
//! package installs.
//!
//! After quiescence (invariant 2 of DESIGN.md, as issue 15 states it):
//! - (a) every collision central recorded (`berth_conflicts`) is genuine: the node it names
//!   wrote that row (for `update-update`, that column) concurrently with another site's
//!   write to it (for `constraint`, or to another row that central keeps holding the same
//!   UNIQUE value, or, for a row whose foreign key names a row of the node that central
//!   refused, that refusal was genuine); a later collision of that node on that row (under
//!   any key it had) after a genuine one undid its write is genuine if the node wrote before
//!   seeing what the first one raced; a row keeps its identity across key changes; a `denied`
//!   write is one to a table nodes may not write, or raced a visibility change at central,
//!   or links to an instance the node kept only because a genuine collision refused its own
//!   earlier write to that instance;
//! - (b) every node write is at central exactly (the value it wrote, or a later write's to
//!   the same row and column), unless a collision names that node and that row;
//! - (c) every row only one site wrote ends at every site that holds it as that site last
//!   wrote it, and a row it deleted stays deleted everywhere;
//! - and, as before: every replica holds exactly the oracle's projection of central and
//!   central's router state agrees; every site is at central's schema; every node installed
//!   the package once; nothing held, unacknowledged or left in a spool; no bundle applied
//!   twice; central's partial logs are empty.
//!
//! Every violation of a seed is listed (the conflict, the write and the rows concerned).
//! `BERTH_SIM_SEEDS=N` runs more seeds (CI runs 3: about 40 s in debug here, by disk load),
//! from seed `BERTH_SIM_FIRST` (default 0), so processes can share a long run
//! (`BERTH_SIM_FIRST=500 BERTH_SIM_SEEDS=500` runs seeds 500..999); `BERTH_SIM_SEED=S`
//! replays one; every failing seed is listed at the end with its replay line.
//! `BERTH_SIM_ROUTING_BATCH=N` sets central's `[routing] batch_changes` (a small N puts
//! routing batch boundaries inside merged node bundles). A seed that does not settle in 20 rounds names the bundles still not applied.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use berth_engine::EngineError;
use berth_engine::dock::Disposition;
use berth_engine::dock::{DockOptions, DockReport, ExportStep, IntakeStep};
use berth_engine::evolve::diff::{DiffOptions, Rename};
use berth_engine::evolve::history::NewMigration;
use berth_engine::migrate;
use berth_engine::route::model::{DockingModel, Visibility};
use berth_tests::{Param, Rows, Stmt, TypedRow, Val, World, Writer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

const NODES: [(&str, &str); 4] = [
    ("keith", "E1"),
    ("carl", "E2"),
    ("greg", "E3"),
    ("dana", "E4"),
];

/// Appended to the sample's schema: a table of every value class (with a UNIQUE column for
/// REPLACE to displace rows through) and its lines, which cascade.
const MEMO_SCHEMA: &str = "
CREATE TABLE memo(id TEXT PRIMARY KEY, owner TEXT NOT NULL, code TEXT UNIQUE, n INTEGER, r REAL, t TEXT, b BLOB);
CREATE TABLE memo_line(
  id TEXT PRIMARY KEY,
  memo_id TEXT NOT NULL REFERENCES memo(id) ON DELETE CASCADE ON UPDATE CASCADE,
  qty INTEGER,
  price REAL,
  label TEXT
);
CREATE INDEX memo_line_memo ON memo_line(memo_id);
";

/// Their entries in the docking model, and the wide table's: every node gets them and may
/// write them.
const MEMO_DOCKING: &str = "memo = { visibility = \"enterprise\", node_write = true }
memo_line = { visibility = \"enterprise\", node_write = true }
wide = { visibility = \"enterprise\", node_write = true }
";

/// The wide table's value columns `c1..=c68`, after `id` and `owner`: 70 columns, more than
/// a 64-bit column mask holds.
const WIDE_COLS: usize = 68;

/// Columns of `wide` from this one on are past the 64th of the table (`id` is the first).
const WIDE_PAST_64: usize = 63;

/// The declared type of `wide.c{i}`: the four storage classes in turn.
fn wide_type(i: usize) -> &'static str {
    ["BLOB", "INTEGER", "REAL", "TEXT"][i % 4]
}

/// A table of 70 columns keyed by an INTEGER PRIMARY KEY (the rowid itself, unlike every
/// other table here), one row per owner's write like `memo`.
fn wide_schema() -> String {
    let cols: Vec<String> = (1..=WIDE_COLS)
        .map(|i| format!("c{i} {}", wide_type(i)))
        .collect();
    format!(
        "CREATE TABLE wide(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, {});\n",
        cols.join(", ")
    )
}

/// Tables whose central writes change which rows a node may see (and so may write).
const VISIBILITY_TABLES: [&str; 4] = ["opty_emp", "emp_postn", "acct_postn", "quote"];

fn sample(name: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../samples/sales")
            .join(name),
    )
    .unwrap()
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn schema_version(w: &World, site: &str) -> i64 {
    let c = rusqlite::Connection::open(w.dir(site).join("data.db")).unwrap();
    migrate::state(&c).unwrap().version
}

/// One column of query results at a site, read through a plain connection.
fn column(w: &World, site: &str, sql: &str) -> Vec<String> {
    let c = w.app(site);
    let mut st = c.prepare(sql).unwrap();
    st.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A double that needs up to 17 significant digits: random bits (finite), sums like
/// 0.1 + 0.2, Julian days, coordinates; and one time in ten an infinity.
fn real(rng: &mut StdRng) -> f64 {
    match rng.random_range(0..10) {
        0 if rng.random_bool(0.5) => f64::INFINITY,
        0 => f64::NEG_INFINITY,
        1 | 2 => loop {
            let f = f64::from_bits(rng.random::<u64>());
            if f.is_finite() {
                break f;
            }
        },
        3 | 4 => {
            f64::from(rng.random_range(1..100)) / 10.0 + f64::from(rng.random_range(1..100)) / 10.0
        }
        5 | 6 => 2_460_000.5 + rng.random::<f64>(),
        _ => (rng.random::<f64>() - 0.5) * 360.0,
    }
}

/// Text with quotes, control characters and non-ASCII; one time in six bytes that are not
/// UTF-8, which SQLite keeps as they are (a shell's `CAST(X'..' AS TEXT)`, a C program's
/// `sqlite3_bind_text`).
fn text(rng: &mut StdRng, step: usize) -> Param {
    if rng.random_range(0..6) == 0 {
        let bad: [&[u8]; 4] = [
            // Not UTF-8 at all, then a sequence cut short.
            b"\xFFA\xC3",
            // A lone surrogate, as CESU-8 and Java's modified UTF-8 write it.
            b"\xED\xA0\x80",
            // An overlong '/'.
            b"\xC0\xAF",
            // Latin-1.
            b"caf\xE9",
        ];
        let mut bytes = bad[rng.random_range(0..bad.len())].to_vec();
        bytes.extend_from_slice(format!(" {step}").as_bytes());
        return Param::RawText(bytes);
    }
    let words = [
        "",
        "plain",
        "it's \"quoted\"",
        "naïve café",
        "日本語のメモ",
        "ship 🚢 ahoy",
        "line\nbreak",
        "tab\tsep",
        "  spaces  ",
        "100%_like",
    ];
    Param::Text(format!(
        "{} {step}",
        words[rng.random_range(0..words.len())]
    ))
}

fn int(rng: &mut StdRng) -> i64 {
    match rng.random_range(0..5) {
        0 => i64::MAX,
        1 => i64::MIN,
        2 => 0,
        _ => rng.random_range(-1_000_000..1_000_000),
    }
}

fn blob(rng: &mut StdRng) -> Vec<u8> {
    (0..rng.random_range(0..6)).map(|_| rng.random()).collect()
}

/// A value for a nullable column: NULL one time in five.
fn maybe(rng: &mut StdRng, v: impl FnOnce(&mut StdRng) -> Param) -> Param {
    if rng.random_range(0..5) == 0 {
        Param::Null
    } else {
        v(rng)
    }
}

/// One row changed by one application write, as the writer's SQLite stored it.
#[derive(Debug, Clone)]
struct Entry {
    /// Position in the ledger (time order).
    idx: usize,
    site: String,
    step: usize,
    writer: Writer,
    table: String,
    /// The key as `berth_conflicts.pk` spells it.
    key: String,
    before: Option<TypedRow>,
    after: Option<TypedRow>,
    /// The columns it changed; `None`: the whole row (inserted or deleted).
    cols: Option<BTreeSet<String>>,
    /// At a node: its log position after the write (central knows the write once it has
    /// merged the node's log up to here).
    pos: i64,
    /// What the site had seen when it wrote: per other site, how many ledger entries
    /// (`idx + 1`) of that site's writes it knew.
    knew: BTreeMap<String, usize>,
    /// A node wrote a table nodes may not write: central must refuse it.
    forbidden: bool,
    /// The statements of the write.
    sql: String,
}

impl Entry {
    fn touches(&self, col: &str) -> bool {
        self.cols.as_ref().is_none_or(|c| c.contains(col))
    }

    fn what(&self) -> String {
        match (&self.before, &self.after, &self.cols) {
            (None, Some(_), _) => "insert".into(),
            (Some(_), None, _) => "delete".into(),
            (_, _, Some(c)) => format!("update {c:?}"),
            _ => "?".into(),
        }
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "write #{} at step {} by {} via {:?}: {} {} {} -> {}; it had seen {:?}{}; sql: {}",
            self.idx,
            self.step,
            self.site,
            self.writer,
            self.what(),
            self.table,
            self.key,
            self.after.as_ref().map_or("(gone)".into(), show),
            self.knew,
            if self.forbidden { " (forbidden)" } else { "" },
            self.sql
        )
    }
}

fn show(row: &TypedRow) -> String {
    let cells: Vec<String> = row.iter().map(|(c, v)| format!("{c}={v}")).collect();
    format!("{{{}}}", cells.join(", "))
}

/// A routing pass at central: each node's partial-log position after it, and what central
/// had seen then (a node that applied its partial log up to there has seen as much).
#[derive(Debug, Clone)]
struct Routing {
    partial: BTreeMap<String, i64>,
    knew: BTreeMap<String, usize>,
}

/// A collision central recorded.
#[derive(Debug, Clone)]
struct Conflict {
    id: i64,
    node: String,
    tbl: String,
    pk: String,
    kind: String,
    columns: Vec<String>,
    origin_pos: i64,
    bundle_id: String,
    resolution: String,
    node_old: Option<String>,
    node_new: Option<String>,
    central: Option<String>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conflict #{} {} of {} on {} {} columns {:?} ({}, origin_pos {}, bundle {}): node old {} new {}, central {}",
            self.id,
            self.kind,
            self.node,
            self.tbl,
            self.pk,
            self.columns,
            self.resolution,
            self.origin_pos,
            self.bundle_id,
            self.node_old.as_deref().unwrap_or("-"),
            self.node_new.as_deref().unwrap_or("-"),
            self.central.as_deref().unwrap_or("-"),
        )
    }
}

/// The run: the world, its randomness and the ledger of every application write.
struct Sim<'a> {
    w: &'a World,
    model: DockingModel,
    rng: StdRng,
    seed: u64,
    ledger: Vec<Entry>,
    routings: Vec<Routing>,
    /// Whether the migration renames `activity.note` to `remark` (the ledger spells the
    /// column by its final name).
    renames_note: bool,
    writers: BTreeMap<Writer, usize>,
    crashes: BTreeMap<String, usize>,
    /// Chooses the form of the bundles a crashing export writes (plain, sealed, cut into
    /// volumes, both); a stream of its own, so the run's other choices stay as they were
    /// for every seed.
    forms: StdRng,
    /// Key changes made, as (table, old key, new key): a row keeps its identity, and its
    /// history, under its new key (berth merges a key change as an update of the key).
    moves: Vec<(String, String, String)>,
}

impl Sim<'_> {
    /// A dock that crashes at `step` of writing a bundle, in a form of the bundle chosen at
    /// random (issue 21: the engine seals and cuts while it writes); a cut bundle may crash
    /// after its first piece instead.
    fn export_crash(&mut self, step: ExportStep) -> DockOptions {
        let seal = self.forms.random_bool(0.5);
        let volume_size = self.forms.random_bool(0.5).then_some(4096);
        let step = match volume_size.is_some() && self.forms.random_bool(0.25) {
            true => ExportStep::Piece,
            false => step,
        };
        DockOptions {
            fail_export: Some(step),
            seal,
            volume_size,
            ..DockOptions::default()
        }
    }

    /// The column of an activity's note at `site`, by the site's schema version.
    fn note(&self, site: &str) -> &'static str {
        if self.renames_note && schema_version(self.w, site) >= 1 {
            "remark"
        } else {
            "note"
        }
    }

    /// A column name as the final schema spells it.
    fn final_name(&self, table: &str, col: &str) -> String {
        if self.renames_note && table == "activity" && col == "note" {
            "remark".into()
        } else {
            col.into()
        }
    }

    fn final_row(&self, table: &str, row: &TypedRow) -> TypedRow {
        row.iter()
            .map(|(c, v)| (self.final_name(table, c), v.clone()))
            .collect()
    }

    /// Each peer's `applied_pos` at a site.
    fn applied(&self, site: &str) -> BTreeMap<String, i64> {
        let c = self.w.app(site);
        let mut st = c
            .prepare("SELECT name, applied_pos FROM berth_peers")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// What central has seen now: its own writes, and each node's up to the log position
    /// it merged.
    fn central_knows(&self) -> BTreeMap<String, usize> {
        let applied = self.applied("hq");
        let mut knew = BTreeMap::new();
        for e in &self.ledger {
            let known = e.site == "hq" || applied.get(&e.site).is_some_and(|p| e.pos <= *p);
            if known {
                knew.insert(e.site.clone(), e.idx + 1);
            }
        }
        knew
    }

    /// What `site` has seen now of the other sites' writes.
    fn knows(&self, site: &str) -> BTreeMap<String, usize> {
        let mut knew = if site == "hq" {
            self.central_knows()
        } else {
            let applied = self.applied(site).get("hq").copied().unwrap_or(0);
            self.routings
                .iter()
                .rev()
                .find(|r| r.partial.get(site).is_some_and(|p| *p <= applied))
                .map(|r| r.knew.clone())
                .unwrap_or_default()
        };
        knew.remove(site);
        knew
    }

    /// Central ran a routing pass: remember what it had seen.
    fn routed(&mut self) {
        let c = self.w.app("hq");
        let partial = c
            .prepare("SELECT name, partial_pos FROM berth_peers WHERE role = 'node'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let knew = self.central_knows();
        self.routings.push(Routing { partial, knew });
    }

    /// Every key the row under `key` had or came to have, through key changes anywhere.
    fn lineage(&self, table: &str, key: &str) -> BTreeSet<String> {
        let mut keys = BTreeSet::from([key.to_string()]);
        loop {
            let more: Vec<String> = self
                .moves
                .iter()
                .filter(|(t, a, b)| t == table && (keys.contains(a) != keys.contains(b)))
                .flat_map(|(_, a, b)| [a.clone(), b.clone()])
                .collect();
            let before = keys.len();
            keys.extend(more);
            if keys.len() == before {
                return keys;
            }
        }
    }

    /// Whether two ledger writes were concurrent: different sites, and the later one's
    /// site had not seen the earlier one.
    fn concurrent(a: &Entry, b: &Entry) -> bool {
        let (first, last) = if a.idx < b.idx { (a, b) } else { (b, a) };
        first.site != last.site && last.knew.get(&first.site).copied().unwrap_or(0) <= first.idx
    }

    /// Runs an application write at `site` (a random writer: one in four foreign) and
    /// records in the ledger every row it changed there.
    fn write(&mut self, site: &str, step: usize, stmts: &[Stmt]) {
        if stmts.is_empty() {
            return;
        }
        let writer = match self.rng.random_range(0..8) {
            0 => Writer::Shell,
            1 => Writer::Python,
            _ => Writer::App,
        };
        *self.writers.entry(writer).or_default() += 1;
        let knew = self.knows(site);
        let before = self.w.rows(site);
        self.w.write(site, writer, stmts);
        let after = self.w.rows(site);
        let pos: i64 = if site == "hq" {
            0
        } else {
            self.w
                .value(site, "SELECT COALESCE(MAX(pos), 0) FROM berth_log")
                .parse()
                .unwrap()
        };
        let mut sql = stmts
            .iter()
            .map(Stmt::inline)
            .collect::<Vec<_>>()
            .join("; ");
        if sql.len() > 400 {
            let mut cut = 400;
            while !sql.is_char_boundary(cut) {
                cut -= 1;
            }
            sql.truncate(cut);
            sql.push_str("...");
        }
        let empty = BTreeMap::new();
        // Key changes (`UPDATE t SET id = ? WHERE id = ?`) that moved a row.
        let mut moved_here = Vec::new();
        for st in stmts {
            let Some(table) = st
                .sql
                .strip_prefix("UPDATE ")
                .and_then(|r| r.strip_suffix(" SET id = ? WHERE id = ?"))
            else {
                continue;
            };
            let key = |p: &Param| match p {
                Param::Text(t) => Some(serde_json::json!([t]).to_string()),
                Param::Int(i) => Some(serde_json::json!([i]).to_string()),
                _ => None,
            };
            let [to, from] = st.params.as_slice() else {
                continue;
            };
            let (Some(from), Some(to)) = (key(from), key(to)) else {
                continue;
            };
            let had = |rows: &Rows, k: &str| rows.get(table).is_some_and(|t| t.contains_key(k));
            if had(&before, &from) && had(&after, &to) && !had(&before, &to) {
                moved_here.push((table.to_string(), from, to));
            }
        }
        let tables: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for table in tables {
            let b = before.get(table).unwrap_or(&empty);
            let a = after.get(table).unwrap_or(&empty);
            let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
            for key in keys {
                let (rb, ra) = (b.get(key), a.get(key));
                if rb == ra {
                    continue;
                }
                // A row moved to this key changed the columns that differ from its row
                // under the old key.
                let was = moved_here
                    .iter()
                    .find(|(t, _, to)| t == table && to == key)
                    .and_then(|(_, from, _)| b.get(from));
                let cols = match (rb.or(was), ra) {
                    (Some(rb), Some(ra)) => Some(
                        ra.iter()
                            .filter(|(c, v)| rb.get(*c) != Some(*v))
                            .map(|(c, _)| self.final_name(table, c))
                            .collect(),
                    ),
                    _ => None,
                };
                let forbidden =
                    site != "hq" && self.model.table(table).is_none_or(|spec| !spec.node_write);
                let entry = Entry {
                    idx: self.ledger.len(),
                    site: site.to_string(),
                    step,
                    writer,
                    table: table.clone(),
                    key: key.clone(),
                    before: rb.map(|r| self.final_row(table, r)),
                    after: ra.map(|r| self.final_row(table, r)),
                    cols,
                    pos,
                    knew: knew.clone(),
                    forbidden,
                    sql: sql.clone(),
                };
                self.ledger.push(entry);
            }
        }
        self.moves.extend(moved_here);
    }

    /// Docks a site. `crash` names the step a crash is injected at (`opts` asks for it):
    /// the dock either does not reach it or fails with exactly that injected crash; any
    /// other error fails the seed.
    fn dock(
        &mut self,
        site: &str,
        opts: &DockOptions,
        crash: Option<&'static str>,
    ) -> Option<DockReport> {
        match self.w.dock_with(site, &self.w.via, opts) {
            Ok(r) => {
                if site == "hq" {
                    self.routed();
                }
                Some(r)
            }
            Err(EngineError::Injected(at)) if Some(at) == crash => {
                let label = match (opts.fail_intake, opts.fail_export) {
                    (Some(s), _) => format!("intake {s:?}"),
                    (_, Some(s)) => format!(
                        "export {s:?}{}{}",
                        if opts.seal { " sealed" } else { "" },
                        if opts.volume_size.is_some() {
                            " cut"
                        } else {
                            ""
                        }
                    ),
                    _ => "apply".to_string(),
                };
                *self.crashes.entry(label).or_default() += 1;
                // A crash while writing bundles comes after central's routing pass.
                if site == "hq" && at == "export" {
                    self.routed();
                }
                None
            }
            Err(e) => panic!(
                "seed {}: {site}'s dock failed with {e} ({e:?}), expected {}",
                self.seed,
                crash.map_or("success".to_string(), |c| format!(
                    "success or the injected crash at {c}"
                ))
            ),
        }
    }

    /// Docks every site, central between each node, until a full round moves nothing; else
    /// what was still not applied in the last round.
    fn settle(&mut self, order: &[String]) -> Result<(), String> {
        let mut stuck = Vec::new();
        for _ in 1..=20 {
            let mut moved = 0;
            stuck.clear();
            for n in order {
                for site in [n.as_str(), "hq"] {
                    let r = self.dock_plain(site);
                    moved += r.written.len() + r.count(Disposition::Applied);
                    for i in &r.incoming {
                        if i.outcome != Disposition::Applied && i.outcome != Disposition::Duplicate
                        {
                            stuck.push(format!("{site}: {} {}: {}", i.file, i.outcome, i.detail));
                        }
                    }
                }
            }
            if moved == 0 {
                return Ok(());
            }
        }
        stuck.truncate(LIST);
        Err(format!(
            "did not settle in 20 rounds; still not applied in the last: {}",
            stuck.join("; ")
        ))
    }

    fn dock_plain(&mut self, site: &str) -> DockReport {
        self.dock(site, &DockOptions::default(), None).unwrap()
    }
}

impl Sim<'_> {
    /// One application write somewhere.
    fn random_write(&mut self, step: usize) {
        if self.rng.random_range(0..2) == 0 {
            self.central_write(step);
        } else {
            let (n, e) = NODES[self.rng.random_range(0..NODES.len())];
            self.node_write(n, e, step);
        }
    }

    fn central_write(&mut self, step: usize) {
        let optys = ["O1", "O2", "O3", "O4", "O5"];
        let emps = ["E1", "E2", "E3", "E4", "E5"];
        let rng = &mut self.rng;
        let o = pick(rng, &optys);
        let note = self.note("hq");
        let stmts = match self.rng.random_range(0..13) {
            0 | 1 => {
                let e = pick(&mut self.rng, &emps);
                vec![Stmt::sql(format!(
                    "UPDATE opty_emp SET emp_id = '{e}' WHERE opty_id = '{o}' AND rowid = (SELECT MIN(rowid) FROM opty_emp WHERE opty_id = '{o}') AND NOT EXISTS (SELECT 1 FROM opty_emp WHERE opty_id = '{o}' AND emp_id = '{e}')"
                ))]
            }
            2 => vec![Stmt::sql(format!(
                "UPDATE quote SET opty_id = (SELECT id FROM opty WHERE id = '{o}') WHERE id = '{}'",
                pick(&mut self.rng, &["Q1", "Q2", "Q3", "Q4"])
            ))],
            3 => vec![Stmt {
                sql: format!("UPDATE opty SET stage = 'stage {step}', amount = ? WHERE id = '{o}'"),
                params: vec![Param::Real(real(&mut self.rng))],
            }],
            4 => vec![Stmt::sql(format!(
                "INSERT INTO activity(id, opty_id, account_id, kind, {note}) SELECT 'H{step}', id, account_id, 'call', 'from hq' FROM opty WHERE id = '{o}'"
            ))],
            5 => {
                let e = pick(&mut self.rng, &emps);
                let p = pick(&mut self.rng, &["P-NORTH", "P-SOUTH", "P-KEY"]);
                let e2 = pick(&mut self.rng, &emps);
                vec![
                    Stmt::sql(format!(
                        "INSERT OR IGNORE INTO emp_postn VALUES ('{e}', '{p}')"
                    )),
                    Stmt::sql(format!(
                        "DELETE FROM emp_postn WHERE emp_id = '{e2}' AND position_id = '{p}'"
                    )),
                ]
            }
            6 if schema_version(self.w, "hq") >= 1 => vec![Stmt::sql(format!(
                "UPDATE opty SET close_date = 'hq {step}' WHERE id = '{o}'"
            ))],
            7 => vec![Stmt::sql(
                "DELETE FROM activity WHERE id = (SELECT id FROM activity ORDER BY id LIMIT 1)",
            )],
            8 => {
                // Another site's memo: a genuine collision with its owner when concurrent.
                let memos = column(self.w, "hq", "SELECT id FROM memo ORDER BY id");
                if memos.is_empty() {
                    vec![]
                } else {
                    let id = memos[self.rng.random_range(0..memos.len())].clone();
                    let t = text(&mut self.rng, step);
                    let n = int(&mut self.rng);
                    vec![Stmt {
                        sql: "UPDATE memo SET t = ?, n = ? WHERE id = ?".into(),
                        params: vec![t, Param::Int(n), Param::Text(id)],
                    }]
                }
            }
            // Any site's wide row, columns past the 64th too: a collision with its owner
            // when concurrent.
            9 => {
                let ids = self.wide_ids("hq", None);
                if ids.is_empty() {
                    vec![]
                } else {
                    let id = ids[self.rng.random_range(0..ids.len())];
                    vec![self.wide_update(id, step)]
                }
            }
            10 => self.wide_write("hq", step),
            _ => self.memo_write("hq", step),
        };
        self.write("hq", step, &stmts);
    }

    fn node_write(&mut self, n: &'static str, e: &str, step: usize) {
        let held = column(self.w, n, "SELECT id FROM opty ORDER BY id");
        let held = (!held.is_empty()).then(|| held[self.rng.random_range(0..held.len())].clone());
        let note = self.note(n);
        let stmts = match (self.rng.random_range(0..14), held) {
            (0 | 1, Some(o)) => vec![Stmt::sql(format!(
                "UPDATE opty SET name = name || ' [{n} {step}]' WHERE id = '{o}'"
            ))],
            (2, Some(o)) => vec![Stmt {
                sql: format!(
                    "INSERT INTO activity(id, opty_id, kind, {note}, due) VALUES ('{n}{step}', '{o}', 'visit', ?, ?)"
                ),
                params: vec![
                    Param::Text(format!("by {n}")),
                    maybe(&mut self.rng, |_| {
                        Param::Text(format!("2025-04-{:02}", step % 28 + 1))
                    }),
                ],
            }],
            // A field the migration added, where the node has it.
            (3, Some(o)) if schema_version(self.w, n) >= 1 => vec![Stmt::sql(format!(
                "UPDATE opty SET close_date = '{n} {step}' WHERE id = '{o}'"
            ))],
            (3 | 4, Some(o)) => vec![Stmt {
                sql: format!("UPDATE opty SET amount = ? WHERE id = '{o}'"),
                params: vec![Param::Real(real(&mut self.rng))],
            }],
            // A node assigns itself to an opportunity it may not see: refused (opty_emp is
            // not node-writable) and undone.
            (5, _) => {
                let o = pick(&mut self.rng, &["O1", "O2", "O3", "O4", "O5"]);
                vec![Stmt::sql(format!(
                    "INSERT OR IGNORE INTO opty_emp(opty_id, emp_id, role) VALUES ('{o}', '{e}', 'helper')"
                ))]
            }
            (6, _) => vec![Stmt::sql(format!(
                "DELETE FROM activity WHERE id = (SELECT MIN(id) FROM activity WHERE id LIKE '{n}%')"
            ))],
            (12 | 13, _) => self.wide_write(n, step),
            _ => self.memo_write(n, step),
        };
        self.write(n, step, &stmts);
    }

    /// A random memo row's values after `id, owner, code`.
    fn memo_values(&mut self, step: usize) -> Vec<Param> {
        let rng = &mut self.rng;
        vec![
            maybe(rng, |r| Param::Int(int(r))),
            maybe(rng, |r| Param::Real(real(r))),
            maybe(rng, |r| text(r, step)),
            maybe(rng, |r| Param::Blob(blob(r))),
        ]
    }

    /// A write to `site`'s own memos (only their owner writes them, but central's edits).
    fn memo_write(&mut self, site: &str, step: usize) -> Vec<Stmt> {
        // (id, code, lines) of the site's own memos.
        let own: Vec<(String, String, i64)> = {
            let c = self.w.app(site);
            let mut st = c
                .prepare(
                    "SELECT m.id, COALESCE(m.code, ''), (SELECT count(*) FROM memo_line l WHERE l.memo_id = m.id)
                     FROM memo m WHERE m.owner = ?1 ORDER BY m.id",
                )
                .unwrap();
            st.query_map([site], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let fresh = format!("{site}-m{step}");
        let insert = |sim: &mut Self, id: &str, code: Param, verb: &str| Stmt {
            sql: format!(
                "{verb} INTO memo(id, owner, code, n, r, t, b) VALUES (?, ?, ?, ?, ?, ?, ?)"
            ),
            params: [
                vec![Param::Text(id.into()), Param::Text(site.into()), code],
                sim.memo_values(step),
            ]
            .concat(),
        };
        let fresh_code = Param::Text(format!("{site}-c{step}"));
        if own.is_empty() || self.rng.random_range(0..6) == 0 {
            let mut out = vec![insert(self, &fresh, fresh_code, "INSERT")];
            for k in 0..self.rng.random_range(0..3) {
                out.push(self.line_insert(&fresh, &format!("{site}-l{step}-{k}"), step));
            }
            return out;
        }
        let (id, _, lines) = own[self.rng.random_range(0..own.len())].clone();
        let bare: Vec<&(String, String, i64)> = own.iter().filter(|m| m.2 == 0).collect();
        // Foreign keys on where the statement deletes or re-keys a memo with lines: the
        // writer cascades (an application with foreign keys off would orphan them).
        let fk = |lines: i64| -> Vec<Stmt> {
            if lines > 0 {
                vec![Stmt::sql("PRAGMA foreign_keys = ON")]
            } else {
                vec![]
            }
        };
        let update = |sim: &mut Self| {
            let vals = sim.memo_values(step);
            let cols = ["n", "r", "t", "b"];
            let chosen: Vec<usize> = (0..4).filter(|_| sim.rng.random_bool(0.5)).collect();
            let chosen = if chosen.is_empty() { vec![1] } else { chosen };
            Stmt {
                sql: format!(
                    "UPDATE memo SET {} WHERE id = ?",
                    chosen
                        .iter()
                        .map(|i| format!("{} = ?", cols[*i]))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                params: chosen
                    .iter()
                    .map(|i| vals[*i].clone())
                    .chain([Param::Text(id.clone())])
                    .collect(),
            }
        };
        let rekey = Stmt {
            sql: "UPDATE memo SET id = ? WHERE id = ?".into(),
            params: vec![Param::Text(format!("{id}k{step}")), Param::Text(id.clone())],
        };
        let delete = Stmt {
            sql: "DELETE FROM memo WHERE id = ?".into(),
            params: vec![Param::Text(id.clone())],
        };
        match self.rng.random_range(0..12) {
            0 | 1 => vec![update(self)],
            // Update, then delete, before the next dock.
            2 => [fk(lines), vec![update(self), delete]].concat(),
            // Update, then a key change.
            3 => [fk(lines), vec![update(self), rekey]].concat(),
            4 => [fk(lines), vec![rekey]].concat(),
            // REPLACE over an existing key (a memo without lines: foreign keys stay off).
            5 => match bare.first() {
                Some((b, c, _)) => {
                    let (b, c) = (b.clone(), c.clone());
                    vec![insert(self, &b, Param::Text(c), "INSERT OR REPLACE")]
                }
                None => vec![update(self)],
            },
            // REPLACE of a new key displacing another memo through the UNIQUE code.
            6 => match bare.last() {
                Some((_, c, _)) if !c.is_empty() => {
                    let c = c.clone();
                    vec![insert(self, &fresh, Param::Text(c), "INSERT OR REPLACE")]
                }
                _ => vec![update(self)],
            },
            // UPSERT over an existing key, or a new one.
            7 => {
                let target = if self.rng.random_bool(0.7) {
                    id.clone()
                } else {
                    fresh.clone()
                };
                let mut s = insert(self, &target, fresh_code, "INSERT");
                s.sql.push_str(
                    " ON CONFLICT(id) DO UPDATE SET n = excluded.n, r = excluded.r, t = excluded.t",
                );
                vec![s]
            }
            8 => vec![self.line_insert(&id, &format!("{site}-l{step}"), step)],
            9 | 10 => {
                let lines = column(
                    self.w,
                    site,
                    &format!(
                        "SELECT l.id FROM memo_line l JOIN memo m ON m.id = l.memo_id WHERE m.owner = '{site}' ORDER BY l.id"
                    ),
                );
                if lines.is_empty() {
                    return vec![update(self)];
                }
                let l = lines[self.rng.random_range(0..lines.len())].clone();
                if self.rng.random_bool(0.7) {
                    let qty = maybe(&mut self.rng, |r| Param::Int(int(r)));
                    let price = maybe(&mut self.rng, |r| Param::Real(real(r)));
                    vec![Stmt {
                        sql: "UPDATE memo_line SET qty = ?, price = ? WHERE id = ?".into(),
                        params: vec![qty, price, Param::Text(l)],
                    }]
                } else {
                    vec![Stmt {
                        sql: "DELETE FROM memo_line WHERE id = ?".into(),
                        params: vec![Param::Text(l)],
                    }]
                }
            }
            // A cascade: the memo goes with its lines.
            _ => [
                vec![Stmt::sql("PRAGMA foreign_keys = ON")],
                vec![Stmt {
                    sql: "DELETE FROM memo WHERE id = ?".into(),
                    params: vec![Param::Text(id.clone())],
                }],
            ]
            .concat(),
        }
    }

    /// The keys of `wide` at `site`, of the rows `owner` wrote (`None`: all).
    fn wide_ids(&self, site: &str, owner: Option<&str>) -> Vec<i64> {
        let c = self.w.app(site);
        let mut st = c
            .prepare("SELECT id FROM wide WHERE ?1 IS NULL OR owner = ?1 ORDER BY id")
            .unwrap();
        st.query_map([owner], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// A value for `wide.c{i}` of its declared type (NULL one time in five).
    fn wide_value(&mut self, i: usize, step: usize) -> Param {
        maybe(&mut self.rng, |r| match wide_type(i) {
            "INTEGER" => Param::Int(int(r)),
            "REAL" => Param::Real(real(r)),
            "TEXT" => text(r, step),
            _ => Param::Blob(blob(r)),
        })
    }

    /// A whole new row of `wide`: `id, owner, c1..=c68`.
    fn wide_insert(&mut self, site: &str, id: i64, step: usize, verb: &str) -> Stmt {
        let cols: Vec<String> = (1..=WIDE_COLS).map(|i| format!("c{i}")).collect();
        let mut params = vec![Param::Int(id), Param::Text(site.into())];
        params.extend((1..=WIDE_COLS).map(|i| self.wide_value(i, step)));
        Stmt {
            sql: format!(
                "{verb} INTO wide(id, owner, {}) VALUES (?, ?{})",
                cols.join(", "),
                ", ?".repeat(WIDE_COLS)
            ),
            params,
        }
    }

    /// A few random columns of a wide row, in half the writes one past the 64th among them.
    fn wide_columns(&mut self) -> Vec<usize> {
        let mut cols: BTreeSet<usize> = (0..self.rng.random_range(1..=4))
            .map(|_| self.rng.random_range(1..=WIDE_COLS))
            .collect();
        if self.rng.random_bool(0.5) {
            cols.insert(self.rng.random_range(WIDE_PAST_64..=WIDE_COLS));
        }
        cols.into_iter().collect()
    }

    fn wide_update(&mut self, id: i64, step: usize) -> Stmt {
        let cols = self.wide_columns();
        let mut params: Vec<Param> = cols.iter().map(|i| self.wide_value(*i, step)).collect();
        params.push(Param::Int(id));
        Stmt {
            sql: format!(
                "UPDATE wide SET {} WHERE id = ?",
                cols.iter()
                    .map(|i| format!("c{i} = ?"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            params,
        }
    }

    /// A write to `site`'s own wide rows: inserts, updates of a few columns, deletes, key
    /// changes (of the rowid itself), chains of them, REPLACE and UPSERT.
    fn wide_write(&mut self, site: &str, step: usize) -> Vec<Stmt> {
        let own = self.wide_ids(site, Some(site));
        let fresh = wide_key(site, step, 0);
        if own.is_empty() || self.rng.random_range(0..5) == 0 {
            return vec![self.wide_insert(site, fresh, step, "INSERT")];
        }
        let id = own[self.rng.random_range(0..own.len())];
        let rekey = Stmt {
            sql: "UPDATE wide SET id = ? WHERE id = ?".into(),
            params: vec![Param::Int(wide_key(site, step, 1)), Param::Int(id)],
        };
        let delete = Stmt {
            sql: "DELETE FROM wide WHERE id = ?".into(),
            params: vec![Param::Int(id)],
        };
        match self.rng.random_range(0..10) {
            0..=3 => vec![self.wide_update(id, step)],
            // Update, then delete, before the next dock.
            4 => vec![self.wide_update(id, step), delete],
            // Update, then a key change.
            5 => vec![self.wide_update(id, step), rekey],
            6 => vec![rekey],
            // REPLACE over an existing key: every column anew.
            7 => vec![self.wide_insert(site, id, step, "INSERT OR REPLACE")],
            // UPSERT over an existing key, or a new one: a few columns of it.
            8 => {
                let target = if self.rng.random_bool(0.7) { id } else { fresh };
                let cols = self.wide_columns();
                let mut s = self.wide_insert(site, target, step, "INSERT");
                s.sql.push_str(&format!(
                    " ON CONFLICT(id) DO UPDATE SET {}",
                    cols.iter()
                        .map(|i| format!("c{i} = excluded.c{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                vec![s]
            }
            _ => vec![delete],
        }
    }

    fn line_insert(&mut self, memo: &str, id: &str, step: usize) -> Stmt {
        let rng = &mut self.rng;
        Stmt {
            sql: "INSERT INTO memo_line(id, memo_id, qty, price, label) VALUES (?, ?, ?, ?, ?)"
                .into(),
            params: vec![
                Param::Text(id.into()),
                Param::Text(memo.into()),
                maybe(rng, |r| Param::Int(int(r))),
                maybe(rng, |r| Param::Real(real(r))),
                maybe(rng, |r| text(r, step)),
            ],
        }
    }
}
/// A key in `site`'s own range of `wide`, so sites never take the same fresh key (an
/// insert-insert collision would be genuine, but is not what this table tests): `variant` 0
/// for an insert at `step`, 1 for a key change. Nodes of even number count down from below
/// zero.
fn wide_key(site: &str, step: usize, variant: i64) -> i64 {
    let s = std::iter::once("hq")
        .chain(NODES.iter().map(|(n, _)| *n))
        .position(|x| x == site)
        .unwrap();
    let s = i64::try_from(s).unwrap() + 1;
    let k = s * 1_000_000_000 + i64::try_from(step).unwrap() * 100 + variant;
    if s % 2 == 0 { -k } else { k }
}

/// Central migrates (from a developer's copy, submitted and accepted): `opty.close_date`
/// added and, when `renames_note`, `activity.note` renamed to `remark`; it needs software
/// `level` at the nodes.
fn migrate_central(w: &World, renames_note: bool, level: &str) {
    let dev = w.schema_copy("dev");
    let mut sql = "ALTER TABLE opty ADD COLUMN close_date TEXT".to_string();
    let mut renames = Vec::new();
    if renames_note {
        sql.push_str("; ALTER TABLE activity RENAME COLUMN note TO remark");
        renames.push("activity.note=remark".parse::<Rename>().unwrap());
    }
    let m = migrate::create_by_sql(
        &dev,
        &sql,
        &NewMigration {
            name: "close-date",
            software_level: level,
            origin: "dev",
            diff: DiffOptions {
                renames,
                ..DiffOptions::default()
            },
        },
    )
    .unwrap();
    let file = migrate::submit(&dev, "hq", m.version, &w.root.path().join("outbox"), None).unwrap();
    migrate::accept(&mut w.open("hq"), &file).unwrap();
}

/// The upgrade package every node installs: its install command appends to a file.
const PACKAGE: &str = "field-2";

fn publish_upgrade(w: &World) {
    let dir = w.root.path().join("pkg");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("install.sh"),
        "#!/bin/sh\necho \"$BERTH_PACKAGE $BERTH_LEVEL\" >> \"$BERTH_SITE_DIR/installed.txt\"\n",
    )
    .unwrap();
    fs::write(
        dir.join("package.toml"),
        format!(
            "name = \"{PACKAGE}\"\nlevel = \"2\"\ndescription = \"Field app 2\"\n\
             download = \"forced\"\napply = \"immediate\"\ninstall = [\"sh\", \"install.sh\"]\n\n\
             [[files]]\nname = \"install.sh\"\n"
        ),
    )
    .unwrap();
    let mut hq = w.open("hq");
    berth_engine::upgrade::central::publish(&mut hq, &dir.join("package.toml")).unwrap();
    berth_engine::upgrade::central::activate(&mut hq, PACKAGE).unwrap();
}

/// What happens to a bundle on its way.
fn deliver(w: &World, rng: &mut StdRng, written: &[std::path::PathBuf], stash: &Path) {
    for path in written {
        match rng.random_range(0..12) {
            // Lost.
            0 => fs::remove_file(path).unwrap(),
            // Copied aside: delivered again later (duplicated, reordered).
            1 | 2 => {
                fs::copy(path, stash.join(path.file_name().unwrap())).unwrap();
            }
            // Delayed: taken away now, delivered later.
            3 => {
                fs::rename(path, stash.join(path.file_name().unwrap())).unwrap();
            }
            // Torn: the copy stopped half way.
            4 => {
                let bytes = fs::read(path).unwrap();
                fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
            }
            _ => {}
        }
    }
    let _ = w;
}

fn simulate(seed: u64) {
    let nodes: Vec<(&str, BTreeMap<String, String>)> = NODES
        .iter()
        .map(|(n, e)| {
            (
                *n,
                BTreeMap::from([("employee".to_string(), e.to_string())]),
            )
        })
        .collect();
    let docking =
        sample("docking.toml").replacen("[tables]\n", &format!("[tables]\n{MEMO_DOCKING}"), 1);
    assert!(docking.contains("\nwide = "), "memo and wide entries added");
    let schema = format!("{}\n{MEMO_SCHEMA}{}", sample("schema.sql"), wide_schema());
    let w = World::build(&schema, &sample("data.sql"), Some(&docking), &nodes);
    if let Ok(batch) = std::env::var("BERTH_SIM_ROUTING_BATCH") {
        // Routing batches that end anywhere, inside merged node bundles too (SPEC 2.8).
        let cfg = w.central.join("berth.toml");
        let text = fs::read_to_string(&cfg).unwrap();
        fs::write(
            &cfg,
            format!("{text}\n[routing]\nbatch_changes = {batch}\n"),
        )
        .unwrap();
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let renames_note = rng.random_bool(0.5);
    let mut sim = Sim {
        w: &w,
        model: DockingModel::from_toml(&docking).unwrap(),
        rng,
        seed,
        ledger: Vec::new(),
        routings: Vec::new(),
        renames_note,
        writers: BTreeMap::new(),
        crashes: BTreeMap::new(),
        forms: StdRng::seed_from_u64(seed ^ 0x5ea1_ed00),
        moves: Vec::new(),
    };
    sim.routed();
    let stash = w.root.path().join("stash");
    fs::create_dir_all(&stash).unwrap();
    let sites: Vec<&str> = std::iter::once("hq")
        .chain(NODES.iter().map(|(n, _)| *n))
        .collect();
    // In some seeds the migration needs the software the upgrade package installs: nodes
    // hold it (and upload nothing) until the package arrives and installs.
    let level = if cfg!(unix) && sim.rng.random_bool(0.3) {
        "2"
    } else {
        "1"
    };
    let migrate_at = sim.rng.random_range(20..110);
    let upgrade_at = sim.rng.random_range(10..120);
    for step in 0..150 {
        if step == migrate_at {
            // One node's bundle from the old schema is on its way, another node holds
            // changes captured under it: both are translated.
            let (a, b) = (
                pick(&mut sim.rng, &sites[1..]),
                pick(&mut sim.rng, &sites[1..]),
            );
            for k in 1..=3 {
                // Numbered apart from the step's own write (ids are made from it).
                sim.random_write(1000 * k + step);
            }
            for n in [b, a] {
                let sql = format!(
                    "INSERT OR IGNORE INTO activity(id, account_id, kind, note) SELECT '{n}{step}m', id, 'task', 'old schema' FROM account ORDER BY id LIMIT 1"
                );
                sim.write(n, step, &[Stmt::sql(sql)]);
            }
            sim.dock_plain(a);
            migrate_central(&w, renames_note, level);
        }
        if step == upgrade_at && cfg!(unix) {
            publish_upgrade(&w);
        }
        match sim.rng.random_range(0..20) {
            0..=8 => sim.random_write(step),
            9..=13 => {
                let site = pick(&mut sim.rng, &sites);
                let r = sim.dock_plain(site);
                deliver(&w, &mut sim.rng, &r.written, &stash);
            }
            14 | 15 => {
                // A crash in the middle of applying or of writing a bundle: nothing of it
                // may be lost or count twice.
                let site = pick(&mut sim.rng, &sites);
                let (opts, at) = match sim.rng.random_range(0..5) {
                    0 | 1 => (
                        DockOptions {
                            fail_after: Some(sim.rng.random_range(0..6)),
                            ..DockOptions::default()
                        },
                        "apply",
                    ),
                    2 => (
                        DockOptions {
                            fail_intake: Some(
                                IntakeStep::ALL[sim.rng.random_range(0..IntakeStep::ALL.len())],
                            ),
                            ..DockOptions::default()
                        },
                        "intake",
                    ),
                    _ => {
                        let step = ExportStep::ALL[sim.rng.random_range(0..ExportStep::ALL.len())];
                        (sim.export_crash(step), "export")
                    }
                };
                sim.dock(site, &opts, Some(at));
            }
            16 | 17 => {
                // Stashed copies turn up again, in any order.
                let mut entries: Vec<_> = fs::read_dir(&stash)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                entries.sort();
                if !entries.is_empty() {
                    let p = &entries[sim.rng.random_range(0..entries.len())];
                    fs::copy(p, w.via.join(p.file_name().unwrap())).unwrap();
                }
            }
            _ => {
                let site = pick(&mut sim.rng, &sites);
                sim.dock_plain(site);
            }
        }
    }
    // Quiescence: every stashed copy is delivered, then everyone docks until nothing moves.
    for e in fs::read_dir(&stash).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, w.via.join(p.file_name().unwrap())).unwrap();
    }
    let mut order: Vec<String> = NODES.iter().map(|(n, _)| n.to_string()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, sim.rng.random_range(0..=i));
    }
    let violations = match sim.settle(&order) {
        Ok(()) => check(&sim),
        Err(stuck) => {
            // Not quiescent: only the collisions recorded so far can be judged.
            let mut v = genuine_collisions(&sim, &conflicts(&w));
            v.push(format!("[settle] {stuck}"));
            v
        }
    };
    eprintln!(
        "seed {seed}: {} writes in the ledger ({:?}; rows left by each writer: {:?}), crashes {:?}, {} conflicts recorded, migration at step {migrate_at}{} needing software level {level}, upgrade at step {upgrade_at}",
        sim.ledger.len(),
        sim.writers,
        coverage(&sim.ledger),
        sim.crashes,
        w.conflicts(),
        if renames_note { " (with a rename)" } else { "" },
    );
    assert!(
        violations.is_empty(),
        "seed {seed}: {} invariant violations (replay: BERTH_SIM_SEED={seed} cargo test -p berth-tests --test simulation):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// What the run covered: per kind of row (one holding an infinity, text that is not UTF-8, a
/// wide row with a column past the 64th changed), how many rows each writer left so.
fn coverage(ledger: &[Entry]) -> BTreeMap<&'static str, BTreeMap<Writer, usize>> {
    let mut out: BTreeMap<&'static str, BTreeMap<Writer, usize>> = BTreeMap::new();
    for e in ledger {
        let Some(after) = &e.after else { continue };
        let kinds = [
            (
                "inf",
                after
                    .values()
                    .any(|v| matches!(v, Val::Real(b) if f64::from_bits(*b).is_infinite())),
            ),
            (
                "non-utf8",
                after
                    .values()
                    .any(|v| matches!(v, Val::Text(t) if std::str::from_utf8(t).is_err())),
            ),
            (
                "wide>64",
                e.table == "wide"
                    && (WIDE_PAST_64..=WIDE_COLS).any(|i| e.touches(&format!("c{i}"))),
            ),
        ];
        for (kind, _) in kinds.iter().filter(|(_, hit)| *hit) {
            *out.entry(kind).or_default().entry(e.writer).or_default() += 1;
        }
    }
    out
}

fn conflicts(w: &World) -> Vec<Conflict> {
    let c = w.app("hq");
    let mut st = c
        .prepare(
            "SELECT id, node, tbl, pk, kind, columns, origin_pos, bundle_id, resolution, node_old, node_new, central
             FROM berth_conflicts ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        let columns: String = r.get(5)?;
        Ok(Conflict {
            id: r.get(0)?,
            node: r.get(1)?,
            tbl: r.get(2)?,
            pk: r.get(3)?,
            kind: r.get(4)?,
            columns: serde_json::from_str(&columns).unwrap_or_default(),
            origin_pos: r.get(6)?,
            bundle_id: r.get(7)?,
            resolution: r.get(8)?,
            node_old: r.get(9)?,
            node_new: r.get(10)?,
            central: r.get(11)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// At most this many violations of one invariant are listed (then a count).
const LIST: usize = 12;

fn listed(label: &str, found: Vec<String>) -> Vec<String> {
    let n = found.len();
    let mut out: Vec<String> = found
        .into_iter()
        .take(LIST)
        .map(|f| format!("[{label}] {f}"))
        .collect();
    if n > LIST {
        out.push(format!("[{label}] ... and {} more", n - LIST));
    }
    out
}

/// The ledger's writes to one row (under any key it had), for a message.
fn history(sim: &Sim<'_>, table: &str, key: &str) -> String {
    let lineage = sim.lineage(table, key);
    sim.ledger
        .iter()
        .filter(|e| e.table == table && lineage.contains(&e.key))
        .map(|e| format!("\n      {e}"))
        .collect()
}

fn cell(row: Option<&TypedRow>) -> String {
    row.map_or("(no row)".into(), show)
}

/// (a) Every recorded collision is genuine.
/// The instance a `denied` link names in its resolution (`... links T K to OBJECT KEY (...`):
/// its primary table and key, as `berth_conflicts` spells them.
fn linked_instance(sim: &Sim<'_>, resolution: &str) -> Option<(String, String)> {
    let rest = &resolution[resolution.find(" links ")?..];
    let rest = &rest[rest.find(" to ")? + 4..];
    let (object, rest) = rest.split_once(' ')?;
    let key = &rest[..rest.find(" (")?];
    let table = sim.model.object(object)?.primary_table.clone();
    Some((table, key.to_string()))
}

fn genuine_collisions(sim: &Sim<'_>, conflicts: &[Conflict]) -> Vec<String> {
    let mut out = Vec::new();
    // Per collision judged genuine: the other sites' writes it raced.
    let mut raced: BTreeMap<i64, Vec<&Entry>> = BTreeMap::new();
    // The collisions judged genuine so far.
    let mut genuine_ids: BTreeSet<i64> = BTreeSet::new();
    for c in conflicts {
        let cols: Vec<String> = c
            .columns
            .iter()
            .map(|k| sim.final_name(&c.tbl, k))
            .collect();
        let lineage = sim.lineage(&c.tbl, &c.pk);
        let on_row: Vec<&Entry> = sim
            .ledger
            .iter()
            .filter(|e| e.table == c.tbl && lineage.contains(&e.key))
            .collect();
        let mine = on_row.iter().filter(|e| e.site == c.node);
        let limited = sim
            .model
            .table(&c.tbl)
            .is_some_and(|t| t.visibility == Visibility::Limited);
        let genuine = match c.kind.as_str() {
            // A limited row the node held may leave it by a visibility change at central
            // it had not seen yet (an enterprise row never does).
            "denied" => {
                mine.clone().any(|e| e.forbidden)
                    || limited
                        && mine.clone().any(|e| {
                            sim.ledger.iter().any(|x| {
                                x.site == "hq"
                                    && VISIBILITY_TABLES.contains(&x.table.as_str())
                                    && Sim::concurrent(e, x)
                            })
                        })
                    // A link to an instance the node still had only because its own earlier
                    // write to it was genuinely refused (the instance had left it at
                    // central) and the correction had not reached it yet.
                    || linked_instance(sim, &c.resolution).is_some_and(|(table, key)| {
                        conflicts.iter().any(|p| {
                            p.id < c.id
                                && p.node == c.node
                                && p.tbl == table
                                && sim.lineage(&table, &p.pk).contains(&key)
                                && genuine_ids.contains(&p.id)
                        })
                    })
            }
            _ => {
                let mut by: Vec<&Entry> = mine
                    .clone()
                    .flat_map(|e| {
                        sim.ledger.iter().filter(|x| {
                            x.site != c.node
                                && Sim::concurrent(e, x)
                                && if x.table == c.tbl && lineage.contains(&x.key) {
                                    c.kind != "update-update"
                                        || cols.iter().any(|k| e.touches(k) && x.touches(k))
                                } else {
                                    // A UNIQUE value central keeps for another row.
                                    c.kind == "constraint" && contends(sim, e, x)
                                }
                        })
                    })
                    .collect();
                // A later write of the node to a row whose earlier write a genuine
                // collision undid (refused, or central won) raced the same writes when the
                // node made it before seeing them.
                for p in conflicts.iter().filter(|p| {
                    p.id < c.id
                        && p.node == c.node
                        && p.tbl == c.tbl
                        && lineage.contains(&p.pk)
                        && p.resolution != "node-wins"
                }) {
                    let earlier = raced.get(&p.id).map_or(&[][..], Vec::as_slice);
                    by.extend(
                        earlier
                            .iter()
                            .filter(|x| mine.clone().any(|e| Sim::concurrent(e, x))),
                    );
                }
                // A row refused because the row it refers to was refused: a genuine
                // collision of the same node on that parent row came first.
                if by.is_empty() && c.kind == "constraint" {
                    let new: serde_json::Value = c
                        .node_new
                        .as_deref()
                        .and_then(|n| serde_json::from_str(n).ok())
                        .unwrap_or_default();
                    for (parent, from) in parents(sim.w, &c.tbl) {
                        let Some(v) = new.get(&from) else { continue };
                        let key = serde_json::json!([v]).to_string();
                        for p in conflicts.iter().filter(|p| {
                            p.id < c.id
                                && p.node == c.node
                                && p.tbl == parent
                                && sim.lineage(&parent, &p.pk).contains(&key)
                        }) {
                            by.extend(raced.get(&p.id).map_or(&[][..], Vec::as_slice));
                        }
                    }
                }
                // A UNIQUE value central still holds for another row because a genuine
                // collision of the same node on that row went central's way (it kept a row
                // the node had deleted or replaced): the node reused the value before the
                // correction reached it, racing the writes that collision raced.
                if by.is_empty() && c.kind == "constraint" {
                    for p in conflicts.iter().filter(|p| {
                        p.id < c.id
                            && p.node == c.node
                            && p.tbl == c.tbl
                            && p.resolution != "node-wins"
                            && !lineage.contains(&p.pk)
                    }) {
                        let kept = sim.lineage(&p.tbl, &p.pk);
                        let holds = sim.ledger.iter().any(|x| {
                            x.table == p.tbl
                                && kept.contains(&x.key)
                                && mine.clone().any(|e| contends(sim, e, x))
                        });
                        if holds {
                            by.extend(raced.get(&p.id).map_or(&[][..], Vec::as_slice));
                        }
                    }
                }
                let genuine = !by.is_empty();
                raced.insert(c.id, by);
                genuine
            }
        };
        if genuine {
            genuine_ids.insert(c.id);
        } else {
            out.push(format!(
                "{c}\n    is not a genuine collision: no write of {} to this row{} was concurrent with another site's{}; the row's writes:{}",
                c.node,
                if c.kind == "update-update" {
                    format!(" (columns {cols:?})")
                } else {
                    String::new()
                },
                if c.kind == "constraint" {
                    " (nor with one keeping a UNIQUE value of the row for another)"
                } else {
                    ""
                },
                history(sim, &c.tbl, &c.pk)
            ));
        }
    }
    listed("a: false collision", out)
}

/// Whether another row's write `x` holds a UNIQUE value (every column of a UNIQUE
/// constraint of the table at central, none NULL) the same as node write `e` wrote: central
/// keeping `x`'s row refuses `e`'s.
fn contends(sim: &Sim<'_>, e: &Entry, x: &Entry) -> bool {
    let (Some(mine), Some(theirs)) = (&e.after, &x.after) else {
        return false;
    };
    x.table == e.table
        && unique_sets(sim.w, &e.table).iter().any(|set| {
            set.iter().all(|k| {
                let v = mine.get(&sim.final_name(&e.table, k));
                v.is_some_and(|v| *v != Val::Null) && v == theirs.get(&sim.final_name(&e.table, k))
            })
        })
}

/// The tables a table's foreign keys refer to at central, with the referring column
/// (single-column foreign keys).
fn parents(w: &World, table: &str) -> Vec<(String, String)> {
    w.app("hq")
        .prepare("SELECT \"table\", \"from\" FROM pragma_foreign_key_list(?1)")
        .unwrap()
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The column sets of a table's UNIQUE constraints at central (its key not among them).
fn unique_sets(w: &World, table: &str) -> Vec<Vec<String>> {
    let c = w.app("hq");
    let names: Vec<String> = c
        .prepare("SELECT name FROM pragma_index_list(?1) WHERE \"unique\" AND origin = 'u'")
        .unwrap()
        .query_map([table], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    names
        .iter()
        .map(|n| {
            c.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
                .unwrap()
                .query_map([n], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        })
        .collect()
}

/// (b) Every node write is at central, or a collision names that node and that row.
fn nothing_lost(sim: &Sim<'_>, conflicts: &[Conflict], central: &Rows) -> Vec<String> {
    let mut out = Vec::new();
    for e in sim.ledger.iter().filter(|e| e.site != "hq") {
        // A collision on the node's change of this row, under any key the row had.
        let lineage = sim.lineage(&e.table, &e.key);
        if conflicts
            .iter()
            .any(|c| c.node == e.site && c.tbl == e.table && lineage.contains(&c.pk))
        {
            continue;
        }
        let fin = central.get(&e.table).and_then(|t| t.get(&e.key));
        let later: Vec<&Entry> = sim.ledger[e.idx + 1..]
            .iter()
            .filter(|l| l.table == e.table && l.key == e.key)
            .collect();
        // `x`'s effect on column `col` (`None`: the row's existence) is what central holds.
        let holds = |x: &Entry, col: Option<&str>| match (&x.after, fin) {
            (None, None) => true,
            (Some(a), Some(f)) => match col {
                Some(k) => a.get(k) == f.get(k),
                None => x
                    .cols
                    .clone()
                    .unwrap_or_else(|| a.keys().cloned().collect())
                    .iter()
                    .all(|k| a.get(k) == f.get(k)),
            },
            _ => false,
        };
        let missing: Vec<String> = match &e.after {
            None => {
                if holds(e, None) || later.iter().any(|l| l.after.is_some() && holds(l, None)) {
                    vec![]
                } else {
                    vec!["(the row is still there)".into()]
                }
            }
            Some(a) => e
                .cols
                .clone()
                .unwrap_or_else(|| a.keys().cloned().collect())
                .into_iter()
                .filter(|k| {
                    !holds(e, Some(k)) && !later.iter().any(|l| l.touches(k) && holds(l, Some(k)))
                })
                // A later write of the same site to the column is checked in its stead
                // (and a collision naming it names this write too).
                .filter(|k| !later.iter().any(|l| l.site == e.site && l.touches(k)))
                .collect(),
        };
        if !missing.is_empty() {
            out.push(format!(
                "{e}\n    is not at central and no collision names it: {missing:?} differ; central holds {}; the row's writes:{}",
                cell(fin),
                history(sim, &e.table, &e.key)
            ));
        }
    }
    listed("b: lost write", out)
}

/// (c) Rows only one site wrote end everywhere as it last wrote them; deleted rows stay
/// deleted.
fn owners_last_word(sim: &Sim<'_>, conflicts: &[Conflict], central: &Rows) -> Vec<String> {
    let mut rows: BTreeMap<(&str, &str), Vec<&Entry>> = BTreeMap::new();
    for e in &sim.ledger {
        rows.entry((&e.table, &e.key)).or_default().push(e);
    }
    let finals: Vec<(String, Rows)> = NODES
        .iter()
        .map(|(n, _)| (n.to_string(), sim.w.rows(n)))
        .chain([("hq".to_string(), central.clone())])
        .collect();
    let mut out = Vec::new();
    for ((table, key), writes) in rows {
        let owner = &writes[0].site;
        // The row under every key it had.
        let lineage = sim.lineage(table, key);
        let all = sim
            .ledger
            .iter()
            .filter(|e| e.table == table && lineage.contains(&e.key));
        if all.clone().any(|e| &e.site != owner)
            || conflicts
                .iter()
                .any(|c| c.tbl == table && lineage.contains(&c.pk))
        {
            continue;
        }
        let last = writes.last().unwrap();
        // What each site holds where it differs, sites holding the same grouped.
        let mut wrong: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (site, rows) in &finals {
            let now = rows.get(table).and_then(|t| t.get(key));
            let differs = match (&last.after, now) {
                (None, Some(_)) => true,
                (Some(_), None) => site == "hq",
                (Some(want), Some(have)) => want.iter().any(|(k, v)| have.get(k) != Some(v)),
                (None, None) => false,
            };
            if differs {
                wrong.entry(cell(now)).or_default().push(site);
            }
        }
        if !wrong.is_empty() {
            let at: Vec<String> = wrong
                .iter()
                .map(|(row, sites)| format!("at {} {row}", sites.join(", ")))
                .collect();
            out.push(format!(
                "{table} {key}, written only by {owner}, is {} but {owner} last wrote {}; its writes:{}",
                at.join("; "),
                cell(last.after.as_ref()),
                history(sim, table, key)
            ));
        }
    }
    listed("c: owner's row", out)
}

/// Every invariant after quiescence; the violations, each with what it concerns.
fn check(sim: &Sim<'_>) -> Vec<String> {
    let w = sim.w;
    let conflicts = conflicts(w);
    let central = w.rows("hq");
    let mut out = genuine_collisions(sim, &conflicts);
    out.extend(nothing_lost(sim, &conflicts, &central));
    out.extend(owners_last_word(sim, &conflicts, &central));
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        converged(w, &sim.model, sim.seed);
    }));
    if let Err(e) = run {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(ToString::to_string))
            .unwrap_or_default();
        out.push(format!("[convergence] {msg}"));
    }
    out
}

/// The projection, schema, upgrade and bookkeeping invariants.
fn converged(w: &World, model: &DockingModel, seed: u64) {
    let replay =
        format!("replay: BERTH_SIM_SEED={seed} cargo test -p berth-tests --test simulation");
    let central = migrate::state(&w.open("hq").conn).unwrap();
    assert_eq!(
        central.version, 1,
        "seed {seed}: central migrated ({replay})"
    );
    for (n, _) in NODES {
        w.assert_matches_oracle(model, n);
        let site = w.open(n);
        let st = berth_engine::status::status(&site).unwrap();
        assert!(
            st.held.is_empty(),
            "seed {seed}: {n} holds {:?} ({replay})",
            st.held
        );
        assert_eq!(
            st.peers[0].pending_out, 0,
            "seed {seed}: {n} has unacknowledged changes ({replay})"
        );
        let mine = migrate::state(&site.conn).unwrap();
        assert_eq!(
            (mine.version, &mine.checksum),
            (central.version, &central.checksum),
            "seed {seed}: {n}'s schema differs from central's ({replay})"
        );
        drop(site);
        if cfg!(unix) {
            assert_eq!(
                fs::read_to_string(w.dir(n).join("installed.txt")).unwrap_or_default(),
                format!("{PACKAGE} 2\n"),
                "seed {seed}: {n} installed the package once ({replay})"
            );
            assert_eq!(
                w.value(n, "SELECT count(*) FROM berth_upgrade_outbox"),
                "0",
                "seed {seed}: {n} has upgrade reports central did not acknowledge ({replay})"
            );
        }
    }
    let hq = w.open("hq");
    let st = berth_engine::status::status(&hq).unwrap();
    assert!(
        st.held.is_empty(),
        "seed {seed}: hq holds {:?} ({replay})",
        st.held
    );
    for p in &st.peers {
        assert_eq!(
            p.schema_version,
            Some(central.version),
            "seed {seed}: central records {} at another schema version ({replay})",
            p.name
        );
    }
    if cfg!(unix) {
        let packages = berth_engine::upgrade::central::status(&hq).unwrap();
        for n in &packages[0].nodes {
            assert_eq!(
                n.state, "applied",
                "seed {seed}: central's upgrade status of {} ({replay})",
                n.node
            );
        }
    }
    drop(hq);
    for site in w.nodes.iter().map(|(n, _)| n.as_str()).chain(["hq"]) {
        assert_eq!(
            w.seqs_applied_twice(site),
            0,
            "seed {seed}: {site} applied a bundle twice ({replay})"
        );
        let spool = berth_engine::transport::list(&w.dir(site).join("spool"), None).unwrap();
        assert!(
            spool.is_empty(),
            "seed {seed}: {site} left {spool:?} in its spool ({replay})"
        );
    }
    assert_eq!(
        w.value("hq", "SELECT count(*) FROM berth_partial"),
        "0",
        "seed {seed}: central's partial logs were not all acknowledged ({replay})"
    );
}

#[test]
fn simulation_converges_to_the_oracle() {
    berth_tests::for_seeds_from(
        "BERTH_SIM_SEED",
        "BERTH_SIM_FIRST",
        "BERTH_SIM_SEEDS",
        3,
        simulate,
    );
}

/// The writers store what the simulation asks of them exactly, so its ledger holds the
/// values it means to test: the infinities as REAL, bytes that are not UTF-8 as TEXT, and
/// every column of a row of more than 64 columns, through each SQLite.
#[test]
fn every_writer_stores_infinities_raw_text_and_wide_rows_exactly() {
    let w = World::new(
        &format!(
            "CREATE TABLE v(id INTEGER PRIMARY KEY, r REAL, t TEXT);\n{}",
            wide_schema()
        ),
        "",
        &[],
    );
    let cases: [(f64, &[u8]); 2] = [
        (f64::INFINITY, b"\xED\xA0\x80"),
        (f64::NEG_INFINITY, b"\xFFA\xC3 caf\xE9"),
    ];
    let writers = [Writer::App, Writer::Shell, Writer::Python];
    for (i, writer) in writers.into_iter().enumerate() {
        let mut stmts = Vec::new();
        for (j, (r, t)) in cases.iter().enumerate() {
            let id = i64::try_from(i * cases.len() + j).unwrap();
            stmts.push(Stmt {
                sql: "INSERT INTO v VALUES (?, ?, ?)".into(),
                params: vec![Param::Int(id), Param::Real(*r), Param::RawText(t.to_vec())],
            });
        }
        let id = i64::try_from(i).unwrap();
        let wide = (1..=WIDE_COLS).map(|c| format!("c{c}")).collect::<Vec<_>>();
        stmts.push(Stmt {
            sql: format!(
                "INSERT INTO wide(id, owner, {}) VALUES (?, 'hq'{})",
                wide.join(", "),
                ", ?".repeat(WIDE_COLS)
            ),
            params: [Param::Int(id)]
                .into_iter()
                .chain((1..=WIDE_COLS).map(|c| Param::Int(i64::try_from(c).unwrap())))
                .collect(),
        });
        stmts.push(Stmt {
            sql: format!("UPDATE wide SET c{WIDE_COLS} = ? WHERE id = ?"),
            params: vec![Param::Real(f64::NEG_INFINITY), Param::Int(id)],
        });
        w.write("hq", writer, &stmts);
    }
    let rows = w.rows("hq");
    for (i, writer) in writers.into_iter().enumerate() {
        for (j, (r, t)) in cases.iter().enumerate() {
            let row = &rows["v"][&format!("[{}]", i * cases.len() + j)];
            assert_eq!(row["r"], Val::Real(r.to_bits()), "{writer:?}");
            assert_eq!(row["t"], Val::Text(t.to_vec()), "{writer:?}");
        }
        let row = &rows["wide"][&format!("[{i}]")];
        for c in 1..WIDE_COLS {
            let want = i64::try_from(c).unwrap();
            // Declared REAL converts the integer; TEXT makes it text.
            let want = match wide_type(c) {
                "REAL" => Val::Real((want as f64).to_bits()),
                "TEXT" => Val::Text(want.to_string().into_bytes()),
                _ => Val::Int(want),
            };
            assert_eq!(row[&format!("c{c}")], want, "{writer:?} c{c}");
        }
        assert_eq!(
            row[&format!("c{WIDE_COLS}")],
            Val::Real(f64::NEG_INFINITY.to_bits()),
            "{writer:?}"
        );
    }
}
