//! Volume sets: one bundle file cut into numbered pieces for media with a file-size limit
//! (FAT32 holds at most 4 GiB - 1 byte per file), plus an index that says how to join them.
//!
//! A bundle `B` (its canonical name, [`crate::naming::bundle_file_name`]) stored as `n`
//! volumes is the files `B.001`, `B.002`, ... `B.{n:03}` (the pieces, in order) and `B.volumes`
//! (the [`VolumeIndex`], TOML, written last). Pure: the index is parsed from and written to
//! strings; the file work is the engine's (`berth_engine::volumes`).
//!
//! ```
//! use berth_bundle::volume::{VolumeIndex, VolumeMeta};
//! let index = VolumeIndex {
//!     format: 1,
//!     bundle: "hq_to_alice_0000000042.berth.zip".into(),
//!     size: 7,
//!     sha256: "0".repeat(64),
//!     volumes: vec![
//!         VolumeMeta { name: "hq_to_alice_0000000042.berth.zip.001".into(), size: 4, sha256: "1".repeat(64) },
//!         VolumeMeta { name: "hq_to_alice_0000000042.berth.zip.002".into(), size: 3, sha256: "2".repeat(64) },
//!     ],
//! };
//! let text = index.to_toml().unwrap();
//! assert_eq!(VolumeIndex::parse(&text).unwrap(), index);
//! ```

use crate::naming;
use serde::{Deserialize, Serialize};

/// The suffix of a volume index file: `B.volumes`.
pub const INDEX_SUFFIX: &str = ".volumes";

/// The only index format this version reads and writes.
pub const VOLUME_FORMAT: u32 = 1;

/// `B.volumes`, the index of a volume set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeIndex {
    /// Always [`VOLUME_FORMAT`].
    pub format: u32,
    /// The canonical name of the joined bundle.
    pub bundle: String,
    /// Size of the joined bundle in bytes.
    pub size: u64,
    /// sha256 of the joined bundle, 64 lowercase hex digits.
    pub sha256: String,
    /// The pieces in order.
    #[serde(rename = "volume")]
    pub volumes: Vec<VolumeMeta>,
}

/// One piece of a volume set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMeta {
    /// `B.{i:03}`, i from 1.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, 64 lowercase hex digits.
    pub sha256: String,
}

/// Why a volume index is refused.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// The index is not TOML of the expected shape.
    #[error("volume index is not readable: {0}")]
    Syntax(String),
    /// The index is readable but breaks a rule of the format.
    #[error("volume index of {bundle}: {reason}")]
    Invalid {
        /// The bundle it names.
        bundle: String,
        /// The rule it breaks.
        reason: String,
    },
}

/// `B.{i:03}`: the name of piece `i` (from 1) of bundle `B`.
pub fn volume_name(bundle: &str, i: usize) -> String {
    format!("{bundle}.{i:03}")
}

/// `B.volumes`: the index file of bundle `B`.
pub fn index_name(bundle: &str) -> String {
    format!("{bundle}{INDEX_SUFFIX}")
}

/// A bundle file as it travels: a canonical bundle name, or one sealed (`B.age`).
fn is_bundle_file(name: &str) -> bool {
    naming::parse_bundle_file_name(name).is_some() || crate::seal::parse_sealed_name(name).is_some()
}

/// The bundle file name `B` of an index file name `B.volumes` (B a canonical bundle name,
/// or a sealed one `B.age`), else `None`.
pub fn parse_index_name(name: &str) -> Option<&str> {
    let bundle = name.strip_suffix(INDEX_SUFFIX)?;
    is_bundle_file(bundle).then_some(bundle)
}

/// `(B, i)` of a piece name `B.{i:03}` (B canonical, i >= 1), else `None`.
pub fn parse_volume_name(name: &str) -> Option<(&str, usize)> {
    let (bundle, num) = name.rsplit_once('.')?;
    if num.len() < 3 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: usize = num.parse().ok()?;
    if i == 0 || format!("{i:03}") != num || !is_bundle_file(bundle) {
        return None;
    }
    Some((bundle, i))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl VolumeIndex {
    /// Parses and validates an index: format 1, a canonical bundle name, pieces named
    /// `B.001`.. in order, sizes that add up, well-formed hashes.
    pub fn parse(text: &str) -> Result<VolumeIndex, VolumeError> {
        let index: VolumeIndex =
            toml::from_str(text).map_err(|e| VolumeError::Syntax(e.to_string()))?;
        index.validate()?;
        Ok(index)
    }

    /// The index as TOML (validated first).
    pub fn to_toml(&self) -> Result<String, VolumeError> {
        self.validate()?;
        toml::to_string(self).map_err(|e| VolumeError::Syntax(e.to_string()))
    }

    /// Checks the rules [`VolumeIndex::parse`] enforces.
    pub fn validate(&self) -> Result<(), VolumeError> {
        let bad = |reason: String| VolumeError::Invalid {
            bundle: self.bundle.clone(),
            reason,
        };
        if self.format != VOLUME_FORMAT {
            return Err(bad(format!(
                "format {} (this version reads {VOLUME_FORMAT})",
                self.format
            )));
        }
        if !is_bundle_file(&self.bundle) {
            return Err(bad("not a bundle file name".into()));
        }
        if self.volumes.is_empty() {
            return Err(bad("no volumes".into()));
        }
        if !is_hex64(&self.sha256) {
            return Err(bad("sha256 is not 64 lowercase hex digits".into()));
        }
        let mut total: u64 = 0;
        for (i, v) in self.volumes.iter().enumerate() {
            let expected = volume_name(&self.bundle, i + 1);
            if v.name != expected {
                return Err(bad(format!(
                    "volume {} is named {:?}, expected {expected:?}",
                    i + 1,
                    v.name
                )));
            }
            if !is_hex64(&v.sha256) {
                return Err(bad(format!("{}: sha256 is not 64 hex digits", v.name)));
            }
            total = total
                .checked_add(v.size)
                .ok_or_else(|| bad("sizes overflow".into()))?;
        }
        if total != self.size {
            return Err(bad(format!(
                "the volumes hold {total} bytes, the index says {}",
                self.size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "hq_to_alice_0000000042.berth.zip";

    fn sample() -> VolumeIndex {
        VolumeIndex {
            format: 1,
            bundle: B.into(),
            size: 5,
            sha256: "a".repeat(64),
            volumes: vec![
                VolumeMeta {
                    name: volume_name(B, 1),
                    size: 3,
                    sha256: "b".repeat(64),
                },
                VolumeMeta {
                    name: volume_name(B, 2),
                    size: 2,
                    sha256: "c".repeat(64),
                },
            ],
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_volume_name(&volume_name(B, 7)), Some((B, 7)));
        assert_eq!(parse_volume_name(&volume_name(B, 1234)), Some((B, 1234)));
        assert_eq!(parse_index_name(&index_name(B)), Some(B));
        for bad in [
            format!("{B}.000"),
            format!("{B}.01"),
            format!("{B}.0001"),
            format!("{B}.x01"),
            "notes.txt.001".into(),
            B.into(),
        ] {
            assert_eq!(parse_volume_name(&bad), None, "{bad}");
        }
        assert_eq!(parse_index_name("x.volumes"), None);
        let sealed = format!("{B}.age");
        assert_eq!(
            parse_index_name(&index_name(&sealed)),
            Some(sealed.as_str())
        );
        assert_eq!(
            parse_volume_name(&volume_name(&sealed, 2)),
            Some((sealed.as_str(), 2))
        );
    }

    #[test]
    fn index_round_trips_and_rules_hold() {
        let text = sample().to_toml().unwrap();
        assert_eq!(VolumeIndex::parse(&text).unwrap(), sample());

        let mut wrong_size = sample();
        wrong_size.size = 6;
        assert!(matches!(
            wrong_size.validate(),
            Err(VolumeError::Invalid { .. })
        ));
        let mut swapped = sample();
        swapped.volumes.swap(0, 1);
        assert!(swapped.validate().is_err());
        let mut empty = sample();
        empty.volumes.clear();
        empty.size = 0;
        assert!(empty.validate().is_err());
        assert!(matches!(
            VolumeIndex::parse("format = 1\nbundle = 3"),
            Err(VolumeError::Syntax(_))
        ));
        assert!(VolumeIndex::parse("\u{0}\u{1}garbage").is_err());
    }
}
