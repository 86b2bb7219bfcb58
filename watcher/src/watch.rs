//! The watch loop: notice, take in, dock, repeat.
//!
//! Each turn of the loop (at least every [`TICK`], sooner on a folder event):
//! 1. **Scan** the sources when an event arrived, the poll interval passed, or a file seen
//!    earlier may have settled: exchange folders (bundles and volume sets addressed to this
//!    site, `.eml` files) and Maildir folders (`new/`, `cur/`).
//! 2. A file is taken only when its size and modification time have not changed for the
//!    settle time, and a whole bundle only when its zip structure reads (a writer that pauses
//!    longer than the settle time is still caught); a file that still does not read after
//!    the grace time is taken anyway, to be quarantined with its reason.
//! 3. **Take** it into the site's spool (write-then-rename; a volume set is joined and
//!    hash-checked; mail attachments are extracted) and remove it from the source.
//! 4. **Dock**: apply the spool (`berth_engine::dock::apply_spool`: verify, apply in one
//!    transaction each, archive / hold / quarantine), then write the site's outgoing bundles
//!    into the output folder when something applied or the database changed (debounced).
//!
//! The site is opened (and its `berth.lock` taken) only for step 4, so `berth status` and
//! `berth dock` still work while a watcher runs; `watch.lock` keeps a second watcher out.

use crate::error::{Result, WatchError};
use crate::mail;
use berth_bundle::{Bundle, Limits, SecretKey, naming, volume};
use berth_engine::dock::Disposition;
use berth_engine::dock::{self, DockOptions, DockReport};
use berth_engine::site::Site;
use berth_engine::{EngineError, transport, volumes};
use notify::Watcher as _;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// The longest the loop sleeps before it looks at the stop flag and the database again.
pub const TICK: Duration = Duration::from_millis(200);

/// Where bundles come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An exchange folder: synced folder, network share, removable medium, mail drop.
    Folder(PathBuf),
    /// A Maildir (`new/`, `cur/`): messages are read, never moved or deleted.
    Maildir(PathBuf),
}

impl Source {
    /// `maildir:PATH` is a Maildir; anything else a folder. A leading `~` is the home
    /// folder: no shell expands it after `maildir:`.
    pub fn parse(arg: &str) -> Source {
        match arg.strip_prefix("maildir:") {
            Some(p) => Source::Maildir(home(p)),
            None => Source::Folder(home(arg)),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Source::Folder(p) | Source::Maildir(p) => p,
        }
    }
}

/// `~` and `~/...` (or `~\...`) under the home folder (`HOME`, else `USERPROFILE`); any other
/// path as it is.
fn home(p: &str) -> PathBuf {
    let rest = match p.strip_prefix('~') {
        Some(r) if r.is_empty() || r.starts_with('/') || r.starts_with('\\') => r,
        _ => return PathBuf::from(p),
    };
    match std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")) {
        Some(h) => PathBuf::from(h).join(rest.trim_start_matches(['/', '\\'])),
        None => PathBuf::from(p),
    }
}

/// How a watcher runs.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The site folder.
    pub site: PathBuf,
    /// Where bundles come from.
    pub sources: Vec<Source>,
    /// Where outgoing bundles go (defaults to the first folder source).
    pub out: Option<PathBuf>,
    /// Full rescan interval (network shares and removable media often send no events).
    pub poll: Duration,
    /// Use folder events (notify); without them only the rescan notices files.
    pub events: bool,
    /// How long a file's size and time must stay the same before it is read.
    pub settle: Duration,
    /// How long a file that does not read as a bundle may still be in the middle of being
    /// written; after that it is taken (and quarantined with its reason).
    pub grace: Duration,
    /// Local writes: wait until the database has been quiet this long, so a burst of writes
    /// makes one bundle.
    pub debounce: Duration,
    /// Outgoing bundles larger than this are split into volumes.
    pub volume_size: u64,
    /// Seal outgoing bundles for one site to that site's key (`B.age`).
    pub encrypt: bool,
    /// Where progress of long applies and writes goes (the binary draws bars on a terminal).
    pub progress: berth_engine::progress::Reporter,
    /// The stop flag as the engine sees it: once set, no further bundle of the spool is
    /// started (the one being applied finishes) and nothing more is written.
    pub stop_between_bundles: Option<std::sync::Arc<AtomicBool>>,
}

impl WatchOptions {
    /// Defaults for a site and its sources.
    pub fn new(site: PathBuf, sources: Vec<Source>) -> WatchOptions {
        WatchOptions {
            site,
            sources,
            out: None,
            poll: Duration::from_secs(10),
            events: true,
            settle: Duration::from_secs(1),
            grace: Duration::from_secs(60),
            debounce: Duration::from_secs(2),
            volume_size: volumes::DEFAULT_VOLUME_SIZE,
            encrypt: false,
            progress: None,
            stop_between_bundles: None,
        }
    }
}

/// One thing the watcher did or noticed, for logs (`--json` prints it as one line).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Unix time in seconds.
    pub at: u64,
    /// What happened.
    pub event: EventKind,
    /// The file concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Details: counts or the reason.
    pub detail: String,
}

/// What a watcher event says happened; its kebab-case name is what `--json`, the state file
/// and the log say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventKind {
    /// The watcher started.
    Started,
    /// A file in a watched folder does not read whole yet.
    Waiting,
    /// A bundle was copied into the spool.
    Taken,
    /// A bundle came or went by mail.
    Mail,
    /// What became of a bundle the dock took in.
    Bundle(Disposition),
    /// A bundle was written.
    Written,
    /// The site was busy (another dock held its lock).
    Busy,
    /// Something failed.
    Error,
    /// The watcher stopped.
    Stopped,
}

impl EventKind {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Waiting => "waiting",
            EventKind::Taken => "taken",
            EventKind::Mail => "mail",
            EventKind::Bundle(d) => d.as_str(),
            EventKind::Written => "written",
            EventKind::Busy => "busy",
            EventKind::Error => "error",
            EventKind::Stopped => "stopped",
        }
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Now, in Unix seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Event {
    fn new(event: EventKind, file: Option<String>, detail: impl Into<String>) -> Event {
        Event {
            at: unix_now(),
            event,
            file,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) if self.detail.is_empty() => write!(f, "{} {file}", self.event),
            Some(file) => write!(f, "{} {file}: {}", self.event, self.detail),
            None => write!(f, "{} {}", self.event, self.detail),
        }
    }
}

/// The file the watcher keeps in the site folder: what it last did, what it waits for.
pub const STATE_FILE: &str = "watch.json";

#[derive(Debug, Default, Serialize)]
struct State {
    pid: u32,
    running: bool,
    updated: u64,
    last: Vec<Event>,
    waiting: Vec<String>,
}

/// What a file looked like when it was last seen.
#[derive(Debug, Clone, Copy)]
struct Seen {
    fingerprint: (u64, Option<SystemTime>),
    since: Instant,
    first: Instant,
}

enum Candidate {
    Bundle(transport::Found),
    Eml(PathBuf),
    Maildir(PathBuf, String),
}

impl Candidate {
    fn path(&self) -> &Path {
        match self {
            Candidate::Bundle(f) => &f.path,
            Candidate::Eml(p) | Candidate::Maildir(p, _) => p,
        }
    }
}

/// A running watcher's memory.
struct Watch<'a> {
    opts: &'a WatchOptions,
    name: String,
    key: SecretKey,
    keys: Vec<SecretKey>,
    out: PathBuf,
    spool: PathBuf,
    seen: BTreeMap<PathBuf, Seen>,
    waiting: BTreeMap<PathBuf, String>,
    /// What a scan found still waiting (the rest of `waiting` is dropped after it).
    touched: BTreeSet<PathBuf>,
    ignored: BTreeMap<PathBuf, (u64, Option<SystemTime>)>,
    mail_done: BTreeSet<String>,
    state: State,
    log: &'a mut dyn FnMut(&Event),
}

fn fingerprint(paths: &[PathBuf]) -> Option<(u64, Option<SystemTime>)> {
    let mut len = 0u64;
    let mut newest: Option<SystemTime> = None;
    for p in paths {
        let m = fs::metadata(p).ok()?;
        len = len.wrapping_add(m.len());
        let t = m.modified().ok();
        newest = newest.max(t);
    }
    Some((len, newest))
}

/// Whether the zip structure and manifest read (the signature is checked later, in the
/// spool): a prefix of a zip file never does, its directory is at the end. A sealed file
/// (`B.age`) is whole when its last chunk authenticates as the last one; one sealed to
/// another key counts as whole (it is quarantined with that reason).
fn reads_as_bundle(path: &Path, key: &SecretKey) -> std::result::Result<(), String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    if berth_bundle::seal::parse_sealed_name(&file_name(path)).is_some() {
        return match berth_bundle::seal::check_complete(std::io::BufReader::new(file), key) {
            Ok(()) | Err(berth_bundle::seal::SealError::NotForThisKey) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
    }
    Bundle::open(file, &file_name(path), &Limits::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs the watcher until `stop` is set (SIGINT/SIGTERM in the binary). Every event goes to
/// `log`. Returns when stopped; errors only when the watch cannot start.
pub fn run(opts: &WatchOptions, stop: &AtomicBool, log: &mut dyn FnMut(&Event)) -> Result<()> {
    if opts.sources.is_empty() {
        return Err(WatchError::Usage("give at least one --via source"));
    }
    for s in &opts.sources {
        if let Source::Maildir(p) = s
            && !p.join("new").is_dir()
            && !p.join("cur").is_dir()
        {
            return Err(WatchError::NotMaildir { path: p.clone() });
        }
    }
    let out = match &opts.out {
        Some(o) => o.clone(),
        None => opts
            .sources
            .iter()
            .find_map(|s| match s {
                Source::Folder(p) => Some(p.clone()),
                Source::Maildir(_) => None,
            })
            .ok_or(WatchError::Usage(
                "a Maildir cannot take outgoing bundles: add a folder with --via or --out",
            ))?,
    };
    // One watcher per site: a lock of its own, so dock and status still work between turns.
    let lock_path = opts.site.join("watch.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| WatchError::io(&lock_path, e))?;
    if lock.try_lock().is_err() {
        return Err(WatchError::AlreadyWatching {
            site: opts.site.clone(),
        });
    }
    let (name, key, keys) = {
        // A `berth dock` running at this moment holds the site: wait for it.
        let site = loop {
            match Site::open(&opts.site) {
                Err(EngineError::Busy { .. }) if !stop.load(Ordering::SeqCst) => {
                    log(&Event::new(
                        EventKind::Busy,
                        None,
                        "the site is held by another berth process; waiting",
                    ));
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => break other?,
            }
        };
        let keys = berth_engine::keychain::opening_keys(&site.dir, site.key())?;
        (site.name().to_string(), site.key().clone(), keys)
    };
    let mail_done_path = opts.site.join("watch-mail.txt");
    let mail_done = fs::read_to_string(&mail_done_path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    let mut w = Watch {
        opts,
        name,
        key,
        keys,
        out,
        spool: opts.site.join("spool"),
        seen: BTreeMap::new(),
        waiting: BTreeMap::new(),
        touched: BTreeSet::new(),
        ignored: BTreeMap::new(),
        mail_done,
        state: State {
            pid: std::process::id(),
            running: true,
            ..State::default()
        },
        log,
    };
    let (tx, rx) = mpsc::channel::<()>();
    let mut notifier = if opts.events {
        let tx = tx.clone();
        Some(
            notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
                let _ = tx.send(());
            })
            .map_err(|e| WatchError::Notify {
                path: opts.site.clone(),
                reason: e.to_string(),
            })?,
        )
    } else {
        None
    };
    let mut watched: BTreeSet<PathBuf> = BTreeSet::new();
    // Folders notify refused (an inotify limit, a file system without events): reported
    // once, left to the rescan.
    let mut unwatchable: BTreeSet<PathBuf> = BTreeSet::new();
    let sources: Vec<String> = opts
        .sources
        .iter()
        .map(|s| match s {
            Source::Folder(p) => p.display().to_string(),
            Source::Maildir(p) => format!("maildir:{}", p.display()),
        })
        .collect();
    w.emit(Event::new(
        EventKind::Started,
        None,
        format!(
            "site {} watching {} ({}); outgoing bundles to {}",
            w.name,
            sources.join(", "),
            if opts.events {
                format!("events and a rescan every {:?}", opts.poll)
            } else {
                format!("polling every {:?}", opts.poll)
            },
            w.out.display()
        ),
    ));

    w.save_state();
    // Start-up: whatever a killed run left in the spool is finished first.
    let mut db_seen = w.db_fingerprint();
    let mut db_changed: Option<Instant> = None;
    let mut next_poll = Instant::now();
    let mut scan_due = true;
    let mut apply_due = true;
    let mut upload_due = true;
    while !stop.load(Ordering::SeqCst) {
        if let Some(n) = notifier.as_mut() {
            for s in &opts.sources {
                let p = s.path();
                if !watched.contains(p) && !unwatchable.contains(p) && p.is_dir() {
                    let mode = match s {
                        Source::Folder(_) => notify::RecursiveMode::NonRecursive,
                        Source::Maildir(_) => notify::RecursiveMode::Recursive,
                    };
                    match n.watch(p, mode) {
                        Ok(()) => {
                            watched.insert(p.to_path_buf());
                            // A folder that just appeared may already hold files.
                            scan_due = true;
                        }
                        Err(e) => {
                            unwatchable.insert(p.to_path_buf());
                            w.emit(Event::new(
                                EventKind::Error,
                                Some(p.display().to_string()),
                                format!("no folder events ({e}); relying on the rescan"),
                            ));
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        if now >= next_poll {
            scan_due = true;
            // Held and retried bundles are tried again at every rescan.
            apply_due |= transport::list(&w.spool, Some(&w.name)).is_ok_and(|l| !l.is_empty());
            next_poll = now + opts.poll;
        }
        if scan_due || !w.seen.is_empty() {
            scan_due = false;
            match w.scan(stop) {
                Ok(took) => apply_due |= took,
                Err(e) => w.emit(Event::new(EventKind::Error, None, e.to_string())),
            }
        }
        // Local writes, debounced: upload once the database has been quiet for a while.
        let db_now = w.db_fingerprint();
        if db_now != db_seen {
            db_seen = db_now;
            db_changed = Some(Instant::now());
        }
        if db_changed.is_some_and(|t| t.elapsed() >= opts.debounce) {
            db_changed = None;
            upload_due = true;
        }
        if apply_due || upload_due {
            let before = w.db_fingerprint();
            match w.cycle(apply_due, upload_due) {
                Ok(_) => {
                    apply_due = false;
                    upload_due = false;
                    // Our own writes are not local changes; writes made during the cycle
                    // are noticed at the next turn.
                    if before == db_seen {
                        db_seen = w.db_fingerprint();
                    }
                }
                Err(WatchError::Engine(EngineError::Busy { .. })) => {
                    w.emit(Event::new(
                        EventKind::Busy,
                        None,
                        "the site is held by another berth process; trying again",
                    ));
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => {
                    w.emit(Event::new(EventKind::Error, None, e.to_string()));
                    apply_due = false;
                    upload_due = false;
                }
            }
            w.save_state();
        }
        match rx.recv_timeout(TICK) {
            Ok(()) => {
                while rx.try_recv().is_ok() {}
                scan_due = true;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
    }
    drop(notifier);
    w.state.running = false;
    w.emit(Event::new(EventKind::Stopped, None, "stopped cleanly"));
    w.save_state();
    Ok(())
}

impl Watch<'_> {
    fn emit(&mut self, e: Event) {
        (self.log)(&e);
        self.state.last.push(e);
        if self.state.last.len() > 20 {
            self.state.last.remove(0);
        }
    }

    fn save_state(&mut self) {
        self.state.updated = unix_now();
        self.state.waiting = self.waiting.values().cloned().collect();
        if let Ok(text) = serde_json::to_string_pretty(&self.state) {
            let _ = transport::write_atomic(&self.opts.site, STATE_FILE, |mut f| {
                f.write_all(text.as_bytes())
                    .map_err(|e| EngineError::io(STATE_FILE, e))?;
                Ok(f)
            });
        }
    }

    fn db_fingerprint(&self) -> Option<(u64, Option<SystemTime>)> {
        let db = self.opts.site.join("data.db");
        let wal = self.opts.site.join("data.db-wal");
        let a = fingerprint(std::slice::from_ref(&db))?;
        let b = fingerprint(std::slice::from_ref(&wal)).unwrap_or((0, None));
        Some((a.0.wrapping_add(b.0), a.1.max(b.1)))
    }

    /// Notes a waiting reason once (logged when it first appears or changes).
    fn wait(&mut self, path: &Path, reason: String) {
        self.touched.insert(path.to_path_buf());
        if self.waiting.get(path) != Some(&reason) {
            self.emit(Event::new(
                EventKind::Waiting,
                Some(file_name(path)),
                reason.clone(),
            ));
            self.waiting.insert(path.to_path_buf(), reason);
        }
    }

    fn candidates(&mut self) -> Result<Vec<Candidate>> {
        let mut out = Vec::new();
        for s in self.opts.sources.clone() {
            match &s {
                Source::Folder(dir) => {
                    if !dir.is_dir() {
                        self.wait(dir, "the folder is not there (yet)".into());
                        continue;
                    }
                    self.waiting.remove(dir);
                    for f in transport::list(dir, Some(&self.name))? {
                        out.push(Candidate::Bundle(f));
                    }
                    for (p, reason) in volumes::incomplete(dir, &self.name)? {
                        self.wait(&p, reason);
                    }
                    let entries = fs::read_dir(dir).map_err(|e| WatchError::io(dir, e))?;
                    for e in entries.flatten() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if !naming::is_temporary(&n)
                            && n.to_ascii_lowercase().ends_with(".eml")
                            && e.file_type().is_ok_and(|t| t.is_file())
                        {
                            out.push(Candidate::Eml(e.path()));
                        }
                    }
                }
                Source::Maildir(root) => {
                    for sub in ["new", "cur"] {
                        let dir = root.join(sub);
                        let Ok(entries) = fs::read_dir(&dir) else {
                            continue;
                        };
                        for e in entries.flatten() {
                            let n = e.file_name().to_string_lossy().into_owned();
                            let unique = mail::maildir_unique(&n).to_string();
                            if n.starts_with('.')
                                || self.mail_done.contains(&unique)
                                || !e.file_type().is_ok_and(|t| t.is_file())
                            {
                                continue;
                            }
                            out.push(Candidate::Maildir(e.path(), unique));
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Looks at every source; takes what is complete. True when something reached the spool.
    fn scan(&mut self, stop: &AtomicBool) -> Result<bool> {
        self.touched.clear();
        let candidates = self.candidates()?;
        let now = Instant::now();
        let present: BTreeSet<PathBuf> =
            candidates.iter().map(|c| c.path().to_path_buf()).collect();
        self.seen.retain(|p, _| present.contains(p));
        let mut took = false;
        for c in candidates {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let path = c.path().to_path_buf();
            let files = match &c {
                Candidate::Bundle(f) if transport::is_volume_set(f) => volumes::set_files(&f.path),
                _ => vec![path.clone()],
            };
            let Some(fp) = fingerprint(&files) else {
                continue;
            };
            if self.ignored.get(&path) == Some(&fp) {
                continue;
            }
            let seen = self.seen.entry(path.clone()).or_insert(Seen {
                fingerprint: fp,
                since: now,
                first: now,
            });
            if seen.fingerprint != fp {
                seen.fingerprint = fp;
                seen.since = now;
                self.touched.insert(path);
                continue;
            }
            if now.duration_since(seen.since) < self.opts.settle {
                self.touched.insert(path);
                continue;
            }
            let first = seen.first;
            if let Candidate::Bundle(f) = &c
                && !transport::is_volume_set(f)
                && now.duration_since(first) < self.opts.grace
                && let Err(e) = reads_as_bundle(&f.path, &self.key)
            {
                self.wait(
                    &f.path,
                    format!("does not read as a complete bundle yet ({e}); waiting for the rest"),
                );
                continue;
            }
            self.seen.remove(&path);
            self.waiting.remove(&path);
            took |= self.take(c)?;
        }
        let touched = std::mem::take(&mut self.touched);
        self.waiting.retain(|p, _| touched.contains(p));
        Ok(took)
    }

    fn take(&mut self, c: Candidate) -> Result<bool> {
        let quarantine = self.opts.site.join("quarantine");
        match c {
            Candidate::Bundle(f) => {
                let label = file_name(&f.path);
                match berth_engine::seal::take(
                    &self.keys,
                    &self.name,
                    &f,
                    &self.spool,
                    &quarantine,
                )? {
                    berth_engine::transport::Taken::Quarantined { reason } => {
                        self.emit(Event::new(
                            EventKind::Bundle(Disposition::Quarantined),
                            Some(label),
                            format!(
                                "it cannot be opened or joined: {reason} (see its .reason.txt in quarantine)"
                            ),
                        ));
                        Ok(false)
                    }
                    _ => {
                        self.emit(Event::new(
                            EventKind::Taken,
                            Some(label),
                            "copied into the spool",
                        ));
                        Ok(true)
                    }
                }
            }
            Candidate::Eml(p) => {
                let raw = fs::read(&p).map_err(|e| WatchError::io(&p, e))?;
                match mail::take_bundles(&raw, &p, &self.name, &self.keys, &self.spool) {
                    Ok(t) if t.spooled.is_empty() => {
                        // Only bundles for other sites: leave it for them.
                        if let Some(fp) = fingerprint(std::slice::from_ref(&p)) {
                            self.ignored.insert(p, fp);
                        }
                        Ok(false)
                    }
                    Ok(t) => {
                        let names: Vec<String> = t.spooled.iter().map(|s| file_name(s)).collect();
                        if t.for_others == 0 {
                            transport::move_into(&p, &self.opts.site.join("archive"))?;
                        } else if let Some(fp) = fingerprint(std::slice::from_ref(&p)) {
                            self.ignored.insert(p.clone(), fp);
                        }
                        self.emit(Event::new(
                            EventKind::Mail,
                            Some(file_name(&p)),
                            format!("took {}", names.join(", ")),
                        ));
                        Ok(true)
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        let dest = transport::move_into(&p, &quarantine)?;
                        let why = quarantine.join(format!("{}.reason.txt", file_name(&dest)));
                        let _ = fs::write(
                            &why,
                            format!(
                                "This message carries nothing site {} can apply.\nReason: {reason}\n",
                                self.name
                            ),
                        );
                        self.emit(Event::new(
                            EventKind::Bundle(Disposition::Quarantined),
                            Some(file_name(&p)),
                            reason,
                        ));
                        Ok(false)
                    }
                }
            }
            Candidate::Maildir(p, unique) => {
                let raw = fs::read(&p).map_err(|e| WatchError::io(&p, e))?;
                // A mailbox belongs to its user: messages are read, never moved or deleted;
                // the ones read are remembered in watch-mail.txt.
                let took = match mail::take_bundles(&raw, &p, &self.name, &self.keys, &self.spool) {
                    Ok(t) if !t.spooled.is_empty() => {
                        let names: Vec<String> = t.spooled.iter().map(|s| file_name(s)).collect();
                        self.emit(Event::new(
                            EventKind::Mail,
                            Some(file_name(&p)),
                            format!("took {}", names.join(", ")),
                        ));
                        true
                    }
                    _ => false,
                };
                self.mail_done.insert(unique.clone());
                let list = self.opts.site.join("watch-mail.txt");
                let mut f = File::options()
                    .create(true)
                    .append(true)
                    .open(&list)
                    .map_err(|e| WatchError::io(&list, e))?;
                writeln!(f, "{unique}").map_err(|e| WatchError::io(&list, e))?;
                Ok(took)
            }
        }
    }

    /// Opens the site, applies the spool, writes outgoing bundles. True when it applied.
    fn cycle(&mut self, apply: bool, upload: bool) -> Result<bool> {
        let mut site = Site::open(&self.opts.site)?;
        let mut applied = false;
        let stopping = || {
            self.opts
                .stop_between_bundles
                .as_ref()
                .is_some_and(|s| s.load(Ordering::SeqCst))
        };
        if apply {
            let opts = DockOptions {
                progress: self.opts.progress.clone(),
                stop: self.opts.stop_between_bundles.clone(),
                ..DockOptions::default()
            };
            let report = dock::apply_spool(&mut site, &opts)?;
            applied = report.count(Disposition::Applied) > 0;
            self.report(&report);
        }
        if stopping() {
            // Stopping: what is left (bundles in the spool, our own bundle) is done at the
            // next start.
            return Ok(applied);
        }
        if upload || applied {
            if !self.out.is_dir() {
                self.wait(
                    &self.out.clone(),
                    "the output folder is not there (yet)".into(),
                );
                return Ok(applied);
            }
            let opts = DockOptions {
                upload: true,
                download: false,
                fail_after: None,
                progress: self.opts.progress.clone(),
                seal: self.opts.encrypt,
                volume_size: Some(self.opts.volume_size),
                ..DockOptions::default()
            };
            let report = dock::dock(&mut site, &self.out, &opts)?;
            for (file, detail) in written_bundles(&report.written) {
                self.emit(Event::new(EventKind::Written, Some(file), detail));
            }
        }
        Ok(applied)
    }

    fn report(&mut self, report: &DockReport) {
        for i in &report.incoming {
            self.emit(Event::new(
                EventKind::Bundle(i.outcome),
                Some(i.file.clone()),
                i.detail.clone(),
            ));
        }
    }
}

/// One line per bundle a dock wrote, from the files it names: the bundle file (`B` or
/// `B.age`), and for a volume set the file it was cut from with "split into N volumes".
fn written_bundles(written: &[PathBuf]) -> Vec<(String, String)> {
    let name = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).map(str::to_string);
    let pieces = |bundle: &str| {
        written
            .iter()
            .filter_map(&name)
            .filter(|n| volume::parse_volume_name(n).is_some_and(|(b, _)| b == bundle))
            .count()
    };
    let mut out = Vec::new();
    for p in written {
        let Some(n) = name(p) else { continue };
        if volume::parse_volume_name(&n).is_some() {
            continue;
        }
        match volume::parse_index_name(&n) {
            Some(bundle) => out.push((
                p.with_file_name(bundle).display().to_string(),
                format!("split into {} volumes", pieces(bundle)),
            )),
            None => out.push((p.display().to_string(), String::new())),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_say_their_kebab_case_names_and_a_bundles_disposition_as_it_is() {
        let line = |kind| {
            serde_json::to_value(Event::new(kind, Some("f".into()), "d")).unwrap()["event"].clone()
        };
        assert_eq!(line(EventKind::Started), "started");
        assert_eq!(line(EventKind::Bundle(Disposition::Applied)), "applied");
        assert_eq!(
            line(EventKind::Bundle(Disposition::Quarantined)),
            "quarantined"
        );
        assert_eq!(EventKind::Bundle(Disposition::Retry).to_string(), "retry");
    }

    /// The engine names every file it wrote; the watcher says one line per bundle, a set
    /// by the file it was cut from (as it did when it split bundles itself).
    #[test]
    fn written_files_make_one_line_per_bundle() {
        let d = PathBuf::from("out");
        let sealed = berth_bundle::seal::sealed_name(&naming::bundle_file_name("a", "hq", 2));
        let plain = naming::bundle_file_name("hq", "b", 5);
        let mut written = vec![d.join(volume::index_name(&sealed))];
        written.extend((1..=3).map(|i| d.join(volume::volume_name(&sealed, i))));
        written.push(d.join(&plain));
        assert_eq!(
            written_bundles(&written),
            [
                (
                    d.join(&sealed).display().to_string(),
                    "split into 3 volumes".to_string()
                ),
                (d.join(&plain).display().to_string(), String::new()),
            ]
        );
    }

    #[test]
    #[allow(clippy::panic)]
    fn a_leading_tilde_is_the_home_folder_and_nothing_else_is_touched() {
        let h = std::env::var_os("HOME")
            .or_else(|| std::env::var_os("USERPROFILE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("neither HOME nor USERPROFILE is set"));
        assert_eq!(
            Source::parse("maildir:~/Maildir"),
            Source::Maildir(h.join("Maildir"))
        );
        assert_eq!(Source::parse("~"), Source::Folder(h.clone()));
        assert_eq!(
            Source::parse("~/sync/berth"),
            Source::Folder(h.join("sync/berth"))
        );
        assert_eq!(
            Source::parse("~bob/x"),
            Source::Folder(PathBuf::from("~bob/x"))
        );
        assert_eq!(
            Source::parse("/a/~/b"),
            Source::Folder(PathBuf::from("/a/~/b"))
        );
    }
}
