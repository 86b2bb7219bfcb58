//! The header every bundle this site writes begins with: who sends it to whom, its stream
//! position, and what it says of the site (its schema, software level, key chain and, from
//! central, the table classes). It reads the site's schema state, so it sits with schema
//! evolution in the layers of `lib.rs`.

use crate::error::Result;
use crate::site::{Role, Site};
use crate::store;
use crate::store::meta_keys;
use berth_bundle::{BundleHeader, Party, StreamPosition};

/// Common header of the bundles this site writes.
pub(crate) fn header(
    site: &Site,
    recipient: &str,
    stream: Option<StreamPosition>,
) -> Result<BundleHeader> {
    let schema = crate::migrate::stream::state(&site.conn)?;
    let mut extensions = crate::keychain::extensions(site)?;
    let latest = (site.role() == Role::Central).then_some(schema.version);
    extensions.insert(
        crate::migrate::stream::EXTENSION.into(),
        crate::migrate::stream::extension(schema.version, latest),
    );
    if site.role() == Role::Central {
        // A node has no docking model: this is how it learns which tables stay local. Sent
        // even when empty, so that a class the model dropped is dropped at the nodes too.
        if let Some(classes) = crate::schema::Classes::recorded(&site.conn)? {
            extensions.insert(crate::schema::EXTENSION.into(), classes.to_extension());
        }
    }
    Ok(BundleHeader {
        sender: Party {
            site: site.name().to_string(),
            key_id: site.public_key().key_id(),
        },
        recipients: vec![recipient.to_string()],
        created: u64::try_from(store::now()).unwrap_or(0),
        bundle_id: None,
        stream,
        schema_checksum: Some(schema.checksum).filter(|c| !c.is_empty()),
        software_level: Some(
            store::meta(&site.conn, meta_keys::SOFTWARE_LEVEL)?.unwrap_or_else(|| "1".into()),
        ),
        critical: Vec::new(),
        extensions,
    })
}
