//! The berth watcher: the daemon that users live with. It watches exchange folders (notify
//! events plus a periodic rescan, because network shares and removable media often send no
//! events), takes a bundle only once it is complete and stable, copies it into the site's
//! spool, and runs the site's docking cycle through `berth_engine::dock`.
//!
//! Principal types and the flow of data:
//! - [`watch::WatchOptions`] names the site, its [`watch::Source`]s (folders, `maildir:PATH`)
//!   and the timings (poll, settle, grace, debounce) and the volume size.
//! - [`watch::run`] loops until a stop flag is set: scan -> take into the spool (volume sets
//!   joined by `berth_engine::volumes`, mail attachments by [`mail`]) -> apply the spool ->
//!   write outgoing bundles; every step is reported as a [`watch::Event`].
//! - [`mail`] writes a message with a bundle attached and takes bundles out of messages.
//!
//! ```no_run
//! use berth_watcher::watch::{run, Source, WatchOptions};
//! use std::sync::atomic::AtomicBool;
//! # fn main() -> Result<(), berth_watcher::WatchError> {
//! let opts = WatchOptions::new("laptop".into(), vec![Source::parse("/media/usb")]);
//! let stop = AtomicBool::new(false); // set it from a signal handler to stop cleanly
//! run(&opts, &stop, &mut |e| println!("{e}"))?;
//! # Ok(()) }
//! ```

mod error;
pub mod mail;
pub mod watch;

pub use error::{Result, WatchError};
