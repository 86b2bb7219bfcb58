//! What central's bundle brings a node for upgrades (announcements, package files, the
//! acknowledgement of its reports): read and hash-checked before the apply transaction,
//! recorded inside it.

use super::*;

/// What central's bundle brought, read and checked before the apply transaction.
#[derive(Debug, Default)]
pub struct Incoming {
    /// New announcements to record.
    pub announced: Vec<Package>,
    /// Packages refused, with the reason (older than the installed level, bad file hash).
    pub refused: Vec<(Package, String)>,
    /// Packages whose files arrived, matched the announcement and are now in place.
    pub downloaded: Vec<String>,
    /// Central's acknowledgement of our reports.
    pub reports_acked: Option<i64>,
}

pub(super) enum Part<'a> {
    Toc(&'a str),
    File(&'a str, &'a str),
}

pub(super) fn parse_entry(name: &str) -> Option<Part<'_>> {
    let rest = name.strip_prefix("payload/upgrade/")?;
    let (pkg, rest) = rest.split_once('/')?;
    if rest == "package.toml" {
        return Some(Part::Toc(pkg));
    }
    let file = rest.strip_prefix("files/")?;
    (!file.contains('/')).then_some(Part::File(pkg, file))
}

/// Reads the upgrade content of central's verified bundle: announcements (validated), files
/// (each checked against the announcement's size and sha256, then moved into the package
/// folder), and the acknowledgement of our reports. Refusals are recorded, not errors; a
/// malformed announcement makes the whole bundle malformed.
pub fn read_incoming(site: &Site, bundle: &mut Bundle<Verified, File>) -> Result<Incoming> {
    let m = bundle.manifest().clone();
    let label = bundle.label().to_string();
    let mut inc = Incoming {
        reports_acked: m
            .extensions
            .get(EXTENSION)
            .and_then(|v| v.get("reports"))
            .and_then(toml::Value::as_integer),
        ..Incoming::default()
    };
    let bad = |entry: &str, reason: String| EngineError::BadPayload {
        bundle: label.clone(),
        entry: entry.to_string(),
        reason,
    };
    let mut tocs: BTreeMap<String, Package> = BTreeMap::new();
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in m.entries.iter().filter(|e| e.kind == KIND_UPGRADE) {
        match parse_entry(&e.name) {
            Some(Part::Toc(p)) => {
                let bytes = bundle.read_entry(&e.name, MAX_TOC_BYTES)?;
                let text =
                    String::from_utf8(bytes).map_err(|_| bad(&e.name, "not UTF-8".into()))?;
                let pkg =
                    Package::from_toml(&text, &e.name).map_err(|x| bad(&e.name, x.to_string()))?;
                pkg.validate(true)
                    .map_err(|x| bad(&e.name, x.to_string()))?;
                if pkg.name != p {
                    return Err(bad(&e.name, format!("announces package {:?}", pkg.name)));
                }
                tocs.insert(pkg.name.clone(), pkg);
            }
            Some(Part::File(p, f)) => files.entry(p.to_string()).or_default().push(f.to_string()),
            None => return Err(bad(&e.name, "not an upgrade entry name (SPEC 4.3)".into())),
        }
    }
    let level = installed_level(&site.conn)?;
    for (name, pkg) in tocs {
        let local: Option<(String, bool)> = site
            .conn
            .query_row(
                "SELECT state, files FROM berth_upgrade_local WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match (&local, plan::on_announce(local.is_some(), &level, &pkg)) {
            (_, OnAnnounce::Refuse(reason)) => {
                inc.refused.push((pkg, reason));
                continue;
            }
            (None, _) => inc.announced.push(pkg.clone()),
            (Some(_), _) => {}
        }
        let waiting = local.as_ref().is_none_or(|(state, have)| {
            !have
                && Step::parse(state).is_some_and(|s| {
                    matches!(s, Step::Announced | Step::Deferred | Step::Requested)
                })
        });
        let carried = files.get(&name).cloned().unwrap_or_default();
        let complete = pkg.files.iter().all(|f| carried.contains(&f.name));
        if waiting && complete {
            match take_files(site, bundle, &pkg)? {
                None => inc.downloaded.push(name),
                Some(reason) => inc.refused.push((pkg, reason)),
            }
        }
    }
    Ok(inc)
}

/// Copies the package's files out of the bundle, each checked against the announcement;
/// moves them into the package folder only when all match. `Some(reason)` = refused.
fn take_files(
    site: &Site,
    bundle: &mut Bundle<Verified, File>,
    pkg: &Package,
) -> Result<Option<String>> {
    let dir = package_dir(&site.dir, &pkg.name);
    fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let mut staged = Vec::new();
    for f in &pkg.files {
        let mut tmp =
            tempfile::NamedTempFile::new_in(&dir).map_err(|e| EngineError::io(&dir, e))?;
        let mut w = HashingWriter {
            inner: tmp.as_file_mut(),
            hash: Sha256::new(),
            size: 0,
        };
        // The bundle layer checks the bytes against the manifest (central signed them)...
        bundle.copy_entry(&crate::upgrade::file_entry(&pkg.name, &f.name), &mut w)?;
        let (size, sha) = (w.size, hex::encode(w.hash.finalize()));
        // ...and the package's own list says what the software is.
        if Some(size) != f.size || f.sha256.as_deref() != Some(sha.as_str()) {
            return Ok(Some(format!(
                "file {} differs from the package (sha256 {sha}, expected {}): refused, nothing run",
                f.name,
                f.sha256.as_deref().unwrap_or("?")
            )));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| EngineError::io(&dir, e))?;
        staged.push((tmp, dir.join(&f.name)));
    }
    for (tmp, dest) in staged {
        tmp.persist(&dest)
            .map_err(|e| EngineError::io(&dest, e.error))?;
    }
    Ok(None)
}

struct HashingWriter<'a> {
    inner: &'a mut File,
    hash: Sha256,
    size: u64,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Records what [`read_incoming`] found (inside the bundle's transaction).
pub fn record_incoming(conn: &Connection, inc: &Incoming) -> Result<()> {
    let now = store::now();
    if let Some(acked) = inc.reports_acked {
        let before = store::meta_i64(conn, meta_keys::UPGRADE_REPORTS_ACKED)?;
        let acked = before.max(acked);
        store::set_meta(conn, meta_keys::UPGRADE_REPORTS_ACKED, &acked.to_string())?;
        conn.execute(
            "DELETE FROM berth_upgrade_outbox WHERE id <= ?1",
            params![acked],
        )?;
    }
    for pkg in &inc.announced {
        let n = conn.execute(
            "INSERT INTO berth_upgrade_local(name, level, toc, state, updated) VALUES (?1, ?2, ?3, 'announced', ?4)
             ON CONFLICT(name) DO NOTHING",
            params![pkg.name, pkg.level, pkg.to_toml(), now],
        )?;
        if n > 0 {
            push_report(conn, &pkg.name, Step::Announced, "", None, "")?;
        }
    }
    for name in &inc.downloaded {
        conn.execute(
            "UPDATE berth_upgrade_local SET files = 1, state = 'downloaded', detail = '', updated = ?2 WHERE name = ?1",
            params![name, now],
        )?;
        push_report(conn, name, Step::Downloaded, "", None, "")?;
    }
    for (pkg, reason) in &inc.refused {
        let n = conn.execute(
            "INSERT INTO berth_upgrade_local(name, level, toc, state, detail, updated) VALUES (?1, ?2, ?3, 'refused', ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET state = 'refused', detail = excluded.detail, updated = excluded.updated
             WHERE state <> 'refused'",
            params![pkg.name, pkg.level, pkg.to_toml(), reason, now],
        )?;
        if n > 0 {
            push_report(conn, &pkg.name, Step::Refused, reason, None, "")?;
        }
    }
    Ok(())
}
