//! The shell around [`super::resolve`]: reads current rows, writes the decision, journals it.

pub use super::Cols;
use super::{Collision, Corrective, Policy, Resolution, Write, resolve};
use crate::change::{Change, Op};
use crate::error::{EngineError, Result};
use crate::store::ident;
use crate::table::{
    Arg, OnConflict, WriteError, arg, binds, delete, insert_row, insert_sql, update,
};
pub use crate::table::{Catalog, TableInfo, is_constraint, read_row};
use crate::value::{Row, same};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value as Json;
use std::collections::{BTreeSet, HashMap};

/// The new key of an update that changes its row's key (SPEC 2.5), else `None`.
fn moved_to(t: &TableInfo, ch: &Change) -> Option<Vec<Json>> {
    if ch.op != Op::U || t.pk.len() != ch.k.len() {
        return None;
    }
    let new = ch.new.as_ref()?;
    let to: Vec<Json> =
        t.pk.iter()
            .map(|c| new.get(c).cloned())
            .collect::<Option<_>>()?;
    (!to.iter().zip(&ch.k).all(|(a, b)| same(a, b))).then_some(to)
}

/// True for a FOREIGN KEY violation.
fn is_foreign_key(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY)
}

/// The columns a change writes (those of its `new`), for a conflict record.
fn new_columns(ch: &Change) -> Vec<String> {
    ch.new
        .as_ref()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

fn json_text(row: Option<&Row>) -> Option<String> {
    row.and_then(|r| serde_json::to_string(r).ok())
}

/// Counts of what a merge did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MergeStats {
    /// Changes that applied in full.
    pub applied: u64,
    /// Changes skipped because they were already applied (positions seen before).
    pub skipped: u64,
    /// Changes that collided (rejected in full or in part, or applied over central's value).
    pub conflicts: u64,
    /// At a node: central changes that overrode a local change not yet acknowledged.
    pub overrides: u64,
    /// At a node: rows central's repair changed (SPEC 2.15).
    pub repaired: u64,
}

/// Merges one node's changes at central (Figure 5), journaling accepted changes with their
/// origin, recording collisions and journaling corrective changes for the node.
#[derive(Debug)]
pub struct CentralMerge<'a> {
    /// The open transaction's connection.
    pub conn: &'a Connection,
    /// The replicated tables.
    pub catalog: &'a Catalog,
    /// The node whose bundle this is.
    pub node: &'a str,
    /// The bundle id (for the conflict record).
    pub bundle_id: &'a str,
    /// Central's logical clock for corrective changes.
    pub clock: i64,
    /// Central's own site name (for latest-wins ties).
    pub central: &'a str,
    /// Merge time (Unix seconds).
    pub now: i64,
    /// SQL of the fast-path statements, by (table, operation, column set): building it for
    /// every change would cost as much as running it.
    pub sql: FastSql<'a>,
    /// Write authorization from the docking model (none: every table is open to nodes).
    pub auth: Option<Authorization<'a>>,
}

/// What a node may write, from the docking model (seed: a node cannot change rows it
/// cannot see; SPEC 2.10: nor link rows to instances it does not hold).
#[derive(Debug)]
pub struct Authorization<'a> {
    /// The site's docking model.
    pub model: &'a crate::route::model::DockingModel,
    /// The model resolved against central's schema, made at the first write it is needed for.
    plan: std::cell::OnceCell<crate::route::plan::Plan>,
    /// Instances the bundle created: primary rows it inserted under keys central did not
    /// have, as (object, id).
    created: std::cell::RefCell<BTreeSet<(String, String)>>,
}

impl<'a> Authorization<'a> {
    /// Authorization by `model`.
    pub fn new(model: &'a crate::route::model::DockingModel) -> Self {
        Self {
            model,
            plan: std::cell::OnceCell::new(),
            created: std::cell::RefCell::default(),
        }
    }

    fn plan(&self, conn: &Connection) -> Result<&crate::route::plan::Plan> {
        if let Some(p) = self.plan.get() {
            return Ok(p);
        }
        let plan = crate::route::plan::Plan::new(conn, self.model)?;
        plan.prepare_links(conn)?;
        Ok(self.plan.get_or_init(|| plan))
    }
}

/// What the links a node's write makes allow (SPEC 2.10, "Links").
enum Links {
    Allowed,
    /// The instance it links to may come later in the bundle.
    Wait,
    /// Refused, with the reason.
    Denied(String),
}

/// Prepared fast-path statements of one merge, by (table, operation, column set), and the
/// journal insert: preparing or even looking them up by SQL text for every change would cost
/// as much as running them.
#[derive(Debug, Default)]
pub struct FastSql<'a> {
    statements: std::cell::RefCell<HashMap<(usize, Op, u64), rusqlite::Statement<'a>>>,
    journal: std::cell::RefCell<Option<rusqlite::Statement<'a>>>,
    /// The last log position already marked or queued ([`CentralMerge::tag`]).
    seen: std::cell::Cell<Option<i64>>,
    /// Positions of the node's own entries still to be marked, with the change's `pos` and
    /// clock ([`CentralMerge::finish`]).
    queued: std::cell::RefCell<Vec<(i64, i64, i64)>>,
    /// Changes a foreign key refused, to try again once the rest of the bundle is merged
    /// ([`CentralMerge::finish`]).
    deferred: std::cell::RefCell<Vec<Change>>,
    /// Refusals are final: the deferred changes' last try.
    last_try: std::cell::Cell<bool>,
    /// Deferred changes are being tried again (no nested tries).
    retrying: std::cell::Cell<bool>,
    /// The tables each table's foreign keys refer to, as read once per merge.
    parents: std::cell::RefCell<HashMap<String, Vec<String>>>,
    /// The rows other sites changed after what the bundle's changes saw
    /// ([`super::contest`]), read at its first change that says what it saw.
    contest: std::cell::RefCell<Option<super::contest::Contest>>,
    /// The last `seen` turned into a position of central's log, and that position.
    seen_at: std::cell::Cell<Option<(i64, Option<i64>)>>,
    /// For a node back from away: its stream after what a change saw, where the log no
    /// longer reaches back to it (SPEC 2.8, [`super::contest::Fallback`]).
    away: std::cell::RefCell<Option<super::contest::Fallback>>,
}

/// Entries marked by one statement. Marking makes a journal row longer, so it is done while
/// the rows are still on the log's last pages: a bundle's worth at its end made SQLite split
/// pages all through the stretch and cost more than one statement per change (measured,
/// docs/BENCHMARKS.md section 3); 64 measured as well as 256, 16 a little worse.
const MARK_BATCH: usize = 64;

/// Bit set of the positions of `cols` in the table's columns (None past 64 columns).
fn column_mask(t: &TableInfo, cols: &[&String]) -> Option<u64> {
    let mut mask = 0u64;
    for c in cols {
        let i = t.cols.iter().position(|x| x == *c)?;
        if i >= 64 {
            return None;
        }
        mask |= 1 << i;
    }
    Some(mask)
}

/// The fast-path statement: an insert that does nothing on a key conflict, an update
/// conditional on the old values, a delete conditional on the whole old row.
fn fast_sql(t: &TableInfo, op: Op, cols: &[&String]) -> String {
    let tbl = ident(&t.name);
    let n = cols.len();
    let numbered = |from: usize, sep: &str, f: &dyn Fn(&String, usize) -> String| {
        cols.iter()
            .enumerate()
            .map(|(i, c)| f(c, from + i + 1))
            .collect::<Vec<_>>()
            .join(sep)
    };
    match op {
        Op::I => insert_sql(t, cols, OnConflict::Keep),
        Op::U => {
            let sets = numbered(0, ", ", &|c, i| format!("{} = ?{i}", ident(c)));
            let conds = numbered(n, " AND ", &|c, i| format!("{} IS ?{i}", ident(c)));
            let keys =
                t.pk.iter()
                    .enumerate()
                    .map(|(i, c)| format!("{} = ?{}", ident(c), 2 * n + i + 1))
                    .collect::<Vec<_>>()
                    .join(" AND ");
            format!("UPDATE {tbl} SET {sets} WHERE {conds} AND {keys}")
        }
        Op::D | Op::A | Op::S | Op::M => {
            let conds = numbered(0, " AND ", &|c, i| format!("{} IS ?{i}", ident(c)));
            format!("DELETE FROM {tbl} WHERE {conds}")
        }
    }
}

/// A key with another number of values than its table's key columns can never address a
/// row: the change is malformed (permanent), not a failure to retry at every dock.
fn check_key(t: &TableInfo, ch: &Change) -> std::result::Result<(), String> {
    if ch.k.len() == t.pk.len() {
        Ok(())
    } else {
        Err(format!(
            "its key has {} values, but table {} has {} key columns ({})",
            ch.k.len(),
            t.name,
            t.pk.len(),
            t.pk.join(", ")
        ))
    }
}

impl CentralMerge<'_> {
    /// Merges one change.
    pub fn merge(&self, ch: &Change, stats: &mut MergeStats) -> Result<()> {
        self.merge_one(ch, stats)?;
        // Nothing waits in almost every bundle: the key test stays off the hot path.
        if self.sql.retrying.get() || self.sql.deferred.borrow().is_empty() {
            return Ok(());
        }
        let adds_key = ch.op == Op::I
            || self
                .catalog
                .tables
                .get(&ch.t)
                .is_some_and(|t| moved_to(t, ch).is_some());
        if adds_key {
            self.retry_children(&ch.t, stats)?;
        }
        Ok(())
    }

    /// A row of `table` was added or re-keyed: the deferred changes whose foreign keys
    /// refer to that table are tried again at once, before later changes of the bundle
    /// (a child's update journaled before its parent's key change goes right after it,
    /// as the writer's SQLite ordered them; not after a later change of that parent).
    fn retry_children(&self, table: &str, stats: &mut MergeStats) -> Result<()> {
        let waiting = std::mem::take(&mut *self.sql.deferred.borrow_mut());
        self.sql.retrying.set(true);
        let mut out = Ok(());
        for ch in waiting {
            if out.is_ok() && self.refers_to(&ch.t, table)? {
                out = self.merge_one(&ch, stats);
            } else {
                self.sql.deferred.borrow_mut().push(ch);
            }
        }
        self.sql.retrying.set(false);
        out
    }

    /// Whether a foreign key of `child` refers to `parent`.
    fn refers_to(&self, child: &str, parent: &str) -> Result<bool> {
        let mut parents = self.sql.parents.borrow_mut();
        let list = match parents.entry(child.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(
                self.conn
                    .prepare(&format!("PRAGMA foreign_key_list({})", ident(child)))?
                    .query_map([], |r| r.get::<_, String>(2))?
                    .collect::<rusqlite::Result<_>>()?,
            ),
        };
        Ok(list.iter().any(|p| p.eq_ignore_ascii_case(parent)))
    }

    /// Merges one change, without trying deferred ones again.
    fn merge_one(&self, ch: &Change, stats: &mut MergeStats) -> Result<()> {
        let bad = |reason: String| self.malformed(ch, reason);
        ch.check().map_err(|r| bad(r.to_string()))?;
        if matches!(ch.op, Op::S | Op::A | Op::M) {
            return Err(bad("a node cannot send statements or markers".into()));
        }
        self.seen()?;
        let Some(t) = self.catalog.tables.get(&ch.t) else {
            self.record(ch, "denied", &[], None, "refused")?;
            stats.conflicts += 1;
            return Ok(());
        };
        check_key(t, ch).map_err(bad)?;
        if self.waits(ch) {
            // A change of a row whose earlier change waits goes after it.
            self.defer(ch);
            return Ok(());
        }
        let denied = self.denied(t, ch)?;
        if denied.is_none() {
            match self.links(t, ch)? {
                Links::Allowed => {}
                Links::Wait => {
                    self.defer(ch);
                    return Ok(());
                }
                Links::Denied(reason) => return self.deny_links(t, ch, &reason, stats),
            }
        }
        if let Some(to) = moved_to(t, ch) {
            return self.key_change(t, ch, to, stats);
        }
        if let Some(corrective) = denied {
            // Invariant 4: a node cannot change what it may not see or may not write.
            let cur = read_row(self.conn, t, &ch.k)?;
            let cols: Vec<String> = ch
                .new
                .as_ref()
                .or(ch.old.as_ref())
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            self.record(ch, "denied", &cols, cur.as_ref(), "refused")?;
            let corrective = match (corrective, cur) {
                (Corrective::Upsert(_), Some(cur)) => Corrective::Upsert(cur),
                (Corrective::Upsert(_), None) | (Corrective::Delete, _) => Corrective::Delete,
                (other, _) => other,
            };
            self.journal_corrective(t, ch, &corrective)?;
            stats.conflicts += 1;
            return Ok(());
        }
        let contested = self.contested(t, ch)?;
        let fast = match contested {
            None => self.fast_path(t, ch),
            Some(_) => Ok(false),
        };
        match fast {
            Ok(true) => {
                stats.applied += 1;
                return Ok(());
            }
            Ok(false) => {}
            Err(WriteError::Payload(r)) => return Err(bad(r)),
            Err(WriteError::Sql(e)) => return Err(e.into()),
        }
        // What the full check reads of the log (latest-wins) must be marked already.
        self.flush()?;
        let current = read_row(self.conn, t, &ch.k)?;
        let node_wins = match t.policy {
            Policy::CentralWins => false,
            Policy::NodeWins => true,
            Policy::LatestWins => self.node_is_later(t, ch)?,
        };
        let res = resolve(current.as_ref(), ch, node_wins, contested.as_ref());
        match self.execute(t, ch, &res) {
            Ok(()) => {}
            Err(WriteError::Payload(r)) => return Err(bad(r)),
            Err(WriteError::Sql(e)) if self.defers(&e) => {
                // The row it refers to may come later in the bundle: a node's writer with
                // foreign keys on journals ON UPDATE CASCADE's child updates before the key
                // change of their parent.
                self.defer(ch);
                return Ok(());
            }
            Err(WriteError::Sql(e)) if is_constraint(&e) => {
                let corrective = match &current {
                    Some(cur) => Corrective::Upsert(cur.clone()),
                    None => Corrective::Delete,
                };
                let cols = new_columns(ch);
                self.record(
                    ch,
                    Collision::Constraint.as_str(),
                    &cols,
                    current.as_ref(),
                    "refused",
                )?;
                self.journal_corrective(t, ch, &corrective)?;
                stats.conflicts += 1;
                return Ok(());
            }
            Err(WriteError::Sql(e)) => return Err(e.into()),
        }
        if let Some((kind, cols)) = &res.collision {
            let resolution = if res.corrective.is_some() {
                "central-wins"
            } else {
                "node-wins"
            };
            self.record(ch, kind.as_str(), cols, current.as_ref(), resolution)?;
            stats.conflicts += 1;
        } else {
            stats.applied += 1;
        }
        if let Some(c) = &res.corrective {
            self.journal_corrective(t, ch, c)?;
        }
        Ok(())
    }

    /// The columns of the change's row that another site changed after the node last saw
    /// it, though their values may be back to what it saw (SPEC 2.10).
    fn contested(&self, t: &TableInfo, ch: &Change) -> Result<Option<Cols>> {
        let Some(seen) = ch.seen else {
            return Ok(None);
        };
        let from = match self.sql.seen_at.get() {
            Some((s, from)) if s == seen => from,
            _ => {
                let from = super::contest::seen_pos(self.conn, self.node, seen)?;
                self.sql.seen_at.set(Some((seen, from)));
                from
            }
        };
        let Some(from) = from else {
            return Ok(None);
        };
        {
            let mut away = self.sql.away.borrow_mut();
            let away = match away.as_mut() {
                Some(a) if a.seen == seen => a,
                _ => away.insert(super::contest::Fallback::load(
                    self.conn, self.node, seen, from,
                )?),
            };
            if away.active {
                return Ok(away.get(&t.name, &ch.key_text()));
            }
        }
        let mut contest = self.sql.contest.borrow_mut();
        let contest = match contest.as_mut() {
            Some(c) if c.from <= from => c,
            _ => {
                // The node's entries queued so far must show as its own.
                self.flush()?;
                contest.insert(super::contest::Contest::load(self.conn, from)?)
            }
        };
        contest.get(
            self.conn,
            t,
            &ch.k,
            &ch.key_text(),
            (self.node, self.central),
            from,
        )
    }

    fn node_is_later(&self, t: &TableInfo, ch: &Change) -> Result<bool> {
        let key = ch.key_text();
        let last: Option<(Option<i64>, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT clock, origin FROM berth_log WHERE tbl = ?1 AND pk = ?2 AND target IS NULL
                 ORDER BY pos DESC LIMIT 1",
            )?
            .query_row(params![t.name, key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((clock, origin)) = last else {
            return Ok(true);
        };
        let theirs = (
            clock.unwrap_or(self.clock),
            origin.unwrap_or_else(|| self.central.to_string()),
        );
        // Later logical time wins; on a tie the lower site name wins, the same everywhere.
        Ok((ch.c, std::cmp::Reverse(self.node)) > (theirs.0, std::cmp::Reverse(theirs.1.as_str())))
    }

    /// Write authorization: `None` when the node may make this change, else the kind of
    /// corrective change that undoes it at the node (`Upsert` = central's row, or a delete
    /// where central has none; `Delete` = the node may not hold the row at all).
    fn denied(&self, t: &TableInfo, ch: &Change) -> Result<Option<Corrective>> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let Some(spec) = auth.model.tables.get(&t.name.to_lowercase()) else {
            return Ok(None);
        };
        use crate::route::model::Visibility;
        if spec.visibility == Visibility::Central {
            return Ok(Some(Corrective::Delete));
        }
        if !spec.node_write {
            return Ok(Some(Corrective::Upsert(Row::new())));
        }
        if spec.visibility == Visibility::Limited {
            // An insert of a new key is allowed (the row is routed back to the node only if
            // it may see it); an insert over an existing row it does not hold is not, or its
            // collision correction would hand it the row.
            if ch.op == Op::I && read_row(self.conn, t, &ch.k)?.is_none() {
                return Ok(None);
            }
            // A delete of a row central no longer has changes nothing (central deleted it
            // too, or it left the node meanwhile): nothing to refuse.
            if ch.op == Op::D && read_row(self.conn, t, &ch.k)?.is_none() {
                return Ok(None);
            }
            let holds: bool = self
                .conn
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM berth_node_rows WHERE node = ?1 AND tbl = ?2 AND pk = ?3)")?
                .query_row(params![self.node, t.name, ch.key_text()], |r| r.get(0))?;
            if !holds {
                return Ok(Some(Corrective::Delete));
            }
        }
        Ok(None)
    }

    /// Link authorization (SPEC 2.10, "Links"): an insert or update may link its row (or
    /// the rows below it) only to instances the node holds or the bundle created, unless the
    /// model grants the link (`node_link`). The instances reached are compared before and
    /// after the write the node asks for: memberships from the row, mapping pairs with the
    /// write made in a savepoint and rolled back.
    fn links(&self, t: &TableInfo, ch: &Change) -> Result<Links> {
        let Some(auth) = &self.auth else {
            return Ok(Links::Allowed);
        };
        if !matches!(ch.op, Op::I | Op::U) {
            return Ok(Links::Allowed);
        }
        let plan = auth.plan(self.conn)?;
        if !plan.links_through(&t.name) {
            return Ok(Links::Allowed);
        }
        if let Some(object) = plan.read_by_rules(&t.name) {
            return Ok(Links::Denied(format!(
                "a rule of object {object} reads table {} outside its member paths, so a node's write there could change who sees any {object}",
                t.name
            )));
        }
        let cur = read_row(self.conn, t, &ch.k)?;
        let mut new = match (&cur, ch.op) {
            (Some(c), Op::U) => c.clone(),
            (None, Op::U) => ch.old.clone().unwrap_or_default(),
            _ => Row::new(),
        };
        new.extend(ch.new.iter().flatten().map(|(c, v)| (c.clone(), v.clone())));
        if ch.op == Op::I && cur.is_none() {
            auth.created
                .borrow_mut()
                .extend(plan.own_instances(&t.name, &new));
        }
        let probe = plan.probe(self.conn, &t.name, cur.as_ref(), Some(&new))?;
        let gains = if probe.needs_write() {
            self.conn.execute_batch("SAVEPOINT berth_links")?;
            let wrote = match &cur {
                Some(_) => update(self.conn, t, &ch.k, &new).map(drop),
                None => insert_row(self.conn, t, &new, OnConflict::Fail),
            };
            let gains = match wrote {
                Ok(()) => plan.gains(self.conn, &t.name, &probe, Some(&new), true),
                Err(_) => Ok(Vec::new()),
            };
            self.conn
                .execute_batch("ROLLBACK TO berth_links; RELEASE berth_links")?;
            match wrote {
                Ok(()) => gains?,
                Err(WriteError::Payload(r)) => return Err(self.malformed(ch, r)),
                Err(WriteError::Sql(e)) if self.defers(&e) => return Ok(Links::Wait),
                // The merge's own write fails the same way and refuses the change.
                Err(WriteError::Sql(e)) if is_foreign_key(&e) => {
                    plan.gains(self.conn, &t.name, &probe, Some(&new), false)?
                }
                Err(WriteError::Sql(e)) if is_constraint(&e) => {
                    return Ok(Links::Denied(format!(
                        "its links could not be checked: SQLite refused the write ({e})"
                    )));
                }
                Err(WriteError::Sql(e)) => return Err(e.into()),
            }
        } else {
            plan.gains(self.conn, &t.name, &probe, Some(&new), false)?
        };
        let mut held = self.conn.prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM berth_instances WHERE obj = ?1 AND id = ?2 AND node = ?3)",
        )?;
        for g in gains {
            if g.granted
                || auth
                    .created
                    .borrow()
                    .contains(&(g.object.clone(), g.id.clone()))
                || held.query_row(params![g.object, g.id, self.node], |r| r.get::<_, bool>(0))?
            {
                continue;
            }
            let exists = plan.instance_exists(self.conn, &g.object, &g.id)?;
            if !exists && !self.sql.last_try.get() {
                // It may be created later in the bundle (a writer without foreign keys).
                return Ok(Links::Wait);
            }
            let what = if exists {
                "which it does not hold"
            } else {
                "which does not exist"
            };
            return Ok(Links::Denied(format!(
                "it links {} {} to {} {} ({}), {what}; the docking model does not let nodes make that link (node_link)",
                t.name,
                ch.key_text(),
                g.object,
                g.id,
                g.via
            )));
        }
        Ok(Links::Allowed)
    }

    /// Refuses a write whose links are not allowed: a `denied` conflict with the reason, and
    /// the corrective changes that undo it at the node (central's row, or its removal; for
    /// a key change, under both keys).
    fn deny_links(
        &self,
        t: &TableInfo,
        ch: &Change,
        reason: &str,
        stats: &mut MergeStats,
    ) -> Result<()> {
        let cur = read_row(self.conn, t, &ch.k)?;
        let cols = new_columns(ch);
        self.record(
            ch,
            "denied",
            &cols,
            cur.as_ref(),
            &format!("refused: {reason}"),
        )?;
        // An instance this change would have created is not there for later changes.
        if let (Some(auth), Some(new)) = (&self.auth, &ch.new)
            && let Some(plan) = auth.plan.get()
        {
            let own = plan.own_instances(&t.name, new);
            auth.created.borrow_mut().retain(|i| !own.contains(i));
        }
        if let Some(to) = moved_to(t, ch) {
            let moved = Change {
                k: to,
                ..ch.clone()
            };
            self.journal_corrective(t, &moved, &Corrective::Delete)?;
        }
        let corrective = match cur {
            Some(cur) => Corrective::Upsert(cur),
            None => Corrective::Delete,
        };
        self.journal_corrective(t, ch, &corrective)?;
        stats.conflicts += 1;
        Ok(())
    }

    /// The common case in one statement, without reading the row first: an insert of a new
    /// key, an update whose old values all still hold, a delete of an unchanged row. Returns
    /// false when the statement matched nothing (or broke a constraint), so the full
    /// collision check decides.
    fn fast_path(&self, t: &TableInfo, ch: &Change) -> std::result::Result<bool, WriteError> {
        let empty = Row::new();
        let new = ch.new.as_ref().unwrap_or(&empty);
        let old = ch.old.as_ref().unwrap_or(&empty);
        let cols: Vec<&String> = match ch.op {
            Op::I => new.keys().collect(),
            Op::U => old.keys().collect(),
            Op::D => old.keys().collect(),
            Op::A | Op::S | Op::M => return Ok(false),
        };
        let usable = match ch.op {
            Op::I => !cols.is_empty(),
            Op::U => {
                !cols.is_empty()
                    && cols
                        .iter()
                        .all(|c| new.contains_key(*c) && !t.pk.contains(c))
            }
            Op::D => cols.len() == t.cols.len(),
            Op::A | Op::S | Op::M => false,
        };
        if !usable {
            return Ok(false);
        }
        let vals = self.fast_values(t, ch, &cols)?;
        let Some(mask) = column_mask(t, &cols) else {
            let mut st = self.conn.prepare_cached(&fast_sql(t, ch.op, &cols))?;
            return self.fast_run(t, ch, &mut st, &vals);
        };
        let key = (std::ptr::from_ref(t) as usize, ch.op, mask);
        let mut statements = self.sql.statements.borrow_mut();
        let st = match statements.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(self.conn.prepare(&fast_sql(t, ch.op, &cols))?)
            }
        };
        self.fast_run(t, ch, st, &vals)
    }

    /// The bound values of a fast-path statement, in the order [`fast_sql`] numbers them.
    fn fast_values<'c>(
        &self,
        t: &TableInfo,
        ch: &'c Change,
        cols: &[&String],
    ) -> std::result::Result<Vec<Arg<'c>>, WriteError> {
        static EMPTY: std::sync::LazyLock<Row> = std::sync::LazyLock::new(Row::new);
        let new = ch.new.as_ref().unwrap_or(&EMPTY);
        let old = ch.old.as_ref().unwrap_or(&EMPTY);
        match ch.op {
            Op::I => binds(t, cols, new).map_err(WriteError::Payload),
            Op::U => {
                let mut vals = binds(t, cols, new).map_err(WriteError::Payload)?;
                vals.extend(binds(t, cols, old).map_err(WriteError::Payload)?);
                for k in &ch.k {
                    vals.push(arg(k).ok_or_else(|| WriteError::Payload("bad key value".into()))?);
                }
                Ok(vals)
            }
            Op::D | Op::A | Op::S | Op::M => binds(t, cols, old).map_err(WriteError::Payload),
        }
    }

    fn fast_run(
        &self,
        t: &TableInfo,
        ch: &Change,
        st: &mut rusqlite::Statement<'_>,
        vals: &[Arg<'_>],
    ) -> std::result::Result<bool, WriteError> {
        let before = self.conn.total_changes();
        let changed = match st.execute(params_from_iter(vals.iter())) {
            Ok(n) => n,
            Err(e) if is_constraint(&e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if changed != 1 {
            return Ok(false);
        }
        if self.conn.total_changes() - before == 2 {
            // The row and one journal entry, its own, at the next position: nothing else
            // was set off. Marked with the others of the bundle at its end.
            self.queue(t, ch)?;
        } else {
            self.tag(t, ch)?;
        }
        Ok(true)
    }

    /// Queues the entry at the next position as the node's own change.
    fn queue(&self, t: &TableInfo, ch: &Change) -> rusqlite::Result<()> {
        let pos = self.seen()? + 1;
        self.sql.seen.set(Some(pos));
        let full = {
            let mut queued = self.sql.queued.borrow_mut();
            queued.push((pos, ch.pos, ch.c));
            queued.len() >= MARK_BATCH
        };
        if full {
            self.flush()?;
        }
        self.hold(t, ch)
    }

    /// Marks the queued entries as the node's, in one statement.
    fn flush(&self) -> rusqlite::Result<()> {
        let queued = std::mem::take(&mut *self.sql.queued.borrow_mut());
        if queued.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_string(&queued).unwrap_or_default();
        self.conn
            .prepare_cached(
                "UPDATE berth_log SET origin = ?1, origin_pos = j.value ->> 1, clock = j.value ->> 2
                 FROM json_each(?2) AS j WHERE berth_log.pos = j.value ->> 0",
            )?
            .execute(params![self.node, json])?;
        Ok(())
    }

    /// The error for a change of this bundle that is malformed (the bundle is refused).
    fn malformed(&self, ch: &Change, reason: String) -> EngineError {
        EngineError::BadPayload {
            bundle: self.bundle_id.to_string(),
            entry: format!("change at position {}", ch.pos),
            reason,
        }
    }

    /// Whether a write's error makes its change wait for another try: a foreign key refused
    /// it, and this is not the last try.
    fn defers(&self, e: &rusqlite::Error) -> bool {
        is_foreign_key(e) && !self.sql.last_try.get()
    }

    /// Puts a change among those waiting, after the ones already there.
    fn defer(&self, ch: &Change) {
        self.sql.deferred.borrow_mut().push(ch.clone());
    }

    /// Whether an earlier change of the same row waits for another try.
    fn waits(&self, ch: &Change) -> bool {
        let deferred = self.sql.deferred.borrow();
        !self.sql.last_try.get()
            && !deferred.is_empty()
            && deferred.iter().any(|d| d.t == ch.t && d.k == ch.k)
    }

    /// Tries again the changes a foreign key refused, while any of them goes through (one
    /// may make room for another); a change still refused on the last try is recorded as a
    /// `constraint` collision. Then marks every entry still queued. Call once the bundle's
    /// last change is merged.
    pub fn finish(&self, stats: &mut MergeStats) -> Result<()> {
        loop {
            let waiting = std::mem::take(&mut *self.sql.deferred.borrow_mut());
            if waiting.is_empty() {
                break;
            }
            let before = waiting.len();
            for ch in &waiting {
                self.merge(ch, stats)?;
            }
            if self.sql.deferred.borrow().len() == before {
                self.sql.last_try.set(true);
            }
        }
        self.sql.last_try.set(false);
        Ok(self.flush()?)
    }

    /// Merges a node's update of a row's key. When central's row still holds the old values
    /// of every column the node changed, it is one `UPDATE` of the key, so central's own
    /// `ON UPDATE` actions carry the row's children with it (a child the node does not hold
    /// included). Anything else (the row changed at central or gone, the new key taken, the
    /// change not allowed) is merged as what it also is, the delete of the old key and the
    /// insert of the new, each checked and resolved as such (SPEC 2.10).
    fn key_change(
        &self,
        t: &TableInfo,
        ch: &Change,
        to: Vec<Json>,
        stats: &mut MergeStats,
    ) -> Result<()> {
        let empty = Row::new();
        let old = ch.old.as_ref().unwrap_or(&empty);
        let new = ch.new.as_ref().unwrap_or(&empty);
        if self.denied(t, ch)?.is_none() {
            self.flush()?;
            let current = read_row(self.conn, t, &ch.k)?;
            // Another site's change to a column the node changed, even one whose value is
            // back to what the node saw, is a collision: merged as the delete it also is.
            let contested = match self.contested(t, ch)? {
                None => false,
                Some(Cols::All) => true,
                Some(Cols::Some(cols)) => old.keys().any(|c| cols.contains(c)),
            };
            let clean = !contested
                && current.as_ref().is_some_and(|cur| {
                    old.iter()
                        .all(|(c, was)| cur.get(c).is_some_and(|now| same(now, was)))
                });
            if clean {
                let set: Row = old
                    .keys()
                    .filter_map(|c| new.get(c).map(|v| (c.clone(), v.clone())))
                    .collect();
                match update(self.conn, t, &ch.k, &set) {
                    Ok(_) => {
                        self.tag_moved(t, ch, &to)?;
                        stats.applied += 1;
                        // Central changed other columns of the row since the node saw it:
                        // those changes, made under the old key, no longer reach the node
                        // (it deleted that key), so the row as it now stands goes to it.
                        let moved = Change {
                            k: to,
                            ..ch.clone()
                        };
                        if let Some(row) = read_row(self.conn, t, &moved.k)?
                            && row
                                .iter()
                                .any(|(c, v)| new.get(c).is_none_or(|n| !same(v, n)))
                        {
                            self.journal_corrective(t, &moved, &Corrective::Upsert(row))?;
                        }
                        return Ok(());
                    }
                    Err(WriteError::Payload(r)) => return Err(self.malformed(ch, r)),
                    Err(WriteError::Sql(e)) if self.defers(&e) => {
                        self.defer(ch);
                        return Ok(());
                    }
                    Err(WriteError::Sql(e)) if is_constraint(&e) => {}
                    Err(WriteError::Sql(e)) => return Err(e.into()),
                }
            }
        }
        let mut whole_old = new.clone();
        whole_old.extend(old.iter().map(|(c, v)| (c.clone(), v.clone())));
        let delete = Change {
            op: Op::D,
            old: Some(whole_old),
            new: None,
            ..ch.clone()
        };
        let insert = Change {
            op: Op::I,
            k: to,
            old: None,
            ..ch.clone()
        };
        self.merge(&delete, stats)?;
        self.merge(&insert, stats)
    }

    /// [`Self::tag`] for a key change: the entries of the row under its old key and its new
    /// one are the node's; the node holds the row under its new key.
    fn tag_moved(&self, t: &TableInfo, ch: &Change, to: &[Json]) -> rusqlite::Result<()> {
        let from = self.seen()?;
        self.tag(t, ch)?;
        let to_text = serde_json::to_string(to).unwrap_or_default();
        self.conn
            .prepare_cached(
                "UPDATE berth_log SET origin = ?1 WHERE pos > ?2 AND tbl = ?3 AND pk = ?4
                   AND target IS NULL AND origin = ?5",
            )?
            .execute(params![self.node, from, t.name, to_text, self.central])?;
        if self.limited(t) {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![self.node, t.name, to_text])?;
        }
        Ok(())
    }

    /// Marks what the write just made journaled through the capture triggers: the entries
    /// of the node's own row as the node's (they are not sent back to it), the rest (the
    /// cascades of foreign keys, the application's own triggers) as central's, routed to
    /// every node that holds those rows, the writer included (SPEC 2.10).
    fn tag(&self, t: &TableInfo, ch: &Change) -> rusqlite::Result<()> {
        let from = self.seen()?;
        let mut journal = self.sql.journal.borrow_mut();
        let st = match journal.as_mut() {
            Some(st) => st,
            None => journal.insert(self.conn.prepare(
                "UPDATE berth_log SET origin = CASE WHEN tbl = ?2 AND pk = ?3 THEN ?4 ELSE ?5 END,
                   origin_pos = ?6, clock = ?7
                 WHERE pos > ?1 AND target IS NULL RETURNING pos",
            )?),
        };
        let mut top = from;
        let mut rows = st.query(params![
            from,
            t.name,
            ch.key_text(),
            self.node,
            self.central,
            ch.pos,
            ch.c
        ])?;
        while let Some(r) = rows.next()? {
            top = top.max(r.get(0)?);
        }
        self.sql.seen.set(Some(top));
        drop(rows);
        self.hold(t, ch)
    }

    /// The node holds a row it made from the moment central accepts it: its later changes to
    /// it are allowed before any routing pass has run (SPEC 2.8).
    fn hold(&self, t: &TableInfo, ch: &Change) -> rusqlite::Result<()> {
        if ch.op == Op::I && self.limited(t) {
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO berth_node_rows(node, tbl, pk) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![self.node, t.name, ch.key_text()])?;
        }
        Ok(())
    }

    /// The last position marked, read once per merge, before its first write.
    fn seen(&self) -> rusqlite::Result<i64> {
        if let Some(p) = self.sql.seen.get() {
            return Ok(p);
        }
        let p = self
            .conn
            .query_row("SELECT COALESCE(MAX(pos), 0) FROM berth_log", [], |r| {
                r.get(0)
            })?;
        self.sql.seen.set(Some(p));
        Ok(p)
    }

    fn limited(&self, t: &TableInfo) -> bool {
        use crate::route::model::Visibility;
        self.auth.as_ref().is_some_and(|a| {
            a.model
                .tables
                .get(&t.name.to_lowercase())
                .is_some_and(|spec| spec.visibility == Visibility::Limited)
        })
    }

    fn execute(
        &self,
        t: &TableInfo,
        ch: &Change,
        res: &Resolution,
    ) -> std::result::Result<(), WriteError> {
        // Journaled by the capture triggers, with whatever the write set off.
        match &res.write {
            Write::None => {
                if ch.op == Op::I {
                    // The node's insert matched central's row: the node holds it.
                    self.tag(t, ch)?;
                }
                return Ok(());
            }
            Write::Insert(row) => insert_row(self.conn, t, row, OnConflict::Fail)?,
            Write::Update(set) => {
                update(self.conn, t, &ch.k, set)?;
            }
            Write::Delete => delete(self.conn, t, &ch.k)?,
        }
        self.tag(t, ch)?;
        Ok(())
    }

    fn journal_corrective(&self, t: &TableInfo, ch: &Change, c: &Corrective) -> Result<()> {
        let (op, old, new) = match c {
            Corrective::Upsert(row) => (Op::I, None, Some(row.clone())),
            Corrective::SetColumns { node, central } => {
                (Op::U, Some(node.clone()), Some(central.clone()))
            }
            Corrective::Delete => (Op::D, ch.new.clone().or_else(|| ch.old.clone()), None),
        };
        self.conn
            .prepare_cached(
                "INSERT INTO berth_log(tbl, pk, op, old, new, origin, origin_pos, clock, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?8)",
            )?
            .execute(params![
                t.name,
                ch.key_text(),
                op.as_str(),
                json_text(old.as_ref()),
                json_text(new.as_ref()),
                ch.pos,
                self.clock,
                self.node
            ])?;
        self.sql.seen.set(Some(self.conn.last_insert_rowid()));
        Ok(())
    }

    fn record(
        &self,
        ch: &Change,
        kind: &str,
        cols: &[String],
        cur: Option<&Row>,
        resolution: &str,
    ) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO berth_conflicts(node, tbl, pk, kind, columns, node_old, node_new, central,
                   resolution, bundle_id, origin_pos, at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                self.node,
                ch.t,
                ch.key_text(),
                kind,
                serde_json::to_string(cols).unwrap_or_default(),
                json_text(ch.old.as_ref()),
                json_text(ch.new.as_ref()),
                json_text(cur),
                resolution,
                self.bundle_id,
                ch.pos,
                self.now
            ])?;
        Ok(())
    }
}

/// Sets a row to `row` (insert or replace), or deletes it when `row` is `None`: a repair
/// (SPEC 2.15), or a row it kept aside written back.
pub fn repair_row(conn: &Connection, t: &TableInfo, key: &[Json], row: Option<&Row>) -> Result<()> {
    let done = match row {
        Some(r) => insert_row(conn, t, r, OnConflict::Replace),
        None => delete(conn, t, key),
    };
    match done {
        Ok(()) => Ok(()),
        Err(WriteError::Sql(e)) => Err(e.into()),
        Err(WriteError::Payload(reason)) => Err(EngineError::BadPayload {
            bundle: String::new(),
            entry: format!(
                "repair of {} {}",
                t.name,
                serde_json::to_string(key).unwrap_or_default()
            ),
            reason,
        }),
    }
}

/// The node's local changes that central had not merged when it wrote a given change.
///
/// Central journals a marker (op `A`) each time it merges one of our bundles; changes after
/// the marker were decided knowing our changes up to its position, changes before it were
/// not. A change central made without knowing a local change must not overwrite it: central
/// settles that when the local change arrives, and sends a correction if it wins.
#[derive(Debug, Clone, Default)]
pub struct Pending {
    entries: Vec<(i64, String, String, Cols)>,
    map: HashMap<(String, String), Cols>,
    /// Rows whose newest local entry is a pre-image not yet settled, by (table, key text):
    /// its position. Whether it was a delete is read from the table at export (SPEC 2.4),
    /// so it is settled before central's change alters the row ([`NodeApply::settle`]).
    pre_images: HashMap<(String, String), i64>,
}

impl Pending {
    /// Loads the local changes after position `known`: what each exported as (the columns
    /// an update changed, or the whole row).
    pub fn load(conn: &Connection, catalog: &Catalog, known: i64) -> Result<Self> {
        let mut p = Pending::default();
        let filter = crate::change::Filter {
            after: known,
            peer: None,
            key_updates: false,
            seen_now: None,
        };
        crate::change::export(conn, &filter, catalog, |ch| {
            let cols = match ch.op {
                Op::U => Cols::Some(ch.old.iter().flat_map(|o| o.keys().cloned()).collect()),
                Op::I | Op::D => Cols::All,
                Op::A | Op::S | Op::M => return Ok(()),
            };
            p.entries.push((ch.pos, ch.t.clone(), ch.key_text(), cols));
            Ok(())
        })?;
        let mut st = conn.prepare_cached(
            "SELECT pos, tbl, pk, op = 'P' AND new IS NULL FROM berth_log
             WHERE pos > ?1 AND target IS NULL AND op IN ('I', 'U', 'D', 'P') ORDER BY pos",
        )?;
        let mut rows = st.query(params![known])?;
        let mut newest: HashMap<(String, String), (i64, bool)> = HashMap::new();
        while let Some(r) = rows.next()? {
            let key = crate::value::parse_key(crate::value::raw(r.get_ref(2)?))
                .and_then(|k| serde_json::to_string(&k).ok())
                .unwrap_or_default();
            newest.insert((r.get(1)?, key), (r.get(0)?, r.get(3)?));
        }
        p.pre_images = newest
            .into_iter()
            .filter(|(_, (_, open))| *open)
            .map(|(k, (pos, _))| (k, pos))
            .collect();
        p.advance(known);
        Ok(p)
    }

    /// Follows a schema migration: entries move to the tables' and columns' new names;
    /// entries of tables that are gone, and dropped columns, are forgotten.
    pub fn translate(&mut self, tr: &impl super::Renames) {
        let entries = std::mem::take(&mut self.entries);
        self.entries = entries
            .into_iter()
            .filter_map(|(pos, tbl, pk, cols)| {
                let t = tr.table(&tbl)?;
                let cols = match cols {
                    Cols::All => Cols::All,
                    Cols::Some(set) => {
                        Cols::Some(set.into_iter().filter_map(|c| tr.column(&t, &c)).collect())
                    }
                };
                Some((pos, t, pk, cols))
            })
            .collect();
        self.pre_images = std::mem::take(&mut self.pre_images)
            .into_iter()
            .filter_map(|((tbl, pk), pos)| Some(((tr.table(&tbl)?, pk), pos)))
            .collect();
        self.advance(i64::MIN);
    }

    /// Forgets the local changes up to `known` (central has merged them).
    pub fn advance(&mut self, known: i64) {
        self.entries.retain(|e| e.0 > known);
        self.map.clear();
        for (_, tbl, pk, cols) in &self.entries {
            let slot = self
                .map
                .entry((tbl.clone(), pk.clone()))
                .or_insert(Cols::Some(BTreeSet::new()));
            match (slot, cols) {
                (s @ Cols::Some(_), Cols::All) => *s = Cols::All,
                (Cols::Some(have), Cols::Some(more)) => have.extend(more.iter().cloned()),
                (Cols::All, _) => {}
            }
        }
    }

    /// The (table, key text) of every row with local changes or an open pre-image.
    pub fn keys(&self) -> impl Iterator<Item = &(String, String)> {
        self.map.keys().chain(self.pre_images.keys())
    }

    /// The position of the newest local entry of a row.
    fn last(&self, tbl: &str, pk: &str) -> Option<i64> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.1 == tbl && e.2 == pk)
            .map(|e| e.0)
    }

    fn get(&self, tbl: &str, pk: &str) -> Option<Cols> {
        self.map.get(&(tbl.to_string(), pk.to_string())).cloned()
    }

    /// Local changes to one row after position `after` (for a corrective change, which was
    /// decided knowing our changes up to `after` only).
    fn get_after(&self, tbl: &str, pk: &str, after: i64) -> Option<Cols> {
        Cols::union(
            self.entries
                .iter()
                .filter(|e| e.0 > after && e.1 == tbl && e.2 == pk)
                .map(|e| &e.3),
        )
    }
}

/// A change of `bundle` that cannot be right.
fn bad_change(bundle: &str, ch: &Change, reason: String) -> EngineError {
    EngineError::BadPayload {
        bundle: bundle.to_string(),
        entry: format!("change at position {}", ch.pos),
        reason,
    }
}

/// Applies central's changes at a node. Central has already decided, so they apply, except
/// over local changes central did not know of when it made them (see [`Pending`]); each such
/// case is recorded in `berth_overrides` for the user and settled by central when the local
/// change arrives.
#[derive(Debug)]
pub struct NodeApply<'a> {
    /// The open transaction's connection.
    pub conn: &'a Connection,
    /// The replicated tables (replaced when a migration in the stream changes them).
    pub catalog: std::borrow::Cow<'a, Catalog>,
    /// The bundle being applied.
    pub bundle_id: &'a str,
    /// Local changes central had not merged.
    pub pending: Pending,
    /// Apply time.
    pub now: i64,
}

impl NodeApply<'_> {
    /// Central's change is about to set columns of a row with local changes it has not
    /// merged. Applying it is not journaled, so the newest local entry of the row, whose new
    /// row would otherwise be read from the table at export, gets the row as it is now
    /// stored with it: the local change still travels exactly as it was made.
    fn pin(&self, t: &TableInfo, k: &[Json], key: &str) -> Result<()> {
        let Some(pos) = self.pending.last(&t.name, key) else {
            return Ok(());
        };
        let Some(row) = read_row(self.conn, t, k)? else {
            return Ok(());
        };
        self.conn
            .prepare_cached(
                "UPDATE berth_log SET new = ?2 WHERE pos = ?1 AND new IS NULL AND op IN ('I', 'U')",
            )?
            .execute(params![pos, json_text(Some(&row))])?;
        Ok(())
    }

    /// Central's change is about to alter a row whose newest local entry is a pre-image
    /// that export would settle by reading the table: it is settled now, by the row as the
    /// local statement left it: gone (the statement displaced it: the pre-image becomes its
    /// delete) or there (nothing happened: it is marked void).
    fn settle(
        conn: &Connection,
        pending: &mut Pending,
        t: &TableInfo,
        k: &[Json],
        key: &str,
    ) -> Result<()> {
        let Some(pos) = pending
            .pre_images
            .remove(&(t.name.clone(), key.to_string()))
        else {
            return Ok(());
        };
        let sql = if read_row(conn, t, k)?.is_some() {
            "UPDATE berth_log SET new = 'void' WHERE pos = ?1"
        } else {
            "UPDATE berth_log SET op = 'D' WHERE pos = ?1"
        };
        conn.prepare_cached(sql)?.execute(params![pos])?;
        Ok(())
    }

    /// The error for a change of this bundle that cannot be right.
    pub fn bad(&self, ch: &Change, reason: String) -> EngineError {
        bad_change(self.bundle_id, ch, reason)
    }

    /// Applies one row change (insert, update or delete).
    pub fn apply(&mut self, ch: &Change, stats: &mut MergeStats) -> Result<()> {
        let bundle = self.bundle_id;
        let bad = |reason: String| bad_change(bundle, ch, reason);
        ch.check().map_err(|r| bad(r.to_string()))?;
        if !matches!(ch.op, Op::I | Op::U | Op::D) {
            // Markers, statements and migrations are the dock's to dispatch.
            return Err(bad(format!("{:?} is not a row change", ch.op)));
        }
        let t = self
            .catalog
            .tables
            .get(&ch.t)
            .ok_or_else(|| bad(format!("unknown table {}", ch.t)))?;
        check_key(t, ch).map_err(bad)?;
        let key = ch.key_text();
        if !self.pending.pre_images.is_empty() {
            Self::settle(self.conn, &mut self.pending, t, &ch.k, &key)?;
        }
        let pending = match ch.ack {
            Some(after) => self.pending.get_after(&ch.t, &key, after),
            None => self.pending.get(&ch.t, &key),
        };
        let keep = |c: &String| match &pending {
            None => true,
            Some(Cols::All) => false,
            Some(Cols::Some(cols)) => !cols.contains(c),
        };
        if let (Op::I | Op::U, Some(Cols::Some(_))) = (ch.op, &pending) {
            self.pin(t, &ch.k, &key)?;
        }
        let empty = Row::new();
        let new = ch.new.as_ref().unwrap_or(&empty);
        let result = match (ch.op, &pending) {
            (_, Some(Cols::All)) | (Op::D, Some(_)) => Ok(()),
            (Op::I, _) => {
                let set: Row = new
                    .iter()
                    .filter(|(c, _)| keep(c) && !t.pk.contains(c))
                    .map(|(c, v)| (c.clone(), v.clone()))
                    .collect();
                if set.is_empty() {
                    // Only key columns (or only columns kept locally): add the row if missing.
                    insert_row(self.conn, t, new, OnConflict::Keep)
                } else {
                    match update(self.conn, t, &ch.k, &set) {
                        Ok(0) => insert_row(self.conn, t, new, OnConflict::Replace),
                        other => other.map(|_| ()),
                    }
                }
            }
            (Op::U, _) => {
                let set: Row = ch
                    .old
                    .as_ref()
                    .unwrap_or(&empty)
                    .keys()
                    .filter(|c| keep(c))
                    .filter_map(|c| new.get(c).map(|v| (c.clone(), v.clone())))
                    .collect();
                match update(self.conn, t, &ch.k, &set) {
                    Ok(0) if pending.is_none() => {
                        insert_row(self.conn, t, new, OnConflict::Replace)
                    }
                    other => other.map(|_| ()),
                }
            }
            (Op::D, None) => delete(self.conn, t, &ch.k),
            (Op::A | Op::S | Op::M, _) => Ok(()),
        };
        match result {
            Ok(()) => {}
            Err(WriteError::Payload(r)) => return Err(bad(r)),
            Err(WriteError::Sql(e)) => return Err(e.into()),
        }
        if pending.is_some() {
            stats.overrides += 1;
            self.conn
                .prepare_cached(
                    "INSERT INTO berth_overrides(tbl, pk, local_op, central_op, bundle_id, at)
                     VALUES (?1, ?2, COALESCE((SELECT op FROM berth_log WHERE tbl = ?1 AND pk = ?2
                                      ORDER BY pos DESC LIMIT 1), '?'), ?3, ?4, ?5)",
                )?
                .execute(params![ch.t, key, ch.op.as_str(), self.bundle_id, self.now])?;
        }
        stats.applied += 1;
        Ok(())
    }
}
