//! `berth watch` and `berth bundle mail`: the commands of the transports.

use anyhow::{Context, Result};
use berth_watcher::watch::{EventKind, Source, WatchOptions, run};
use clap::Args;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `berth watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The site folder.
    #[arg(long)]
    pub site: PathBuf,
    /// Where bundles arrive: a folder (synced folder, share, USB stick; `.eml` files in it
    /// are read too) or `maildir:PATH`. Repeatable. Outgoing bundles go to the first folder.
    #[arg(long, required = true, num_args = 1..)]
    pub via: Vec<String>,
    /// Where outgoing bundles go (defaults to the first --via folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rescan every SECONDS (also the only way files are noticed with --no-events).
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub poll: f64,
    /// Do not use folder events: poll only (network shares, some removable media).
    #[arg(long)]
    pub no_events: bool,
    /// A file's size and time must stay unchanged this long before it is read.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub settle_ms: u64,
    /// A bundle that does not read yet is waited for this long (it may still be arriving),
    /// then taken and quarantined with its reason.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    pub grace: f64,
    /// Local writes: the database must be quiet this long before a bundle is written.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub debounce_ms: u64,
    /// Split outgoing bundles larger than this many bytes into volumes.
    #[arg(long, value_name = "BYTES", default_value_t = berth_engine::volumes::DEFAULT_VOLUME_SIZE)]
    pub volume_size: u64,
    /// Seal outgoing bundles for one site to that site's key (`NAME.age`, the age format).
    #[arg(long)]
    pub encrypt: bool,
    /// One JSON object per line instead of plain log lines (for supervisors).
    #[arg(long)]
    pub json: bool,
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::from_secs(10))
}

/// Runs the watcher until SIGINT or SIGTERM.
pub fn watch(a: WatchArgs) -> Result<ExitCode> {
    let mut opts = WatchOptions::new(
        a.site.clone(),
        a.via.iter().map(|v| Source::parse(v)).collect(),
    );
    opts.out = a.out;
    opts.poll = secs(a.poll).max(Duration::from_millis(100));
    opts.events = !a.no_events;
    opts.settle = Duration::from_millis(a.settle_ms);
    opts.grace = secs(a.grace);
    opts.debounce = Duration::from_millis(a.debounce_ms);
    opts.volume_size = a.volume_size;
    opts.encrypt = a.encrypt;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    opts.stop_between_bundles = Some(Arc::clone(&stop));
    opts.progress = crate::output::bars(a.json);
    // SIGINT and SIGTERM (Ctrl-C / Ctrl-Break on Windows): the current bundle finishes, then
    // the loop ends. A kill at any other moment loses nothing: apply is atomic.
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the SIGINT/SIGTERM handler")?;
    let json = a.json;
    // On a terminal, a spinner with the elapsed time runs while a bundle is applied; logs
    // and --json output stay plain lines.
    let tty = !json && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut busy: Option<indicatif::ProgressBar> = None;
    let mut log = |e: &berth_watcher::watch::Event| {
        if let Some(pb) = busy.take() {
            pb.finish_and_clear();
        }
        let mut out = std::io::stdout().lock();
        let _ = if json {
            serde_json::to_string(e).map_or(Ok(()), |line| writeln!(out, "{line}"))
        } else {
            writeln!(out, "{e}")
        };
        let _ = out.flush();
        if tty && matches!(e.event, EventKind::Taken | EventKind::Mail) {
            let pb = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            {
                pb.set_style(style);
            }
            pb.set_message(format!(
                "verifying and applying {}",
                e.file.as_deref().unwrap_or("")
            ));
            pb.enable_steady_tick(Duration::from_millis(120));
            busy = Some(pb);
        }
    };
    run(&opts, &stop, &mut log).with_context(|| format!("watching site {}", a.site.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// `berth bundle mail FILE --to ADDRESS [--from ADDRESS] --out MESSAGE.eml`.
pub fn mail(file: &Path, to: &str, from: Option<&str>, out: &Path) -> Result<()> {
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let from = from.unwrap_or("berth@localhost");
    let raw = berth_watcher::mail::message_with_bundle(&name, &data, to, from)?;
    let folder = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let out_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .context("--out needs a file name")?;
    berth_engine::transport::write_atomic(&folder, &out_name, |mut f| {
        f.write_all(&raw)
            .map_err(|e| berth_engine::EngineError::io(out, e))?;
        Ok(f)
    })
    .with_context(|| format!("writing {}", out.display()))?;
    println!("{}: {name} attached, to {to}", out.display());
    Ok(())
}

/// Whether the file starts as an age file does (a sealed bundle); the file is read from its
/// start again afterwards.
pub fn is_sealed(f: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _};
    let magic = berth_bundle::seal::MAGIC;
    let mut head = Vec::with_capacity(magic.len());
    std::io::Read::by_ref(f)
        .take(magic.len() as u64)
        .read_to_end(&mut head)?;
    f.rewind()?;
    Ok(head == magic)
}

/// `berth node revoke NAME --site CENTRAL`.
pub fn revoke(site: &Path, name: &str) -> Result<()> {
    let s = berth_engine::site::Site::open(site)
        .with_context(|| format!("opening site {}", site.display()))?;
    let r = berth_engine::revoke::revoke_node(&s, name)
        .with_context(|| format!("revoking node {name}"))?;
    if r.newly {
        println!(
            "revoked node {} (key {}): every bundle signed by this key is refused from now on",
            r.name, r.key_id
        );
        println!(
            "to give {} a new machine: `berth init node DIR --name {} --via FOLDER` there, then `berth node add {} --site {}`",
            r.name,
            r.name,
            r.name,
            site.display()
        );
    } else {
        println!("node {} was already revoked (at {})", r.name, r.at);
    }
    Ok(())
}

/// What `DIR/watch.json` says, with `running` corrected by the watcher's lock (a killed
/// watcher leaves `running: true` behind).
pub fn watcher_state(site: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(site.join(berth_watcher::watch::STATE_FILE)).ok()?;
    let mut v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let running = std::fs::File::options()
        .write(true)
        .open(site.join("watch.lock"))
        .is_ok_and(|f| f.try_lock().is_err());
    if let Some(o) = v.as_object_mut() {
        o.insert("running".into(), running.into());
    }
    Some(v)
}

/// The watcher lines of `berth status`.
pub fn print_watcher(state: Option<&serde_json::Value>) {
    let Some(v) = state else {
        return;
    };
    let running = v["running"].as_bool().unwrap_or(false);
    println!(
        "watcher: {}",
        if running {
            format!("running (pid {})", v["pid"])
        } else {
            "not running".to_string()
        }
    );
    if let Some(last) = v["last"].as_array().and_then(|l| l.last()) {
        println!(
            "  last: {} {} {}",
            last["event"].as_str().unwrap_or(""),
            last["file"].as_str().unwrap_or(""),
            last["detail"].as_str().unwrap_or("")
        );
    }
    for w in v["waiting"].as_array().into_iter().flatten() {
        println!("  waiting: {}", w.as_str().unwrap_or(""));
    }
}

/// `berth keys rotate --site CENTRAL`.
pub fn rotate(site: &Path) -> Result<()> {
    let s = berth_engine::site::Site::open(site)
        .with_context(|| format!("opening site {}", site.display()))?;
    let r = berth_engine::keychain::rotate(s).context("rotating the site key")?;
    println!(
        "central key rotated: {} -> {} ({} rotation(s) in the chain)",
        r.old_key_id, r.new_key_id, r.links
    );
    println!("the chain travels in every bundle central writes; nodes switch when they apply one");
    Ok(())
}

/// `berth dock --via FILE` where FILE is a sealed bundle (`B.age`) or a volume index
/// (`B.volumes`): docking through its folder takes it (and its pieces) like any bundle there.
pub fn taken_from_folder(file: &Path) -> bool {
    file.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        berth_bundle::seal::parse_sealed_name(n).is_some()
            || berth_bundle::volume::parse_index_name(n).is_some()
    })
}
