//! The manifest: `manifest.toml` inside every bundle, the one thing that is signed.
//!
//! It says who sent the bundle to whom, where it stands in the sender->recipient
//! stream, what it carries (content kinds) and every payload entry's size and
//! sha256. Later kinds of content add data under `[extensions]`; an extension
//! listed in `critical` must be understood by the reader or the bundle is refused,
//! others are kept as they are.
//!
//! Parsing is strict: `format` is read first (a newer format is
//! [`ErrorKind::UnsupportedVersion`](crate::ErrorKind), not a parse error), then
//! unknown keys anywhere except inside `extensions` are refused, then the rules of
//! [`Manifest::validate`] are checked.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::BundleError;
use crate::keys::KeyId;
use crate::naming::{entry_name_problem, is_valid_kind, is_valid_site_name};

/// The manifest format this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest's name inside the zip.
pub const MANIFEST_NAME: &str = "manifest.toml";
/// The detached signature's name inside the zip: 128 lowercase hex digits and `\n`.
pub const SIGNATURE_NAME: &str = "manifest.sig";
/// Every payload entry's name starts with this.
pub const PAYLOAD_PREFIX: &str = "payload/";
/// The recipient of a broadcast bundle.
pub const BROADCAST: &str = "*";

const LABEL: &str = "manifest";

/// The signed description of a bundle. See the module documentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`FORMAT_VERSION`].
    pub format: u32,
    /// 32 lowercase hex digits, random, unique per bundle.
    pub bundle_id: String,
    /// Unix seconds when the sender wrote the bundle (informational; never used for ordering).
    pub created: u64,
    /// Who sent it and with which key.
    pub sender: Party,
    /// Site names, sorted and unique; or exactly `["*"]` for a broadcast.
    pub recipients: Vec<String>,
    /// Content kinds carried, sorted and unique; every entry's kind is one of them.
    pub kinds: Vec<String>,
    /// Place in the sender->recipient stream, if the bundle belongs to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamPosition>,
    /// Checksum of the sender's schema when it wrote the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_checksum: Option<String>,
    /// The sender's software level when it wrote the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_level: Option<String>,
    /// Every payload entry, sorted by name.
    pub entries: Vec<EntryMeta>,
    /// Names of keys in `extensions` that a reader must understand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critical: Vec<String>,
    /// Data of later content kinds; unknown ones are kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extensions: BTreeMap<String, toml::Value>,
}

/// The sending site and the key it signed with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// The site's name.
    pub site: String,
    /// The signing key's id.
    pub key_id: KeyId,
}

/// A bundle's place in the stream of bundles from one sender to one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPosition {
    /// Per sender->recipient sequence number, starting at 1.
    pub seq: u64,
    /// First of the sender's log positions covered (inclusive, >= 1).
    pub log_from: u64,
    /// Last of the sender's log positions covered (inclusive); `log_from == log_to + 1`
    /// says the bundle covers no position (it carries an acknowledgement only).
    pub log_to: u64,
    /// The recipient must already have applied the sender's log up to this position;
    /// always `log_from - 1`, so a bundle is applicable exactly when it continues what the
    /// recipient holds.
    pub requires: u64,
    /// Highest position of the recipient's log that the sender has applied.
    pub acks: u64,
}

/// One payload entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryMeta {
    /// Full name in the zip, starting with `payload/`.
    pub name: String,
    /// Content kind, e.g. `changes`.
    pub kind: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// sha256 of the uncompressed bytes, 64 lowercase hex digits.
    pub sha256: String,
    /// How the entry is stored in the zip.
    pub compression: Compression,
}

/// How an entry is stored in the zip: the two methods every zip tool reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression (zip method 0).
    Stored,
    /// Deflate (zip method 8).
    Deflate,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::Stored => "stored",
            Compression::Deflate => "deflate",
        })
    }
}

fn bad(detail: impl Into<String>) -> BundleError {
    BundleError::BadManifest {
        bundle: LABEL.to_owned(),
        detail: detail.into(),
    }
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Free-text header values: short, printable, one line.
fn check_text(field: &str, v: &str) -> Result<(), BundleError> {
    if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
        return Err(bad(format!(
            "{field} must be 1 to 128 characters without control characters"
        )));
    }
    Ok(())
}

fn check_sorted_unique(field: &str, v: &[String]) -> Result<(), BundleError> {
    if v.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad(format!(
            "{field} must be sorted and without duplicates"
        )));
    }
    Ok(())
}

/// `true` for a well-formed bundle id: 32 lowercase hex digits.
pub fn is_valid_bundle_id(s: &str) -> bool {
    is_lower_hex(s, 32)
}

/// `true` for a well-formed sha256: 64 lowercase hex digits.
pub fn is_valid_sha256(s: &str) -> bool {
    is_lower_hex(s, 64)
}

impl Manifest {
    /// The manifest as TOML text (what the writer stores and signs).
    pub fn to_toml(&self) -> Result<String, BundleError> {
        self.validate()?;
        toml::to_string(self).map_err(|e| BundleError::BadInput {
            bundle: LABEL.to_owned(),
            entry: None,
            detail: format!("manifest cannot be written as TOML: {e}"),
        })
    }

    /// Parses and validates `manifest.toml`'s bytes.
    ///
    /// Errors name the bundle `manifest`; the reader relabels them.
    pub fn from_toml(bytes: &[u8]) -> Result<Self, BundleError> {
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        // SPEC: a reader MUST look at `format` before anything else, so that a
        // newer manifest with fields unknown here is refused as a newer version.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| bad(de_msg(&e)))?;
        match table.get("format") {
            Some(toml::Value::Integer(v)) if *v == i64::from(FORMAT_VERSION) => {}
            Some(toml::Value::Integer(v)) => {
                return Err(BundleError::UnsupportedVersion {
                    bundle: LABEL.to_owned(),
                    version: *v,
                });
            }
            Some(_) => return Err(bad("`format` is not an integer")),
            None => return Err(bad("`format` is missing")),
        }
        let m: Manifest = toml::from_str(text).map_err(|e| bad(de_msg(&e)))?;
        m.validate()?;
        Ok(m)
    }

    /// The entry named `name`, if listed.
    pub fn entry(&self, name: &str) -> Option<&EntryMeta> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// `true` when the bundle is addressed to every site.
    pub fn is_broadcast(&self) -> bool {
        self.recipients.iter().any(|r| r == BROADCAST)
    }

    /// `true` when the bundle is addressed to `site` (directly or by broadcast).
    pub fn is_addressed_to(&self, site: &str) -> bool {
        self.recipients.iter().any(|r| r == BROADCAST || r == site)
    }

    /// Refuses the manifest if it marks an extension critical that is not in `understood`.
    pub fn check_critical(&self, understood: &BTreeSet<String>) -> Result<(), BundleError> {
        match self.critical.iter().find(|c| !understood.contains(*c)) {
            Some(c) => Err(BundleError::UnknownCritical {
                bundle: LABEL.to_owned(),
                extension: c.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The structural rules every manifest obeys (checked by both the writer and the reader):
    /// format 1; bundle id of 32 lowercase hex; valid site names; recipients sorted and
    /// unique, or exactly `["*"]`; kinds valid, sorted and unique; every entry's kind listed
    /// in `kinds`; entries sorted by name, unique also when lowercased, safe names under
    /// `payload/`, sha256 of 64 lowercase hex; stream `seq >= 1`,
    /// `1 <= log_from <= log_to + 1`, `requires == log_from - 1`; `critical`
    /// sorted, unique and naming keys present in `extensions`.
    pub fn validate(&self) -> Result<(), BundleError> {
        if self.format != FORMAT_VERSION {
            return Err(BundleError::UnsupportedVersion {
                bundle: LABEL.to_owned(),
                version: i64::from(self.format),
            });
        }
        if !is_valid_bundle_id(&self.bundle_id) {
            return Err(bad("bundle_id must be 32 lowercase hex digits"));
        }
        if !is_valid_site_name(&self.sender.site) {
            return Err(bad(format!(
                "sender site {:?} is not a valid site name",
                self.sender.site
            )));
        }
        if self.recipients.is_empty() {
            return Err(bad("recipients is empty"));
        }
        if self.is_broadcast() {
            if self.recipients.len() != 1 {
                return Err(bad("a broadcast (\"*\") names no other recipient"));
            }
        } else {
            if let Some(r) = self.recipients.iter().find(|r| !is_valid_site_name(r)) {
                return Err(bad(format!("recipient {r:?} is not a valid site name")));
            }
            check_sorted_unique("recipients", &self.recipients)?;
        }
        if let Some(k) = self.kinds.iter().find(|k| !is_valid_kind(k)) {
            return Err(bad(format!("kind {k:?} is not a valid kind name")));
        }
        check_sorted_unique("kinds", &self.kinds)?;
        if let Some(s) = &self.stream {
            if s.seq == 0 {
                return Err(bad("stream: seq must be >= 1"));
            }
            if s.log_from == 0 || s.log_from > s.log_to.saturating_add(1) {
                return Err(bad("stream: need 1 <= log_from <= log_to + 1"));
            }
            if s.requires.checked_add(1) != Some(s.log_from) {
                return Err(bad("stream: requires must be log_from - 1"));
            }
        }
        if let Some(v) = &self.schema_checksum {
            check_text("schema_checksum", v)?;
        }
        if let Some(v) = &self.software_level {
            check_text("software_level", v)?;
        }
        let mut folded: BTreeMap<String, &str> = BTreeMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(prev) = i.checked_sub(1).and_then(|p| self.entries.get(p))
                && prev.name >= e.name
            {
                return Err(bad(format!(
                    "entries must be sorted by name and unique ({:?} before {:?})",
                    prev.name, e.name
                )));
            }
            if !e.name.starts_with(PAYLOAD_PREFIX) || e.name.len() == PAYLOAD_PREFIX.len() {
                return Err(bad(format!("entry {:?} is not under payload/", e.name)));
            }
            if let Some(reason) = entry_name_problem(&e.name) {
                return Err(bad(format!("entry {:?}: {reason}", e.name)));
            }
            if let Some(other) = folded.insert(e.name.to_lowercase(), &e.name) {
                return Err(bad(format!(
                    "entries {other:?} and {:?} differ only in case",
                    e.name
                )));
            }
            if self.kinds.binary_search(&e.kind).is_err() {
                return Err(bad(format!(
                    "entry {:?} has kind {:?}, which is not listed in kinds",
                    e.name, e.kind
                )));
            }
            if !is_valid_sha256(&e.sha256) {
                return Err(bad(format!(
                    "entry {:?}: sha256 must be 64 lowercase hex digits",
                    e.name
                )));
            }
        }
        check_sorted_unique("critical", &self.critical)?;
        if let Some(c) = self
            .critical
            .iter()
            .find(|c| !self.extensions.contains_key(*c))
        {
            return Err(bad(format!(
                "critical names {c:?}, which is not in extensions"
            )));
        }
        if let Some(k) = self.extensions.keys().find(|k| !is_valid_kind(k)) {
            return Err(bad(format!("extension name {k:?} is not valid")));
        }
        Ok(())
    }
}

/// One line, without the source excerpt toml puts in its `Display`.
fn de_msg(e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::keys::SecretKey;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            bundle_id: "0123456789abcdef0123456789abcdef".into(),
            created: 1_700_000_000,
            sender: Party {
                site: "hq".into(),
                key_id: SecretKey::from_seed(&[3; 32]).public().key_id(),
            },
            recipients: vec!["alice".into()],
            kinds: vec!["changes".into(), "extract".into()],
            stream: Some(StreamPosition {
                seq: 5,
                log_from: 10,
                log_to: 20,
                requires: 9,
                acks: 2,
            }),
            schema_checksum: Some("sha256:abc".into()),
            software_level: Some("1.0.0".into()),
            entries: vec![
                EntryMeta {
                    name: "payload/changes.jsonl".into(),
                    kind: "changes".into(),
                    size: 12,
                    sha256: "a".repeat(64),
                    compression: Compression::Deflate,
                },
                EntryMeta {
                    name: "payload/extract/rows.jsonl".into(),
                    kind: "extract".into(),
                    size: 0,
                    sha256: "b".repeat(64),
                    compression: Compression::Stored,
                },
            ],
            critical: vec![],
            extensions: BTreeMap::new(),
        }
    }

    fn err_kind(text: &str) -> ErrorKind {
        Manifest::from_toml(text.as_bytes()).unwrap_err().kind()
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let text = m.to_toml().unwrap();
        assert_eq!(Manifest::from_toml(text.as_bytes()).unwrap(), m);
        assert!(text.starts_with("format = 1\n"), "{text}");
        assert_eq!(m.entry("payload/changes.jsonl").unwrap().size, 12);
        assert!(m.entry("payload/nope").is_none());
    }

    #[test]
    fn unknown_extension_is_kept() {
        let mut m = sample();
        let mut t = toml::Table::new();
        t.insert("level".into(), toml::Value::Integer(3));
        t.insert("files".into(), toml::Value::Array(vec!["a".into()]));
        m.extensions.insert("upgrade".into(), toml::Value::Table(t));
        let text = m.to_toml().unwrap();
        let back = Manifest::from_toml(text.as_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_toml().unwrap(), text);
        assert!(back.check_critical(&BTreeSet::new()).is_ok());
    }

    #[test]
    fn unknown_critical_extension_is_refused() {
        let mut m = sample();
        m.extensions
            .insert("migration".into(), toml::Value::Integer(1));
        m.critical = vec!["migration".into()];
        let back = Manifest::from_toml(m.to_toml().unwrap().as_bytes()).unwrap();
        let e = back.check_critical(&BTreeSet::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownCritical);
        assert!(
            back.check_critical(&["migration".to_string()].into())
                .is_ok()
        );
        // critical must name a present extension
        m.critical = vec!["other".into()];
        assert_eq!(m.validate().unwrap_err().kind(), ErrorKind::BadManifest);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = sample().to_toml().unwrap();
        assert_eq!(
            err_kind(&format!("surprise = 1\n{text}")),
            ErrorKind::BadManifest
        );
        let in_sender = text.replace("[sender]\n", "[sender]\nextra = 1\n");
        assert_ne!(in_sender, text);
        assert_eq!(err_kind(&in_sender), ErrorKind::BadManifest);
        let in_stream = text.replace("[stream]\n", "[stream]\nextra = 1\n");
        assert_ne!(in_stream, text);
        assert_eq!(err_kind(&in_stream), ErrorKind::BadManifest);
        let in_entry = text.replacen("[[entries]]\n", "[[entries]]\nextra = 1\n", 1);
        assert_ne!(in_entry, text);
        assert_eq!(err_kind(&in_entry), ErrorKind::BadManifest);
    }

    #[test]
    fn version_is_read_first() {
        let text = sample().to_toml().unwrap();
        let v2 = format!(
            "{}\nnew_field = \"x\"\n",
            text.replace("format = 1", "format = 2")
        );
        let e = Manifest::from_toml(v2.as_bytes()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnsupportedVersion);
        assert!(matches!(
            e,
            BundleError::UnsupportedVersion { version: 2, .. }
        ));
        assert_eq!(
            err_kind(&text.replace("format = 1", "format = 0")),
            ErrorKind::UnsupportedVersion
        );
        assert_eq!(
            err_kind(&text.replace("format = 1", "format = \"1\"")),
            ErrorKind::BadManifest
        );
        assert_eq!(
            err_kind(&text.replace("format = 1\n", "")),
            ErrorKind::BadManifest
        );
    }

    #[test]
    fn rules_are_checked() {
        type Edit = fn(&mut Manifest);
        let cases: &[(&str, Edit)] = &[
            ("short id", |m| m.bundle_id = "abc".into()),
            ("upper id", |m| {
                m.bundle_id = "0123456789ABCDEF0123456789abcdef".into()
            }),
            ("sender site", |m| m.sender.site = "HQ".into()),
            ("no recipients", |m| m.recipients.clear()),
            ("bad recipient", |m| m.recipients = vec!["a_b".into()]),
            ("unsorted recipients", |m| {
                m.recipients = vec!["b".into(), "a".into()]
            }),
            ("dup recipients", |m| {
                m.recipients = vec!["a".into(), "a".into()]
            }),
            ("broadcast plus", |m| {
                m.recipients = vec!["*".into(), "a".into()]
            }),
            ("unsorted kinds", |m| m.kinds.reverse()),
            ("bad kind", |m| m.kinds.push("Zz".into())),
            ("entry kind unlisted", |m| {
                m.entries[0].kind = "report".into()
            }),
            ("seq 0", |m| m.stream.as_mut().unwrap().seq = 0),
            ("requires not log_from - 1", |m| {
                m.stream.as_mut().unwrap().requires = 5
            }),
            ("log range", |m| m.stream.as_mut().unwrap().log_from = 30),
            ("log from zero", |m| m.stream.as_mut().unwrap().log_from = 0),
            ("empty checksum", |m| {
                m.schema_checksum = Some(String::new())
            }),
            ("entries unsorted", |m| m.entries.reverse()),
            ("entries dup", |m| {
                let e = m.entries[0].clone();
                m.entries.insert(0, e);
            }),
            ("entries case dup", |m| {
                let mut e = m.entries[0].clone();
                e.name = "payload/Changes.jsonl".into();
                m.entries.insert(0, e);
            }),
            ("not under payload", |m| {
                m.entries[0].name = "other/x".into()
            }),
            ("payload dir itself", |m| {
                m.entries[0].name = "payload/".into()
            }),
            ("unsafe entry", |m| {
                m.entries[0].name = "payload/../x".into()
            }),
            ("bad sha", |m| m.entries[0].sha256 = "A".repeat(64)),
            ("short sha", |m| m.entries[0].sha256 = "a".repeat(63)),
        ];
        for (what, edit) in cases {
            let mut m = sample();
            edit(&mut m);
            assert_eq!(
                m.validate().unwrap_err().kind(),
                ErrorKind::BadManifest,
                "{what}"
            );
            assert!(m.to_toml().is_err(), "{what}");
        }
        let mut m = sample();
        m.recipients = vec!["*".into()];
        assert!(m.validate().is_ok() && m.is_broadcast() && m.is_addressed_to("x"));
    }

    #[test]
    fn hostile_text_is_an_error() {
        for text in [
            "",
            "\u{0}",
            "format = 1\nformat = 1\n",
            "format = 99999999999999999999\n",
            "format = -1\n",
            "format = 1\nbundle_id = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
        ] {
            assert!(Manifest::from_toml(text.as_bytes()).is_err(), "{text:?}");
        }
        assert!(Manifest::from_toml(&[0xff, 0xfe]).is_err());
        let deep = format!(
            "format = 1\nx = {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(Manifest::from_toml(deep.as_bytes()).is_err());
    }
}
