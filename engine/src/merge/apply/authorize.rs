//! What a node may write at central (seed: a node cannot change rows it cannot see; SPEC
//! 2.10: nor link rows to instances it does not hold): the docking model's plan asked for
//! each change, and the corrective change a refused one gets.

use super::*;

use crate::change::{Change, Op};
use crate::error::Result;
use crate::merge::Corrective;
use crate::table::{OnConflict, WriteError, insert_row, update};
use crate::value::Row;
use rusqlite::{Connection, params};
use std::collections::BTreeSet;

/// What a node may write, from the docking model (seed: a node cannot change rows it
/// cannot see; SPEC 2.10: nor link rows to instances it does not hold).
#[derive(Debug)]
pub struct Authorization<'a> {
    /// The site's docking model.
    pub model: &'a crate::route::model::DockingModel,
    /// The model resolved against central's schema, made at the first write it is needed for
    /// and shared with the rest of the dock (the routing pass, the next bundles).
    pub(super) plan: &'a std::cell::OnceCell<crate::route::plan::Plan>,
    /// Whether this bundle's link checks were prepared on the connection.
    pub(super) links: std::cell::Cell<bool>,
    /// Instances the bundle created: primary rows it inserted under keys central did not
    /// have, as (object, id).
    pub(super) created: std::cell::RefCell<BTreeSet<(String, String)>>,
}

impl<'a> Authorization<'a> {
    /// Authorization by `model`, resolved into `plan` when first needed (or already).
    pub fn new(
        model: &'a crate::route::model::DockingModel,
        plan: &'a std::cell::OnceCell<crate::route::plan::Plan>,
    ) -> Self {
        Self {
            model,
            plan,
            links: std::cell::Cell::new(false),
            created: std::cell::RefCell::default(),
        }
    }

    pub(super) fn plan(&self, conn: &Connection) -> Result<&crate::route::plan::Plan> {
        let plan = crate::route::plan::plan_in(self.plan, conn, self.model)?;
        if !self.links.get() {
            plan.prepare_links(conn)?;
            self.links.set(true);
        }
        Ok(plan)
    }
}

/// What the links a node's write makes allow (SPEC 2.10, "Links").
pub(super) enum Links {
    Allowed,
    /// The instance it links to may come later in the bundle.
    Wait,
    /// Refused, with the reason.
    Denied(String),
}

impl CentralMerge<'_> {
    /// Write authorization: `None` when the node may make this change, else the kind of
    /// corrective change that undoes it at the node (`Upsert` = central's row, or a delete
    /// where central has none; `Delete` = the node may not hold the row at all).
    pub(super) fn denied(&self, t: &TableInfo, ch: &Change) -> Result<Option<Corrective>> {
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
    pub(super) fn links(&self, t: &TableInfo, ch: &Change) -> Result<Links> {
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
    pub(super) fn deny_links(
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
}
