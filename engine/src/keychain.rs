//! Rotation of central's key (SPEC 3.7): the new key is announced by a link signed with the
//! old one, every bundle central writes carries the whole chain of links, and a node that
//! was offline through several rotations follows the chain from the key it pinned to the key
//! that signed the bundle. Only the key at the end of the chain is trusted: a bundle signed
//! by a retired key is refused.
//!
//! Central keeps retired secret keys in `keys/retired/` only to open bundles that nodes
//! sealed to them before they learned of the rotation; it never signs with them.

use crate::error::{EngineError, Result};
pub use crate::identity::{CHAIN_FILE, Link, chain};
use crate::identity::{ChainFile, keys_dir};
use crate::site::{Role, Site, write_secret};
use crate::store::meta_keys;
use crate::{peer, store, transport};
use berth_bundle::{Manifest, PublicKey, SecretKey, TrustedKey};
use rusqlite::params;
use serde::Serialize;
use std::fs;
use std::io::Write as _;
use std::path::Path;

/// The manifest extension that carries the chain.
pub const EXTENSION: &str = "key-chain";

/// The signed text of a link: `berth-key-rotation-v1 OLD NEW AT\n`.
pub fn link_message(old: &str, new: &str, at: i64) -> String {
    format!("berth-key-rotation-v1 {old} {new} {at}\n")
}

/// What a rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct Rotated {
    /// The retired key.
    pub old_key_id: String,
    /// The new key.
    pub new_key_id: String,
    /// How many rotations the chain holds now.
    pub links: usize,
}

/// Rotates central's key: a new key pair, a link signed by the old key appended to
/// `keys/chain.toml`, the old secret kept in `keys/retired/`. Takes the site by value: its
/// in-memory key is the old one; open it again to sign with the new key.
pub fn rotate(site: Site) -> Result<Rotated> {
    site.require(Role::Central)?;
    let keys = keys_dir(&site.dir);
    let old = site.key().clone();
    let new = SecretKey::generate();
    let at = store::now();
    let (old_hex, new_hex) = (old.public().to_hex(), new.public().to_hex());
    let sig = hex::encode(old.sign(link_message(&old_hex, &new_hex, at).as_bytes()));
    // The new secret first (durable under a temporary name), then the retired copy and the
    // chain, then the switch: a crash before the last rename leaves the old key in force.
    let next = keys.join("site.key.next");
    let _ = fs::remove_file(&next);
    write_secret(&next, &new.to_text())?;
    let retired = keys.join("retired");
    fs::create_dir_all(&retired).map_err(|e| EngineError::io(&retired, e))?;
    let old_id = old.public().key_id().to_string();
    let retired_file = retired.join(format!("{}.key", old_id.trim_start_matches("ed25519:")));
    if !retired_file.exists() {
        write_secret(&retired_file, &old.to_text())?;
    }
    let mut links = chain(&site.dir)?;
    links.push(Link {
        old: old_hex,
        new: new_hex,
        at,
        sig,
    });
    let text = toml::to_string(&ChainFile {
        link: links.clone(),
    })
    .map_err(|e| EngineError::Config {
        path: keys.join(CHAIN_FILE),
        reason: e.to_string(),
    })?;
    transport::write_atomic(&keys, CHAIN_FILE, |mut f| {
        f.write_all(text.as_bytes())
            .map_err(|e| EngineError::io(CHAIN_FILE, e))?;
        Ok(f)
    })?;
    let site_key = keys.join("site.key");
    fs::rename(&next, &site_key).map_err(|e| EngineError::io(&site_key, e))?;
    let pub_path = keys.join("site.pub");
    fs::write(&pub_path, new.public().to_text()).map_err(|e| EngineError::io(&pub_path, e))?;
    Ok(Rotated {
        old_key_id: old_id,
        new_key_id: new.public().key_id().to_string(),
        links: links.len(),
    })
}

/// The manifest extensions central adds to every bundle it writes: the chain, if any.
pub fn extensions(site: &Site) -> Result<std::collections::BTreeMap<String, toml::Value>> {
    let mut out = std::collections::BTreeMap::new();
    if site.role() != Role::Central {
        return Ok(out);
    }
    let links = chain(&site.dir)?;
    if links.is_empty() {
        return Ok(out);
    }
    let mut t = toml::Table::new();
    let arr = links
        .iter()
        .map(|l| {
            toml::Value::try_from(l).map_err(|e| EngineError::Config {
                path: keys_dir(&site.dir).join(CHAIN_FILE),
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    t.insert("link".into(), toml::Value::Array(arr));
    out.insert(EXTENSION.into(), toml::Value::Table(t));
    Ok(out)
}

/// The links a manifest carries (malformed ones are left out: they cannot extend trust).
fn manifest_links(m: &Manifest) -> Vec<Link> {
    m.extensions
        .get(EXTENSION)
        .and_then(|v| v.get("link"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.clone().try_into::<Link>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The key a node trusts for central's bundle `m`: the pinned key, or the key the bundle's
/// chain leads to from it (every link signed by its predecessor) when that key signed `m`.
/// A key earlier in the chain than the pinned one is never returned: retired keys are
/// refused.
pub fn central_key_for(pinned_hex: &str, m: &Manifest) -> Result<PublicKey> {
    let pinned = PublicKey::from_hex(pinned_hex)?;
    if pinned.key_id() == m.sender.key_id {
        return Ok(pinned);
    }
    let links = manifest_links(m);
    let mut cur = pinned.clone();
    for _ in 0..links.len() {
        let cur_hex = cur.to_hex();
        let Some(next) = links.iter().find_map(|l| {
            let sig = hex::decode(&l.sig).ok()?;
            (l.old == cur_hex && cur.verify(link_message(&l.old, &l.new, l.at).as_bytes(), &sig))
                .then(|| PublicKey::from_hex(&l.new).ok())
                .flatten()
        }) else {
            break;
        };
        if next.key_id() == m.sender.key_id {
            return Ok(next);
        }
        cur = next;
    }
    Ok(pinned)
}

/// At a node, after a bundle from central verified: pins the key that signed it when the
/// chain led to a newer one, so the older keys are refused from now on.
pub fn note_signer(site: &Site, signer: &TrustedKey) -> Result<()> {
    if site.role() != Role::Node {
        return Ok(());
    }
    let Some(central) = store::meta(&site.conn, meta_keys::CENTRAL)? else {
        return Ok(());
    };
    let p = peer::require(&site.conn, &central)?;
    if signer.site != central || p.public_key == signer.public.to_hex() {
        return Ok(());
    }
    site.conn.execute(
        "UPDATE berth_peers SET public_key = ?2 WHERE name = ?1",
        params![central, signer.public.to_hex()],
    )?;
    Ok(())
}

/// The keys that may open a bundle sealed to this site: its own, then (at central) the
/// retired ones, newest first.
pub fn opening_keys(dir: &Path, current: &SecretKey) -> Result<Vec<SecretKey>> {
    let mut keys = vec![current.clone()];
    let retired = keys_dir(dir).join("retired");
    let Ok(entries) = fs::read_dir(&retired) else {
        return Ok(keys);
    };
    let mut found: Vec<(std::time::SystemTime, SecretKey)> = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "key") {
            let text = fs::read_to_string(&p).map_err(|err| EngineError::io(&p, err))?;
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            found.push((t, SecretKey::from_text(&text)?));
        }
    }
    found.sort_by_key(|k| std::cmp::Reverse(k.0));
    keys.extend(found.into_iter().map(|(_, k)| k));
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_bundle::Party;
    use std::collections::BTreeMap;

    fn link(old: &SecretKey, new: &SecretKey, at: i64) -> Link {
        let (o, n) = (old.public().to_hex(), new.public().to_hex());
        Link {
            sig: hex::encode(old.sign(link_message(&o, &n, at).as_bytes())),
            old: o,
            new: n,
            at,
        }
    }

    fn manifest(signer: &SecretKey, links: &[Link]) -> Manifest {
        let mut m = Manifest {
            format: 1,
            bundle_id: "x".into(),
            created: 0,
            sender: Party {
                site: "hq".into(),
                key_id: signer.public().key_id(),
            },
            recipients: vec!["alice".into()],
            kinds: vec![],
            stream: None,
            schema_checksum: None,
            software_level: None,
            entries: vec![],
            critical: vec![],
            extensions: BTreeMap::new(),
        };
        let mut t = toml::Table::new();
        t.insert(
            "link".into(),
            toml::Value::Array(
                links
                    .iter()
                    .map(|l| toml::Value::try_from(l).unwrap())
                    .collect(),
            ),
        );
        m.extensions = BTreeMap::from([(EXTENSION.to_string(), toml::Value::Table(t))]);
        m
    }

    #[test]
    fn a_node_follows_the_chain_but_never_back() {
        let k: Vec<SecretKey> = (0..4).map(|_| SecretKey::generate()).collect();
        let links = vec![
            link(&k[0], &k[1], 1),
            link(&k[1], &k[2], 2),
            link(&k[2], &k[3], 3),
        ];
        let pinned = k[0].public().to_hex();
        // Offline through three rotations: follows to k3.
        let got = central_key_for(&pinned, &manifest(&k[3], &links)).unwrap();
        assert_eq!(got, k[3].public());
        // Pinned k2: a bundle signed by k1 (retired) gets only k2, so it will not verify.
        let got = central_key_for(&k[2].public().to_hex(), &manifest(&k[1], &links)).unwrap();
        assert_eq!(got, k[2].public());
        // A forged link (not signed by its old key) leads nowhere.
        let mut forged = link(&k[0], &k[3], 9);
        forged.sig = hex::encode(k[3].sign(b"x"));
        let got = central_key_for(&pinned, &manifest(&k[3], &[forged])).unwrap();
        assert_eq!(got, k[0].public());
        // A link with a changed time no longer verifies.
        let mut moved = link(&k[0], &k[3], 9);
        moved.at = 10;
        let got = central_key_for(&pinned, &manifest(&k[3], &[moved])).unwrap();
        assert_eq!(got, k[0].public());
    }
}

/// An admin key registered at central.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Admin {
    /// Who holds it.
    pub name: String,
    /// Its key id.
    pub key_id: String,
    /// The public key (hex).
    pub public_key: String,
    /// When it was registered.
    pub added: i64,
}

/// Registers an admin key at central (`berth keys admin add`): its holder may sign what
/// only an admin may (a migration's executable step, a package submitted from afar).
pub fn add_admin(site: &Site, name: &str, key: &PublicKey) -> Result<Admin> {
    site.require(Role::Central)?;
    crate::site::check_name(name)?;
    let a = Admin {
        name: name.to_string(),
        key_id: key.key_id().to_string(),
        public_key: key.to_hex(),
        added: crate::store::now(),
    };
    site.conn.execute(
        "INSERT INTO berth_admins(key_id, public_key, name, added) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(key_id) DO UPDATE SET name = excluded.name",
        rusqlite::params![a.key_id, a.public_key, a.name, a.added],
    )?;
    Ok(a)
}

/// The admin keys registered at this site.
pub fn admins(conn: &rusqlite::Connection) -> Result<Vec<Admin>> {
    let mut st =
        conn.prepare("SELECT name, key_id, public_key, added FROM berth_admins ORDER BY name")?;
    let rows = st
        .query_map([], |r| {
            Ok(Admin {
                name: r.get(0)?,
                key_id: r.get(1)?,
                public_key: r.get(2)?,
                added: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}
