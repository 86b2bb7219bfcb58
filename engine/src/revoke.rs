//! Revoking a node's key at central (`berth node revoke`): a stolen laptop's key stops
//! counting.
//!
//! Policy (SPEC 3.7): from the moment of revocation central refuses **every** bundle signed
//! by that key, including bundles it signed before: their `created` time is the signer's own
//! claim, which a thief can set. Changes central merged before the revocation stay merged
//! (they are in central's log like any other change and travel on to the other nodes).
//! Central stops writing bundles to the node. Bundles already waiting in the spool are
//! refused when next processed (unknown signer) and go to quarantine with that reason.

use crate::error::{EngineError, Result};
use crate::site::{Role, Site};
use crate::{peer, store};
use rusqlite::params;

/// What `revoke_node` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revoked {
    /// The node.
    pub name: String,
    /// Its key id.
    pub key_id: String,
    /// Revocation time (Unix seconds); the earlier time when it was already revoked.
    pub at: i64,
    /// False when the node had been revoked before.
    pub newly: bool,
}

/// Revokes node `name`'s key at central.
pub fn revoke_node(site: &Site, name: &str) -> Result<Revoked> {
    site.require(Role::Central)?;
    let p = peer::require(&site.conn, name)?;
    if p.role != "node" {
        return Err(EngineError::UnknownNode {
            name: name.to_string(),
        });
    }
    let key_id = berth_bundle::PublicKey::from_hex(&p.public_key)?
        .key_id()
        .to_string();
    if let Some(at) = p.revoked {
        return Ok(Revoked {
            name: p.name,
            key_id,
            at,
            newly: false,
        });
    }
    let at = store::now();
    site.conn.execute(
        "UPDATE berth_peers SET revoked = ?2 WHERE name = ?1 AND revoked IS NULL",
        params![name, at],
    )?;
    Ok(Revoked {
        name: p.name,
        key_id,
        at,
        newly: true,
    })
}
