//! The berth watcher (not built yet): the daemon that watches exchange folders (notify events
//! plus a periodic rescan), takes a bundle only once it is complete and stable, copies it into
//! the site's spool and runs the site's docking cycle through `berth_engine::dock`.
//!
//! Until it lands, `berth dock --site DIR --via FOLDER` run by a scheduler does the same work:
//! docking is idempotent, and the site lock keeps two runs apart.
