//! What a node's dock does with the changes of central's stream that are not row changes:
//! markers move the node's pending local changes on, central's statements run, schema
//! migrations apply (SPEC 2.4, 2.15, 5.4). Row changes go to merge ([`NodeApply::apply`]),
//! so a row's path never reaches the migration gate.

use crate::change::{Change, Op};
use crate::error::Result;
use crate::evolve::history::Migration;
use crate::merge::apply::{MergeStats, NodeApply};
use crate::table::Catalog;
use std::collections::BTreeMap;

/// Why applying a bundle stops short without anything being wrong: the transaction is
/// rolled back and the dock decides what follows.
#[derive(Debug)]
pub(super) enum Halt {
    /// The bundle cannot apply yet and waits in the spool (schema gating): what it waits
    /// for, and what makes it apply.
    Wait(String),
    /// The bundle carries an executable step: a backup of the database is taken first, and
    /// the apply starts again.
    NeedsBackup,
}

/// What applying one change came to.
#[derive(Debug)]
pub(super) enum Step {
    /// Applied (or nothing to do).
    Done,
    /// The apply stops here.
    Halt(Halt),
}

/// The dock's side of applying central's stream at a node.
pub(super) struct Steps {
    /// The site allows migrations' executable steps.
    pub allow_exec: bool,
    /// A backup of the database was taken before this apply (an executable step may run).
    pub backup_ready: bool,
    /// Migrations applied whose executable steps must run once the transaction commits.
    pub execs: Vec<Migration>,
}

impl Steps {
    /// Applies one change of central's stream, whatever it is.
    pub fn apply(
        &mut self,
        node: &mut NodeApply<'_>,
        ch: &Change,
        stats: &mut MergeStats,
    ) -> Result<Step> {
        match ch.op {
            Op::I | Op::U | Op::D => node.apply(ch, stats).map(|()| Step::Done),
            Op::A => {
                ch.check().map_err(|r| node.bad(ch, r.to_string()))?;
                node.pending.advance(ch.ack.unwrap_or(0));
                Ok(Step::Done)
            }
            Op::S => {
                ch.check().map_err(|r| node.bad(ch, r.to_string()))?;
                // Central's statement for this node, run in order with the other changes.
                // The rows it changes differ from central's on purpose: their buckets are
                // left out of the replica comparison from now on (SPEC 2.15).
                let before = crate::replica::local_digests(node.conn, &node.catalog)?;
                node.conn.execute_batch(ch.sql().unwrap_or_default())?;
                crate::replica::mark_local(node.conn, &node.catalog, &before)?;
                stats.applied += 1;
                Ok(Step::Done)
            }
            Op::M => {
                ch.check().map_err(|r| node.bad(ch, r.to_string()))?;
                self.migration(node, ch, stats)
            }
        }
    }

    /// A schema migration, in order with the changes captured before and after it.
    fn migration(
        &mut self,
        node: &mut NodeApply<'_>,
        ch: &Change,
        stats: &mut MergeStats,
    ) -> Result<Step> {
        let m = crate::migrate::from_change(ch).map_err(|r| node.bad(ch, r))?;
        if let Some(step) = &m.exec
            && m.version > crate::migrate::state(node.conn)?.version
        {
            if !step.signed(&m) {
                return Err(node.bad(
                    ch,
                    format!(
                        "migration {}: its executable step is not signed by an admin key",
                        m.version
                    ),
                ));
            }
            if !self.allow_exec {
                return Ok(Step::Halt(Halt::Wait(format!(
                    "migration {} ({:?}) carries an executable step and this site does not \
                     allow executables: set allow_executables = true in berth.toml to run it",
                    m.version, m.name
                ))));
            }
            if !self.backup_ready {
                return Ok(Step::Halt(Halt::NeedsBackup));
            }
        }
        match crate::migrate::apply_at_node(node.conn, &m)? {
            crate::migrate::AtNode::Had => {}
            crate::migrate::AtNode::Waits(reason) => return Ok(Step::Halt(Halt::Wait(reason))),
            crate::migrate::AtNode::Applied(tr) => {
                if m.exec.is_some() {
                    self.execs.push(m.clone());
                }
                node.catalog = std::borrow::Cow::Owned(Catalog::load(
                    node.conn,
                    &BTreeMap::new(),
                    Default::default(),
                )?);
                node.pending.translate(&tr);
                stats.applied += 1;
            }
        }
        Ok(Step::Done)
    }
}
