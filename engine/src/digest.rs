//! Replica digests (issue 16 part 2): a short summary of what a replica holds, per table and
//! per key bucket, so that two sites can tell whether they hold the same rows without
//! comparing every row, and when they do not, which few buckets differ.
//!
//! Principal types and the flow of data:
//! - [`compute`] reads each table once and returns [`Digests`]: per table a [`TableDigest`]
//!   (row count and XOR of the row hashes, overall and per non-empty bucket);
//! - [`to_json`] / [`parse`] are the digest's wire form; [`parse`] treats its input as hostile;
//! - [`compare`] (pure) lists the [`Mismatch`]es between two sites' digests;
//! - [`rows_in_buckets`] reads the rows of the differing buckets, as wire values, for a repair.
//!
//! ```no_run
//! use berth_engine::digest::{self, Scope};
//! # fn f(conn: &rusqlite::Connection, item: &berth_engine::table::TableInfo,
//! #      theirs: &digest::Digests) -> berth_engine::Result<()> {
//! let ours = digest::compute(conn, &[(item, Scope::All)])?;
//! for m in digest::compare(&ours, theirs) {
//!     println!("{}: bucket {:?}: {} rows here, {} there", m.table, m.bucket, m.ours_rows, m.theirs_rows);
//! }
//! # Ok(()) }
//! ```
//!
//! # Definition (what a second implementation must compute)
//!
//! All integers below are written big-endian; `len(x)` is the length of `x` in bytes as a
//! u64 (8 bytes).
//!
//! **Value.** Each SQLite value is one tag byte and its bytes:
//!
//! | storage class | bytes |
//! |---|---|
//! | NULL | `00` |
//! | INTEGER | `01`, the i64 (8 bytes) |
//! | REAL | `02`, the IEEE 754 bits of the f64 (8 bytes); -0.0 is written as 0.0 (`02 00..00`), because the journal does not carry the sign of zero |
//! | TEXT | `03`, `len(bytes)`, the bytes as SQLite stores them (not necessarily UTF-8; never re-encoded) |
//! | BLOB | `04`, `len(bytes)`, the bytes |
//!
//! SQLite stores no NaN (it becomes NULL), and the wire form spells NaN as null; a NaN value
//! is therefore written as NULL.
//!
//! **Row hash.** SHA-256 of `len(table) table` followed, for every column in the table's
//! column order (`berth_tables.cols`, [`TableInfo::cols`]), by `len(column) column value`;
//! the first 16 bytes of the SHA-256 are the row hash. Names are their UTF-8 bytes.
//!
//! **Bucket.** From the key alone: FNV-1a 64 (offset basis `0xcbf29ce484222325`, prime
//! `0x100000001b3`, over bytes) of the concatenated encodings of the key values in key order
//! ([`TableInfo::pk`]), modulo [`BUCKETS`] (64). A key as it travels in changes (wire
//! values, [`crate::value`]) is first converted to SQLite values ([`crate::value::to_sql`]):
//! `["t", "HEX"]` is text with those bytes, `["b", "HEX"]` a blob, a JSON integer an
//! INTEGER, any other JSON number a REAL.
//!
//! **Table digest.** The number of rows and the XOR of their row hashes, for the table and
//! for each bucket that holds at least one row. XOR is independent of the order rows are
//! read in; keys are unique, so two rows of one table never cancel by accident.
//!
//! **Wire form.** A JSON object, table name -> `{"rows": N, "xor": "H", "b": {"B": [N, "H"],
//! ...}}` where `H` is the 16 bytes as 32 hex digits (written lowercase, read in either
//! case), `B` a bucket number in decimal without leading zeros, and `b` lists exactly the
//! non-empty buckets (omitted when the table is empty). A reader refuses a digest whose
//! buckets do not add up to its table (counts summed, hashes XORed), a bucket not below 64,
//! a bucket listed with no rows, or a hash that is not 16 bytes. Unknown fields are ignored.
//!
//! # Scope and cost
//!
//! [`Scope::All`] takes every row; [`Scope::Held`] takes only the rows central records a node
//! as holding (`berth_node_rows`, the limited rows of a partial replica). Both read the whole
//! table once (`SELECT cols FROM t`); `Held` filters through an in-memory set of the listed
//! keys, so its cost follows the table's size, not the node's share. `compute` reads every
//! table inside one read transaction (one snapshot) when the connection is not already in
//! one. Figures: docs/BENCHMARKS.md, "Replica digests".

pub use crate::error::digest::{BUCKETS, DigestError};
use crate::error::{EngineError, Result};
use crate::store::ident;
use crate::table::TableInfo;
use crate::value::{Row, Sql, from_sql, parse_key, raw, to_sql, write_json};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Bytes kept of a row's SHA-256.
pub const HASH_LEN: usize = 16;

/// A row hash, or the XOR of several.
pub type Hash = [u8; HASH_LEN];

/// What a site holds of one table: row count and XOR of row hashes, overall and per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDigest {
    /// Number of rows.
    pub rows: u64,
    /// XOR of every row's hash.
    pub xor: Hash,
    /// Per non-empty bucket: its row count and the XOR of its rows' hashes.
    pub buckets: BTreeMap<u16, (u64, Hash)>,
}

/// Digests by table name.
pub type Digests = BTreeMap<String, TableDigest>;

/// Which rows of a table a digest covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every row of the table.
    All,
    /// Only the rows whose key central lists for this node in `berth_node_rows`.
    Held(String),
}

/// One difference between two sites' digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// The table.
    pub table: String,
    /// The bucket that differs; `None` when one side has no digest for the table at all.
    pub bucket: Option<u16>,
    /// Rows on our side (of the bucket, or of the table when `bucket` is `None`).
    pub ours_rows: u64,
    /// Rows on their side.
    pub theirs_rows: u64,
}

impl TableDigest {
    /// Adds one row.
    pub fn add(&mut self, bucket: u16, hash: &Hash) {
        self.rows += 1;
        xor_into(&mut self.xor, hash);
        let b = self.buckets.entry(bucket).or_insert((0, [0; HASH_LEN]));
        b.0 += 1;
        xor_into(&mut b.1, hash);
    }
}

fn xor_into(acc: &mut Hash, h: &Hash) {
    for (a, b) in acc.iter_mut().zip(h) {
        *a ^= b;
    }
}

// ---------------------------------------------------------------------------------------
// The definition: value encoding, row hash, bucket.
// ---------------------------------------------------------------------------------------

/// Appends a value's canonical encoding (module doc, "Value") to `out`.
pub fn encode_value(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push(0),
        ValueRef::Real(f) if f.is_nan() => out.push(0),
        ValueRef::Integer(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_be_bytes());
        }
        ValueRef::Real(f) => {
            out.push(2);
            // -0.0 == 0.0: both are written as +0.0.
            let f = if f == 0.0 { 0.0 } else { f };
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        ValueRef::Text(b) => bytes(out, 3, b),
        ValueRef::Blob(b) => bytes(out, 4, b),
    }
}

fn bytes(out: &mut Vec<u8>, tag: u8, b: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

fn name(out: &mut Vec<u8>, n: &str) {
    out.extend_from_slice(&(n.len() as u64).to_be_bytes());
    out.extend_from_slice(n.as_bytes());
}

/// FNV-1a 64, written out: std's hashers may change between releases, and buckets are
/// compared across sites and versions.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    const fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn bucket(self) -> u16 {
        // The remainder is below BUCKETS, which fits u16.
        (self.0 % u64::from(BUCKETS)) as u16
    }
}

/// The bucket of a key given as SQLite values, in key order.
pub fn bucket_of_values(key: &[ValueRef<'_>]) -> u16 {
    let mut buf = Vec::new();
    for v in key {
        encode_value(&mut buf, *v);
    }
    let mut f = Fnv::new();
    f.write(&buf);
    f.bucket()
}

/// The bucket of a key as it travels in changes (wire values, in key order); `None` when a
/// value is not a valid wire value.
pub fn bucket_of_key(key: &[Json]) -> Option<u16> {
    let mut buf = Vec::new();
    for v in key {
        match to_sql(v)? {
            Sql::Value(v) => encode_value(&mut buf, ValueRef::from(&v)),
            Sql::Bytes(b) => encode_value(&mut buf, ValueRef::Text(&b)),
        }
    }
    let mut f = Fnv::new();
    f.write(&buf);
    Some(f.bucket())
}

/// The hash of one row: `values` in the order of `cols` (module doc, "Row hash").
pub fn row_hash<S: AsRef<str>>(table: &str, cols: &[S], values: &[ValueRef<'_>]) -> Hash {
    let mut buf = Vec::new();
    name(&mut buf, table);
    for (c, v) in cols.iter().zip(values) {
        name(&mut buf, c.as_ref());
        encode_value(&mut buf, *v);
    }
    truncate(Sha256::digest(&buf).as_slice())
}

fn truncate(full: &[u8]) -> Hash {
    let mut h = [0; HASH_LEN];
    for (d, s) in h.iter_mut().zip(full) {
        *d = *s;
    }
    h
}

// ---------------------------------------------------------------------------------------
// Reading tables.
// ---------------------------------------------------------------------------------------

/// A table prepared for hashing: its SELECT, where its key columns sit among the columns,
/// the encoded column names, and SHA-256 already fed with the table name.
struct Shape {
    select: String,
    key: Vec<usize>,
    names: Vec<Vec<u8>>,
    prefix: Sha256,
}

impl Shape {
    fn new(t: &TableInfo) -> Result<Self> {
        let key =
            t.pk.iter()
                .map(|k| {
                    t.cols
                        .iter()
                        .position(|c| c == k)
                        .ok_or_else(|| EngineError::Schema {
                            table: t.name.clone(),
                            reason: format!("key column {k:?} is not among the table's columns"),
                        })
                })
                .collect::<Result<Vec<_>>>()?;
        let cols = t.cols.iter().map(|c| ident(c)).collect::<Vec<_>>();
        let select = format!("SELECT {} FROM {}", cols.join(", "), ident(&t.name));
        let names = t
            .cols
            .iter()
            .map(|c| {
                let mut b = Vec::with_capacity(8 + c.len());
                name(&mut b, c);
                b
            })
            .collect();
        let mut head = Vec::new();
        name(&mut head, &t.name);
        let mut prefix = Sha256::new();
        prefix.update(&head);
        Ok(Shape {
            select,
            key,
            names,
            prefix,
        })
    }

    /// The bucket of a row read by [`Shape::select`]; `buf` is scratch space.
    fn bucket(&self, r: &rusqlite::Row<'_>, buf: &mut Vec<u8>) -> Result<u16> {
        buf.clear();
        for &i in &self.key {
            encode_value(buf, r.get_ref(i)?);
        }
        let mut f = Fnv::new();
        f.write(buf);
        Ok(f.bucket())
    }
}

/// The keys central lists for a node in one table, each as the text `serde_json` writes for
/// the wire key: listed text parsed ([`parse_key`]) and written again as the stored values
/// would be ([`canonical`]), so that spellings of one key agree.
struct HeldKeys {
    keys: HashSet<Vec<u8>>,
    buf: Vec<u8>,
}

impl HeldKeys {
    fn load(conn: &Connection, node: &str, table: &str) -> Result<Self> {
        let mut st =
            conn.prepare_cached("SELECT pk FROM berth_node_rows WHERE node = ?1 AND tbl = ?2")?;
        let mut rows = st.query(params![node, table])?;
        let mut keys = HashSet::new();
        while let Some(r) = rows.next()? {
            // A listed key that does not parse names no row; it cannot match one.
            if let Some(k) = parse_key(raw(r.get_ref(0)?)).and_then(|k| canonical(&k)) {
                keys.insert(Json::Array(k).to_string().into_bytes());
            }
        }
        Ok(HeldKeys {
            keys,
            buf: Vec::new(),
        })
    }

    /// True when the row's key is listed.
    fn holds(&mut self, r: &rusqlite::Row<'_>, key: &[usize]) -> Result<bool> {
        // What `value::write_key` writes (the text of the wire key), without collecting the
        // values first.
        self.buf.clear();
        self.buf.push(b'[');
        for (n, &i) in key.iter().enumerate() {
            if n > 0 {
                self.buf.push(b',');
            }
            // Writing into a Vec cannot fail.
            let _ = write_json(&mut self.buf, r.get_ref(i)?);
        }
        self.buf.push(b']');
        Ok(self.keys.contains(self.buf.as_slice()))
    }
}

/// A wire key as [`from_sql`] would write the values it stands for (hex in upper case, a
/// tagged text that is UTF-8 as a plain string, a real as its shortest text); `None` when a
/// value is not a wire value. Two spellings of the same key are equal after this.
pub fn canonical(key: &[Json]) -> Option<Vec<Json>> {
    key.iter()
        .map(|v| {
            Some(match to_sql(v)? {
                Sql::Value(v) => from_sql(ValueRef::from(&v)),
                Sql::Bytes(b) => from_sql(ValueRef::Text(&b)),
            })
        })
        .collect()
}

fn held(conn: &Connection, t: &TableInfo, scope: &Scope) -> Result<Option<HeldKeys>> {
    Ok(match scope {
        Scope::All => None,
        Scope::Held(node) => Some(HeldKeys::load(conn, node, &t.name)?),
    })
}

/// A read transaction around several statements, unless the caller already holds one.
fn snapshot(conn: &Connection) -> Result<Option<Transaction<'_>>> {
    Ok(if conn.is_autocommit() {
        Some(conn.unchecked_transaction()?)
    } else {
        None
    })
}

/// Digests of the given tables, each over the rows its scope takes. Every table is read once,
/// all of them in one snapshot.
pub fn compute(conn: &Connection, tables: &[(&TableInfo, Scope)]) -> Result<Digests> {
    let _snapshot = snapshot(conn)?;
    let mut out = Digests::new();
    for (t, scope) in tables {
        out.insert(t.name.clone(), table_digest(conn, t, scope)?);
    }
    Ok(out)
}

fn table_digest(conn: &Connection, t: &TableInfo, scope: &Scope) -> Result<TableDigest> {
    let shape = Shape::new(t)?;
    let mut held = held(conn, t, scope)?;
    let mut st = conn.prepare(&shape.select)?;
    let mut rows = st.query([])?;
    // Buckets in a fixed array while reading (no map lookup per row), kept if non-empty.
    let mut acc = [(0u64, [0u8; HASH_LEN]); BUCKETS as usize];
    // Reused for every row: the row's bytes after the table name, and where each key
    // value's encoding sits in them.
    let mut buf = Vec::with_capacity(256);
    let mut at = vec![(0, 0); shape.names.len()];
    while let Some(r) = rows.next()? {
        if let Some(h) = held.as_mut()
            && !h.holds(r, &shape.key)?
        {
            continue;
        }
        buf.clear();
        for (i, (n, span)) in shape.names.iter().zip(at.iter_mut()).enumerate() {
            buf.extend_from_slice(n);
            let start = buf.len();
            encode_value(&mut buf, r.get_ref(i)?);
            *span = (start, buf.len());
        }
        let mut f = Fnv::new();
        for &k in &shape.key {
            if let Some(&(s, e)) = at.get(k)
                && let Some(b) = buf.get(s..e)
            {
                f.write(b);
            }
        }
        let mut sha = shape.prefix.clone();
        sha.update(&buf);
        let h = truncate(sha.finalize().as_slice());
        if let Some(b) = acc.get_mut(usize::from(f.bucket())) {
            b.0 += 1;
            xor_into(&mut b.1, &h);
        }
    }
    let mut d = TableDigest::default();
    for (b, (n, h)) in (0..BUCKETS).zip(acc) {
        if n > 0 {
            d.rows += n;
            xor_into(&mut d.xor, &h);
            d.buckets.insert(b, (n, h));
        }
    }
    Ok(d)
}

/// Every row of the given buckets (of the rows `scope` takes), as wire values: the key in key
/// order and the row by column, handed to `sink` one by one (for a repair).
pub fn rows_in_buckets(
    conn: &Connection,
    table: &TableInfo,
    scope: &Scope,
    buckets: &BTreeSet<u16>,
    mut sink: impl FnMut(Vec<Json>, Row) -> Result<()>,
) -> Result<()> {
    if buckets.is_empty() {
        return Ok(());
    }
    let _snapshot = snapshot(conn)?;
    let shape = Shape::new(table)?;
    let mut held = held(conn, table, scope)?;
    let mut st = conn.prepare(&shape.select)?;
    let mut rows = st.query([])?;
    let mut buf = Vec::new();
    while let Some(r) = rows.next()? {
        if !buckets.contains(&shape.bucket(r, &mut buf)?) {
            continue;
        }
        if let Some(h) = held.as_mut()
            && !h.holds(r, &shape.key)?
        {
            continue;
        }
        let key = shape
            .key
            .iter()
            .map(|&i| Ok(from_sql(r.get_ref(i)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut row = Row::new();
        for (i, c) in table.cols.iter().enumerate() {
            row.insert(c.clone(), from_sql(r.get_ref(i)?));
        }
        sink(key, row)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Comparing.
// ---------------------------------------------------------------------------------------

/// Where two sites' digests differ: a table one side has no digest for (`bucket: None`), or
/// each bucket whose count or hash differs. Tables and buckets in ascending order.
pub fn compare(ours: &Digests, theirs: &Digests) -> Vec<Mismatch> {
    let tables: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    let mut out = Vec::new();
    for t in tables {
        let (o, th) = match (ours.get(t), theirs.get(t)) {
            (Some(o), Some(th)) => (o, th),
            (o, th) => {
                out.push(Mismatch {
                    table: t.clone(),
                    bucket: None,
                    ours_rows: o.map_or(0, |d| d.rows),
                    theirs_rows: th.map_or(0, |d| d.rows),
                });
                continue;
            }
        };
        if o == th {
            continue;
        }
        let buckets: BTreeSet<&u16> = o.buckets.keys().chain(th.buckets.keys()).collect();
        for b in buckets {
            let (x, y) = (o.buckets.get(b), th.buckets.get(b));
            if x != y {
                out.push(Mismatch {
                    table: t.clone(),
                    bucket: Some(*b),
                    ours_rows: x.map_or(0, |e| e.0),
                    theirs_rows: y.map_or(0, |e| e.0),
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Wire form.
// ---------------------------------------------------------------------------------------

/// The wire form as written.
#[derive(Serialize)]
struct WireOut {
    rows: u64,
    xor: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    b: BTreeMap<u16, (u64, String)>,
}

/// The wire form as read: bucket numbers kept as written until checked.
#[derive(Deserialize)]
struct WireIn {
    rows: u64,
    xor: String,
    #[serde(default)]
    b: BTreeMap<String, (u64, String)>,
}

impl Serialize for TableDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireOut {
            rows: self.rows,
            xor: hex::encode(self.xor),
            b: self
                .buckets
                .iter()
                .map(|(b, (n, h))| (*b, (*n, hex::encode(h))))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for TableDigest {
    /// Checked as [`parse`] checks; errors name no table (the caller knows it).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        check(WireIn::deserialize(d)?, "").map_err(serde::de::Error::custom)
    }
}

/// The wire form of digests: compact JSON, tables and buckets in ascending order.
pub fn to_json(d: &Digests) -> String {
    let mut out = String::from("{");
    for (i, (t, td)) in d.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Json::from(t.as_str()).to_string());
        out.push_str(&format!(
            ":{{\"rows\":{},\"xor\":\"{}\"",
            td.rows,
            hex::encode(td.xor)
        ));
        if !td.buckets.is_empty() {
            out.push_str(",\"b\":{");
            for (j, (b, (n, h))) in td.buckets.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                out.push_str(&format!("\"{b}\":[{n},\"{}\"]", hex::encode(h)));
            }
            out.push('}');
        }
        out.push('}');
    }
    out.push('}');
    out
}

/// Reads digests received from another site, refusing any that cannot be right (module doc,
/// "Wire form"): never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> std::result::Result<Digests, DigestError> {
    let raw: BTreeMap<String, WireIn> = serde_json::from_slice(bytes)?;
    raw.into_iter()
        .map(|(t, w)| {
            let d = check(w, &t)?;
            Ok((t, d))
        })
        .collect()
}

fn hash(hex_text: &str, table: &str, what: impl FnOnce() -> String) -> Result<Hash, DigestError> {
    let mut h = [0; HASH_LEN];
    match hex::decode_to_slice(hex_text, &mut h) {
        Ok(()) => Ok(h),
        Err(_) => Err(DigestError::Hash {
            table: table.to_string(),
            what: what(),
        }),
    }
}

fn check(w: WireIn, table: &str) -> Result<TableDigest, DigestError> {
    let xor = hash(&w.xor, table, || "xor".into())?;
    let mut buckets = BTreeMap::new();
    let (mut sum, mut all) = (0u64, [0u8; HASH_LEN]);
    for (text, (n, h)) in &w.b {
        let bucket = text
            .parse::<u16>()
            .ok()
            .filter(|b| *b < BUCKETS && b.to_string() == *text)
            .ok_or_else(|| DigestError::Bucket {
                table: table.to_string(),
                bucket: text.chars().take(40).collect(),
            })?;
        if *n == 0 {
            return Err(DigestError::EmptyBucket {
                table: table.to_string(),
                bucket,
            });
        }
        let h = hash(h, table, || format!("bucket {bucket}"))?;
        sum = sum.checked_add(*n).ok_or_else(|| DigestError::Sum {
            table: table.to_string(),
            reason: "the bucket counts overflow".into(),
        })?;
        xor_into(&mut all, &h);
        buckets.insert(bucket, (*n, h));
    }
    if sum != w.rows {
        return Err(DigestError::Sum {
            table: table.to_string(),
            reason: format!("{sum} rows in buckets, {} in the table", w.rows),
        });
    }
    if all != xor {
        return Err(DigestError::Sum {
            table: table.to_string(),
            reason: "the buckets' hashes do not combine to the table's".into(),
        });
    }
    Ok(TableDigest {
        rows: w.rows,
        xor,
        buckets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed vectors, computed independently (Python's hashlib over the bytes the module doc
    /// defines): a change to the encoding shows here first.
    #[test]
    fn encoding_matches_the_definition() {
        let mut b = Vec::new();
        for v in [
            ValueRef::Null,
            ValueRef::Integer(-2),
            ValueRef::Real(-0.0),
            ValueRef::Real(1.5),
            ValueRef::Text(b"a\xff"),
            ValueRef::Blob(&[]),
        ] {
            encode_value(&mut b, v);
        }
        assert_eq!(
            hex::encode(&b),
            concat!(
                "00",
                "01fffffffffffffffe",
                "020000000000000000",
                "023ff8000000000000",
                "03000000000000000261ff",
                "040000000000000000"
            )
        );
    }

    #[test]
    fn fnv_is_fnv1a_64() {
        // Published FNV-1a 64 test vectors.
        let mut f = Fnv::new();
        f.write(b"");
        assert_eq!(f.0, 0xcbf2_9ce4_8422_2325);
        let mut f = Fnv::new();
        f.write(b"a");
        assert_eq!(f.0, 0xaf63_dc4c_8601_ec8c);
        let mut f = Fnv::new();
        f.write(b"foobar");
        assert_eq!(f.0, 0x8594_4171_f739_67e8);
    }

    #[test]
    fn compare_reports_missing_tables_and_differing_buckets_only() {
        let mut a = TableDigest::default();
        a.add(3, &[1; HASH_LEN]);
        a.add(9, &[2; HASH_LEN]);
        let mut b = a.clone();
        b.add(9, &[4; HASH_LEN]);
        let ours = Digests::from([("t".into(), a.clone()), ("only_ours".into(), a)]);
        let theirs = Digests::from([("t".into(), b)]);
        assert_eq!(
            compare(&ours, &theirs),
            vec![
                Mismatch {
                    table: "only_ours".into(),
                    bucket: None,
                    ours_rows: 2,
                    theirs_rows: 0
                },
                Mismatch {
                    table: "t".into(),
                    bucket: Some(9),
                    ours_rows: 1,
                    theirs_rows: 2
                },
            ]
        );
        assert!(compare(&theirs, &theirs).is_empty());
    }

    #[test]
    fn wire_form_round_trips_and_serde_agrees() {
        let mut d = TableDigest::default();
        for (b, x) in [(7u16, 1u8), (10, 2), (7, 3), (63, 4)] {
            d.add(b, &[x; HASH_LEN]);
        }
        let all = Digests::from([
            ("it\"em".into(), d),
            ("empty".into(), TableDigest::default()),
        ]);
        let text = to_json(&all);
        assert_eq!(text, serde_json::to_string(&all).unwrap());
        assert!(text.contains(r#""b":{"7":[2,"02020202020202020202020202020202"],"10":"#));
        assert_eq!(parse(text.as_bytes()).unwrap(), all);
        let one: TableDigest =
            serde_json::from_value(serde_json::to_value(&all["it\"em"]).unwrap()).unwrap();
        assert_eq!(one, all["it\"em"]);
    }

    #[test]
    fn row_hash_and_bucket_vectors() {
        let h = row_hash(
            "item",
            &["id", "n", "x", "v"],
            &[
                ValueRef::Text(b"k1"),
                ValueRef::Integer(5),
                ValueRef::Real(-0.0),
                ValueRef::Null,
            ],
        );
        assert_eq!(hex::encode(h), "8c69206140b5ce0cf97182f80ba69c33");
        assert_eq!(bucket_of_values(&[ValueRef::Text(b"k1")]), 60);
        assert_eq!(
            bucket_of_values(&[ValueRef::Text(b"k1"), ValueRef::Integer(-1)]),
            63
        );
        assert_eq!(
            bucket_of_key(&[serde_json::json!("k1"), serde_json::json!(-1)]),
            Some(63)
        );
    }
}
