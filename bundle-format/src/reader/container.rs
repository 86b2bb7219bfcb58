//! The zip container checked by hand before any entry is read: the end-of-central-directory
//! records (zip64 included) found and bounded, every local header where the directory says,
//! nothing before the first entry or between entries.

use super::*;

/// Little-endian field readers over a fixed record; `None` past its end.
pub(super) fn le16(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 2)?;
    Some(u64::from(u16::from_le_bytes([s[0], s[1]])))
}
pub(super) fn le32(b: &[u8], at: usize) -> Option<u64> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(s)))
}
pub(super) fn le64(b: &[u8], at: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

pub(super) const EOCD_SIG: &[u8; 4] = b"PK\x05\x06";
pub(super) const EOCD_LEN: u64 = 22;
pub(super) const ZIP64_LOCATOR_SIG: &[u8; 4] = b"PK\x06\x07";
pub(super) const ZIP64_LOCATOR_LEN: u64 = 20;
pub(super) const ZIP64_EOCD_SIG: &[u8; 4] = b"PK\x06\x06";
pub(super) const LOCAL_SIG: &[u8; 4] = b"PK\x03\x04";
/// The EOCD plus the longest possible comment.
pub(super) const MAX_TAIL: u64 = EOCD_LEN + 0xFFFF;

/// What the tail of the file says about the archive.
pub(super) struct Tail {
    pub(super) entries: u64,
}

pub(super) struct Opener<'a, R> {
    pub(super) label: &'a str,
    pub(super) r: &'a mut Tracked<R>,
}

impl<R: Read + Seek> Opener<'_, R> {
    pub(super) fn io(&self, source: io::Error) -> BundleError {
        BundleError::Io {
            bundle: self.label.to_owned(),
            entry: None,
            source,
        }
    }

    pub(super) fn not_zip(&self, detail: impl Into<String>) -> BundleError {
        BundleError::NotAZip {
            bundle: self.label.to_owned(),
            detail: detail.into(),
        }
    }

    pub(super) fn read_at(&mut self, at: u64, len: u64) -> Result<Vec<u8>, BundleError> {
        self.r.seek(SeekFrom::Start(at)).map_err(|e| self.io(e))?;
        let mut buf = Vec::new();
        (&mut *self.r)
            .take(len)
            .read_to_end(&mut buf)
            .map_err(|e| self.io(e))?;
        Ok(buf)
    }

    pub(super) fn starts_like_zip(&mut self) -> Result<bool, BundleError> {
        let head = self.read_at(0, 4)?;
        Ok(head.as_slice() == LOCAL_SIG || head.as_slice() == EOCD_SIG)
    }

    pub(super) fn no_end(&mut self, detail: &str) -> Result<Tail, BundleError> {
        if self.starts_like_zip()? {
            Err(BundleError::Truncated {
                bundle: self.label.to_owned(),
                detail: detail.to_owned(),
            })
        } else {
            Err(self.not_zip(detail))
        }
    }

    /// Error path only: the last EOCD signature before `end`, searching the whole
    /// file backwards in bounded chunks (long trailing garbage hides the record
    /// from the usual tail search).
    pub(super) fn find_eocd_before(&mut self, end: u64) -> Result<Option<u64>, BundleError> {
        const STEP: u64 = 1 << 20;
        let mut candidates = 0u32;
        let mut hi = end.saturating_add(3); // overlap: a signature may straddle chunks
        while hi > 0 {
            let lo = hi.saturating_sub(STEP);
            let chunk = self.read_at(lo, hi - lo)?;
            let mut search = chunk.as_slice();
            while let Some(i) = search.windows(4).rposition(|w| w == EOCD_SIG) {
                let pos = lo + i as u64;
                // Plausible only if its central directory ends right before it
                // (or it defers to zip64): payload bytes may contain the signature.
                candidates += 1;
                if candidates > 1000 {
                    return Ok(None); // hostile; "truncated" is close enough
                }
                let rec = match chunk.get(i..i + EOCD_LEN as usize) {
                    Some(r) => r.to_vec(),
                    None => self.read_at(pos, EOCD_LEN)?,
                };
                let (size, offset) = (le32(&rec, 12), le32(&rec, 16));
                let zip64 = size == Some(0xFFFF_FFFF) || offset == Some(0xFFFF_FFFF);
                if zip64 || size.zip(offset).map(|(s, o)| s + o) == Some(pos) {
                    return Ok(Some(pos));
                }
                search = search.get(..i).unwrap_or_default();
            }
            if lo == 0 {
                break;
            }
            hi = lo + 3;
        }
        Ok(None)
    }

    /// SPEC container profile: the end-of-central-directory record (or, for zip64,
    /// record + locator + EOCD) MUST end exactly at the end of the file, with an
    /// empty comment, and the central directory MUST end where it begins.
    pub(super) fn check_tail(&mut self) -> Result<Tail, BundleError> {
        let len = self.r.seek(SeekFrom::End(0)).map_err(|e| self.io(e))?;
        if len < EOCD_LEN {
            return self.no_end("shorter than an end-of-central-directory record");
        }
        let tail_start = len.saturating_sub(MAX_TAIL);
        let tail = self.read_at(tail_start, len - tail_start)?;
        let eocd_pos = len - EOCD_LEN;
        let eocd = tail
            .get((eocd_pos - tail_start) as usize..)
            .unwrap_or_default();
        if eocd.get(..4) != Some(EOCD_SIG.as_slice()) || le16(eocd, 20) != Some(0) {
            // Find out why, to name the failure precisely.
            let last = tail.windows(4).rposition(|w| w == EOCD_SIG);
            return match last {
                Some(i) if i + EOCD_LEN as usize > tail.len() => {
                    // The record itself is cut short.
                    self.no_end("the end-of-central-directory record is cut short")
                }
                Some(i) => {
                    let comment = le16(&tail, i + 20).unwrap_or(0);
                    let after = tail.len().saturating_sub(i + EOCD_LEN as usize) as u64;
                    let detail = if comment > 0 && comment == after {
                        "the archive has a comment".to_owned()
                    } else if after > 0 {
                        format!("{after} bytes after the end-of-central-directory record")
                    } else {
                        "malformed end-of-central-directory record".to_owned()
                    };
                    Err(BundleError::TrailingData {
                        bundle: self.label.to_owned(),
                        detail,
                    })
                }
                None => match self.find_eocd_before(tail_start)? {
                    Some(pos) => Err(BundleError::TrailingData {
                        bundle: self.label.to_owned(),
                        detail: format!(
                            "{} bytes after the end-of-central-directory record",
                            len.saturating_sub(pos + EOCD_LEN)
                        ),
                    }),
                    None => self.no_end("no end-of-central-directory record"),
                },
            };
        }
        let field = |at| le16(eocd, at).unwrap_or(u64::MAX);
        let (disk, cd_disk, on_disk, total) = (field(4), field(6), field(8), field(10));
        let cd_size = le32(eocd, 12).unwrap_or(u64::MAX);
        let cd_offset = le32(eocd, 16).unwrap_or(u64::MAX);
        if disk != 0 || cd_disk != 0 || on_disk != total {
            return Err(self.not_zip("multi-disk archives are not supported"));
        }

        // zip64: a locator right before the EOCD points at the zip64 EOCD record.
        let (entries, cd_end, cd_end_expected) = if eocd_pos >= ZIP64_LOCATOR_LEN
            && tail
                .get((eocd_pos - ZIP64_LOCATOR_LEN - tail_start) as usize..)
                .and_then(|l| l.get(..4))
                == Some(ZIP64_LOCATOR_SIG.as_slice())
        {
            let loc_pos = eocd_pos - ZIP64_LOCATOR_LEN;
            let loc = self.read_at(loc_pos, ZIP64_LOCATOR_LEN)?;
            let (Some(rec_disk), Some(rec_pos), Some(disks)) =
                (le32(&loc, 4), le64(&loc, 8), le32(&loc, 16))
            else {
                return self.no_end("short zip64 locator");
            };
            if rec_disk != 0 || disks > 1 {
                return Err(self.not_zip("multi-disk archives are not supported"));
            }
            if rec_pos >= loc_pos {
                return Err(self.not_zip("zip64 record offset out of range"));
            }
            let rec = self.read_at(rec_pos, 56)?;
            if rec.get(..4) != Some(ZIP64_EOCD_SIG.as_slice()) {
                // Either broken or shifted by prepended bytes; the zip reader decides below.
                return Err(self
                    .not_zip("no zip64 end-of-central-directory record where the locator points"));
            }
            let (Some(rec_size), Some(entries), Some(cd_size), Some(cd_offset)) = (
                le64(&rec, 4),
                le64(&rec, 32),
                le64(&rec, 40),
                le64(&rec, 48),
            ) else {
                return self.no_end("short zip64 record");
            };
            if rec_pos
                .checked_add(12)
                .and_then(|p| p.checked_add(rec_size))
                != Some(loc_pos)
            {
                return Err(BundleError::TrailingData {
                    bundle: self.label.to_owned(),
                    detail: "data between the zip64 record and its locator".to_owned(),
                });
            }
            (entries, cd_offset.checked_add(cd_size), rec_pos)
        } else {
            (total, cd_offset.checked_add(cd_size), eocd_pos)
        };
        match cd_end {
            Some(end) if end == cd_end_expected => {}
            Some(end) if end < cd_end_expected => {
                return Err(BundleError::PrependedData {
                    bundle: self.label.to_owned(),
                    offset: cd_end_expected - end,
                });
            }
            _ => return self.no_end("central directory extends past its end record"),
        }
        Ok(Tail { entries })
    }
}

pub(super) fn method_name(m: CompressionMethod) -> String {
    format!("{m:?}").to_lowercase()
}

pub(super) fn compression_of(m: CompressionMethod) -> Option<Compression> {
    match m {
        CompressionMethod::Stored => Some(Compression::Stored),
        CompressionMethod::Deflated => Some(Compression::Deflate),
        _ => None,
    }
}
