//! berth's sync engine: sites, change capture, docking and merge.
//!
//! Principal types and the flow of data:
//! - [`site::Site`] is a site folder: `berth.toml`, `data.db` (user tables plus `berth_*`
//!   tables), its key pair and working folders.
//! - [`capture`] installs triggers that journal every write into `berth_log` (seed Figure 3);
//!   [`guard`] checks before every dock that they are still there as installed.
//! - [`dock::dock`] takes the bundles addressed to the site from an exchange folder, verifies
//!   and applies each in one transaction, then writes the site's outgoing bundles (Figure 4).
//! - [`merge`] decides each incoming change ([`merge::resolve`], pure) and applies it
//!   ([`merge::apply`]), recording collisions and corrective changes (Figure 5).
//! - [`enroll`] handles node enrollment and the initial extract.
//! - [`partial`] routes central's log into each node's partial log and prunes the log to
//!   what every node has processed; [`catchup`] keeps the stream of a node away for months
//!   compacted (one change per row) so it no longer holds the log back.
//! - [`status`] reads what a site knows about its streams, held bundles and conflicts;
//!   [`conflict`] lists what lost a collision and settles one by hand.
//! - [`upgrade`] distributes software upgrade packages to nodes and collects their reports.
//!
//! Where each idea of the seeds lives (the full table, with the SPEC sections and the test
//! files, is in the README): capture [`capture`]; the wire change [`change`];
//! streams and the log manager [`partial`], [`retention`]; docking [`dock`]; merge and
//! collisions [`merge`]; routing by visibility rules [`route`]; enrollment [`enroll`];
//! replica digests [`digest`], [`replica`]; upgrades [`upgrade`]; schema snapshots and the
//! diff [`evolve`]; migrations and checksum gating [`migrate`].
//!
//! ## Layers
//!
//! Each module uses only the modules of the layers below its own, and those listed before it
//! in its own layer (bottom first). `layers.rs` reads this table and fails the build's tests
//! when a module uses one above it (none does: the engine's modules have no import cycle).
//!
//! | layer | units, in order |
//! |---|---|
//! | 1. values and vocabulary | `error`, `value`, `progress`, `sqlpolicy`, `peer`, `evolve::sqltext` |
//! | 2. files and the exchange folder | `files`, `volumes`, `transport` |
//! | 3. the store and the table catalog | `store`, `table`, `schema`, `capture` |
//! | 4. the site | `config`, `route::model`, `route::check`, `identity`, `site`, `keychain`, `retention`, `revoke`, `submission`, `seal`, `outgoing`, `payload` |
//! | 5. the log, the wire change and the routing plan | `change`, `digest`, `route::plan` |
//! | 6. merge | `merge`, `merge::contest`, `merge::apply`, `conflict` |
//! | 7. routing and the extract | `catchup`, `partial`, `route::router`, `route::run`, `route::oracle`, `route::explain`, `route`, `replica`, `extract` |
//! | 8. upgrades | `upgrade`, `upgrade::central`, `upgrade::node`, `upgrade::submit`, `upgrade::exchange` |
//! | 9. schema evolution | `evolve`, `evolve::snapshot`, `evolve::fill`, `evolve::diff`, `evolve::apply`, `evolve::history`, `guard`, `migrate::stream`, `header`, `migrate::record`, `migrate::translate`, `migrate::exec`, `migrate::apply`, `migrate::folder`, `migrate::submit`, `migrate` |
//! | 10. docking | `init`, `enroll`, `extract::apply`, `dock::steps`, `dock`, `status`, `verify` |
//!
//! ```no_run
//! use berth_engine::{site::{Site, CentralInit}, dock::{dock, DockOptions}};
//! # fn main() -> Result<(), berth_engine::EngineError> {
//! let (mut hq, _warnings) = Site::init_central(&CentralInit {
//!     dir: "hq".as_ref(), name: None, schema: "schema.sql".as_ref(), docking: None, data: None,
//! })?;
//! let report = dock(&mut hq, "/media/usb".as_ref(), &DockOptions::default())?;
//! println!("{} bundles written", report.written.len());
//! # Ok(()) }
//! ```

pub mod capture;
pub mod catchup;
pub mod change;
pub mod config;
pub mod conflict;
pub mod digest;
pub mod dock;
pub mod enroll;
mod error;
pub mod evolve;
pub mod extract;
pub mod files;
pub mod guard;
mod header;
pub mod identity;
mod init;
pub mod keychain;
#[cfg(test)]
mod layers;
pub mod merge;
pub mod migrate;
pub mod outgoing;
pub mod partial;
mod payload;
pub mod peer;
pub mod progress;
pub mod replica;
pub mod retention;
pub mod revoke;
pub mod route;
pub mod schema;
pub mod seal;
pub mod site;
pub mod sqlpolicy;
pub mod status;
pub mod store;
mod submission;
pub mod table;
pub mod transport;
pub mod upgrade;
pub mod value;
pub mod verify;
pub mod volumes;

pub use error::{EngineError, Result};
