//! Human-readable and JSON printing.

use berth_bundle::Manifest;
use berth_engine::conflict::{Conflict, Override, Resolution, Side};
use berth_engine::dock::DockReport;
use berth_engine::status::Status;
use berth_engine::value::Row;
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
    if r.incoming.is_empty() && r.written.is_empty() && r.waits.is_empty() && r.upgrade.is_empty() {
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
        if !l.away.is_empty() {
            println!(
                "away       {}: silent longer than [retention] away_days; not holding the log back, their streams kept compacted",
                l.away.join(", ")
            );
        }
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
            "overrides  {} local changes met a change of central's before it merged them: berth conflicts",
            s.overrides
        );
    }
}

/// Some columns of a row, `col='text'` or `col=value`; `(no row)` when there is none.
fn values(row: Option<&Row>, cols: &[String]) -> String {
    let Some(row) = row else {
        return "(no row)".into();
    };
    let shown: Vec<String> = row
        .iter()
        .filter(|(c, _)| cols.is_empty() || cols.contains(c))
        .map(|(c, v)| match v {
            serde_json::Value::String(t) => format!("{c}='{t}'"),
            v => format!("{c}={v}"),
        })
        .collect();
    shown.join(", ")
}

/// `berth conflicts`: collisions with both sides and which lost; overrides at a node.
pub fn conflicts(c: &[Conflict], o: &[Override], site: &Path) {
    if c.is_empty() && o.is_empty() {
        println!("no conflicts");
        return;
    }
    for x in c {
        let lost = match x.lost.side {
            Side::Node => "node",
            Side::Central => "central",
        };
        println!(
            "#{} {} {} {} {} on {} ({})",
            x.id,
            x.node,
            x.table,
            serde_json::Value::from(x.key.clone()),
            x.kind,
            if x.columns.is_empty() {
                "the row".to_string()
            } else {
                x.columns.join(", ")
            },
            x.resolution,
        );
        println!(
            "    node     {} -> {}",
            values(x.node_old.as_ref(), &x.columns),
            values(x.node_new.as_ref(), &x.columns)
        );
        println!("    central  {}", values(x.central.as_ref(), &x.columns));
        println!(
            "    lost     {lost}'s {}",
            values(x.lost.values.as_ref(), &x.columns)
        );
        match &x.resolved {
            Some(r) => println!("    resolved: took {}'s side", r.took.as_str()),
            None => println!(
                "    to keep the {lost}'s side: berth conflicts resolve {} --take {lost} --site {}",
                x.id,
                site.display()
            ),
        }
    }
    for x in o {
        println!(
            "override #{} {} {}: central's {} met a local {} not yet merged; holds {} (central settles it when the local change arrives)",
            x.id,
            x.table,
            serde_json::Value::from(x.key.clone()),
            x.central_op,
            x.local_op,
            values(x.row.as_ref(), &[])
        );
    }
}

/// `berth conflicts resolve`.
pub fn resolution(r: &Resolution, site: &Path) {
    let c = &r.conflict;
    println!(
        "#{} {} {}: {}'s side written as a new change: {}",
        c.id,
        c.table,
        serde_json::Value::from(c.key.clone()),
        c.resolved.as_ref().map_or("?", |x| x.took.as_str()),
        values(r.row.as_ref(), &c.columns)
    );
    println!(
        "next: `berth dock --site {} --via FOLDER` sends it to the nodes that hold the row",
        site.display()
    );
}

/// `berth bundle inspect` of a sealed bundle: what its name says, and how to look inside.
pub fn sealed(file: &Path, json: bool) -> anyhow::Result<()> {
    let name = crate::file_label(file);
    let inner = berth_bundle::seal::parse_sealed_name(&name);
    let parsed = inner.and_then(berth_bundle::naming::parse_bundle_file_name);
    let recipient = parsed.as_ref().map(|p| p.1.clone());
    let open = format!(
        "berth keys show {} --age-identity > id.txt && age -d -i id.txt -o {} {}",
        recipient.as_deref().unwrap_or("RECIPIENT-SITE"),
        inner.unwrap_or("bundle.berth.zip"),
        file.display()
    );
    if json {
        return self::json(&serde_json::json!({
            "sealed": true,
            "format": "age-encryption.org/v1",
            "bundle": inner,
            "sender": parsed.as_ref().map(|p| p.0.clone()),
            "recipient": recipient,
            "seq": parsed.as_ref().map(|p| p.2),
            "open": open,
        }));
    }
    println!(
        "sealed     {} (the age format, SPEC 3.4): the manifest is inside the encryption",
        file.display()
    );
    if let (Some(inner), Some((sender, recipient, seq))) = (inner, &parsed) {
        println!("bundle     {inner}");
        println!("sender     {sender}");
        println!("recipient  {recipient} (sealed to its key)");
        println!("seq        {seq}");
    }
    println!(
        "to open    its recipient docks it as it is; to look inside, at the recipient:\n           {open}\n           then `berth bundle inspect` the result"
    );
    Ok(())
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

/// `-q`: no progress bars.
pub static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Progress of long applies, routing passes and writes: bars on stderr when stderr is a
/// terminal, the output is not JSON and `-q` is not given; otherwise lines in the log when
/// it shows info (`-v`); nothing is drawn into logs or pipes.
pub fn bars(json: bool) -> berth_engine::progress::Reporter {
    use std::io::IsTerminal as _;
    let quiet = QUIET.load(std::sync::atomic::Ordering::Relaxed);
    if !json && !quiet && std::io::stderr().is_terminal() {
        return Some(std::sync::Arc::new(Bars::default()));
    }
    if tracing::enabled!(tracing::Level::INFO) {
        return Some(std::sync::Arc::new(Logged::default()));
    }
    None
}

/// Progress as log lines: the start, every tenth, the end.
#[derive(Debug, Default)]
struct Logged {
    work: std::sync::Mutex<(String, u64, u64)>,
}

impl berth_engine::progress::Progress for Logged {
    fn begin(&self, what: &str, total: u64) {
        tracing::info!("{what}: {total} to do");
        if let Ok(mut w) = self.work.lock() {
            *w = (what.to_string(), total, 0);
        }
    }

    fn set(&self, done: u64) {
        if let Ok(mut w) = self.work.lock() {
            let (what, total, shown) = &mut *w;
            let tenth = (*total / 10).max(1);
            if done >= *shown + tenth && done < *total {
                tracing::info!("{what}: {done} of {total}");
                *shown = done;
            }
        }
    }

    fn end(&self) {
        if let Ok(w) = self.work.lock() {
            tracing::info!("{}: done", w.0);
        }
    }
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
