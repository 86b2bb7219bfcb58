//! Site keys (ed25519), their ids and text forms, and the trusted-keys list.
//!
//! Text forms are one line each, so an admin can read, mail and compare them:
//! `berth-secret-key-v1 <64 hex of the 32-byte seed>` and
//! `berth-public-key-v1 <64 hex of the 32-byte public key>`.
//! Storing them in files (and file permissions) is the engine's business.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::BundleError;

const SECRET_PREFIX: &str = "berth-secret-key-v1";
const PUBLIC_PREFIX: &str = "berth-public-key-v1";
const KEY_ID_PREFIX: &str = "ed25519:";

fn bad_key(detail: impl Into<String>) -> BundleError {
    BundleError::BadKey {
        detail: detail.into(),
    }
}

/// Decodes exactly 64 lowercase or uppercase hex digits into 32 bytes.
fn hex32(s: &str, what: &str) -> Result<[u8; 32], BundleError> {
    if s.len() != 64 {
        return Err(bad_key(format!(
            "{what}: expected 64 hex digits, found {} characters",
            s.len()
        )));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| bad_key(format!("{what}: {e}")))?;
    Ok(out)
}

/// Splits `"<prefix> <body>"` with at most one trailing newline (`\n` or `\r\n`).
fn strip_text<'a>(s: &'a str, prefix: &str) -> Result<&'a str, BundleError> {
    let line = s
        .strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s);
    let body = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix(' '))
        .ok_or_else(|| bad_key(format!("expected a line starting with {prefix:?}")))?;
    Ok(body)
}

/// A site's secret signing key (ed25519).
///
/// `Debug` prints only the key id, never secret bytes.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        SecretKey(SigningKey::generate(&mut rand::rng()))
    }

    /// A key from its 32-byte seed (test vectors need fixed keys).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// `"berth-secret-key-v1 <64 hex of the seed>\n"`.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX} {}\n", hex::encode(self.0.to_bytes()))
    }

    /// Parses [`SecretKey::to_text`]'s form (one trailing newline allowed).
    pub fn from_text(s: &str) -> Result<Self, BundleError> {
        let body = strip_text(s, SECRET_PREFIX)?;
        Ok(SecretKey(SigningKey::from_bytes(&hex32(
            body,
            "secret key",
        )?)))
    }

    /// Signs `msg`; the 64-byte ed25519 signature.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// The X25519 secret of this key (the first half of SHA-512(seed), as RFC 8032 expands
    /// it and X25519 clamps it): decrypts what is sealed to [`PublicKey::x25519`] (SPEC part 3).
    pub(crate) fn x25519(&self) -> [u8; 32] {
        self.0.to_scalar_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("key_id", &self.public().key_id())
            .finish_non_exhaustive()
    }
}

/// A site's public key (ed25519): verifies bundles the site signed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// `"ed25519:"` + the first 16 bytes of sha256(public key bytes), lowercase hex.
    pub fn key_id(&self) -> KeyId {
        let digest = Sha256::digest(self.0.as_bytes());
        KeyId(format!("{KEY_ID_PREFIX}{}", hex::encode(&digest[..16])))
    }

    /// `"berth-public-key-v1 <64 hex>\n"`.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX} {}\n", self.to_hex())
    }

    /// Parses [`PublicKey::to_text`]'s form (one trailing newline allowed).
    pub fn from_text(s: &str) -> Result<Self, BundleError> {
        Self::from_hex(strip_text(s, PUBLIC_PREFIX)?)
    }

    /// The 32 key bytes as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Parses 64 hex digits; refuses bytes that are not a valid curve point.
    pub fn from_hex(s: &str) -> Result<Self, BundleError> {
        let bytes = hex32(s, "public key")?;
        Self::from_bytes(&bytes)
    }

    /// The key from its 32 bytes; refuses bytes that are not a valid curve point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, BundleError> {
        VerifyingKey::from_bytes(bytes)
            .map(PublicKey)
            .map_err(|_| bad_key("public key: not a valid ed25519 point"))
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The X25519 (Montgomery u-coordinate) form of this key: what bundles for its site are
    /// sealed to (SPEC part 3).
    pub(crate) fn x25519(&self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }

    /// `true` when `sig` is a valid signature of `msg` by this key.
    ///
    /// Uses `verify_strict`: refuses weak keys and non-canonical signatures, so a
    /// signature cannot be malleated into a second valid one.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        self.0.verify_strict(msg, &sig).is_ok()
    }
}

/// Names a public key: `"ed25519:"` + 32 lowercase hex digits
/// (the first 16 bytes of the sha256 of the public key).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct KeyId(String);

impl KeyId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses and checks the shape `ed25519:<32 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Self, BundleError> {
        let ok = s.strip_prefix(KEY_ID_PREFIX).is_some_and(|h| {
            h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if ok {
            Ok(KeyId(s.to_owned()))
        } else {
            Err(bad_key(format!(
                "key id {s:?} is not \"ed25519:\" followed by 32 lowercase hex digits"
            )))
        }
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KeyId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A key this site accepts bundles from, and what it accepts from it.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The key.
    pub public: PublicKey,
    /// The only site this key may sign for (the manifest's `sender.site` must equal it).
    pub site: String,
    /// The content kinds this key may send; `None` = any kind.
    pub kinds: Option<BTreeSet<String>>,
}

impl TrustedKey {
    /// `true` when this key may send content of `kind`.
    pub fn allows_kind(&self, kind: &str) -> bool {
        self.kinds.as_ref().is_none_or(|k| k.contains(kind))
    }
}

/// The keys a site trusts, by key id.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, TrustedKey>,
}

impl TrustedKeys {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `k`, replacing an earlier entry for the same key.
    pub fn add(&mut self, k: TrustedKey) {
        self.keys.insert(k.public.key_id(), k);
    }

    /// The trusted key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&TrustedKey> {
        self.keys.get(id)
    }

    /// Removes the key with this id, if present.
    pub fn remove(&mut self, id: &KeyId) {
        self.keys.remove(id);
    }

    /// The trusted keys in key-id order.
    pub fn iter(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.values()
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// `true` when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let sk = SecretKey::generate();
        let text = sk.to_text();
        assert!(text.starts_with("berth-secret-key-v1 ") && text.ends_with('\n'));
        assert_eq!(text.len(), "berth-secret-key-v1 ".len() + 64 + 1);
        let back = SecretKey::from_text(&text).unwrap();
        assert_eq!(back.public(), sk.public());

        let pk = sk.public();
        assert_eq!(PublicKey::from_text(&pk.to_text()).unwrap(), pk);
        assert_eq!(PublicKey::from_hex(&pk.to_hex()).unwrap(), pk);
        assert_eq!(
            PublicKey::from_text(pk.to_text().trim_end()).unwrap(),
            pk,
            "newline is optional"
        );
    }

    #[test]
    fn debug_hides_secret() {
        let sk = SecretKey::from_seed(&[7u8; 32]);
        let dbg = format!("{sk:?}");
        assert!(!dbg.contains(&hex::encode([7u8; 32])), "{dbg}");
        assert!(dbg.contains("ed25519:"));
    }

    #[test]
    fn malformed_key_text_is_refused() {
        let pk = SecretKey::from_seed(&[1; 32]).public().to_hex();
        for bad in [
            String::new(),
            "berth-public-key-v1".to_string(),
            format!("berth-public-key-v2 {pk}"),
            format!("berth-public-key-v1  {pk}"),
            format!("berth-public-key-v1 {}", &pk[..62]),
            format!("berth-public-key-v1 {pk}00"),
            format!("berth-public-key-v1 {pk}\n\n"),
            format!("berth-public-key-v1 {}zz", &pk[..62]),
            format!("berth-secret-key-v1 {pk}"),
        ] {
            let e = PublicKey::from_text(&bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::BadKey, "{bad:?}");
        }
        assert!(SecretKey::from_text(&format!("berth-public-key-v1 {pk}")).is_err());
    }

    #[test]
    fn key_id_shape_and_stability() {
        let pk = SecretKey::from_seed(&[0; 32]).public();
        let id = pk.key_id();
        assert!(KeyId::parse(id.as_str()).is_ok());
        assert_eq!(id.as_str().len(), "ed25519:".len() + 32);
        assert_eq!(id, pk.key_id());
        for bad in [
            "ed25519:",
            "ed25519:ABCDEF00112233445566778899aabbcc",
            "rsa:00112233445566778899aabbccddeeff",
            "ed25519:00112233445566778899aabbccddeeff00",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sign_and_verify() {
        let sk = SecretKey::generate();
        let sig = sk.sign(b"hello");
        assert!(sk.public().verify(b"hello", &sig));
        assert!(!sk.public().verify(b"hellO", &sig));
        assert!(!sk.public().verify(b"hello", &sig[..63]));
        assert!(!SecretKey::generate().public().verify(b"hello", &sig));
    }

    #[test]
    fn trusted_keys_by_id() {
        let pk = SecretKey::generate().public();
        let mut t = TrustedKeys::new();
        t.add(TrustedKey {
            public: pk.clone(),
            site: "hq".into(),
            kinds: Some(["changes".to_string()].into()),
        });
        let k = t.get(&pk.key_id()).unwrap();
        assert!(k.allows_kind("changes") && !k.allows_kind("upgrade"));
        assert_eq!(t.iter().count(), 1);
        t.remove(&pk.key_id());
        assert!(t.get(&pk.key_id()).is_none() && t.is_empty());
    }
}
