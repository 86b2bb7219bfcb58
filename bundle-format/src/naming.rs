//! Names: bundle file names, temporary files to ignore, site names, and the
//! safety rules for entry names inside a bundle. Pure string functions.
//!
//! A bundle file name says who sent it to whom and its place in that stream:
//! `{sender}_to_{recipient}_{seq:010}.berth.zip`, e.g. `hq_to_alice_0000000042.berth.zip`.
//! Site names never contain `_`, so the name splits unambiguously; `all` is the
//! recipient of a broadcast. Every character is ASCII and allowed on FAT32 and NTFS.

/// The suffix of every bundle file.
pub const BUNDLE_SUFFIX: &str = ".berth.zip";

/// The recipient part of a broadcast bundle's file name.
pub const BROADCAST_RECIPIENT: &str = "all";

/// The longest entry name (in bytes) a bundle may hold.
pub const MAX_ENTRY_NAME: usize = 255;

/// `{sender}_to_{recipient}_{seq:010}.berth.zip`.
pub fn bundle_file_name(sender: &str, recipient: &str, seq: u64) -> String {
    format!("{sender}_to_{recipient}_{seq:010}{BUNDLE_SUFFIX}")
}

/// The `(sender, recipient, seq)` of a name made by [`bundle_file_name`]; `None`
/// for any other name (including temporary names and non-canonical numbers).
pub fn parse_bundle_file_name(name: &str) -> Option<(String, String, u64)> {
    let stem = name.strip_suffix(BUNDLE_SUFFIX)?;
    let (sender, rest) = stem.split_once("_to_")?;
    let (recipient, seq) = rest.split_once('_')?;
    if !is_valid_site_name(sender) || !is_valid_site_name(recipient) {
        return None;
    }
    if seq.len() < 10 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = seq.parse().ok()?;
    // Only the canonical spelling: one name per bundle.
    if format!("{n:010}") != seq {
        return None;
    }
    Some((sender.to_owned(), recipient.to_owned(), n))
}

/// `true` for names of files that are still being written or belong to another
/// program: `*.part` (our own write-then-rename), Syncthing's `.syncthing.*.tmp`
/// and `~syncthing~*`, browsers' `*.crdownload`, Office's `~$*` and LibreOffice's
/// `.~lock.*#` locks, `*.tmp`, and every name starting with `.`.
pub fn is_temporary(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower.starts_with('.')
        || lower.starts_with("~syncthing~")
        || lower.starts_with("~$")
        || lower.ends_with(".part")
        || lower.ends_with(".crdownload")
        || lower.ends_with(".tmp")
    // `.syncthing.*.tmp` and `.~lock.*#` start with a dot: covered above.
}

/// `[a-z0-9][a-z0-9-]{0,31}`: also used in file and folder names.
pub fn is_valid_site_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// `[a-z][a-z0-9-]{0,31}`: a content kind such as `changes` or `migration`.
pub fn is_valid_kind(s: &str) -> bool {
    is_valid_site_name(s) && s.as_bytes()[0].is_ascii_lowercase()
}

const RESERVED_STEMS: &[&str] = &[
    "con", "prn", "aux", "nul", "com1", "com2", "com3", "com4", "com5", "com6", "com7", "com8",
    "com9", "lpt1", "lpt2", "lpt3", "lpt4", "lpt5", "lpt6", "lpt7", "lpt8", "lpt9",
];

/// Why `name` is not a safe entry name, or `None` when it is.
///
/// A safe name is a relative `/`-separated path that extracts to a regular file
/// inside the target folder on Linux, macOS and Windows: no leading `/` or `\`,
/// no backslash at all, no drive letter, no empty, `.` or `..` component, no NUL
/// or control character, none of `<>:"|?*`, no component whose stem is a Windows
/// device name (`CON`, `nul.txt`, `LPT1`...), no component ending in `.` or space,
/// no trailing `/` (directory), at most [`MAX_ENTRY_NAME`] bytes.
pub fn entry_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty name");
    }
    if name.len() > MAX_ENTRY_NAME {
        return Some("longer than 255 bytes");
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Some("absolute path");
    }
    if name.contains('\\') {
        return Some("backslash");
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return Some("drive letter");
    }
    if name.chars().any(|c| c == '\0') {
        return Some("NUL character");
    }
    if name.chars().any(char::is_control) {
        return Some("control character");
    }
    if name.chars().any(|c| "<>:\"|?*".contains(c)) {
        return Some("character not allowed on Windows (<>:\"|?*)");
    }
    if name.ends_with('/') {
        return Some("directory entry");
    }
    for component in name.split('/') {
        match component {
            "" => return Some("empty path component"),
            "." => return Some("`.` component"),
            ".." => return Some("`..` component"),
            _ => {}
        }
        if component.ends_with('.') || component.ends_with(' ') {
            return Some("component ends with a dot or space");
        }
        let stem = component.split('.').next().unwrap_or(component);
        let stem = stem.trim_end_matches(' ').to_ascii_lowercase();
        if RESERVED_STEMS.contains(&stem.as_str()) {
            return Some("Windows reserved device name");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_round_trip() {
        for (s, r, n) in [
            ("hq", "alice", 1u64),
            ("laptop-2", "hq", 42),
            ("0", "all", 0),
            ("a", "b", u64::MAX),
        ] {
            let name = bundle_file_name(s, r, n);
            assert!(name.is_ascii());
            assert_eq!(parse_bundle_file_name(&name), Some((s.into(), r.into(), n)));
            assert!(!is_temporary(&name));
            assert!(is_temporary(&format!("{name}.part")));
        }
        assert_eq!(
            bundle_file_name("hq", "alice", 42),
            "hq_to_alice_0000000042.berth.zip"
        );
    }

    #[test]
    fn foreign_file_names_are_not_bundles() {
        for name in [
            "hq_to_alice_42.berth.zip",
            "hq_to_alice_00000000042.berth.zip",
            "hq_to_alice_0000000042.zip",
            "HQ_to_alice_0000000042.berth.zip",
            "hq_to_al_ice_0000000042.berth.zip",
            "hq_alice_0000000042.berth.zip",
            "_to_alice_0000000042.berth.zip",
            "hq_to_alice_00000000x2.berth.zip",
            "hq_to_alice_+000000042.berth.zip",
            "hq_to_alice_0000000042.berth.zip.part",
            "hq_to_alice_99999999999999999999.berth.zip",
        ] {
            assert_eq!(parse_bundle_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn temporary_names() {
        for name in [
            "x.berth.zip.part",
            ".syncthing.hq_to_a_0000000001.berth.zip.tmp",
            "~syncthing~hq.berth.zip",
            "x.crdownload",
            "~$report.docx",
            ".~lock.report.odt#",
            "x.tmp",
            "X.TMP",
            ".hidden",
        ] {
            assert!(is_temporary(name), "{name}");
        }
        assert!(!is_temporary("hq_to_a_0000000001.berth.zip"));
    }

    #[test]
    fn site_names() {
        for ok in [
            "hq",
            "a",
            "0",
            "laptop-2",
            "abcdefghijklmnopqrstuvwxyz012345",
        ] {
            assert!(is_valid_site_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "A",
            "a_b",
            "a.b",
            "a b",
            "é",
            "abcdefghijklmnopqrstuvwxyz0123456",
        ] {
            assert!(!is_valid_site_name(bad), "{bad}");
        }
        assert!(is_valid_kind("changes") && !is_valid_kind("1x"));
    }

    #[test]
    fn entry_names() {
        let long = format!("payload/{}", "a".repeat(250));
        let cases: &[(&str, bool)] = &[
            ("payload/changes.jsonl", true),
            ("payload/a/b/c.bin", true),
            ("payload/é.txt", true),
            ("payload/con.d/x", false),
            ("payload/console", true),
            ("payload/..foo", true),
            ("", false),
            ("/etc/passwd", false),
            ("\\windows", false),
            ("payload\\x", false),
            ("payload/../x", false),
            ("..", false),
            ("payload/./x", false),
            ("payload//x", false),
            ("payload/", false),
            ("C:/x", false),
            ("c:x", false),
            ("payload/a\0b", false),
            ("payload/a\nb", false),
            ("payload/a\x7fb", false),
            ("payload/a<b", false),
            ("payload/a>b", false),
            ("payload/a:b", false),
            ("payload/a\"b", false),
            ("payload/a|b", false),
            ("payload/a?b", false),
            ("payload/a*b", false),
            ("payload/CON", false),
            ("payload/con.txt", false),
            ("payload/Nul", false),
            ("payload/aux.tar.gz", false),
            ("payload/COM1/x", false),
            ("payload/lpt9.x", false),
            ("payload/prn ", false),
            ("payload/x.", false),
            ("payload/x ", false),
            (long.as_str(), false),
        ];
        for (name, ok) in cases {
            assert_eq!(entry_name_problem(name).is_none(), *ok, "{name:?}");
        }
    }
}
