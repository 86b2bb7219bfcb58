//! Row values as they travel: JSON numbers, strings and null, and blobs as `["b", "HEX"]`.
//!
//! The capture triggers produce exactly this form with `json_object` (see `capture`), so a
//! change read from the log is already wire-ready.

use rusqlite::types::{Value, ValueRef};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// A row: column name -> value in wire form.
pub type Row = BTreeMap<String, Json>;

/// Converts a wire value to an SQLite value. `None` when the JSON is not a valid wire value.
pub fn to_sql(v: &Json) -> Option<Value> {
    Some(match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Integer(i64::from(*b)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Integer(i)
            } else {
                Value::Real(n.as_f64()?)
            }
        }
        Json::String(s) => Value::Text(s.clone()),
        Json::Array(a) => match a.as_slice() {
            [Json::String(tag), Json::String(h)] if tag == "b" => Value::Blob(hex::decode(h).ok()?),
            _ => return None,
        },
        Json::Object(_) => return None,
    })
}

/// Converts an SQLite value to wire form.
pub fn from_sql(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => Json::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        ValueRef::Text(t) => Json::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Json::Array(vec![Json::from("b"), Json::from(hex::encode_upper(b))]),
    }
}

/// Writes an SQLite value in wire form, byte for byte what `serde_json` writes for
/// [`from_sql`]'s result, without building it (the extract's hot path: no allocation for
/// numbers and valid text).
pub fn write_json<W: std::io::Write>(out: &mut W, v: ValueRef<'_>) -> std::io::Result<()> {
    let done = match v {
        ValueRef::Null => return out.write_all(b"null"),
        ValueRef::Integer(i) => serde_json::to_writer(&mut *out, &i),
        // Not finite: `from_sql` makes it null, as serde_json writes it.
        ValueRef::Real(f) => serde_json::to_writer(&mut *out, &f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => serde_json::to_writer(&mut *out, s),
            Err(_) => serde_json::to_writer(&mut *out, &String::from_utf8_lossy(t)),
        },
        ValueRef::Blob(_) => serde_json::to_writer(&mut *out, &from_sql(v)),
    };
    done.map_err(std::io::Error::other)
}

/// Writes the key text of a row's key values into `out` (cleared first): what `serde_json`
/// writes for the array of their wire forms, the text `berth_node_rows`, `berth_instances`
/// and `berth_edges` store.
pub fn write_key<'a>(out: &mut Vec<u8>, values: impl IntoIterator<Item = ValueRef<'a>>) {
    out.clear();
    out.push(b'[');
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing into a Vec cannot fail.
        let _ = write_json(out, v);
    }
    out.push(b']');
}

/// Equality as SQLite would see it: 1 and 1.0 are the same number.
pub fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// Parses a row object from the log's JSON text.
pub fn parse_row(text: &str) -> Option<Row> {
    match serde_json::from_str::<Json>(text).ok()? {
        Json::Object(m) => Some(m.into_iter().collect()),
        _ => None,
    }
}

/// Binds a wire value to a statement parameter without copying text (the merge's hot path).
#[derive(Debug, Clone, Copy)]
pub struct Bind<'a>(pub &'a Json);

impl Bind<'_> {
    /// True when the value is a valid wire value (what [`to_sql`] accepts).
    pub fn is_valid(&self) -> bool {
        match self.0 {
            Json::Object(_) => false,
            Json::Array(_) => to_sql(self.0).is_some(),
            Json::Number(n) => n.as_i64().is_some() || n.as_f64().is_some(),
            _ => true,
        }
    }
}

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput;
        Ok(match self.0 {
            Json::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Json::String(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            other => match to_sql(other) {
                Some(v) => ToSqlOutput::Owned(v),
                None => {
                    return Err(rusqlite::Error::InvalidParameterName(
                        "not a wire value".into(),
                    ));
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_storage_class() {
        for v in [
            Value::Null,
            Value::Integer(-7),
            Value::Real(1.5),
            Value::Text("Keith Palmer".into()),
            Value::Blob(vec![0, 1, 255]),
        ] {
            let j = from_sql(ValueRef::from(&v));
            assert_eq!(to_sql(&j), Some(v));
        }
    }

    fn written(v: ValueRef<'_>) -> String {
        let mut out = Vec::new();
        write_json(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    proptest::proptest! {
        /// The direct writer and `from_sql` then serde_json agree on every value: any
        /// integer, any bit pattern of a real (NaN and infinities included), any text (valid
        /// or not as UTF-8, control characters and quotes included), any blob.
        #[test]
        fn write_json_is_what_serde_writes_for_from_sql(
            i in proptest::num::i64::ANY,
            bits in proptest::num::u64::ANY,
            text in ".*",
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..24),
        ) {
            let f = f64::from_bits(bits);
            for v in [
                ValueRef::Null,
                ValueRef::Integer(i),
                ValueRef::Real(f),
                ValueRef::Real(bits as f64),
                ValueRef::Text(text.as_bytes()),
                ValueRef::Text(&bytes),
                ValueRef::Blob(&bytes),
            ] {
                proptest::prop_assert_eq!(written(v), serde_json::to_string(&from_sql(v)).unwrap());
            }
            let key = [ValueRef::Text(text.as_bytes()), ValueRef::Integer(i), ValueRef::Real(f)];
            let mut out = b"left over".to_vec();
            write_key(&mut out, key);
            let json: Vec<Json> = key.iter().map(|v| from_sql(*v)).collect();
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&json).unwrap());
        }
    }

    #[test]
    fn integers_and_reals_compare_like_sqlite() {
        assert!(same(&serde_json::json!(1), &serde_json::json!(1.0)));
        assert!(!same(&serde_json::json!(1), &serde_json::json!("1")));
    }

    #[test]
    fn bind_writes_what_to_sql_would() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        for v in [
            serde_json::json!("text"),
            serde_json::json!(7),
            serde_json::json!(2.5),
            Json::Null,
            serde_json::json!(["b", "00ff"]),
        ] {
            assert!(Bind(&v).is_valid());
            let got: Value = c.query_row("SELECT ?1", [Bind(&v)], |r| r.get(0)).unwrap();
            assert_eq!(Some(got), to_sql(&v));
        }
        assert!(!Bind(&serde_json::json!({"a": 1})).is_valid());
        assert!(!Bind(&serde_json::json!(["b", "zz"])).is_valid());
    }

    #[test]
    fn malformed_wire_values_are_refused() {
        assert_eq!(to_sql(&serde_json::json!(["x", "00"])), None);
        assert_eq!(to_sql(&serde_json::json!(["b", "zz"])), None);
        assert_eq!(to_sql(&serde_json::json!({"a": 1})), None);
    }
}
