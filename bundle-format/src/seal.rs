//! Sealed bundles: a signed bundle encrypted to its one recipient site with the age format
//! (<https://age-encryption.org/v1>, an X25519 recipient stanza), so a lost stick or a
//! forwarded message leaks nothing.
//!
//! The recipient is the site's own ed25519 key in its X25519 form (the birational map of
//! RFC 7748 / RFC 8032; the same conversion libsodium and age's `ssh-ed25519` recipients
//! use), so no second key has to be enrolled: whoever knows a site's public key can seal to
//! it. A sealed bundle `B` is stored as `B.age`; its plaintext is the signed zip, byte for
//! byte, and it is verified after opening exactly as an unsealed one. The signed manifest's
//! `recipients` names the site it was sealed to: readers MUST refuse a sealed bundle whose
//! verified manifest does not name them as its only recipient (SPEC 3.4).
//!
//! ```
//! use berth_bundle::{SecretKey, seal};
//! let alice = SecretKey::generate();
//! let mut sealed = Vec::new();
//! seal::seal(&b"PK... a bundle"[..], &alice.public(), &mut sealed).unwrap();
//! let mut plain = Vec::new();
//! seal::open(&sealed[..], &alice, &mut plain).unwrap();
//! assert_eq!(plain, b"PK... a bundle");
//! let bob = SecretKey::generate();
//! assert!(matches!(seal::open(&sealed[..], &bob, &mut Vec::new()), Err(seal::SealError::NotForThisKey)));
//! ```

use crate::keys::{PublicKey, SecretKey};
use bech32::{Bech32, Hrp};
use std::io::{self, Read, Seek, Write};

/// The suffix of a sealed bundle file: `B.age`.
pub const SEALED_SUFFIX: &str = ".age";

/// Why sealing or opening failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The file is not an age file (or an age version this reader does not know).
    #[error("not an age-encrypted file: {0}")]
    NotSealed(String),
    /// The file is sealed, but to another key: it is not for this site.
    #[error("sealed to another recipient: this site's key cannot open it")]
    NotForThisKey,
    /// The ciphertext or its header was changed, truncated or damaged.
    #[error("the sealed file is damaged or was tampered with: {0}")]
    Damaged(String),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl SealError {
    /// True when trying again cannot help (the file should be quarantined).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, SealError::Io(_))
    }
}

/// `B.age`.
pub fn sealed_name(bundle: &str) -> String {
    format!("{bundle}{SEALED_SUFFIX}")
}

/// The bundle name `B` of a sealed file name `B.age` (B canonical), else `None`.
pub fn parse_sealed_name(name: &str) -> Option<&str> {
    let bundle = name.strip_suffix(SEALED_SUFFIX)?;
    crate::naming::parse_bundle_file_name(bundle).map(|_| bundle)
}

fn age_error(e: impl std::fmt::Display) -> SealError {
    SealError::NotSealed(e.to_string())
}

/// The age recipient string (`age1...`) of a site's public key.
pub fn recipient_text(key: &PublicKey) -> Result<String, SealError> {
    bech32::encode::<Bech32>(Hrp::parse_unchecked("age"), &key.x25519()).map_err(age_error)
}

/// The age identity string (`AGE-SECRET-KEY-1...`) of a site's secret key: with it, the
/// `age` tool opens what was sealed to the site (`age -d -i FILE`). It is the secret key.
pub fn identity_text(key: &SecretKey) -> Result<String, SealError> {
    bech32::encode_upper::<Bech32>(Hrp::parse_unchecked("AGE-SECRET-KEY-"), &key.x25519())
        .map_err(age_error)
}

fn identity(key: &SecretKey) -> Result<age::x25519::Identity, SealError> {
    identity_text(key)?.parse().map_err(age_error)
}

/// The first bytes of every age v1 file: how a sealed bundle is recognised without a key.
pub const MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// Encrypts everything `input` holds to `to` into `out`; returns `out`.
pub fn seal<R: Read, W: Write>(mut input: R, to: &PublicKey, out: W) -> Result<W, SealError> {
    let recipient: age::x25519::Recipient = recipient_text(to)?.parse().map_err(age_error)?;
    let encryptor =
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .map_err(age_error)?;
    let mut w = encryptor.wrap_output(out)?;
    io::copy(&mut input, &mut w)?;
    Ok(w.finish()?)
}

/// Decrypts a sealed file with `key` into `out`; returns the plaintext size. On any error
/// `out` may hold a prefix of the plaintext: write it somewhere temporary (the engine
/// writes `NAME.part` and renames only on success).
pub fn open<R: Read, W: Write>(input: R, key: &SecretKey, out: &mut W) -> Result<u64, SealError> {
    guarded(|| open_inner(input, key, out))
}

fn open_inner<R: Read, W: Write>(input: R, key: &SecretKey, out: &mut W) -> Result<u64, SealError> {
    let decryptor = age::Decryptor::new(input).map_err(|e| match e {
        age::DecryptError::Io(io) if io.kind() != io::ErrorKind::UnexpectedEof => SealError::Io(io),
        age::DecryptError::UnknownFormat | age::DecryptError::Io(_) => {
            SealError::NotSealed(e.to_string())
        }
        other => SealError::Damaged(other.to_string()),
    })?;
    let id = identity(key)?;
    let mut reader = decryptor
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SealError::NotForThisKey,
            age::DecryptError::Io(io) => SealError::Io(io),
            other => SealError::Damaged(other.to_string()),
        })?;
    // The payload is authenticated chunk by chunk (ChaCha20-Poly1305, 64 KiB): a changed or
    // missing chunk is an InvalidData / UnexpectedEof error from the reader.
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                return Err(SealError::Damaged(e.to_string()));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SealError::Io(e)),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
    Ok(total)
}

/// A reader that ends where its input ended when it was made: a file still growing under a
/// writer looks the same to every read and seek (age's length check reads "to the end" and
/// asserts that the last chunk is no longer than a chunk, which a growing file breaks).
struct Snapshot<R> {
    inner: R,
    len: u64,
    pos: u64,
}

impl<R: Read + Seek> Snapshot<R> {
    fn new(mut inner: R) -> io::Result<Self> {
        let len = inner.seek(io::SeekFrom::End(0))?;
        inner.seek(io::SeekFrom::Start(0))?;
        Ok(Snapshot { inner, len, pos: 0 })
    }
}

impl<R: Read> Read for Snapshot<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Snapshot<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let target = match pos {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        self.pos = self.inner.seek(io::SeekFrom::Start(target))?;
        Ok(self.pos)
    }
}

/// Runs an age operation, turning a panic inside it (an assertion on input it did not
/// expect) into [`SealError::Damaged`]: hostile input must never take a process down.
fn guarded<T>(f: impl FnOnce() -> Result<T, SealError>) -> Result<T, SealError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(SealError::Damaged(
            "the age reader refused the input (internal check failed)".into(),
        ))
    })
}

/// Checks that a sealed file is whole without reading all of it: the header opens with `key`
/// and the last chunk authenticates as the last one (age marks it), which no prefix of a
/// sealed file does. For a watcher deciding whether a file is still being written; a file
/// that grows meanwhile is judged as it was when the check began.
pub fn check_complete<R: Read + Seek>(input: R, key: &SecretKey) -> Result<(), SealError> {
    let input = Snapshot::new(input)?;
    guarded(|| check_snapshot(input, key))
}

fn check_snapshot<R: Read + Seek>(input: R, key: &SecretKey) -> Result<(), SealError> {
    let decryptor = age::Decryptor::new(input).map_err(|e| SealError::Damaged(e.to_string()))?;
    let id = identity(key)?;
    let mut reader = decryptor
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SealError::NotForThisKey,
            other => SealError::Damaged(other.to_string()),
        })?;
    let damaged = |e: io::Error| SealError::Damaged(e.to_string());
    reader.seek(io::SeekFrom::End(-1)).map_err(damaged)?;
    let mut last = [0u8; 1];
    reader.read_exact(&mut last).map_err(damaged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_to(key: &SecretKey, plain: &[u8]) -> Vec<u8> {
        seal(plain, &key.public(), Vec::new()).unwrap()
    }

    #[test]
    fn round_trip_across_many_chunks() {
        let k = SecretKey::generate();
        let plain: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let sealed = sealed_to(&k, &plain);
        assert!(sealed.starts_with(b"age-encryption.org/v1\n-> X25519 "));
        let mut out = Vec::new();
        assert_eq!(open(&sealed[..], &k, &mut out).unwrap(), plain.len() as u64);
        assert_eq!(out, plain);
    }

    #[test]
    fn the_recipient_is_a_standard_age_recipient() {
        let k = SecretKey::from_seed(&[7; 32]);
        let r = recipient_text(&k.public()).unwrap();
        assert!(r.starts_with("age1") && r.len() == 62, "{r}");
        let parsed: age::x25519::Recipient = r.parse().unwrap();
        assert_eq!(parsed.to_string(), r);
        // The identity's public half is the same recipient.
        assert_eq!(identity(&k).unwrap().to_public().to_string(), r);
    }

    #[test]
    fn wrong_key_tampering_truncation_and_garbage_are_told_apart() {
        let k = SecretKey::generate();
        let other = SecretKey::generate();
        let plain = vec![42u8; 100_000];
        let sealed = sealed_to(&k, &plain);
        let mut sink = Vec::new();
        assert!(matches!(
            open(&sealed[..], &other, &mut sink),
            Err(SealError::NotForThisKey)
        ));
        for at in [sealed.len() / 2, sealed.len() - 1, 40] {
            let mut t = sealed.clone();
            t[at] ^= 1;
            let e = open(&t[..], &k, &mut Vec::new()).unwrap_err();
            assert!(e.is_permanent(), "byte {at}: {e}");
        }
        let e = open(&sealed[..sealed.len() - 100], &k, &mut Vec::new()).unwrap_err();
        assert!(matches!(e, SealError::Damaged(_)), "{e}");
        for junk in [&b""[..], b"PK\x03\x04 a zip", b"age-encryption.org/v1\n"] {
            let e = open(junk, &k, &mut Vec::new()).unwrap_err();
            assert!(e.is_permanent(), "{e}");
        }
    }

    #[test]
    fn only_a_whole_sealed_file_is_complete() {
        let k = SecretKey::generate();
        let plain = vec![9u8; 3 * 65536 + 10];
        let sealed = sealed_to(&k, &plain);
        assert!(check_complete(io::Cursor::new(&sealed), &k).is_ok());
        for cut in [
            sealed.len() - 1,
            sealed.len() - 10 - 16,
            65536 + 16 + 200,
            30,
        ] {
            assert!(
                check_complete(io::Cursor::new(&sealed[..cut]), &k).is_err(),
                "prefix of {cut} bytes"
            );
        }
        let other = SecretKey::generate();
        assert!(matches!(
            check_complete(io::Cursor::new(&sealed), &other),
            Err(SealError::NotForThisKey)
        ));
    }

    #[test]
    fn a_file_growing_during_the_check_is_judged_as_it_was() {
        // Regression: age's length check read "to the end" of a file a writer was still
        // appending to and hit an assertion (a panic in the watcher).
        let k = SecretKey::generate();
        let sealed = sealed_to(&k, &vec![1u8; 3 * 65536]);
        let cut = 65536 + 100;
        let mut grown = sealed[..cut].to_vec();
        let mut snap = Snapshot::new(io::Cursor::new(&mut grown)).unwrap();
        assert_eq!(snap.seek(io::SeekFrom::End(0)).unwrap(), cut as u64);
        // The "writer" appends more than a chunk after the snapshot was taken.
        snap.inner.get_mut().extend_from_slice(&sealed[cut..]);
        let mut all = Vec::new();
        snap.seek(io::SeekFrom::Start(0)).unwrap();
        snap.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), cut);
        assert!(check_complete(io::Cursor::new(&sealed[..cut]), &k).is_err());
    }

    #[test]
    fn names() {
        let b = crate::naming::bundle_file_name("hq", "alice", 9);
        assert_eq!(parse_sealed_name(&sealed_name(&b)), Some(b.as_str()));
        assert_eq!(parse_sealed_name("x.age"), None);
    }
}
