//! Migrations a developer's site submits to central, signed, and central's acceptance of
//! them.

use super::apply::{apply_here, checked_name};
use crate::error::{EngineError, Result};
use crate::evolve::history::{self, Migration};
use crate::site::{Role, Site};
use std::path::{Path, PathBuf};

/// The entry of a submitted migration.
pub const SUBMIT_ENTRY: &str = "payload/migration.json";
/// The content kind of a submitted migration.
pub const KIND_MIGRATION: &str = "migration";

/// File name of a submitted migration: `{site}_to_{central}_migration_{version:04}.zip`. It
/// is not a bundle name (1.8), so no dock or watcher takes it: central's administrator
/// accepts it explicitly ([`accept`]).
pub fn submit_file_name(site: &str, central: &str, version: i64) -> String {
    format!("{site}_to_{central}_migration_{version:04}.zip")
}

/// Writes migration `version` of this site (a developer's copy) as a signed bundle for
/// `central` into `out`; returns its path. Signed with `admin` when given (required for a
/// migration with an executable step, whose statement the admin signs too), else with the
/// site's key.
pub fn submit(
    site: &Site,
    central: &str,
    version: i64,
    out: &Path,
    admin: Option<&berth_bundle::SecretKey>,
) -> Result<PathBuf> {
    crate::site::check_name(central)?;
    let mut m = history::migration(&site.conn, version)?.ok_or_else(|| EngineError::Refused {
        bundle: String::new(),
        reason: format!(
            "this site has no migration {version} (see `berth migration list --site {}`)",
            site.dir.display()
        ),
    })?;
    m.applied = None;
    let key = admin.unwrap_or(site.key());
    if m.exec.is_some() {
        let admin = admin.ok_or_else(|| EngineError::Refused {
            bundle: String::new(),
            reason: format!(
                "migration {version} carries an executable step: it must be signed with an admin key (--admin-key FILE)"
            ),
        })?;
        let statement = m.exec.as_ref().map(|e| e.statement(&m)).unwrap_or_default();
        if let Some(step) = m.exec.as_mut() {
            step.admin_key = admin.public().to_hex();
            step.signature = hex::encode(admin.sign(&statement));
        }
    }
    let mut h = crate::header::header(site, central, None)?;
    h.sender.key_id = key.public().key_id();
    crate::submission::name_key(&mut h, KIND_MIGRATION, &key.public());
    let body = serde_json::to_vec_pretty(&m).map_err(|e| EngineError::Config {
        path: out.to_path_buf(),
        reason: e.to_string(),
    })?;
    let name = submit_file_name(site.name(), central, version);
    crate::transport::write_atomic(out, &name, |f| {
        let mut w = berth_bundle::BundleWriter::new(f, h)?;
        w.add_bytes(
            SUBMIT_ENTRY,
            KIND_MIGRATION,
            berth_bundle::Compression::Deflate,
            &body,
        )?;
        let (f, _manifest) = w.finish(key)?;
        Ok(f)
    })
}

/// What [`accept`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    /// The migration, as applied.
    pub migration: Migration,
    /// Who submitted it.
    pub submitter: String,
    /// The key id that signed it (compare it with the submitter's `berth keys show`).
    pub key_id: String,
}

/// Largest submitted migration read.
const MAX_SUBMITTED: u64 = 64 << 20;

/// Central's administrator accepts a submitted migration: the bundle is verified with the key
/// it introduces (a registered node must have signed with its registered key), addressed to
/// this central; the migration must be the next version and start from central's schema;
/// its SQL must lead to the checksum it promises. It is then applied and journaled.
pub fn accept(site: &mut Site, file: &Path) -> Result<Accepted> {
    site.require(Role::Central)?;
    let mut sub = crate::submission::Submission::open(site, file, KIND_MIGRATION, "migration")?;
    let submitter = sub.manifest.sender.site.clone();
    if let Some(p) = crate::peer::get(&site.conn, &submitter)?
        && p.public_key != sub.key.to_hex()
    {
        return Err(sub.refused(format!(
            "signed by a key that is not the one registered for {submitter}"
        )));
    }
    let mut verified = sub.verify(KIND_MIGRATION)?;
    let body = verified.read_entry(SUBMIT_ENTRY, MAX_SUBMITTED)?;
    let m: Migration = serde_json::from_slice(&body).map_err(|e| EngineError::BadPayload {
        bundle: sub.label.clone(),
        entry: SUBMIT_ENTRY.into(),
        reason: e.to_string(),
    })?;
    let m = Migration {
        name: checked_name(&m.name)?,
        applied: None,
        ..m
    };
    for hint in &m.renames {
        hint.parse::<crate::evolve::diff::Rename>()?;
    }
    apply_here(site, &m)?;
    Ok(Accepted {
        migration: m,
        submitter,
        key_id: sub.key.key_id().to_string(),
    })
}
