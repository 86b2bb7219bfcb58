//! Reading a verified bundle's payload entries: streamed line by line and hashed as they go
//! ([`Payload::stream`], for the apply inside its transaction), or copied into a spool file
//! and checked whole first ([`spool_entry`], for entries read before it).

use crate::error::{EngineError, Result};
use crate::site::Site;
use berth_bundle::{Bundle, Verified};
use std::fs::File;
use std::io::{BufRead as _, BufReader, Seek as _};

/// A payload entry read line by line as it streams out of the bundle, hashed as it goes: a
/// bundle of any size applies in bounded memory (issue 20). What it yields is unchecked until
/// [`Payload::finish`]: the apply reads it inside its transaction and commits only after
/// `finish` succeeds (SPEC 2.12).
pub(crate) struct Payload<R> {
    reader: BufReader<R>,
}

impl<'a> Payload<berth_bundle::EntryStream<'a, File>> {
    /// Opens entry `name` of a verified bundle for streaming.
    pub(crate) fn stream(bundle: &'a mut Bundle<Verified, File>, name: &str) -> Result<Self> {
        Ok(Payload {
            reader: BufReader::with_capacity(PAYLOAD_BUFFER, bundle.stream_entry(name)?),
        })
    }

    /// Whether every byte of the entry is what the signed manifest says (what was not read
    /// yet is read first). Asked before a commit, and after any failure of the apply, so
    /// that a corrupt entry is reported as corrupt whatever its bytes made the apply do.
    pub(crate) fn finish(self) -> Result<u64> {
        Ok(self.reader.into_inner().finish()?)
    }
}

impl Payload<File> {
    /// Copies entry `name` into a spool file and checks it completely before a line is read
    /// (for entries parsed before the apply's transaction begins).
    pub(crate) fn spooled(
        site: &Site,
        bundle: &mut Bundle<Verified, File>,
        name: &str,
    ) -> Result<Self> {
        let file = spool_entry(site, bundle, name, crate::progress::Tracker::none())?;
        Ok(Payload {
            reader: BufReader::new(file),
        })
    }
}

/// Read buffer of a streamed payload.
const PAYLOAD_BUFFER: usize = 256 << 10;

impl<R: std::io::Read> Payload<R> {
    /// Puts the next line (without its newline) into `line`; false at the end.
    pub(crate) fn next_line(&mut self, line: &mut Vec<u8>) -> std::io::Result<bool> {
        line.clear();
        if self.reader.read_until(b'\n', line)? == 0 {
            return Ok(false);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        Ok(true)
    }
}

/// Copies a verified entry into a spool file (hash-checked) and returns it rewound.
pub(crate) fn spool_entry(
    site: &Site,
    bundle: &mut Bundle<Verified, File>,
    name: &str,
    tracker: crate::progress::Tracker<'_>,
) -> Result<File> {
    let spool = site.folder("spool");
    let tmp = tempfile::tempfile_in(&spool).map_err(|e| EngineError::io(&spool, e))?;
    let mut out = crate::progress::Counted {
        inner: tmp,
        tracker,
    };
    bundle.copy_entry(name, &mut out)?;
    let mut tmp = out.inner;
    tmp.rewind().map_err(|e| EngineError::io(&spool, e))?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        let mut p = Payload {
            reader: BufReader::with_capacity(2, std::io::Cursor::new(text.as_bytes().to_vec())),
        };
        let mut out = Vec::new();
        let mut line = Vec::new();
        while p.next_line(&mut line).unwrap() {
            out.push(String::from_utf8(line.clone()).unwrap());
        }
        out
    }

    #[test]
    fn payload_lines_come_without_their_newline_across_read_buffers() {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(lines("a\nbb\n\nccc"), v(&["a", "bb", "", "ccc"]));
        assert_eq!(lines("a\nbb\n\nccc\n"), v(&["a", "bb", "", "ccc"]));
        assert_eq!(lines(""), v(&[]));
        assert_eq!(lines("\n"), v(&[""]));
    }
}
