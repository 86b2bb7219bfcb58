//! Row values as they travel (SPEC 2.4): JSON null, integers, reals (written so that they
//! parse back bit for bit), and UTF-8 text as JSON strings; what JSON cannot spell is a tagged
//! array: blobs `["b", "HEX"]`, text that is not valid UTF-8 `["t", "HEX"]` (its bytes, as
//! SQLite stored them), and the infinities `["r", "inf"]`, `["r", "-inf"]`.
//!
//! The capture triggers journal rows with SQLite's own `json_object`, whatever SQLite the
//! writer links ([`crate::capture`]); [`parse_log`] reads that text back exactly, bytes that
//! are not UTF-8 and reals journaled as `["r", "<%!.20e text>"]` included.

use rusqlite::types::{Value, ValueRef};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// A row: column name -> value in wire form.
pub type Row = BTreeMap<String, Json>;

/// Serializes a key stored as JSON text (`["O1"]`) as the JSON it spells, for `--json`
/// output that holds values rather than JSON strings; text that is not JSON stays a string.
pub fn serialize_key_text<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize as _;
    match serde_json::from_str::<Json>(text) {
        Ok(v) => v.serialize(s),
        Err(_) => s.serialize_str(text),
    }
}

/// A wire value decoded for binding: text that is not UTF-8 keeps its bytes, which
/// [`Value`] cannot hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Sql {
    /// Any value [`Value`] holds.
    Value(Value),
    /// Text whose bytes are not valid UTF-8, bound as text.
    Bytes(Vec<u8>),
}

impl rusqlite::ToSql for Sql {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput;
        Ok(match self {
            Sql::Value(v) => ToSqlOutput::Borrowed(ValueRef::from(v)),
            Sql::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Text(b)),
        })
    }
}

/// Converts a wire value to an SQLite value. `None` when the JSON is not a valid wire value.
pub fn to_sql(v: &Json) -> Option<Sql> {
    Some(Sql::Value(match v {
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
            [Json::String(tag), Json::String(h)] => match tag.as_str() {
                "b" => Value::Blob(hex::decode(h).ok()?),
                "t" => {
                    let bytes = hex::decode(h).ok()?;
                    return Some(match String::from_utf8(bytes) {
                        Ok(s) => Sql::Value(Value::Text(s)),
                        Err(e) => Sql::Bytes(e.into_bytes()),
                    });
                }
                "r" => Value::Real(infinity(h)?),
                _ => return None,
            },
            _ => return None,
        },
        Json::Object(_) => return None,
    }))
}

/// The infinity a tagged real spells (`inf`, `-inf`).
fn infinity(text: &str) -> Option<f64> {
    match text {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The wire form of a real: a JSON number (serde_json writes the shortest text that parses
/// back to the same bits), or the tagged infinity. SQLite stores no NaN (it becomes NULL).
fn real(f: f64) -> Json {
    match serde_json::Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::Null,
        None => tagged("r", if f > 0.0 { "inf" } else { "-inf" }.to_string()),
    }
}

fn tagged(tag: &str, body: String) -> Json {
    Json::Array(vec![Json::from(tag), Json::String(body)])
}

/// The wire form of text bytes: a JSON string when they are UTF-8, else their hex, tagged.
pub fn text(bytes: &[u8]) -> Json {
    match std::str::from_utf8(bytes) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => tagged("t", hex::encode_upper(bytes)),
    }
}

/// Converts an SQLite value to wire form.
pub fn from_sql(v: ValueRef<'_>) -> Json {
    match v {
        ValueRef::Null => Json::Null,
        ValueRef::Integer(i) => Json::from(i),
        ValueRef::Real(f) => real(f),
        ValueRef::Text(t) => text(t),
        ValueRef::Blob(b) => tagged("b", hex::encode_upper(b)),
    }
}

/// Writes an SQLite value in wire form, byte for byte what `serde_json` writes for
/// [`from_sql`]'s result, without building it (the extract's hot path: no allocation for
/// numbers and valid text).
pub fn write_json<W: std::io::Write>(out: &mut W, v: ValueRef<'_>) -> std::io::Result<()> {
    let done = match v {
        ValueRef::Null => return out.write_all(b"null"),
        ValueRef::Integer(i) => serde_json::to_writer(&mut *out, &i),
        ValueRef::Real(f) if f.is_finite() => serde_json::to_writer(&mut *out, &f),
        ValueRef::Text(t) => match std::str::from_utf8(t) {
            Ok(s) => serde_json::to_writer(&mut *out, s),
            Err(_) => serde_json::to_writer(&mut *out, &from_sql(v)),
        },
        ValueRef::Real(_) | ValueRef::Blob(_) => serde_json::to_writer(&mut *out, &from_sql(v)),
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
            // Exactly, as SQLite compares an integer with a real (not as two doubles).
            (Some(i), None) => y.as_f64().is_some_and(|f| int_is_real(i, f)),
            (None, Some(j)) => x.as_f64().is_some_and(|f| int_is_real(j, f)),
            (None, None) => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// True when the real is exactly the integer.
fn int_is_real(i: i64, f: f64) -> bool {
    // 2^63 as a double: every double in [-2^63, 2^63) converts to i64 exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) && f as i64 == i
}

/// Parses a row from the log's JSON text (see [`parse_row_bytes`]).
pub fn parse_row(text: &str) -> Option<Row> {
    parse_row_bytes(text.as_bytes())
}

/// Parses a row journaled by the capture triggers (or by berth) into wire values: one JSON
/// object, or, for a table too wide for one `json_object` call, an array of objects. Reals
/// journaled as `["r", "<text>"]` become JSON numbers (or the tagged infinities), text whose
/// bytes are not UTF-8 becomes `["t", "HEX"]`.
pub fn parse_row_bytes(bytes: &[u8]) -> Option<Row> {
    let mut row = Row::new();
    let mut add = |m: serde_json::Map<String, Json>| {
        for (c, v) in m {
            row.insert(c, wire(v));
        }
    };
    match parse_log(bytes)? {
        Json::Object(m) => add(m),
        Json::Array(parts) => {
            for p in parts {
                let Json::Object(m) = p else { return None };
                add(m);
            }
        }
        _ => return None,
    }
    Some(row)
}

/// The bytes of a text or blob value (empty for any other).
pub fn raw(v: ValueRef<'_>) -> &[u8] {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => b,
        _ => &[],
    }
}

/// A row column of `berth_log` (`old`, `new`), parsed; `None` for NULL or what is not a row.
pub fn log_row(v: ValueRef<'_>) -> Option<Row> {
    match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => parse_row_bytes(b),
        _ => None,
    }
}

/// Parses a key journaled by the capture triggers into wire values.
pub fn parse_key(bytes: &[u8]) -> Option<Vec<Json>> {
    match parse_log(bytes)? {
        Json::Array(a) => Some(a.into_iter().map(wire).collect()),
        _ => None,
    }
}

/// A journaled value in wire form: a real journaled as text becomes the real.
fn wire(v: Json) -> Json {
    if let Json::Array(a) = &v
        && let [Json::String(tag), Json::String(body)] = a.as_slice()
        && tag == "r"
        && infinity(body).is_none()
    {
        return match parse_real(body.as_bytes()) {
            Some(f) => real(f),
            None => v,
        };
    }
    v
}

/// A real as SQLite's `printf` or `json_object` spells it (`Inf`, `-Inf` included).
fn parse_real(text: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(text).ok()?.trim();
    match s {
        "Inf" | "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// Parses JSON as SQLite's JSON functions write it, whatever the bytes: strings may hold
/// bytes that are not UTF-8 (SQLite copies text as it is stored), which become `["t", "HEX"]`,
/// and numbers may be `Inf` or `-Inf`. `None` when the text is not such JSON.
pub fn parse_log(bytes: &[u8]) -> Option<Json> {
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.contains("Inf")
        && !s.contains("NaN")
        && let Ok(v) = serde_json::from_str(s)
    {
        return Some(v);
    }
    let mut p = Lenient { b: bytes, i: 0 };
    let v = p.value(0)?;
    p.ws();
    (p.i == bytes.len()).then_some(v)
}

/// The slow path of [`parse_log`].
struct Lenient<'a> {
    b: &'a [u8],
    i: usize,
}

impl Lenient<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > 64 {
            return None;
        }
        self.ws();
        match *self.b.get(self.i)? {
            b'{' => {
                self.i += 1;
                let mut m = serde_json::Map::new();
                if self.eat(b'}').is_some() {
                    return Some(Json::Object(m));
                }
                loop {
                    self.ws();
                    let k = match self.string()? {
                        Json::String(k) => k,
                        other => other.to_string(),
                    };
                    self.eat(b':')?;
                    m.insert(k, self.value(depth + 1)?);
                    if self.eat(b'}').is_some() {
                        return Some(Json::Object(m));
                    }
                    self.eat(b',')?;
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                if self.eat(b']').is_some() {
                    return Some(Json::Array(a));
                }
                loop {
                    a.push(self.value(depth + 1)?);
                    if self.eat(b']').is_some() {
                        return Some(Json::Array(a));
                    }
                    self.eat(b',')?;
                }
            }
            b'"' => self.string(),
            _ => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
                {
                    self.i += 1;
                }
                let tok = &self.b[start..self.i];
                match tok {
                    b"null" | b"NaN" | b"-NaN" => Some(Json::Null),
                    b"true" => Some(Json::Bool(true)),
                    b"false" => Some(Json::Bool(false)),
                    _ if !tok.iter().any(|c| b".eEIn".contains(c)) => {
                        let s = std::str::from_utf8(tok).ok()?;
                        match s.parse::<i64>() {
                            Ok(i) => Some(Json::from(i)),
                            Err(_) => parse_real(tok).map(real),
                        }
                    }
                    _ => parse_real(tok).map(real),
                }
            }
        }
    }

    /// A string at the cursor: its bytes, escapes decoded.
    fn string(&mut self) -> Option<Json> {
        if self.b.get(self.i) != Some(&b'"') {
            return None;
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return Some(text(&out)),
                b'\\' => {
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let mut unit = self.hex4()?;
                            if (0xD800..0xDC00).contains(&unit)
                                && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                let low = self.hex4()?;
                                if (0xDC00..0xE000).contains(&low) {
                                    unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                                } else {
                                    self.i = save;
                                }
                            }
                            push_code(&mut out, unit);
                        }
                        other => out.push(other),
                    }
                }
                other => out.push(other),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        self.i += 4;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    }
}

/// Appends a code point as UTF-8; a lone surrogate is written as SQLite would store it
/// (its three-byte form, which is not valid UTF-8).
fn push_code(out: &mut Vec<u8>, c: u32) {
    match char::from_u32(c) {
        Some(ch) => {
            let mut buf = [0u8; 4];
            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
        None => out.extend_from_slice(&[
            0xE0 | ((c >> 12) & 0x0F) as u8,
            0x80 | ((c >> 6) & 0x3F) as u8,
            0x80 | (c & 0x3F) as u8,
        ]),
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
                Some(Sql::Value(v)) => ToSqlOutput::Owned(v),
                // Text that is not UTF-8 cannot be owned as text here; the merge binds it
                // through [`Sql`]. A lookup by such a key finds nothing (SPEC 2.14).
                Some(Sql::Bytes(b)) => ToSqlOutput::Owned(Value::Blob(b)),
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
            assert_eq!(to_sql(&j), Some(Sql::Value(v)));
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
            assert_eq!(Some(Sql::Value(got)), to_sql(&v));
        }
        assert!(!Bind(&serde_json::json!({"a": 1})).is_valid());
        assert!(!Bind(&serde_json::json!(["b", "zz"])).is_valid());
    }

    /// What older SQLite versions and older berth journals hold reads back exactly: bare
    /// `Inf`, 15-digit reals, escapes (a surrogate pair, a lone surrogate), raw bytes that are
    /// not UTF-8, tagged reals, and a wide row journaled in chunks.
    #[test]
    fn journal_text_of_any_writer_parses_to_wire_values() {
        let mut text = br#"{"a":Inf,"b":-Inf,"c":0.3,"d":"x\ty\"\\\ud83d\ude00\ud800","e":["r","1.00000000000000005551e-01"],"f":""#.to_vec();
        text.extend_from_slice(b"\xff\x41\"}");
        let row = parse_row_bytes(&text).unwrap();
        assert_eq!(row["a"], serde_json::json!(["r", "inf"]));
        assert_eq!(row["b"], serde_json::json!(["r", "-inf"]));
        assert_eq!(row["c"], serde_json::json!(0.3));
        assert_eq!(
            to_sql(&row["d"]),
            Some(Sql::Bytes(b"x\ty\"\\\xf0\x9f\x98\x80\xed\xa0\x80".to_vec()))
        );
        assert_eq!(row["e"], serde_json::json!(0.1));
        assert_eq!(row["f"], serde_json::json!(["t", "FF41"]));
        let wide = parse_row_bytes(br#"[{"a":1},{"b":["b","00"]}]"#).unwrap();
        assert_eq!(wide.len(), 2);
        assert_eq!(wide["b"], serde_json::json!(["b", "00"]));
        assert_eq!(
            parse_key(br#"[["r","-Inf"],"k"]"#),
            Some(vec![
                serde_json::json!(["r", "-inf"]),
                serde_json::json!("k")
            ])
        );
        for bad in [
            &b"{"[..],
            br#"{"a":}"#,
            b"[1,",
            br#"{"a":1} x"#,
            br#""\u12""#,
        ] {
            assert_eq!(
                parse_row_bytes(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn malformed_wire_values_are_refused() {
        assert_eq!(to_sql(&serde_json::json!(["x", "00"])), None);
        assert_eq!(to_sql(&serde_json::json!(["b", "zz"])), None);
        assert_eq!(to_sql(&serde_json::json!({"a": 1})), None);
    }
}
