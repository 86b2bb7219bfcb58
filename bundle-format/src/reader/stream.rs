//! Reading one verified entry as it streams out of the zip ([`Bundle::stream_entry`]).

use super::*;

/// A verified bundle's entry read as it streams ([`Bundle::stream_entry`]): hashed and
/// counted as it goes; stops with an error as soon as more bytes come out than the manifest
/// says. Nothing read from it is checked until [`EntryStream::finish`].
pub struct EntryStream<'a, R: Read + Seek> {
    pub(super) file: zip::read::ZipFile<'a, Tracked<R>>,
    pub(super) label: &'a str,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) sha256: String,
    pub(super) failed: &'a AtomicBool,
    pub(super) hasher: Sha256,
    pub(super) total: u64,
    /// The first failure met while reading; what `finish` reports.
    pub(super) error: Option<BundleError>,
}

impl<R: Read + Seek> fmt::Debug for EntryStream<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntryStream")
            .field("bundle", &self.label)
            .field("entry", &self.name)
            .field("read", &self.total)
            .finish_non_exhaustive()
    }
}

impl<R: Read + Seek> EntryStream<'_, R> {
    /// Reads what is left (unused), then checks the entry's size and hash: `Ok` with the
    /// byte count only if every byte of the entry is what the signed manifest says.
    pub fn finish(mut self) -> Result<u64, BundleError> {
        if self.error.is_none() {
            let mut buf = vec![0u8; CHUNK];
            while self.read(&mut buf).is_ok_and(|n| n > 0) {}
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if self.total != self.size {
            return Err(BundleError::SizeMismatch {
                bundle: self.label.to_owned(),
                entry: self.name.clone(),
                expected: self.size,
                actual: self.total,
            });
        }
        let actual = hex::encode(self.hasher.finalize());
        if actual != self.sha256 {
            return Err(BundleError::HashMismatch {
                bundle: self.label.to_owned(),
                entry: self.name,
                expected: self.sha256,
                actual,
            });
        }
        Ok(self.total)
    }
}

impl<R: Read + Seek> Read for EntryStream<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Err(io::Error::other("the entry failed to read; see finish()"));
        }
        let n = loop {
            match self.file.read(buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let shown = io::Error::new(e.kind(), e.to_string());
                    self.error = Some(read_error(self.label, &self.name, self.failed, e));
                    return Err(shown);
                }
            }
        };
        self.total = self.total.saturating_add(n as u64);
        if self.total > self.size {
            // Bomb guard: never trust the zip's declared size alone.
            self.error = Some(BundleError::SizeMismatch {
                bundle: self.label.to_owned(),
                entry: self.name.clone(),
                expected: self.size,
                actual: self.total,
            });
            return Err(io::Error::other(
                "the entry is larger than its manifest says",
            ));
        }
        let chunk = buf.get(..n).unwrap_or_default();
        self.hasher.update(chunk);
        Ok(n)
    }
}
