//! MessagePack as Kong writes it.
//!
//! Kong's encoder (lua-MessagePack under LuaJIT) never writes `str8` (strings use fixstr,
//! str16 or str32), sends integral numbers as the smallest integer, and every other number as
//! float64. Tests encode with [`encode`] so the daemon sees Kong's exact bytes.

use rmpv::Value;

/// Encodes `value` the way Kong would.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out, value);
    out
}

fn write(out: &mut Vec<u8>, value: &Value) {
    use rmp::encode as mp;
    match value {
        Value::Nil => mp::write_nil(out).unwrap(),
        Value::Boolean(b) => mp::write_bool(out, *b).unwrap(),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => {
                mp::write_uint(out, u).unwrap();
            }
            (None, Some(s)) => {
                mp::write_sint(out, s).unwrap();
            }
            (None, None) => unreachable!("an integer is u64 or i64"),
        },
        Value::F32(f) => write_number(out, f64::from(*f)),
        Value::F64(f) => write_number(out, *f),
        Value::String(s) => write_str(out, s.as_bytes()),
        Value::Binary(b) => mp::write_bin(out, b).unwrap(),
        Value::Array(items) => {
            mp::write_array_len(out, items.len() as u32).unwrap();
            for item in items {
                write(out, item);
            }
        }
        Value::Map(entries) => {
            mp::write_map_len(out, entries.len() as u32).unwrap();
            for (k, v) in entries {
                write(out, k);
                write(out, v);
            }
        }
        Value::Ext(..) => panic!("Kong never sends ext values"),
    }
}

/// LuaJIT numbers are doubles: integral ones within 2^53 go out as integers.
fn write_number(out: &mut Vec<u8>, f: f64) {
    use rmp::encode as mp;
    const LIMIT: f64 = 9_007_199_254_740_991.0;
    if f.fract() == 0.0 && f.abs() <= LIMIT {
        if f >= 0.0 {
            mp::write_uint(out, f as u64).unwrap();
        } else {
            mp::write_sint(out, f as i64).unwrap();
        }
    } else {
        mp::write_f64(out, f).unwrap();
    }
}

/// fixstr, else str16, else str32: never str8.
fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// A map value from string keys.
pub fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect(),
    )
}

/// Looks up a string key of a map value.
pub fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// Decodes one value (the whole of `bytes`).
pub fn decode(bytes: &[u8]) -> Value {
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest)
        .unwrap_or_else(|e| panic!("not MessagePack ({e}): {bytes:02x?}"));
    assert!(rest.is_empty(), "bytes after the value: {rest:02x?}");
    value
}

/// The value as JSON (maps with string keys become objects; binary becomes text).
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Boolean(b) => (*b).into(),
        Value::Integer(i) => i
            .as_u64()
            .map(serde_json::Value::from)
            .or_else(|| i.as_i64().map(serde_json::Value::from))
            .unwrap_or_default(),
        Value::F32(f) => (*f).into(),
        Value::F64(f) => (*f).into(),
        Value::String(s) => s.as_str().unwrap_or_default().into(),
        Value::Binary(b) => String::from_utf8_lossy(b).into_owned().into(),
        Value::Array(items) => items.iter().map(to_json).collect(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Value::Ext(..) => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_skip_str8_like_kong() {
        assert_eq!(encode(&Value::from("abc"))[0], 0xa3);
        let s40 = encode(&Value::from("x".repeat(40)));
        assert_eq!(&s40[..3], &[0xda, 0x00, 40]);
        assert_eq!(encode(&Value::F64(2.0)), [0x02]);
        assert_eq!(encode(&Value::F64(1.5))[0], 0xcb);
    }
}
