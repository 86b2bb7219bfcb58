//! Replica digests and repair (issue 16, SPEC 2.15): a node finds out, by itself and offline,
//! that its rows are no longer what central says it holds, and central repairs the
//! differing buckets without a re-extract and without throwing any of the node's rows away.
//!
//! - Central's bundle to a node carries `payload/digests.json` (kind `digests`): the
//!   [`crate::digest`] of every table as the node should hold it once it applied the bundle
//!   (enterprise tables whole, `limited` tables as far as the node holds their rows,
//!   `central` tables not at all). It is written only when central's log has nothing the
//!   routing pass of the bundle did not take (an application writing at central meanwhile
//!   would make it describe rows the bundle does not carry yet).
//! - The node keeps the digests of the newest bundle it applied. At every dock it compares
//!   them with its own rows, leaving out the buckets that hold a row with local changes
//!   central has not merged (their difference is expected: those changes are on their way).
//!   The result is kept (`status`, `berth verify`) and, when it says something new, sent in
//!   the node's next bundle as `payload/report/digest.json` (kind `report`).
//! - Central answers a report that names differing buckets with their rows in its next
//!   bundle, `payload/repair.jsonl` (kind `repair`): per bucket, the number of rows it holds
//!   and each row. It repeats that at most [`MAX_ATTEMPTS`] times for one report, and only
//!   after the node has applied its previous repair.
//! - The node applies a repair after the bundle's changes, with capture suspended like any
//!   of central's changes: rows of the bucket that differ from central's are set to
//!   central's, rows central does not list are deleted, missing rows are inserted. Each row
//!   it changes is first kept aside whole in `berth_kept` (its row as it was, or none),
//!   because berth cannot tell whether the difference was the node's own write made while
//!   capture was off: `status` counts them, `berth repair --list` shows them, and
//!   `berth repair --reapply ID` writes one back as a local change (journaled, merged at
//!   central like any write). Rows with unmerged local changes are never touched.

use crate::digest::{self, Digests, Scope};
use crate::error::{EngineError, Result};
use crate::merge::apply::{Catalog, Pending, TableInfo};
use crate::route::model::{DockingModel, Visibility};
use crate::site::{Role, Site};
use crate::store;
use crate::store::meta_keys;
use crate::value::{Row, same};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufWriter, Seek, Write};

mod central;
mod kept;
mod node;

pub use central::*;
pub use kept::*;
pub use node::*;

/// Central's digests of what the node should hold.
pub const DIGESTS_ENTRY: &str = "payload/digests.json";
/// Central's rows of the buckets a node reported as differing.
pub const REPAIR_ENTRY: &str = "payload/repair.jsonl";
/// A node's comparison result.
pub const REPORT_ENTRY: &str = "payload/report/digest.json";
/// Content kind of [`DIGESTS_ENTRY`].
pub const KIND_DIGESTS: &str = "digests";
/// Content kind of [`REPAIR_ENTRY`].
pub const KIND_REPAIR: &str = "repair";
/// Content kind of [`REPORT_ENTRY`] (shared with upgrade reports).
pub const KIND_REPORT: &str = "report";
/// Repairs central sends for one report before it stops and leaves it to an operator.
pub const MAX_ATTEMPTS: i64 = 3;
/// The largest digests entry read (64 buckets of every table: far below).
const MAX_DIGESTS: u64 = 64 << 20;
/// The largest report entry read.
const MAX_REPORT: u64 = 16 << 20;

/// A place where the node's rows and central's digests differ.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Place {
    /// The table.
    pub t: String,
    /// The bucket (`None`: the whole table, missing on one side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<u16>,
    /// Rows the node holds there.
    pub node: u64,
    /// Rows central says it should hold there.
    pub central: u64,
}

/// The result of one comparison at a node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The `seq` of central's bundle whose digests were compared.
    pub seq: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// Where the rows differ.
    pub differ: Vec<Place>,
    /// Buckets left out because they hold rows with local changes not merged yet.
    pub skipped: u64,
    /// Rows the repairs applied with that bundle changed, and of those, rows kept aside.
    #[serde(default)]
    pub repaired: u64,
}

impl Report {
    /// One line for people.
    pub fn summary(&self) -> String {
        let when = format!("at {} (digests of central's bundle {})", self.at, self.seq);
        if self.differ.is_empty() {
            format!(
                "rows match central's digests {when}{}",
                if self.skipped > 0 {
                    format!(
                        "; {} bucket(s) with unsent local changes left for later",
                        self.skipped
                    )
                } else {
                    String::new()
                }
            )
        } else {
            let places: Vec<String> = self
                .differ
                .iter()
                .map(|p| match p.b {
                    Some(b) => format!(
                        "{} bucket {b} ({} rows here, {} at central)",
                        p.t, p.node, p.central
                    ),
                    None => format!("{} ({} rows here, {} at central)", p.t, p.node, p.central),
                })
                .collect();
            format!(
                "rows differ from central's digests {when}: {}; central sends the rows of these \
                 buckets in its next bundle (the node's rows it replaces are kept aside: \
                 `berth repair --list`)",
                places.join(", ")
            )
        }
    }
}

/// A row kept aside by a repair (`berth repair --list`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kept {
    /// Its id (`berth repair --reapply ID`).
    pub id: i64,
    /// The table.
    pub table: String,
    /// The key (JSON array of wire values).
    pub key: String,
    /// The node's row as the repair found it (`None`: the node had no such row).
    pub node_row: Option<Row>,
    /// Central's row the repair put in its place (`None`: central has none; deleted).
    pub central_row: Option<Row>,
    /// The bundle that carried the repair.
    pub bundle_id: String,
    /// When (Unix seconds).
    pub at: i64,
}

/// The tables a node holds and how much of each: what its digests cover.
pub fn scope<'c>(
    catalog: &'c Catalog,
    model: Option<&DockingModel>,
    node: Option<&str>,
) -> Vec<(&'c TableInfo, Scope)> {
    catalog
        .tables
        .values()
        .filter_map(|t| {
            let vis = model
                .and_then(|m| m.table(&t.name))
                .map_or(Visibility::Enterprise, |s| s.visibility);
            match (vis, node) {
                (Visibility::Central | Visibility::Local, _) => None,
                (Visibility::Limited, Some(n)) => Some((t, Scope::Held(n.to_string()))),
                _ => Some((t, Scope::All)),
            }
        })
        .collect()
}

/// One line of `payload/repair.jsonl`: a bucket's header (`n`: how many rows central holds
/// in it; they follow) or one of its rows (`k`, `r`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepairLine {
    t: String,
    b: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    k: Option<Vec<Json>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<Row>,
}
