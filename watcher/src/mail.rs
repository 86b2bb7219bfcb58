//! Bundles by email: a standard MIME message with the bundle attached (written with
//! mail-builder, for any mail client or `sendmail`), and bundle attachments taken out of
//! `.eml` files and Maildir messages (read with mail-parser).
//!
//! An attachment is a bundle for site `S` when its file name is a canonical bundle name
//! addressed to `S`, or, when the name was changed on the way (some clients rename), when
//! its manifest (read unverified, only to learn the name) lists `S` as a recipient. The
//! bundle is verified later, from the spool, like any other.

use crate::error::{Result, WatchError};
use berth_bundle::{Bundle, Limits, SecretKey, naming, seal};
use mail_parser::{MessageParser, MimeHeaders};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The MIME type bundles are attached with.
pub const BUNDLE_MIME: &str = "application/zip";

/// A message carrying `bundle` (its bytes) named `name`, from `from` to `to`.
pub fn message_with_bundle(name: &str, bundle: &[u8], to: &str, from: &str) -> Result<Vec<u8>> {
    let plain = seal::parse_sealed_name(name).unwrap_or(name);
    let (sender, recipient, seq) =
        naming::parse_bundle_file_name(plain).unwrap_or_else(|| (String::new(), String::new(), 0));
    let body = if sender.is_empty() {
        format!("This message carries the berth bundle {name}.\n")
    } else {
        format!(
            "This message carries a berth bundle from site {sender} to site {recipient} (number {seq} of that stream).\n\n\
             At {recipient}: save the attachment into the exchange folder, or let `berth watch --via maildir:PATH`\n\
             or a watched folder holding this .eml take it. The bundle is signed; berth verifies it before applying.\n"
        )
    };
    mail_builder::MessageBuilder::new()
        .from(from.to_string())
        .to(to.to_string())
        .subject(format!("berth bundle {name}"))
        .text_body(body)
        .attachment(BUNDLE_MIME, name.to_string(), bundle.to_vec())
        .write_to_vec()
        .map_err(|e| WatchError::Mail {
            path: PathBuf::from(name),
            reason: e.to_string(),
        })
}

/// What a message held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    /// Bundles for the site, written into the spool.
    pub spooled: Vec<PathBuf>,
    /// Bundle attachments addressed to other sites (left alone).
    pub for_others: usize,
}

/// Takes the bundles addressed to `site` out of the message `raw` (read from `path`) into
/// `spool`; sealed ones (`B.age`) are opened with the site's `keys` on the way. A message that
/// is not MIME at all, carries no berth bundle for anyone, or a sealed one that does not
/// open, is an error naming the file.
pub fn take_bundles(
    raw: &[u8],
    path: &Path,
    site: &str,
    keys: &[SecretKey],
    spool: &Path,
) -> Result<Taken> {
    let bad = |reason: &str| WatchError::Mail {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let msg = MessageParser::new()
        .parse(raw)
        .ok_or_else(|| bad("not a mail message (no headers)"))?;
    let mut taken = Taken::default();
    for part in msg.attachments() {
        let data = part.contents();
        let Some(name) = bundle_name(part.attachment_name(), data) else {
            continue;
        };
        let sealed = seal::parse_sealed_name(&name).map(str::to_string);
        let plain = sealed.clone().unwrap_or_else(|| name.clone());
        let Some((_, to, _)) = naming::parse_bundle_file_name(&plain) else {
            continue;
        };
        if to != site {
            taken.for_others += 1;
            continue;
        }
        let p = if sealed.is_some() {
            berth_engine::seal::open_into(
                keys,
                site,
                std::io::Cursor::new(data),
                &path.join(&name),
                &plain,
                spool,
            )
            .map_err(|e| bad(&e.to_string()))?
        } else {
            berth_engine::seal::spool_bytes(spool, &plain, data)?
        };
        taken.spooled.push(p);
    }
    if taken.spooled.is_empty() && taken.for_others == 0 {
        return Err(bad("no berth bundle is attached"));
    }
    Ok(taken)
}

/// The canonical name of an attachment that is a bundle: its own name when canonical, else
/// the name its manifest implies; `None` when it is not a bundle.
fn bundle_name(attachment_name: Option<&str>, data: &[u8]) -> Option<String> {
    if let Some(n) = attachment_name
        && (naming::parse_bundle_file_name(n).is_some() || seal::parse_sealed_name(n).is_some())
    {
        return Some(n.to_string());
    }
    let b = Bundle::open(Cursor::new(data), "attachment", &Limits::default()).ok()?;
    let m = b.manifest();
    let [recipient] = m.recipients.as_slice() else {
        return None;
    };
    let seq = m.stream.as_ref().map_or(0, |s| s.seq);
    Some(naming::bundle_file_name(&m.sender.site, recipient, seq))
}

/// The unique part of a Maildir file name (before `:`, where flags follow), which stays the
/// same when a mail client moves the message from `new/` to `cur/` and flags it.
pub fn maildir_unique(file_name: &str) -> &str {
    file_name.split_once(':').map_or(file_name, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_its_attachment() {
        let name = naming::bundle_file_name("hq", "alice", 4);
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 256) as u8).collect();
        let raw = message_with_bundle(&name, &data, "alice@example.org", "hq@example.org").unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.contains("Subject: berth bundle"), "{text}");
        let spool = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let t = take_bundles(
            &raw,
            Path::new("m.eml"),
            "alice",
            std::slice::from_ref(&key),
            spool.path(),
        )
        .unwrap();
        assert_eq!(t.spooled.len(), 1);
        assert_eq!(std::fs::read(&t.spooled[0]).unwrap(), data);
        let t = take_bundles(
            &raw,
            Path::new("m.eml"),
            "bob",
            std::slice::from_ref(&key),
            spool.path(),
        )
        .unwrap();
        assert_eq!((t.spooled.len(), t.for_others), (0, 1));
    }

    #[test]
    fn garbage_is_a_clear_error_not_a_panic() {
        let spool = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        for raw in [
            &b""[..],
            b"\x00\x01\x02\xff\xfe",
            b"Subject: hi\r\n\r\nno attachment here",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Disposition: attachment; filename=\"hq_to_alice_0000000001.berth.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n",
        ] {
            match take_bundles(raw, Path::new("junk.eml"), "alice", std::slice::from_ref(&key), spool.path()) {
                Err(WatchError::Mail { path, .. }) => assert_eq!(path, Path::new("junk.eml")),
                Ok(t) => assert!(t.spooled.len() <= 1, "a named attachment may be spooled, to be quarantined there"),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }

    #[test]
    fn maildir_unique_names_ignore_flags() {
        assert_eq!(maildir_unique("1700.M1P2.host:2,S"), "1700.M1P2.host");
        assert_eq!(maildir_unique("1700.M1P2.host"), "1700.M1P2.host");
    }
}
