//! Bundles by email: a standard MIME message with the bundle attached (written with
//! mail-builder, for any mail client or `sendmail`), and bundle attachments taken out of
//! `.eml` files and Maildir messages (read with mail-parser), forwarded messages inside them
//! included.
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
    let bad = |reason: String| WatchError::Mail {
        path: PathBuf::from(name),
        reason,
    };
    let to = parse_address(to).map_err(&bad)?;
    let from = parse_address(from).map_err(&bad)?;
    mail_builder::MessageBuilder::new()
        .from(from.into_builder())
        .to(to.into_builder())
        .subject(format!("berth bundle {name}"))
        .text_body(body)
        .attachment(BUNDLE_MIME, name.to_string(), bundle.to_vec())
        .write_to_vec()
        .map_err(|e| WatchError::Mail {
            path: PathBuf::from(name),
            reason: e.to_string(),
        })
}

/// A mailbox as a person writes it: `addr@example.org`, `Name <addr@example.org>` or
/// `"Name, Jr." <addr@example.org>`. The display name may hold any text: the message writer
/// encodes what is not ASCII (RFC 2047).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, if any.
    pub name: Option<String>,
    /// The address (`local@domain`).
    pub address: String,
}

impl Mailbox {
    fn into_builder(self) -> mail_builder::headers::address::Address<'static> {
        match self.name {
            Some(n) => (n, self.address).into(),
            None => self.address.into(),
        }
    }
}

fn not_an_address(text: &str) -> String {
    format!("{text:?} is not a mail address: write addr@example.org or 'Name <addr@example.org>'")
}

/// Reads a mailbox (see [`Mailbox`]); the error says what is wrong with it.
pub fn parse_address(text: &str) -> std::result::Result<Mailbox, String> {
    let text = text.trim();
    let (name, address) = match text.rfind('<') {
        Some(open) => {
            let address = text[open + 1..]
                .strip_suffix('>')
                .ok_or_else(|| not_an_address(text))?;
            let name = text[..open].trim();
            let name = name
                .strip_prefix('"')
                .and_then(|n| n.strip_suffix('"'))
                .unwrap_or(name)
                .trim();
            ((!name.is_empty()).then(|| name.to_string()), address.trim())
        }
        None => (None, text),
    };
    let ok = address
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
        && !address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'));
    if !ok {
        return Err(not_an_address(text));
    }
    Ok(Mailbox {
        name,
        address: address.to_string(),
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
    take_from(&msg, site, keys, spool, path, &mut taken, 0).map_err(|e| bad(&e))?;
    if taken.spooled.is_empty() && taken.for_others == 0 {
        return Err(bad("no berth bundle is attached"));
    }
    Ok(taken)
}

/// How deep forwarded messages inside messages are searched.
const MAX_NESTING: usize = 4;

/// The bundles of one message into `taken`; a forwarded message (`message/rfc822`, the
/// bundle's message attached whole) is searched like the outer one.
fn take_from(
    msg: &mail_parser::Message<'_>,
    site: &str,
    keys: &[SecretKey],
    spool: &Path,
    path: &Path,
    taken: &mut Taken,
    depth: usize,
) -> std::result::Result<(), String> {
    for part in msg.attachments() {
        if let Some(inner) = part.message() {
            if depth < MAX_NESTING {
                take_from(inner, site, keys, spool, path, taken, depth + 1)?;
            }
            continue;
        }
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
            .map_err(|e| e.to_string())?
        } else {
            berth_engine::seal::spool_bytes(spool, &plain, data).map_err(|e| e.to_string())?
        };
        taken.spooled.push(p);
    }
    Ok(())
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
    fn addresses_with_display_names_are_parsed_and_encoded() {
        let m = |s: &str| parse_address(s).unwrap();
        assert_eq!(m("a@example.org").name, None);
        assert_eq!(
            m("Ann Lee <a@example.org>").name.as_deref(),
            Some("Ann Lee")
        );
        assert_eq!(m("\"Lee, Ann\" <a@example.org>").address, "a@example.org");
        assert_eq!(m("<a@example.org>").name, None);
        for bad in ["", "ann", "Ann <a@example.org", "a b@example.org", "Ann <>"] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        let name = naming::bundle_file_name("hq", "alice", 4);
        let raw = message_with_bundle(
            &name,
            b"x",
            "Zoë Ärger <z@example.org>",
            "HQ <hq@example.org>",
        )
        .unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(
            text.contains("From: \"HQ\" <hq@example.org>")
                || text.contains("From: HQ <hq@example.org>"),
            "{text}"
        );
        assert!(text.contains("=?utf-8?"), "{text}");
        assert!(!text.contains("<Zo"), "{text}");
        let parsed = MessageParser::new().parse(&raw).unwrap();
        let to = parsed.to().and_then(|a| a.first()).unwrap();
        assert_eq!(to.name(), Some("Zoë Ärger"));
        assert_eq!(to.address(), Some("z@example.org"));
    }

    #[test]
    fn a_forwarded_message_gives_up_its_bundle() {
        let name = naming::bundle_file_name("hq", "alice", 4);
        let inner =
            message_with_bundle(&name, b"PK bundle", "a@example.org", "hq@example.org").unwrap();
        let outer = mail_builder::MessageBuilder::new()
            .from("bob@example.org")
            .to("a@example.org")
            .subject("Fwd: berth bundle")
            .text_body("see attached")
            .attachment("message/rfc822", "forwarded.eml", inner)
            .write_to_vec()
            .unwrap();
        let spool = tempfile::tempdir().unwrap();
        let t = take_bundles(
            &outer,
            Path::new("fwd.eml"),
            "alice",
            &[SecretKey::generate()],
            spool.path(),
        )
        .unwrap();
        assert_eq!(t.spooled.len(), 1);
        assert_eq!(std::fs::read(&t.spooled[0]).unwrap(), b"PK bundle");
    }

    #[test]
    fn maildir_unique_names_ignore_flags() {
        assert_eq!(maildir_unique("1700.M1P2.host:2,S"), "1700.M1P2.host");
        assert_eq!(maildir_unique("1700.M1P2.host"), "1700.M1P2.host");
    }
}
