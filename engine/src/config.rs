//! `berth.toml`: a site's role and name, its collision policies and the sections that tune
//! retention and routing. Read and written by [`crate::site::Site`]; the sections' behaviour
//! is in [`crate::retention`] and [`crate::route::run`].

use crate::table::Policy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which side of the star a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The master copy.
    Central,
    /// A partial replica.
    Node,
}

impl Role {
    /// "central" or "node".
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Central => "central",
            Role::Node => "node",
        }
    }
}

/// `berth.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The site's role.
    pub role: Role,
    /// The site's name (also its name in bundle file names).
    pub name: String,
    /// Collision policy of tables not named in `policies`.
    #[serde(default)]
    pub default_policy: Policy,
    /// Collision policy per table.
    #[serde(default)]
    pub policies: BTreeMap<String, Policy>,
    /// Whether migrations' executable steps (admin-signed programs) may run here.
    #[serde(default)]
    pub allow_executables: bool,
    /// How long bundles done with are kept (`[retention]`).
    #[serde(default, skip_serializing_if = "Retention::is_default")]
    pub retention: Retention,
    /// How central's routing pass is cut into transactions (`[routing]`).
    #[serde(default, skip_serializing_if = "Routing::is_default")]
    pub routing: Routing,
}

/// Days kept by default.
pub const DEFAULT_DAYS: u32 = 30;

/// `berth.toml`'s `[retention]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Days an archived bundle and a `berth_applied` row are kept (`0`: for ever).
    #[serde(default = "default_days")]
    pub days: u32,
    /// Days without a bundle from a node after which central stops keeping its log for it
    /// and keeps its stream in compacted form instead (SPEC 2.8, "Nodes away"). Unset: `days`;
    /// `0`: never (a node away holds the log back for as long as it is away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub away_days: Option<u32>,
}

fn default_days() -> u32 {
    DEFAULT_DAYS
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            days: DEFAULT_DAYS,
            away_days: None,
        }
    }
}

impl Retention {
    /// Whether it is the default (then `berth.toml` need not say it).
    pub fn is_default(&self) -> bool {
        *self == Retention::default()
    }
}

/// Log entries a batch routes by default (also [`crate::route::router::BATCH`], the batch that bounds
/// the router's memory): about a second of routing for the sales model at 100 nodes on the
/// benchmark machine (BENCHMARKS 9), which is as long as an application writer then waits,
/// at 0.94x the throughput of one transaction for the whole pass. Smaller batches cost more
/// (1,000: 0.49x).
pub const DEFAULT_BATCH: u32 = 20_000;

/// `berth.toml`'s `[routing]` (central).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// Log entries routed and committed at once (MaxBatchTxns).
    #[serde(default = "default_batch")]
    pub batch_changes: u32,
    /// Log entries one dock routes at most (MaxTxns); none or 0: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_changes: Option<u64>,
}

fn default_batch() -> u32 {
    DEFAULT_BATCH
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            batch_changes: DEFAULT_BATCH,
            max_changes: None,
        }
    }
}

impl Routing {
    /// Whether it is the default (then `berth.toml` need not say it).
    pub fn is_default(&self) -> bool {
        *self == Routing::default()
    }
}
