//! An admin publishes from afar (seed 004: "only central or an admin key may publish").
//!
//! `berth upgrade submit` signs a package, its `package.toml` and its files, with an admin's
//! key into a bundle addressed to central; the admin needs no site of their own, only the key
//! central registered with `berth keys admin`. `berth upgrade accept` at central verifies the
//! bundle against that registered key and publishes the package exactly as
//! [`publish`](super::central::publish) does (inactive until `berth upgrade activate`).

use super::central::publish;
use super::{Package, file_entry, toc_entry};
use crate::error::{EngineError, Result};
use crate::site::{Role, Site, check_name};
use crate::{store, transport};
use berth_bundle::{BundleHeader, BundleWriter, Compression, Party, SecretKey};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Content kind of a submitted package's entries, and the manifest extension naming the
/// admin key that signed it (`[extensions.package] public_key`).
pub const KIND_PACKAGE: &str = "package";

/// The file name of a submitted package.
pub fn submit_file_name(admin: &str, central: &str, package: &str) -> String {
    format!("{admin}_to_{central}_package_{package}.zip")
}

/// Writes the package described by `toml_path` (its files named relative to the TOML file's
/// folder) as a bundle from `admin` to `central`, signed with the admin's key, into `out`.
/// The package is validated first, as publishing would, so a mistake shows here and not at
/// central.
pub fn submit(
    toml_path: &Path,
    admin: &str,
    key: &SecretKey,
    central: &str,
    out: &Path,
) -> Result<PathBuf> {
    check_name(admin)?;
    check_name(central)?;
    let text = fs::read_to_string(toml_path).map_err(|e| EngineError::io(toml_path, e))?;
    let pkg = Package::from_toml(&text, &toml_path.display().to_string())?;
    pkg.validate(false)?;
    let src = toml_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut header = BundleHeader {
        sender: Party {
            site: admin.to_string(),
            key_id: key.public().key_id(),
        },
        recipients: vec![central.to_string()],
        created: store::now().max(0) as u64,
        bundle_id: None,
        stream: None,
        schema_checksum: None,
        software_level: None,
        critical: Vec::new(),
        extensions: Default::default(),
    };
    crate::submission::name_key(&mut header, KIND_PACKAGE, &key.public());
    let name = submit_file_name(admin, central, &pkg.name);
    transport::write_atomic(out, &name, |f| {
        let mut w = BundleWriter::new(f, header)?;
        // Entries go in name order: the files (`.../files/...`) sort before `package.toml`.
        let mut files: Vec<&str> = pkg.files.iter().map(|f| f.name.as_str()).collect();
        files.sort_unstable();
        for file in files {
            let path = src.join(file);
            let input = File::open(&path).map_err(|e| EngineError::io(&path, e))?;
            w.add_entry(
                &file_entry(&pkg.name, file),
                KIND_PACKAGE,
                Compression::Deflate,
                input,
            )?;
        }
        w.add_bytes(
            &toc_entry(&pkg.name),
            KIND_PACKAGE,
            Compression::Deflate,
            text.as_bytes(),
        )?;
        let (f, _manifest) = w.finish(key)?;
        Ok(f)
    })
}

/// What [`accept`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AcceptedPackage {
    /// The package as published.
    pub package: Package,
    /// The admin's name, as registered at central.
    pub admin: String,
    /// The admin key's id.
    pub key_id: String,
}

/// Central publishes a package an admin submitted: the bundle must be addressed to this
/// central and signed by a key registered with `berth keys admin`; every entry is checked
/// against the signed manifest, then the package is validated and published as
/// [`publish`] does. Nothing is stored when any check fails.
pub fn accept(site: &mut Site, file: &Path) -> Result<AcceptedPackage> {
    site.require(Role::Central)?;
    let mut sub = crate::submission::Submission::open(site, file, KIND_PACKAGE, "package")?;
    let admin = crate::keychain::admins(&site.conn)?
        .into_iter()
        .find(|a| a.public_key == sub.key.to_hex())
        .ok_or_else(|| {
            sub.refused(format!(
                "signed by key {}, which is not a registered admin key: only central or an admin key may publish (register it with `berth keys admin`)",
                sub.key.key_id()
            ))
        })?;
    let mut verified = sub.verify(KIND_PACKAGE)?;
    // The package's name is only known from its TOML: the one `package.toml` entry.
    let toc = sub
        .manifest
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .find(|n| n.starts_with("payload/upgrade/") && n.ends_with("/package.toml"))
        .ok_or_else(|| sub.refused("the bundle holds no package.toml".into()))?
        .to_string();
    let text = verified.read_entry(&toc, super::MAX_TOC_BYTES)?;
    let text = String::from_utf8(text).map_err(|_| EngineError::BadPayload {
        bundle: sub.label.clone(),
        entry: toc.clone(),
        reason: "package.toml is not UTF-8".into(),
    })?;
    let pkg = Package::from_toml(&text, &toc)?;
    pkg.validate(false)?;
    if toc != toc_entry(&pkg.name) {
        return Err(sub.refused(format!("{toc} does not belong to package {:?}", pkg.name)));
    }
    // Staged in the site's folder; `publish` copies from there and the folder goes.
    let staging = site.folder("upgrade");
    fs::create_dir_all(&staging).map_err(|e| EngineError::io(&staging, e))?;
    let stage = tempfile::Builder::new()
        .prefix(".submitted-")
        .tempdir_in(&staging)
        .map_err(|e| EngineError::io(&staging, e))?;
    let toml_path = stage.path().join("package.toml");
    fs::write(&toml_path, &text).map_err(|e| EngineError::io(&toml_path, e))?;
    for spec in &pkg.files {
        let dest = stage.path().join(&spec.name);
        let mut out = File::create(&dest).map_err(|e| EngineError::io(&dest, e))?;
        verified.copy_entry(&file_entry(&pkg.name, &spec.name), &mut out)?;
    }
    let published = publish(site, &toml_path)?;
    Ok(AcceptedPackage {
        package: published,
        admin: admin.name,
        key_id: admin.key_id,
    })
}
