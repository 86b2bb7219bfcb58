//! What a bundle carries for upgrades, in and out, at either role: central's announcements
//! and files to a node ([`super::central`]), a node's reports to central ([`super::node`]).

use super::{KIND_REPORT, REPORT_ENTRY, Report, central, node};

/// The upgrade content of a verified incoming bundle, read before its transaction.
#[derive(Debug)]
pub enum Incoming {
    /// At a node: announcements, files, acknowledgement (from central).
    Node(node::Incoming),
    /// At central: a node's reports.
    Central(Vec<Report>),
}

/// Reads (and, at a node, verifies and stores the files of) the upgrade content of `bundle`.
pub fn read_incoming(
    site: &crate::site::Site,
    bundle: &mut berth_bundle::Bundle<berth_bundle::Verified, std::fs::File>,
) -> crate::Result<Incoming> {
    match site.role() {
        crate::site::Role::Node => Ok(Incoming::Node(node::read_incoming(site, bundle)?)),
        crate::site::Role::Central => Ok(Incoming::Central(central::read_reports(bundle)?)),
    }
}

/// Records the upgrade content inside the bundle's apply transaction.
pub fn record_incoming(
    conn: &rusqlite::Connection,
    sender: &str,
    inc: &Incoming,
) -> crate::Result<()> {
    match inc {
        Incoming::Node(i) => node::record_incoming(conn, i),
        Incoming::Central(r) => central::record_reports(conn, sender, r),
    }
}

/// The upgrade content of an outgoing bundle.
#[derive(Debug)]
pub enum Outgoing {
    /// Central to a node: announcements, files, acknowledgement of its reports.
    Central(central::Outbox),
    /// A node to central: its reports.
    Node(node::ReportOut),
}

/// Decides what the next bundle to `peer` carries for upgrades.
pub fn outgoing(
    site: &crate::site::Site,
    peer: &str,
    ours_waiting: bool,
) -> crate::Result<Outgoing> {
    match site.role() {
        crate::site::Role::Central => Ok(Outgoing::Central(central::outbox(
            site,
            peer,
            ours_waiting,
        )?)),
        crate::site::Role::Node => Ok(Outgoing::Node(node::report_outbox(site, ours_waiting)?)),
    }
}

impl Outgoing {
    /// Whether it alone justifies writing a bundle.
    pub fn due(&self) -> bool {
        match self {
            Outgoing::Central(o) => o.due,
            Outgoing::Node(r) => r.due,
        }
    }

    /// Adds the manifest extension (central's acknowledgement of the node's reports).
    pub fn extend_header(&self, h: &mut berth_bundle::BundleHeader) {
        if let Outgoing::Central(o) = self
            && let Some((k, v)) = o.extension()
        {
            h.extensions.insert(k, v);
        }
    }

    /// The entries: (name, kind, content), sorted by name.
    pub fn take_entries(&mut self) -> crate::Result<Vec<(String, &'static str, std::fs::File)>> {
        match self {
            Outgoing::Central(o) => o.open(),
            Outgoing::Node(r) => Ok(r
                .file
                .take()
                .map(|f| (REPORT_ENTRY.to_string(), KIND_REPORT, f))
                .into_iter()
                .collect()),
        }
    }

    /// Records that bundle `seq` to `peer` carried it.
    pub fn record_sent(
        &self,
        conn: &rusqlite::Connection,
        peer: &str,
        seq: i64,
    ) -> crate::Result<()> {
        match self {
            Outgoing::Central(o) => central::record_sent(conn, peer, seq, o),
            Outgoing::Node(r) => node::record_reports_sent(conn, r.max_id),
        }
    }
}
