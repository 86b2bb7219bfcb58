//! Software upgrade distribution (seed 004, "Software Distribution Integration with Remote
//! Upgrade"): packages published at central, announced to every node in its bundles,
//! downloaded and installed under the package's policies, each step reported back.
//!
//! Principal types and the flow of data:
//! - [`Package`] is the seed's master record plus its detail records (files): what
//!   `berth upgrade publish PACKAGE.toml` reads and what travels to nodes as the upgrade table
//!   of contents (`payload/upgrade/NAME/package.toml`). [`Package::validate`] checks it.
//! - [`central`]: `publish` and `activate` (tables `berth_upgrades`, `berth_upgrade_files`,
//!   files under `CENTRAL/upgrade/NAME/`), the [`central::outbox`] of announcements and files
//!   a node's next bundle carries, the intake of node reports, and per-node status.
//! - [`node`]: the intake of announcements and files (verified by sha256 against the
//!   package), the session steps after docking (prompts with time-outs, installs under the
//!   apply policy), `berth upgrade apply NAME`, and the report outbox.
//! - [`plan`] and [`level_cmp`] are the pure decisions; [`sanitize`] makes messages plain text.
//!
//! ```no_run
//! use berth_engine::{site::Site, upgrade};
//! # fn main() -> Result<(), berth_engine::EngineError> {
//! let mut hq = Site::open("hq".as_ref())?;
//! let pkg = upgrade::central::publish(&mut hq, "samples/upgrade/package.toml".as_ref())?;
//! upgrade::central::activate(&mut hq, &pkg.name)?;
//! // the next `berth dock --site hq` announces it to every node
//! # Ok(()) }
//! ```

pub mod central;
mod exchange;
pub mod node;
pub mod submit;

pub use exchange::{Incoming, Outgoing, outgoing, read_incoming, record_incoming};

pub use crate::error::upgrade::UpgradeError;
use crate::store::meta_keys;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Content kind of central's upgrade entries (announcements and files).
pub const KIND_UPGRADE: &str = "upgrade";
/// Content kind of a node's report entries.
pub const KIND_REPORT: &str = "report";
/// Manifest extension carrying central's acknowledgement of a node's reports.
pub const EXTENSION: &str = "upgrade";
/// The entry of a node's upgrade reports.
pub const REPORT_ENTRY: &str = "payload/report/upgrade.jsonl";
/// Longest message accepted at publish (bytes).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest message shown (characters) after [`sanitize`].
pub const MAX_SHOWN_CHARS: usize = 2000;
/// Longest install output tail kept and reported (bytes).
pub const OUTPUT_TAIL_BYTES: usize = 2000;
/// Largest announcement (`package.toml`) a node reads.
pub const MAX_TOC_BYTES: u64 = 256 << 10;

/// How a package's files reach a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownloadPolicy {
    /// Sent with the announcement, without asking.
    Forced,
    /// The user is asked; sent in central's next bundle after the node asks.
    Optional,
}

/// When a downloaded package is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyPolicy {
    /// At the end of the docking session (or its start, with `apply_at = "start"`).
    Immediate,
    /// When the user chooses (`berth upgrade apply NAME`, or yes at the prompt).
    Deferrable,
    /// Right after the schema migration to `schema_version` (see [`node::schema_gate`]).
    AfterSchema,
}

/// Where in the docking session an `immediate` package is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyAt {
    /// After the incoming bundles were applied, before the outgoing bundle is written.
    #[default]
    End,
    /// At the start of the next docking session, before anything is applied.
    Start,
}

/// What an unanswered download prompt chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DownloadDefault {
    /// Ask central for the files.
    #[default]
    Download,
    /// Ask again at the next dock.
    Defer,
}

/// What an unanswered apply prompt (deferrable packages) chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyDefault {
    /// Install now.
    Apply,
    /// Remind again at the next dock.
    #[default]
    Defer,
}

/// One file of a package (the seed's detail record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// File name inside the package folder (no folders).
    pub name: String,
    /// Size in bytes (computed at publish; checked if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256, 64 lowercase hex digits (computed at publish; checked if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// An upgrade package: the seed's master record and its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Package name: `[a-z0-9][a-z0-9._-]{0,63}`, not ending in `.`.
    pub name: String,
    /// The software level it installs: dotted decimal numbers (`2`, `2.1`, `10.0.3`).
    pub level: String,
    /// What it is, for admins and users.
    #[serde(default)]
    pub description: String,
    /// Shown before the download (with the download prompt).
    #[serde(default)]
    pub download_message: String,
    /// Shown when the package is applied (and as the reminder of a deferred one).
    #[serde(default)]
    pub apply_message: String,
    /// `forced` or `optional`.
    pub download: DownloadPolicy,
    /// `immediate`, `deferrable` or `after-schema`.
    pub apply: ApplyPolicy,
    /// `end` (default) or `start`: for `immediate` only.
    #[serde(default)]
    pub apply_at: ApplyAt,
    /// The schema version this software goes with (required for `after-schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
    /// Seconds a prompt waits before taking the default.
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    /// What a timed-out download prompt chooses (optional downloads).
    #[serde(default)]
    pub download_default: DownloadDefault,
    /// What a timed-out apply prompt chooses (deferrable packages).
    #[serde(default)]
    pub apply_default: ApplyDefault,
    /// The install command: program and arguments, run from the package folder.
    pub install: Vec<String>,
    /// The files.
    #[serde(default)]
    pub files: Vec<FileSpec>,
}

fn default_timeout() -> u32 {
    60
}

fn invalid(package: &str, field: &str, reason: impl Into<String>) -> UpgradeError {
    UpgradeError::Invalid {
        package: package.to_string(),
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// True for a valid package name.
pub fn is_valid_package_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        && !s.ends_with('.')
        && berth_bundle::naming::entry_name_problem(&toc_entry(s)).is_none()
}

/// True for a valid package file name (one path component, portable, FAT32-safe).
pub fn is_valid_file_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 100
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
        && !s.ends_with('.')
        && berth_bundle::naming::entry_name_problem(&format!("payload/x/{s}")).is_none()
}

/// Parses a software level into its numbers.
pub fn parse_level(s: &str) -> Option<Vec<u64>> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    s.split('.')
        .map(|p| {
            if p.is_empty() || p.len() > 9 || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect()
}

/// Compares two software levels numerically (`2` == `2.0` < `2.1` < `10`). A level that does
/// not parse sorts below every valid one.
pub fn level_cmp(a: &str, b: &str) -> Ordering {
    match (parse_level(a), parse_level(b)) {
        (Some(x), Some(y)) => {
            let n = x.len().max(y.len());
            let get = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
            (0..n)
                .map(|i| get(&x, i).cmp(&get(&y, i)))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        }
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

/// Makes text from a package or a report safe to print: control characters (escape
/// sequences included) and bidirectional overrides are removed, tabs become spaces, newlines
/// are kept, and the text is capped at [`MAX_SHOWN_CHARS`] characters.
pub fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s
        .chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            '\t' => Some(' '),
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' => None,
            c if c.is_control() => None,
            c => Some(c),
        })
        .enumerate()
    {
        if n == MAX_SHOWN_CHARS {
            out.push_str(" [...]");
            break;
        }
        out.push(c);
    }
    out
}

fn check_text(pkg: &str, field: &str, s: &str, max: usize) -> Result<(), UpgradeError> {
    if s.len() > max {
        return Err(invalid(pkg, field, format!("longer than {max} bytes")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(
            pkg,
            field,
            "contains control characters (only newlines and tabs are allowed)",
        ));
    }
    Ok(())
}

impl Package {
    /// Checks every rule of a package. `toc` is true for an announcement as it travels (every
    /// file must carry its size and sha256).
    pub fn validate(&self, toc: bool) -> Result<(), UpgradeError> {
        let p = self.name.as_str();
        if !is_valid_package_name(p) {
            return Err(invalid(
                p,
                "name",
                "use 1-64 characters a-z, 0-9, '.', '_' and '-', starting with a letter or digit, not ending in '.'",
            ));
        }
        if parse_level(&self.level).is_none() {
            return Err(invalid(
                p,
                "level",
                "a software level is dotted decimal numbers, e.g. \"2\" or \"2.1.0\"",
            ));
        }
        check_text(p, "description", &self.description, MAX_MESSAGE_BYTES)?;
        check_text(
            p,
            "download_message",
            &self.download_message,
            MAX_MESSAGE_BYTES,
        )?;
        check_text(p, "apply_message", &self.apply_message, MAX_MESSAGE_BYTES)?;
        if self.apply_at == ApplyAt::Start && self.apply != ApplyPolicy::Immediate {
            return Err(invalid(
                p,
                "apply_at",
                "\"start\" is only meaningful with apply = \"immediate\"",
            ));
        }
        match &self.schema_version {
            Some(v) if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) => {
                return Err(invalid(
                    p,
                    "schema_version",
                    "1-128 characters, no control characters",
                ));
            }
            Some(_) => {}
            None if self.apply == ApplyPolicy::AfterSchema => {
                return Err(invalid(
                    p,
                    "schema_version",
                    "required with apply = \"after-schema\": the schema version whose migration installs this package",
                ));
            }
            None => {}
        }
        if self.timeout > 86_400 {
            return Err(invalid(p, "timeout", "at most 86400 seconds"));
        }
        if self.install.is_empty() || self.install[0].is_empty() {
            return Err(invalid(
                p,
                "install",
                "give the command as a list: program and arguments, e.g. [\"sh\", \"install.sh\"]",
            ));
        }
        for a in &self.install {
            if a.len() > 1024 || a.chars().any(char::is_control) {
                return Err(invalid(
                    p,
                    "install",
                    "each argument at most 1024 bytes, no control characters",
                ));
            }
        }
        if self.files.is_empty() {
            return Err(invalid(p, "files", "a package has at least one file"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            if !is_valid_file_name(&f.name) {
                return Err(invalid(
                    p,
                    "files",
                    format!(
                        "{:?}: a file name is 1-100 characters A-Z, a-z, 0-9, '.', '_' and '-', no folders, not a device name",
                        f.name
                    ),
                ));
            }
            if !seen.insert(f.name.to_ascii_lowercase()) {
                return Err(invalid(
                    p,
                    "files",
                    format!(
                        "{:?} is listed twice (names are compared ignoring case)",
                        f.name
                    ),
                ));
            }
            if let Some(h) = &f.sha256
                && !berth_bundle::manifest::is_valid_sha256(h)
            {
                return Err(invalid(
                    p,
                    "files",
                    format!("{:?}: sha256 must be 64 lowercase hex digits", f.name),
                ));
            }
            if toc && (f.sha256.is_none() || f.size.is_none()) {
                return Err(invalid(
                    p,
                    "files",
                    format!(
                        "{:?}: an announcement lists every file's size and sha256",
                        f.name
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The announcement text (deterministic TOML).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Reads an announcement or a package file.
    pub fn from_toml(text: &str, path: &str) -> Result<Package, UpgradeError> {
        toml::from_str(text).map_err(|e| UpgradeError::Parse {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }
}

/// The entry name of a package's announcement.
pub fn toc_entry(package: &str) -> String {
    format!("payload/upgrade/{package}/package.toml")
}

/// The entry name of one of a package's files.
pub fn file_entry(package: &str, file: &str) -> String {
    format!("payload/upgrade/{package}/files/{file}")
}

/// A step a node reports (seed: feedback to the administrator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The announcement arrived.
    Announced,
    /// The user deferred the download, or the installation.
    Deferred,
    /// The node asked central for the files (optional download).
    Requested,
    /// The files arrived and match the package.
    Downloaded,
    /// The install command succeeded; the node's software level changed.
    Applied,
    /// The install command failed (exit code and output tail); the old level stays.
    Failed,
    /// The node refused the package (older than its level, or files whose hash differs).
    Refused,
}

impl Step {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Announced => "announced",
            Step::Deferred => "deferred",
            Step::Requested => "requested",
            Step::Downloaded => "downloaded",
            Step::Applied => "applied",
            Step::Failed => "failed",
            Step::Refused => "refused",
        }
    }

    /// Parses the kebab-case name.
    pub fn parse(s: &str) -> Option<Step> {
        [
            Step::Announced,
            Step::Deferred,
            Step::Requested,
            Step::Downloaded,
            Step::Applied,
            Step::Failed,
            Step::Refused,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One line of `payload/report/upgrade.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Increasing per node; central acknowledges the highest it holds.
    pub id: i64,
    /// The package.
    pub package: String,
    /// The step.
    pub step: Step,
    /// Plain-text details.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The install command's exit code (`failed`, `applied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The tail of the install output (`failed`, `applied`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
    /// The node's software level after the step.
    pub level: String,
    /// Unix seconds at the node (informational).
    pub at: i64,
}

/// A question put to the user at a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The package.
    pub package: String,
    /// Its level.
    pub level: String,
    /// Download or apply.
    pub kind: QuestionKind,
    /// The package's message, plain text (already [`sanitize`]d).
    pub message: String,
    /// How long to wait for an answer.
    pub timeout: std::time::Duration,
    /// The answer taken without one: `true` = download / apply now.
    pub default: bool,
}

/// What a [`Question`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionKind {
    /// Download the files now?
    Download,
    /// Install now?
    Apply,
}

/// Asks the user at a node. `None` = no answer within the time-out (or nobody to ask): the
/// package's default is taken.
pub trait Prompt: std::fmt::Debug {
    /// Puts the question; `Some(true)` = yes, now.
    fn ask(&self, q: &Question) -> Option<bool>;
}

/// Nobody to ask: every prompt takes the package's default (scheduled or scripted docks).
#[derive(Debug, Clone, Copy, Default)]
pub struct NonInteractive;

impl Prompt for NonInteractive {
    fn ask(&self, _q: &Question) -> Option<bool> {
        None
    }
}

/// Something the user should see after a dock (messages, reminders, outcomes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// The package.
    pub package: String,
    /// Its level.
    pub level: String,
    /// What happened (`announced`, `reminder`, `applied`, `failed`, ...).
    pub event: String,
    /// Plain text for the user.
    pub text: String,
}

/// True when a bundle carries upgrade content or reports, or acknowledges reports this site
/// has not seen acknowledged (so it is applied even when its stream position holds nothing
/// new; everything it records is idempotent).
pub fn carries(conn: &rusqlite::Connection, m: &berth_bundle::Manifest) -> crate::Result<bool> {
    if m.kinds
        .iter()
        .any(|k| k == KIND_UPGRADE || k == KIND_REPORT)
    {
        return Ok(true);
    }
    let acked = m
        .extensions
        .get(EXTENSION)
        .and_then(|v| v.get("reports"))
        .and_then(toml::Value::as_integer);
    Ok(match acked {
        Some(n) => n > crate::store::meta_i64(conn, meta_keys::UPGRADE_REPORTS_ACKED)?,
        None => false,
    })
}

/// The pure decisions of a node.
pub mod plan {
    use super::*;

    /// What to do with an announcement.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum OnAnnounce {
        /// Record it (first time seen).
        Record,
        /// Already known: nothing.
        Known,
        /// Refuse it, with the reason.
        Refuse(String),
    }

    /// Decides about an announcement given what the node already has and its level.
    pub fn on_announce(known: bool, installed_level: &str, pkg: &Package) -> OnAnnounce {
        if known {
            return OnAnnounce::Known;
        }
        match level_cmp(&pkg.level, installed_level) {
            Ordering::Greater => OnAnnounce::Record,
            Ordering::Equal => {
                OnAnnounce::Refuse(format!("level {} is already installed here", pkg.level))
            }
            Ordering::Less => OnAnnounce::Refuse(format!(
                "level {} is older than the installed level {installed_level}: a downgrade is refused",
                pkg.level
            )),
        }
    }

    /// Where a package stands at a node (the `state` column of `berth_upgrade_local`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Local {
        /// The last step.
        pub step: Step,
        /// The files are present and verified.
        pub files: bool,
    }

    /// What the session does for one package.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Action {
        /// Nothing now.
        Nothing,
        /// Ask whether to download (optional download without files).
        AskDownload,
        /// Ask whether to install (deferrable, files present).
        AskApply,
        /// Install now.
        Install,
        /// Remind the user (a failed install waiting for `berth upgrade apply`).
        RemindFailed,
        /// Waiting for the schema migration.
        WaitSchema,
    }

    /// Where in the session the decision is taken.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Stage {
        /// Before incoming bundles are applied.
        Start,
        /// After incoming bundles are applied, before the outgoing bundle is written.
        End,
    }

    /// Decides what the session does with a package (`schema_ready`: the schema gate's answer
    /// for `after-schema` packages).
    pub fn session(stage: Stage, local: Local, pkg: &Package, schema_ready: bool) -> Action {
        use Action::*;
        match (local.step, local.files) {
            (Step::Applied | Step::Refused, _) => Nothing,
            (Step::Failed, _) => {
                if stage == Stage::End {
                    RemindFailed
                } else {
                    Nothing
                }
            }
            (_, false) => {
                if stage == Stage::End
                    && pkg.download == DownloadPolicy::Optional
                    && matches!(local.step, Step::Announced | Step::Deferred)
                {
                    AskDownload
                } else {
                    Nothing
                }
            }
            (_, true) => match (pkg.apply, stage, pkg.apply_at) {
                (ApplyPolicy::Immediate, Stage::Start, ApplyAt::Start)
                | (ApplyPolicy::Immediate, Stage::End, ApplyAt::End) => Install,
                (ApplyPolicy::Immediate, _, _) => Nothing,
                (ApplyPolicy::Deferrable, Stage::End, _) => AskApply,
                (ApplyPolicy::AfterSchema, Stage::End, _) => {
                    if schema_ready {
                        Install
                    } else {
                        WaitSchema
                    }
                }
                (_, Stage::Start, _) => Nothing,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plan::{Action, Local, OnAnnounce, Stage, on_announce, session};
    use super::*;

    fn pkg() -> Package {
        Package {
            name: "app-2".into(),
            level: "2".into(),
            description: String::new(),
            download_message: "new app".into(),
            apply_message: String::new(),
            download: DownloadPolicy::Forced,
            apply: ApplyPolicy::Immediate,
            apply_at: ApplyAt::End,
            schema_version: None,
            timeout: 5,
            download_default: DownloadDefault::Download,
            apply_default: ApplyDefault::Defer,
            install: vec!["sh".into(), "install.sh".into()],
            files: vec![FileSpec {
                name: "install.sh".into(),
                size: Some(1),
                sha256: Some("0".repeat(64)),
            }],
        }
    }

    #[test]
    fn levels_compare_numerically() {
        assert_eq!(level_cmp("2", "2.0"), Ordering::Equal);
        assert_eq!(level_cmp("2.1", "2.0.9"), Ordering::Greater);
        assert_eq!(level_cmp("10", "9"), Ordering::Greater);
        assert_eq!(level_cmp("x", "1"), Ordering::Less);
        assert!(parse_level("1..2").is_none());
        assert!(parse_level("").is_none());
    }

    #[test]
    fn sanitize_strips_controls_and_caps() {
        assert_eq!(sanitize("a\x1b[31mb\tc\nd\u{202e}e"), "a[31mb c\nde");
        let long = "x".repeat(MAX_SHOWN_CHARS + 10);
        assert!(sanitize(&long).ends_with("[...]"));
    }

    #[test]
    fn validation_rules() {
        assert!(pkg().validate(true).is_ok());
        let mut p = pkg();
        p.name = "CON".into();
        assert!(p.validate(false).is_err());
        p = pkg();
        p.name = "con".into();
        assert!(p.validate(false).is_err(), "device names are refused");
        p = pkg();
        p.files[0].name = "../x".into();
        assert!(p.validate(false).is_err());
        p = pkg();
        p.apply = ApplyPolicy::AfterSchema;
        assert!(p.validate(false).is_err(), "after-schema needs a version");
        p.schema_version = Some("5".into());
        assert!(p.validate(false).is_ok());
        p = pkg();
        p.download_message = "bell\x07".into();
        assert!(p.validate(false).is_err());
        p = pkg();
        p.files[0].sha256 = None;
        assert!(p.validate(false).is_ok());
        assert!(p.validate(true).is_err());
        p = pkg();
        p.install.clear();
        assert!(p.validate(false).is_err());
        p = pkg();
        p.apply = ApplyPolicy::Deferrable;
        p.apply_at = ApplyAt::Start;
        assert!(p.validate(false).is_err());
    }

    #[test]
    fn announcement_round_trips() {
        let p = pkg();
        assert_eq!(Package::from_toml(&p.to_toml(), "x").unwrap(), p);
    }

    #[test]
    fn announcements_refuse_downgrades() {
        assert_eq!(on_announce(false, "1", &pkg()), OnAnnounce::Record);
        assert_eq!(on_announce(true, "1", &pkg()), OnAnnounce::Known);
        assert!(matches!(
            on_announce(false, "3", &pkg()),
            OnAnnounce::Refuse(_)
        ));
        assert!(matches!(
            on_announce(false, "2.0", &pkg()),
            OnAnnounce::Refuse(_)
        ));
    }

    #[test]
    fn session_decisions() {
        let files = |step| Local { step, files: true };
        let none = |step| Local { step, files: false };
        let mut p = pkg();
        let cases: Vec<(
            Stage,
            Local,
            ApplyPolicy,
            ApplyAt,
            DownloadPolicy,
            bool,
            Action,
        )> = vec![
            (
                Stage::End,
                files(Step::Downloaded),
                ApplyPolicy::Immediate,
                ApplyAt::End,
                DownloadPolicy::Forced,
                false,
                Action::Install,
            ),
            (
                Stage::Start,
                files(Step::Downloaded),
                ApplyPolicy::Immediate,
                ApplyAt::End,
                DownloadPolicy::Forced,
                false,
                Action::Nothing,
            ),
            (
                Stage::Start,
                files(Step::Downloaded),
                ApplyPolicy::Immediate,
                ApplyAt::Start,
                DownloadPolicy::Forced,
                false,
                Action::Install,
            ),
            (
                Stage::End,
                files(Step::Downloaded),
                ApplyPolicy::Immediate,
                ApplyAt::Start,
                DownloadPolicy::Forced,
                false,
                Action::Nothing,
            ),
            (
                Stage::End,
                files(Step::Deferred),
                ApplyPolicy::Deferrable,
                ApplyAt::End,
                DownloadPolicy::Forced,
                false,
                Action::AskApply,
            ),
            (
                Stage::End,
                files(Step::Downloaded),
                ApplyPolicy::AfterSchema,
                ApplyAt::End,
                DownloadPolicy::Forced,
                false,
                Action::WaitSchema,
            ),
            (
                Stage::End,
                files(Step::Downloaded),
                ApplyPolicy::AfterSchema,
                ApplyAt::End,
                DownloadPolicy::Forced,
                true,
                Action::Install,
            ),
            (
                Stage::End,
                none(Step::Announced),
                ApplyPolicy::Immediate,
                ApplyAt::End,
                DownloadPolicy::Optional,
                false,
                Action::AskDownload,
            ),
            (
                Stage::End,
                none(Step::Deferred),
                ApplyPolicy::Immediate,
                ApplyAt::End,
                DownloadPolicy::Optional,
                false,
                Action::AskDownload,
            ),
            (
                Stage::End,
                none(Step::Requested),
                ApplyPolicy::Immediate,
                ApplyAt::End,
                DownloadPolicy::Optional,
                false,
                Action::Nothing,
            ),
            (
                Stage::End,
                none(Step::Announced),
                ApplyPolicy::Immediate,
                ApplyAt::End,
                DownloadPolicy::Forced,
                false,
                Action::Nothing,
            ),
            (
                Stage::End,
                files(Step::Failed),
                ApplyPolicy::Immediate,
                ApplyAt::End,
                DownloadPolicy::Forced,
                false,
                Action::RemindFailed,
            ),
            (
                Stage::End,
                files(Step::Applied),
                ApplyPolicy::Immediate,
                ApplyAt::End,
                DownloadPolicy::Forced,
                false,
                Action::Nothing,
            ),
        ];
        for (stage, local, apply, at, dl, ready, want) in cases {
            p.apply = apply;
            p.apply_at = at;
            p.download = dl;
            assert_eq!(
                session(stage, local, &p, ready),
                want,
                "{stage:?} {local:?} {apply:?} {at:?} {dl:?}"
            );
        }
    }
}
