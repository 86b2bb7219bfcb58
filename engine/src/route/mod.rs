//! Routing by visibility (seed 004, Figures 2, 6, 7 and 8): which rows each node may see.
//!
//! This module holds the docking model, its validation, the reference oracle, the router
//! and `explain`.
//!
//! - [`model::DockingModel`] is the docking model read from TOML (Figure 2): every table's
//!   [`model::Visibility`] and whether nodes may write it; docking objects with a primary
//!   table, member tables and their paths to the primary row, visibility rules in sequence
//!   (SQL rules in the seed's one-pair form and in a set form, and object rules), and related
//!   objects. [`model::DockingModel::from_toml`] is pure.
//! - [`check::check`] validates a model against a real schema and returns
//!   [`check::Finding`]s, each saying what is wrong, where, and what to do;
//!   [`check::resolve`] also returns the [`check::Resolved`] model the router works from:
//!   every member's paths to its primary table (the seed's GeneratePrimaryIdSQL, as
//!   [`check::ResolvedMember::primary_id_sql`]) and the tables each rule reads.
//! - [`oracle::project`] is the reference oracle: given central and a node, exactly the rows
//!   (and docking-object instances) that node should hold, written plainly and apart from the
//!   router so that routing tests can compare every replica with it.
//! - [`router`] routes central's log to every node at once, incrementally: only the instances
//!   a change can affect are re-evaluated, with set-form rules answering for all nodes in one
//!   query (SPEC 2.8); [`run`] is the dock's pass over it, committed batch by batch.
//!
//! ```
//! use berth_engine::route::{check, model::DockingModel};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = DockingModel::from_toml(r#"
//! version = 1
//! [nodes]
//! attributes = ["employee"]
//! [tables]
//! opty = { visibility = "limited", node_write = true }
//! opty_emp = { visibility = "limited" }
//!
//! [[object]]
//! name = "opportunity"
//! primary_table = "opty"
//! [[object.member]]
//! table = "opty_emp"          # path: the foreign key opty_emp.opty_id -> opty.id
//! [[object.rule]]             # the seed's S_OPTY_EMP rule, in both forms
//! sql = "SELECT 'X' FROM opty_emp WHERE opty_id = :primary_row_id AND emp_id = :attr_employee"
//! set_sql = """SELECT oe.opty_id, na.node_id FROM opty_emp oe
//!   JOIN berth_node_attr na ON na.name = 'employee' AND na.value = oe.emp_id"""
//! "#)?;
//! let db = rusqlite::Connection::open_in_memory()?;
//! db.execute_batch(
//!     "CREATE TABLE opty(id TEXT PRIMARY KEY, name TEXT);
//!      CREATE TABLE opty_emp(opty_id TEXT REFERENCES opty(id), emp_id TEXT,
//!                            PRIMARY KEY (opty_id, emp_id));",
//! )?;
//! let findings = check::check(&model, &db)?;
//! assert!(findings.is_empty(), "{findings:?}");
//! # Ok(()) }
//! ```

pub mod check;
pub mod explain;
pub mod model;
pub mod oracle;
pub mod plan;
pub mod router;
pub mod run;

use crate::error::Result;
use crate::table::Catalog;
use model::DockingModel;
use router::Evaluation;
use rusqlite::Connection;

/// Routes central's log entries not routed yet into every active node's partial log (the
/// incremental router, [`router`]), inside the caller's transaction.
pub fn route(conn: &Connection, catalog: &Catalog, model: Option<&DockingModel>) -> Result<()> {
    route_with_progress(conn, catalog, model, &None)
}

/// [`route`], reporting the log entries routed to `progress`.
pub fn route_with_progress(
    conn: &Connection,
    catalog: &Catalog,
    model: Option<&DockingModel>,
    progress: &crate::progress::Reporter,
) -> Result<()> {
    let plan = router::plan_for(conn, model)?;
    router::route_with_progress(
        conn,
        catalog,
        plan.as_ref(),
        Evaluation::Set,
        router::BATCH,
        progress,
    )
}
