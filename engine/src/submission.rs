//! Bundles handed to central's administrator rather than docked: a developer's migration
//! (`berth migration submit`) and an admin's upgrade package (`berth upgrade submit`). Both
//! name the key that signed them in a manifest extension of their kind; the caller decides
//! whether that key may submit, then the bundle is verified with it.

use crate::error::{EngineError, Result};
use crate::site::Site;
use berth_bundle::{
    Bundle, BundleHeader, Limits, Manifest, PublicKey, TrustedKey, TrustedKeys, Verified,
};
use std::fs::File;
use std::path::Path;

/// Names `key`, the key the submission is signed with, in `header` under
/// `[extensions.<kind>] public_key`: what [`Submission::open`] reads back.
pub(crate) fn name_key(header: &mut BundleHeader, kind: &str, key: &PublicKey) {
    let mut t = toml::Table::new();
    t.insert("public_key".into(), toml::Value::String(key.to_hex()));
    header
        .extensions
        .insert(kind.to_string(), toml::Value::Table(t));
}

/// A submitted bundle, opened and addressed to this site; verified by [`Submission::verify`].
pub(crate) struct Submission {
    /// The file name, for messages.
    pub label: String,
    /// Its manifest (signature not checked yet).
    pub manifest: Manifest,
    /// The key it says signed it (`[extensions.<kind>] public_key`).
    pub key: PublicKey,
    /// Until it is verified.
    bundle: Option<Bundle<berth_bundle::Unverified, File>>,
}

impl Submission {
    /// Opens `file`, refusing it unless it is addressed to `site` and names its key under
    /// `[extensions.<kind>]`; `what` names the content in the message ("migration").
    pub(crate) fn open(site: &Site, file: &Path, kind: &str, what: &str) -> Result<Submission> {
        let label = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let f = File::open(file).map_err(|e| EngineError::io(file, e))?;
        let bundle = Bundle::open(f, &label, &Limits::default())?;
        let manifest = bundle.manifest().clone();
        if !manifest.recipients.iter().any(|r| r == site.name()) {
            return Err(EngineError::Refused {
                reason: format!(
                    "addressed to {:?}, not to {}",
                    manifest.recipients,
                    site.name()
                ),
                bundle: label,
            });
        }
        let key = manifest
            .extensions
            .get(kind)
            .and_then(|t| t.get("public_key"))
            .and_then(toml::Value::as_str)
            .and_then(|h| PublicKey::from_hex(h).ok())
            .ok_or_else(|| EngineError::Refused {
                bundle: label.clone(),
                reason: format!("not a submitted {what} (no public key in the manifest)"),
            })?;
        Ok(Submission {
            label,
            manifest,
            key,
            bundle: Some(bundle),
        })
    }

    /// The refusal of this bundle for `reason`.
    pub(crate) fn refused(&self, reason: String) -> EngineError {
        EngineError::Refused {
            bundle: self.label.clone(),
            reason,
        }
    }

    /// Verifies the bundle with the key it names, allowing entries of `kind` only. Once:
    /// the verified bundle is handed over.
    pub(crate) fn verify(&mut self, kind: &str) -> Result<Bundle<Verified, File>> {
        let bundle = self
            .bundle
            .take()
            .ok_or_else(|| self.refused("verified twice".into()))?;
        let mut trust = TrustedKeys::new();
        trust.add(TrustedKey {
            public: self.key.clone(),
            site: self.manifest.sender.site.clone(),
            kinds: Some([kind.to_string()].into_iter().collect()),
        });
        Ok(bundle.verify(&trust)?)
    }
}
