//! Human-readable and JSON printing.

use berth_bundle::Manifest;
use berth_engine::dock::DockReport;
use berth_engine::status::{Conflict, Status};
use std::path::Path;

/// Prints any serializable value as pretty JSON.
pub fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn when(t: Option<i64>) -> String {
    t.map_or_else(
        || "never".to_string(),
        |t| format!("{}s ago", (berth_engine::store::now() - t).max(0)),
    )
}

pub fn dock_report(r: &DockReport) {
    for i in &r.incoming {
        println!("{:<12} {}  {}", i.outcome, i.file, i.detail);
    }
    for w in &r.written {
        println!("{:<12} {}", "written", w.display());
    }
    for w in &r.waits {
        println!("{:<12} {w}", "waits");
    }
    if r.pruned.files + r.pruned.rows > 0 {
        println!(
            "{:<12} {} archived bundles, {} records of applied bundles (older than [retention] days)",
            "pruned", r.pruned.files, r.pruned.rows
        );
    }
    if r.incoming.is_empty() && r.written.is_empty() && r.waits.is_empty() {
        println!("nothing to do");
    }
}

pub fn verification(v: &berth_engine::verify::Verification) {
    for c in &v.checks {
        let name = c.check.as_str();
        let verdict = if c.ok { "ok" } else { "FAILED" };
        println!("{name:<12} {verdict}");
        for line in &c.detail {
            println!("  {line}");
        }
    }
}

pub fn status(s: &Status) {
    println!("site       {} ({})", s.name, s.role);
    println!(
        "schema     version {} ({})",
        s.schema_version,
        s.schema_checksum.as_deref().unwrap_or("none yet")
    );
    if let Some((ours, central)) = s.upload_waits {
        println!(
            "upload     waits: schema version {ours} is behind central's {central}; local changes stay here until the migration applies (see held bundles)"
        );
    }
    if s.capture.is_sound() {
        println!("capture    ok");
    } else {
        println!(
            "capture    STOPPED: docks apply and export nothing until this is repaired\n{}",
            s.capture
        );
    }
    for t in &s.capture.unreplicated {
        println!(
            "table      {t}: {}",
            s.capture
                .unreplicated_hint
                .as_deref()
                .unwrap_or("not replicated")
        );
    }
    if let Some(r) = &s.replica {
        println!("replica    {}", r.summary());
    }
    for n in &s.replicas {
        println!(
            "replica    {}",
            berth_engine::replica::report_line(&n.node, &n.report, n.received, n.repairs_sent)
        );
    }
    if s.kept > 0 {
        println!(
            "kept       {} row(s) a repair replaced are kept aside: berth repair --list",
            s.kept
        );
    }
    println!("software   {}", s.software_level);
    println!("log        position {}", s.log_pos);
    if let Some(l) = &s.log {
        println!(
            "log        {} entries; processed by every node up to position {}{}",
            l.entries,
            l.processed,
            l.held_by
                .as_ref()
                .map(|n| format!(" (held back by {n})"))
                .unwrap_or_default()
        );
    }
    if s.awaiting_extract {
        println!(
            "waiting    for the initial extract from central (run `berth dock` once the admin has run `berth node add`)"
        );
    }
    if !s.peers.is_empty() {
        println!(
            "\n{:<16} {:<8} {:>6} {:>8} {:>8} {:>10} {:>7} {:>10} {:>10} {:>9}  key",
            "peer",
            "role",
            "schema",
            "in seq",
            "out seq",
            "to send",
            "held",
            "last in",
            "last out",
            "conflicts"
        );
        for p in &s.peers {
            println!(
                "{:<16} {:<8} {:>6} {:>8} {:>8} {:>10} {:>7} {:>10} {:>10} {:>9}  {}{}",
                p.name,
                p.role,
                p.schema_version
                    .map_or_else(|| "-".to_string(), |v| v.to_string()),
                p.in_seq,
                p.out_seq,
                p.pending_out,
                p.held_in,
                when(p.last_in),
                when(p.last_out),
                p.conflicts,
                p.key_id,
                if p.revoked.is_some() { "  REVOKED" } else { "" }
            );
        }
    }
    for p in s
        .peers
        .iter()
        .filter(|p| p.rows_held > 0 || p.instances > 0 || p.routing_lag > 0)
    {
        println!(
            "{:<16} holds {} docking-object instances, {} limited rows; {} log entries not routed yet",
            p.name, p.instances, p.rows_held, p.routing_lag
        );
    }
    if !s.held.is_empty() {
        println!("\nheld bundles:");
        for h in &s.held {
            println!(
                "  {} (from {}, seq {}): {}",
                h.file, h.peer, h.seq, h.reason
            );
        }
    }
    println!("\nconflicts  {}", s.conflicts);
    if s.overrides > 0 {
        println!(
            "overrides  {} local changes were overridden by central (see berth_overrides)",
            s.overrides
        );
    }
}

pub fn conflicts(c: &[Conflict]) {
    if c.is_empty() {
        println!("no conflicts");
        return;
    }
    for x in c {
        println!(
            "#{} {} {} {} {} columns {} ({}): node had {} -> {}, central {}",
            x.id,
            x.node,
            x.table,
            x.key,
            x.kind,
            x.columns,
            x.resolution,
            x.node_old.as_deref().unwrap_or("-"),
            x.node_new.as_deref().unwrap_or("-"),
            x.central.as_deref().unwrap_or("-")
        );
    }
}

pub fn manifest(file: &Path, m: &Manifest) {
    println!(
        "bundle     {} (UNVERIFIED: use `berth bundle verify` to check it)",
        file.display()
    );
    println!("format     {}", m.format);
    println!("id         {}", m.bundle_id);
    println!("created    {} (Unix time)", m.created);
    println!("sender     {} (key {})", m.sender.site, m.sender.key_id);
    println!("recipients {}", m.recipients.join(", "));
    println!("kinds      {}", m.kinds.join(", "));
    if let Some(s) = &m.stream {
        println!(
            "stream     seq {} covers log {}..{}, requires {}, acks {}",
            s.seq, s.log_from, s.log_to, s.requires, s.acks
        );
    }
    if let Some(c) = &m.schema_checksum {
        println!("schema     {c}");
    }
    if let Some(l) = &m.software_level {
        println!("software   {l}");
    }
    println!("entries:");
    for e in &m.entries {
        println!(
            "  {:<32} {:<10} {:>12} bytes  sha256 {}",
            e.name, e.kind, e.size, e.sha256
        );
    }
}

/// Progress bars on stderr for long applies and writes, when stderr is a terminal and the
/// output is not JSON; plain output otherwise (nothing is drawn into logs or pipes).
pub fn bars(json: bool) -> berth_engine::progress::Reporter {
    use std::io::IsTerminal as _;
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(std::sync::Arc::new(Bars::default()))
}

/// One bar at a time (the engine reports one piece of work at a time).
#[derive(Debug, Default)]
struct Bars {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl berth_engine::progress::Progress for Bars {
    fn begin(&self, what: &str, total: u64) {
        let bar = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:40!} [{bar:30}] {percent:>3}%, {eta} left",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn set(&self, done: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.set_position(done);
        }
    }

    fn end(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}

/// The rows repairs kept aside (`berth repair --list`).
pub fn kept(rows: &[berth_engine::replica::Kept]) {
    if rows.is_empty() {
        println!("no rows kept aside");
        return;
    }
    let text = |r: &Option<berth_engine::value::Row>| match r {
        Some(r) => serde_json::to_string(r).unwrap_or_default(),
        None => "(no row)".into(),
    };
    for k in rows {
        println!(
            "{:>4}  {} {}  at {}  here: {}  central's: {}",
            k.id,
            k.table,
            k.key,
            k.at,
            text(&k.node_row),
            text(&k.central_row)
        );
    }
}
