//! The router (seed 004, Figures 6, 7 and 8): central's update log, routed to every node at
//! once, incrementally.
//!
//! A routing pass takes the log entries after the nodes' routing checkpoints in bounded
//! batches. For each batch:
//!
//! 1. **Which instances a change can affect** (Figure 7's entry): a row change in a table on
//!    a member path of a docking object names, by the row's old and new values, the
//!    instances at the end of that path ([`Plan::dirty_from_row`]). Only members with
//!    `vis_event` (or tables that a mapping between objects reads) count, as the seed's
//!    VIS_EVENT_FLG says. A change to a table that a rule reads but that is on no member path
//!    (the account rule reads `emp_postn`) makes every instance of that object dirty.
//! 2. **Mappings between objects** (object rules and related objects) are kept as edges
//!    (`berth_edges`: this instance depends on that one). The edges touching a dirty
//!    instance are recomputed with the set form restricted to the dirty ids, so edges that
//!    disappeared are known too.
//! 3. **The region**: the dirty instances and everything that depends on them through the
//!    edges, transitively. Nothing outside it can change visibility. Inside it, visibility is
//!    recomputed for every node at once as the least fixpoint of the rules (cycles terminate):
//!    set-form SQL rules restricted to the region's ids answer `(id, node)` pairs for all
//!    nodes in one query; edges to instances outside the region take their support from the
//!    instance set (`berth_instances`, the seed's S_DOBJ_INST). The difference with the
//!    instance set is what each node gains and loses.
//! 4. **Rows**: each change goes to the nodes that hold the row and still may; a node that
//!    may now see a changed row gets it whole, one that no longer may has it removed.
//!    Instances gained bring all their member rows (download, Figure 8), instances lost take
//!    away the member rows no other visible instance covers; rows below a changed row on a
//!    member path (an activity under a quote that moved) are re-checked. `berth_node_rows`
//!    records exactly what each node holds, so deletes reach exactly the holders.
//!
//! A batch is cut every `batch` entries, also inside a merged node bundle, and its entries
//! are read from the log again in each of the steps that walk them (1, 4, and the rows
//! below), never held: what a batch keeps in memory is its holdings, so a node bundle of
//! millions of changes routes in bounded memory. The marker that closes node N's merge must
//! come before the removals and downloads N's own changes call for (SPEC 2.10), so a batch
//! that ends inside N's merge keeps N's rows to settle in `berth_route_later` (committed with
//! the batch), and the first batch that does not settles them ([`Batch::open`], SPEC 2.8).
//!
//! Bound parameters in the joins it generates are written `+?N`: with STAT4 (enabled in
//! the bundled SQLite), a join whose WHERE compares a column with a plain parameter is
//! re-prepared at every new binding, which cost half the routing time; the unary plus keeps
//! the plan (and the index) without that.
//!
//! The output is appended to each node's partial log; the checkpoints advance in the same
//! transaction (the caller's). [`Evaluation::PerPair`] answers rules one `(instance, node)`
//! pair at a time with their pair form and checks holders node by node: the seed's
//! algorithm, kept as the benchmark's baseline.
//!
//! This file holds the pass and its batches; the rest is split along its seams: the plan
//! ([`crate::route::plan`], below merge, which authorizes by it), evaluating visibility
//! (`evaluate.rs`, steps 1-3), rows and their holders (`held.rs`, step 4), the new node's
//! extract (`extract.rs`) and the links a node may make (`links.rs`).

use crate::change::{Logged, Op};
use crate::error::Result;
use crate::merge::apply::Catalog;
use crate::store;
use crate::store::meta_keys;
use crate::value::Row;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeSet;

mod evaluate;
mod extract;
mod held;
mod links;

pub use super::plan::*;
pub use evaluate::*;
pub use extract::*;
use held::*;
pub use links::{Gain, Probe};

/// How rules are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// Set forms for all nodes at once (pair forms where a rule has no set form).
    Set,
    /// The seed's algorithm: every rule and every holder check one `(instance, node)` pair
    /// at a time. Slow; the benchmark's baseline.
    PerPair,
}

/// Log entries routed per batch (bounds memory; the checkpoints move per batch).
pub const BATCH: i64 = crate::config::DEFAULT_BATCH as i64;

/// Routes central's log to every active node, in batches of [`BATCH`] entries, inside the
/// caller's transaction. With no docking model every table is enterprise.
pub fn route_all(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    eval: Evaluation,
) -> Result<()> {
    route_with_progress(conn, catalog, plan, eval, BATCH, &None)
}

/// [`route_all`] with batches of about `batch` entries (tests use tiny ones to put batch
/// boundaries everywhere).
pub fn route_in_batches(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    eval: Evaluation,
    batch: i64,
) -> Result<()> {
    route_with_progress(conn, catalog, plan, eval, batch, &None)
}

/// [`route_in_batches`], reporting the log entries routed to `progress` (a dock after a
/// large apply routes as long as it applied). One transaction, the caller's; the dock's pass
/// commits batch by batch instead ([`crate::route::run`]).
pub fn route_with_progress(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    eval: Evaluation,
    batch: i64,
    progress: &crate::progress::Reporter,
) -> Result<()> {
    let Some(mut run) = Run::start(conn, catalog, plan, eval)? else {
        return Ok(());
    };
    let mut tracker = crate::progress::Tracker::new(
        progress,
        "routing to the nodes",
        u64::try_from(run.left()).unwrap_or(0),
    );
    while run.left() > 0 {
        let n = run.batch(batch)?;
        tracker.advance(u64::try_from(n).unwrap_or(0));
    }
    drop(tracker);
    run.checkpoint()
}

/// A routing pass under way: what one batch hands on to the next (seed 004, the log
/// manager's run: it checkpoints every MaxBatchTxns entries).
pub(crate) struct Run<'a> {
    conn: &'a Connection,
    catalog: &'a Catalog,
    plan: Option<&'a Plan>,
    eval: Evaluation,
    nodes: Vec<NodeState>,
    out: Out<'a>,
    chains: crate::change::Chains,
    /// Routed to every node up to here.
    lo: i64,
    /// The log's end when the pass started: what it routes.
    top: i64,
    /// The last merge found open at a batch's end: its marker's position and its node.
    merge: Option<(i64, String)>,
}

impl<'a> Run<'a> {
    /// Starts a pass inside the caller's transaction (`None`: no active node, nothing is
    /// routed). With no docking model every table is enterprise.
    pub(crate) fn start(
        conn: &'a Connection,
        catalog: &'a Catalog,
        plan: Option<&'a Plan>,
        eval: Evaluation,
    ) -> Result<Option<Run<'a>>> {
        let nodes = nodes(conn)?;
        if nodes.is_empty() {
            // Nothing is routed, so the edges fall behind the log: the next node's
            // enrollment rebuilds them.
            if plan.is_some() {
                request_resync(conn)?;
            }
            return Ok(None);
        }
        identify(conn, &nodes)?;
        let mut out = Out {
            conn,
            ppos: nodes.iter().map(|n| (n.name.clone(), n.ppos)).collect(),
            clock: store::meta_i64(conn, meta_keys::CLOCK)?,
        };
        let top = store::max_pos(conn)?;
        if let Some(plan) = plan
            && store::meta(conn, meta_keys::ROUTING_RESYNC)?.is_some()
        {
            resync(conn, catalog, plan, &nodes, eval, top, &mut out)?;
            crate::store::clear_meta(conn, meta_keys::ROUTING_RESYNC)?;
        }
        let lo = nodes.iter().map(|n| n.routed_pos).min().unwrap_or(top);
        let chains = crate::change::Chains::load(conn, lo)?;
        Ok(Some(Run {
            conn,
            catalog,
            plan,
            eval,
            nodes,
            out,
            chains,
            lo,
            top,
            merge: None,
        }))
    }

    /// Log entries this pass has still to route.
    pub(crate) fn left(&self) -> i64 {
        (self.top - self.lo).max(0)
    }

    /// Routes the next batch, of `batch` entries (fewer at the end); returns how many it
    /// covered. It may end inside a node's merge: see [`Batch::open`].
    pub(crate) fn batch(&mut self, batch: i64) -> Result<i64> {
        let lo = self.lo;
        let hi = lo.saturating_add(batch.max(1)).min(self.top);
        let open = match &self.merge {
            // Nothing but the merge's own entries lies between `hi` and its marker.
            Some((marker, node)) if hi < *marker => Some(node.clone()),
            _ => {
                self.merge = open_merge(self.conn, hi, self.top)?;
                self.merge.as_ref().map(|(_, node)| node.clone())
            }
        };
        let b = Batch {
            chains: &self.chains,
            lo,
            hi,
            size: batch.max(1),
            open: open.as_deref(),
        };
        route_batch(
            self.conn,
            self.catalog,
            self.plan,
            &self.nodes,
            self.eval,
            &mut self.out,
            &b,
        )?;
        self.lo = hi;
        Ok(hi - lo)
    }

    /// Records how far the pass has routed, in the transaction that holds the batches'
    /// partial logs: every node's routing checkpoint, the end of its partial log, and the
    /// route mark between the two (what a node's change saw, SPEC 2.10).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "UPDATE berth_peers SET routed_pos = max(routed_pos, ?2), partial_pos = ?3 WHERE name = ?1",
        )?;
        for n in &self.nodes {
            let ppos = self.out.ppos.get(&n.name).copied().unwrap_or(n.ppos);
            st.execute(params![n.name, self.lo, ppos])?;
            // A node enrolled after `lo` has seen up to its own checkpoint: a mark below it
            // could outlive the enrollment's when marks are pruned, and make the node's next
            // changes contest what its extract carried.
            crate::partial::mark(self.conn, &n.name, ppos, self.lo.max(n.routed_pos))?;
        }
        Ok(())
    }

    /// Takes in what central's writers journaled since the pass last read the log (between
    /// two of its transactions): the entries it routes must see what came after them.
    pub(crate) fn catch_up(&mut self) -> Result<()> {
        self.chains.extend(self.conn)
    }
}

/// The merge open at log position `pos` (up to `top`, the pass's end), if any: its marker's
/// position and its node. A merge journals the node's changes, corrective changes and then
/// its marker in one transaction, and central's own writes (no origin, no target) cannot
/// fall inside one; so when the first marker or entry of central's own after `pos` is a
/// marker, the entries up to it are that node's merge (or, when `pos` ends a merge, the next
/// merge whole: treated as open too, which only waits longer).
fn open_merge(conn: &Connection, pos: i64, top: i64) -> Result<Option<(i64, String)>> {
    let next: Option<(i64, String, Option<String>)> = conn
        .prepare_cached(
            "SELECT pos, op, target FROM berth_log WHERE pos > ?1 AND pos <= ?2
               AND (op = 'A' OR (origin IS NULL AND target IS NULL)) ORDER BY pos LIMIT 1",
        )?
        .query_row(params![pos, top], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(match next {
        Some((marker, op, Some(node))) if op == "A" => Some((marker, node)),
        _ => None,
    })
}

/// A stretch of the log routed at once, and the chains of the whole routing pass.
struct Batch<'a> {
    chains: &'a crate::change::Chains,
    lo: i64,
    hi: i64,
    /// The pass's batch size: the pending settlements are taken in chunks of it.
    size: i64,
    /// The node whose merge the batch ends inside of. Its rows found to settle (downloads
    /// and removals, [`Holdings::later`]) are kept in `berth_route_later` for the batch
    /// that holds the merge's marker: sent before the marker, a removal would be ignored
    /// and the node would keep a row central no longer sends it (SPEC 2.10).
    open: Option<&'a str>,
}

/// The columns [`Logged::decode`] reads.
const ENTRIES: &str =
    "SELECT pos, tbl, pk, op, old, new, origin, COALESCE(clock, 0), origin_pos, target
     FROM berth_log WHERE pos > ?1 AND pos <= ?2 ORDER BY pos";

/// Calls `f` with every entry of the batch, decoded, in log order. Read from the log at
/// every call: a batch's entries are never all in memory (a merged node bundle of millions
/// of changes is routed in bounded memory).
fn each_entry(
    conn: &Connection,
    catalog: &Catalog,
    batch: &Batch<'_>,
    mut f: impl FnMut(&Logged) -> Result<()>,
) -> Result<()> {
    let mut st = conn.prepare_cached(ENTRIES)?;
    let mut rows = st.query(params![batch.lo, batch.hi])?;
    while let Some(r) = rows.next()? {
        let e = Logged::decode(conn, catalog, batch.chains, r)?;
        f(&e)?;
    }
    Ok(())
}

fn route_batch(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    nodes: &[NodeState],
    eval: Evaluation,
    out: &mut Out<'_>,
    batch: &Batch<'_>,
) -> Result<()> {
    let Some(plan) = plan else {
        // No docking model: everything goes everywhere but back where it came from.
        return each_entry(conn, catalog, batch, |e| {
            for ch in e.wire() {
                for n in nodes.iter().filter(|n| e.base.pos > n.routed_pos) {
                    if routed_to_all(e, &n.name) {
                        out.emit(&n.name, &ch)?;
                    }
                }
            }
            Ok(())
        });
    };
    let pass = Pass {
        conn,
        plan,
        nodes,
        eval,
    };
    // 1-3: which instances the batch can affect, and their visibility now.
    let mut dirty = vec![BTreeSet::new(); plan.objects.len()];
    let mut whole = vec![false; plan.objects.len()];
    let mut touched = BTreeSet::new();
    {
        let mut st = conn.prepare_cached(ENTRIES)?;
        let mut rows = st.query(params![batch.lo, batch.hi])?;
        while let Some(r) = rows.next()? {
            let (t, op, target): (String, String, Option<String>) =
                (r.get(1)?, r.get(3)?, r.get(9)?);
            if target.is_some() || !matches!(op.as_str(), "I" | "U" | "D" | "P") {
                continue;
            }
            // Only a pre-image may be void, and only some tables' rows name instances:
            // the other entries are data changes whose rows need not be read.
            if op != "P" && !plan.rows_matter(&t) {
                touched.insert(lower(&t));
                continue;
            }
            let e = Logged::decode(conn, catalog, batch.chains, r)?;
            if data_change(&e) {
                touched.insert(lower(&e.base.t));
                let rows: Vec<&Row> = e.old.iter().chain(e.new.iter()).collect();
                plan.dirty_from_row(conn, &e.base.t, &rows, &mut dirty, &mut whole)?;
            }
        }
    }
    let (gained, lost) = pass.revisit(dirty, &whole, &touched)?;

    // 4: rows. The changes themselves, in log order.
    let mut h = Holdings::default();
    each_entry(conn, catalog, batch, |e| {
        let wire = e.wire();
        if wire.is_empty() {
            gone_before_routing(&pass, e, &mut h)?;
        }
        for ch in wire {
            route_change(&pass, e, &ch, &mut h, out)?;
        }
        Ok(())
    })?;
    // What earlier batches left for after a marker this batch holds, then this batch's.
    let later = std::mem::take(&mut h.later);
    h = settle_pending(&pass, catalog, batch, h, out)?;
    for (key, node) in later {
        settle(&pass, catalog, batch, &key, &node, &mut h, out)?;
    }
    // Instances gained bring their member rows; instances lost take theirs away.
    settle_instances(&pass, catalog, batch, &gained, &lost, &mut h, out)?;
    // Rows below a changed row on a member path may have moved between instances.
    let below_paths = touched.iter().any(|t| {
        plan.hops
            .get(t)
            .is_some_and(|places| places.iter().any(|(_, at)| at.hop > 0))
    });
    if below_paths {
        each_entry(conn, catalog, batch, |e| {
            if !data_change(e) {
                return Ok(());
            }
            let Some(places) = plan.hops.get(&lower(&e.base.t)) else {
                return Ok(());
            };
            let mut below = BTreeSet::new();
            for &(oi, at) in places.iter().filter(|(_, at)| at.hop > 0) {
                if !plan.moves_below(oi, at, e.old.as_ref(), e.new.as_ref()) {
                    continue;
                }
                let table = plan.objects[oi].r.members[at.m].table.clone();
                for row in e.old.iter().chain(e.new.iter()) {
                    for k in plan.rows_below(conn, oi, at, row)? {
                        below
                            .insert((table.clone(), serde_json::to_string(&k).unwrap_or_default()));
                    }
                }
            }
            for key in below {
                reconcile(&pass, catalog, batch, &key, &mut h, out)?;
            }
            Ok(())
        })?;
    }
    h.save(conn)
}

/// Settles what `node` holds of one row now ([`reconcile_node`]), or, when the batch ends
/// inside `node`'s merge and the row is not as it should be, keeps it in
/// `berth_route_later` for the batch that holds the merge's marker ([`Batch::open`]).
fn settle(
    pass: &Pass<'_>,
    catalog: &Catalog,
    batch: &Batch<'_>,
    key: &(String, String),
    node: &str,
    h: &mut Holdings,
    out: &mut Out<'_>,
) -> Result<()> {
    if batch.open != Some(node) {
        return reconcile_node(pass, catalog, key, node, h, out);
    }
    let holds = h.held(pass.conn, key)?.contains(node);
    let wants = desired(pass, key, h)?.contains(node);
    if holds != wants {
        keep_for_later(pass.conn, node, key)?;
    }
    Ok(())
}

/// Keeps a row of `node`'s to settle after the marker of its merge (`berth_route_later`).
fn keep_for_later(conn: &Connection, node: &str, key: &(String, String)) -> Result<()> {
    conn.prepare_cached("INSERT INTO berth_route_later(node, tbl, pk) VALUES (?1, ?2, ?3)")?
        .execute(params![node, key.0, key.1])?;
    Ok(())
}

/// Settles the rows earlier batches kept for after a marker (`berth_route_later`), but those
/// of the node whose merge is still open, in the order they were kept, a chunk of the
/// batch's size at a time: each chunk's holdings are written back and let go, so what is
/// kept never comes into memory whole. Returns the holdings to go on with.
fn settle_pending(
    pass: &Pass<'_>,
    catalog: &Catalog,
    batch: &Batch<'_>,
    mut h: Holdings,
    out: &mut Out<'_>,
) -> Result<Holdings> {
    let mut after = 0i64;
    loop {
        let chunk: Vec<(i64, String, String, String)> = pass
            .conn
            .prepare_cached(
                "SELECT seq, node, tbl, pk FROM berth_route_later
                 WHERE seq > ?1 AND node IS NOT ?2 ORDER BY seq LIMIT ?3",
            )?
            .query_map(params![after, batch.open, batch.size], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = chunk.last().map(|c| c.0) else {
            return Ok(h);
        };
        for (_, node, tbl, pk) in chunk {
            // A node revoked or removed since has nothing more routed to it.
            if pass.node(&node).is_some() {
                reconcile_node(pass, catalog, &(tbl, pk), &node, &mut h, out)?;
            }
        }
        pass.conn
            .prepare_cached(
                "DELETE FROM berth_route_later WHERE seq > ?1 AND seq <= ?2 AND node IS NOT ?3",
            )?
            .execute(params![after, last, batch.open])?;
        after = last;
        // The changes of the batch are routed: what was sent whole no longer matters
        // (`fresh`), and what the nodes hold is in `berth_node_rows` once written back.
        h.save(pass.conn)?;
        h = Holdings::default();
    }
}

/// A journal entry that changed central's data (not a marker, statement or corrective
/// change).
fn data_change(e: &Logged) -> bool {
    e.target.is_none() && !e.void && matches!(e.base.op, Op::I | Op::U | Op::D)
}

/// Whether an entry with no docking model in play goes to `node`.
fn routed_to_all(e: &Logged, node: &str) -> bool {
    match &e.target {
        Some(t) => t == node,
        None => e.base.o.as_deref() != Some(node),
    }
}

pub use super::model::request_resync;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::model::DockingModel;
    use crate::value::from_sql;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Groups seen through permissions, items through their group, and a group through any
    /// of its items that its owner sees (a cycle). No foreign keys: permissions and items
    /// may name groups that do not exist, and such an id must not spread.
    const MODEL: &str = r#"
version = 1
[nodes]
attributes = ["employee"]
[tables]
grp = { visibility = "limited" }
item = { visibility = "limited" }
perm = { visibility = "limited" }
part = { visibility = "limited" }
part_note = { visibility = "limited" }
[[object]]
name = "group"
primary_table = "grp"
[[object.member]]
table = "perm"
vis_event = true
paths = [["perm.grp_id -> grp.id"]]
[[object.member]]
table = "item"
vis_event = false
paths = [["item.grp_id -> grp.id"]]
[[object.member]]
table = "part"
vis_event = false
[[object.member]]
table = "part_note"
vis_event = false
paths = [["part_note.grp_id -> grp.id"], ["part_note.(grp_id, n) -> part.(grp_id, n)", "part.grp_id -> grp.id"]]
[[object.rule]]
sql = "SELECT 'X' FROM perm WHERE grp_id = :primary_row_id AND emp = :attr_employee"
set_sql = "SELECT p.grp_id, na.node_id FROM perm p JOIN berth_node_attr na ON na.name = 'employee' AND na.value = p.emp"
[[object.rule]]
object = "item"
sql = "SELECT id FROM item WHERE grp_id = :primary_row_id"
set_sql = "SELECT grp_id, id FROM item WHERE grp_id IS NOT NULL AND owner IS NOT NULL"
[[object]]
name = "item"
primary_table = "item"
[[object.rule]]
sql = "SELECT 'X' FROM item WHERE id = :primary_row_id AND owner = :attr_employee"
set_sql = "SELECT i.id, na.node_id FROM item i JOIN berth_node_attr na ON na.name = 'employee' AND na.value = i.owner"
[[object.rule]]
object = "group"
sql = "SELECT grp_id FROM item WHERE id = :primary_row_id"
set_sql = "SELECT id, grp_id FROM item WHERE grp_id IS NOT NULL"
"#;

    fn central(perms: &[(u8, u8)], items: &[(u8, u8, Option<u8>)], groups: u8) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        // Dangling references on purpose.
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        conn.execute_batch(store::DDL).unwrap();
        conn.execute_batch(
            "CREATE TABLE grp(id TEXT PRIMARY KEY);
             CREATE TABLE item(id INTEGER PRIMARY KEY, grp_id TEXT, owner TEXT);
             CREATE TABLE perm(grp_id TEXT, emp TEXT, PRIMARY KEY (grp_id, emp));
             CREATE TABLE part(grp_id TEXT REFERENCES grp(id), n INTEGER, PRIMARY KEY (grp_id, n));
             CREATE TABLE part_note(id INTEGER PRIMARY KEY, grp_id TEXT REFERENCES grp(id), n INTEGER,
                                    FOREIGN KEY (grp_id, n) REFERENCES part(grp_id, n));",
        )
        .unwrap();
        for g in 0..groups {
            conn.execute("INSERT INTO grp VALUES (?1)", [format!("G{g}")])
                .unwrap();
        }
        for (g, e) in perms {
            conn.execute(
                "INSERT OR IGNORE INTO perm VALUES (?1, ?2)",
                [format!("G{g}"), format!("E{e}")],
            )
            .unwrap();
        }
        for (i, (g, n, owner)) in items.iter().enumerate() {
            conn.execute(
                "INSERT INTO item VALUES (?1, ?2, ?3)",
                params![i as i64, format!("G{g}"), owner.map(|o| format!("E{o}"))],
            )
            .unwrap();
            // Parts of groups (some of groups that do not exist), and notes on parts (some
            // on parts that do not exist): the composite path.
            conn.execute(
                "INSERT OR IGNORE INTO part VALUES (?1, ?2)",
                params![format!("G{}", g % 6), n],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO part_note VALUES (?1, ?2, ?3)",
                params![i as i64, format!("G{}", (g + i as u8) % 7), (i % 2) as i64],
            )
            .unwrap();
        }
        conn
    }

    /// Central with that data, the plan of [`MODEL`], and node `n` standing for employee
    /// `E{emp}`.
    fn setup(
        perms: &[(u8, u8)],
        items: &[(u8, u8, Option<u8>)],
        groups: u8,
        emp: u8,
    ) -> (Connection, Plan, NodeState) {
        let conn = central(perms, items, groups);
        let plan = Plan::new(&conn, &DockingModel::from_toml(MODEL).unwrap()).unwrap();
        let node = NodeState {
            name: "n".into(),
            attrs: BTreeMap::from([("employee".to_string(), format!("E{emp}"))]),
            routed_pos: 0,
            ppos: 0,
        };
        (conn, plan, node)
    }

    /// Groups, permissions (group, employee), items (group, part, owner) and the node's
    /// employee; group numbers run past the groups that exist.
    #[allow(clippy::type_complexity)]
    fn data() -> impl Strategy<Value = (u8, Vec<(u8, u8)>, Vec<(u8, u8, Option<u8>)>, u8)> {
        (
            0u8..8,
            proptest::collection::vec((0u8..10, 0u8..3), 0..12),
            proptest::collection::vec((0u8..10, 0u8..2, proptest::option::of(0u8..3)), 0..20),
            0u8..3,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The set-based evaluation of one node gives exactly the instances the general
        /// evaluation gives that node, dangling ids and the cycle included.
        #[test]
        fn one_node_evaluation_matches_the_general_one(
            (groups, perms, items, emp) in data(),
        ) {
            let (conn, plan, node) = setup(&perms, &items, groups, emp);
            let nodes = std::slice::from_ref(&node);
            identify(&conn, nodes).unwrap();
            let pass = Pass { conn: &conn, plan: &plan, nodes, eval: Evaluation::Set };
            pass.refresh_edges(&vec![BTreeSet::new(); plan.objects.len()], &vec![true; plan.maps.len()])
                .unwrap();
            let general: BTreeSet<(i64, String)> = pass
                .evaluate_all()
                .unwrap()
                .iter()
                .enumerate()
                .flat_map(|(oi, ids)| {
                    ids.iter()
                        .filter(|(_, nodes)| nodes.contains("n"))
                        .map(move |(id, _)| (oi as i64, id.clone()))
                })
                .collect();
            pass.evaluate_one().unwrap();
            let one: BTreeSet<(i64, String)> = conn
                .prepare("SELECT obj, id FROM temp.berth_seen")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            prop_assert_eq!(one, general);
        }

        /// Enrollment writes each row the node holds once and records exactly those rows:
        /// the rows of its instances as the per-path queries find them (`desired_rows`),
        /// through a table that belongs to two objects and a path on a composite key.
        #[test]
        fn enrollment_records_and_writes_exactly_the_held_rows(
            (groups, perms, items, emp) in data(),
        ) {
            let (conn, plan, node) = setup(&perms, &items, groups, emp);
            store::set_meta(&conn, meta_keys::ROUTING_RESYNC, "1").unwrap();
            let mut written = Vec::new();
            let count = extract_rows(&conn, &plan, &node, |table, names, row, at| {
                let values: Vec<String> = (0..names.len())
                    .map(|i| format!("{:?}", row.get_ref(at + i).map(from_sql)))
                    .collect();
                written.push((table.to_string(), names.to_vec(), values));
                Ok(())
            })
            .unwrap();
            let recorded: BTreeSet<(String, String)> = conn
                .prepare("SELECT tbl, pk FROM berth_node_rows WHERE node = 'n'")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let nodes = std::slice::from_ref(&node);
            let pass = Pass { conn: &conn, plan: &plan, nodes, eval: Evaluation::Set };
            prop_assert_eq!(&recorded, &desired_rows(&pass, "n").unwrap());
            prop_assert_eq!(count as usize, written.len());
            prop_assert_eq!(written.len(), recorded.len());
            let distinct: BTreeSet<_> = written.iter().collect();
            prop_assert_eq!(distinct.len(), written.len(), "a row written twice");
            // Whole rows: every column of the table, in order.
            for (table, names, _) in &written {
                let columns: Vec<String> = conn
                    .prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))
                    .unwrap()
                    .query_map([], |r| r.get(0))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                prop_assert_eq!(names, &columns);
            }
        }
    }

    /// A path that joins on two columns at once cannot be written with `IN`: that table
    /// is read path by path instead.
    #[test]
    fn composite_paths_are_read_path_by_path() {
        let conn = central(&[], &[], 0);
        let plan = Plan::new(&conn, &DockingModel::from_toml(MODEL).unwrap()).unwrap();
        let group = &plan.objects[0].r;
        let member = |t: &str| group.members.iter().find(|m| m.table == t).unwrap();
        assert_eq!(
            member("part_note").paths.len(),
            2,
            "direct, and through its part"
        );
        assert!(held_rows_sql(&plan, &[(0, member("part_note"))]).is_none());
        let sql = held_rows_sql(
            &plan,
            &[(0, member("item")), (1, &plan.objects[1].r.members[0])],
        )
        .unwrap();
        assert_eq!(sql.matches(" IN ").count(), 3, "{sql}");
    }
}
