//! Bounded routing runs (issue 20; seed 004, the log manager's MaxBatchTxns and MaxTxns).
//!
//! The dock's routing pass at central commits batch by batch: each batch of about
//! `[routing] batch_changes` log entries is routed and committed together with what it
//! moved, every node's partial log entries, routing checkpoint and route mark, then the
//! write lock is let go before the next batch begins. Central's application writers wait for
//! one batch at most, not the whole pass, and a crash loses only the batch under way: the
//! next dock starts from the last checkpoint committed. `[routing] max_changes` caps the
//! entries one dock routes; what is left waits for the next dock, and the dock says so.
//! A batch may end inside a merged node bundle: the node's rows to settle after the
//! bundle's marker then wait in `berth_route_later`, committed with the batch, so a crash
//! or a cap between two batches keeps them (`router`, SPEC 2.8).
//!
//! What writers journal between two batches comes after the pass's end (it routes the log
//! as it stood when it started); the pass reads it only to know what the entries it routes
//! left behind ([`crate::change`]'s chains), so the streams are the ones a single pass makes.

pub use crate::config::{DEFAULT_BATCH, Routing};
use crate::error::Result;
use crate::merge::apply::Catalog;
use crate::progress::{Reporter, Tracker};
use crate::route::plan::Plan;
use crate::route::router::{Evaluation, Run};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use serde::Serialize;

/// What one run routed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Routed {
    /// Log entries routed.
    pub entries: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Log entries left for the next dock (`max_changes`).
    pub behind: u64,
}

/// Routes central's log to every active node, committing every batch; `conn` must not be
/// in a transaction. Progress is reported after each batch.
pub fn route(
    conn: &Connection,
    catalog: &Catalog,
    plan: Option<&Plan>,
    cfg: &Routing,
    progress: &Reporter,
) -> Result<Routed> {
    let batch = i64::from(cfg.batch_changes.max(1));
    // 0 is no cap: a dock that may route nothing would never catch up.
    let cap = cfg
        .max_changes
        .filter(|&c| c > 0)
        .map(|c| i64::try_from(c).unwrap_or(i64::MAX));
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let Some(mut run) = Run::start(conn, catalog, plan, Evaluation::Set)? else {
        tx.commit()?;
        return Ok(Routed::default());
    };
    let total = cap.map_or(run.left(), |c| c.min(run.left()));
    let mut tracker = Tracker::batches(
        progress,
        "routing to the nodes",
        u64::try_from(total).unwrap_or(0),
        u64::from(cfg.batch_changes),
    );
    let mut done = Routed::default();
    let mut tx = Some(tx);
    loop {
        let tx = match tx.take() {
            Some(tx) => tx,
            None => {
                let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
                run.catch_up()?;
                tx
            }
        };
        let under_cap = |n: u64| cap.is_none_or(|c| i64::try_from(n).unwrap_or(i64::MAX) < c);
        let n = if run.left() > 0 && under_cap(done.entries) {
            run.batch(batch)?
        } else {
            0
        };
        run.checkpoint()?;
        tx.commit()?;
        done.entries += u64::try_from(n).unwrap_or(0);
        done.batches += 1;
        tracker.advance(u64::try_from(n).unwrap_or(0));
        if run.left() == 0 || !under_cap(done.entries) {
            break;
        }
    }
    done.behind = u64::try_from(run.left()).unwrap_or(0);
    Ok(done)
}
