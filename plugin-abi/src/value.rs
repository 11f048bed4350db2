//! Dynamic values: what `kong.ctx.shared.get`, `kong.nginx.get_ctx` and other untyped PDK
//! results carry, and raw byte strings.
//!
//! Kong sends Lua values as MessagePack; their shape is only known at run time. [`Value`]
//! holds any of them and offers typed getters, so a plugin reads `v.as_str()` instead of
//! matching. [`Bytes`] takes a MessagePack `bin` *or* `str` as raw bytes, since Kong's
//! strings (header values, bodies) need not be UTF-8.

use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, MapAccess, SeqAccess, Visitor},
    ser::{SerializeMap, SerializeSeq},
};

/// Any value Kong can send or receive.
///
/// Lua has one table type: Kong sends a table as an [`Array`](Value::Array) when its keys
/// are exactly `1..n` (so an *empty* table arrives as an empty array) and as a
/// [`Map`](Value::Map) otherwise. Map keys are usually strings but may be integers.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// Lua `nil` (or `ngx.null`).
    #[default]
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integral number (Kong sends integral Lua numbers as integers).
    Int(i64),
    /// A non-integral number (or an integer beyond `i64`).
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// A byte string: MessagePack `bin`, or a `str` that is not valid UTF-8.
    Bytes(Vec<u8>),
    /// A Lua sequence.
    Array(Vec<Value>),
    /// Any other Lua table, in Kong's (arbitrary) key order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// Whether this is `nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is an integral number.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(*f as i64),
            _ => None,
        }
    }

    /// The number as a float, if this is a number (integers included: Kong sends
    /// integral floats as integers).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, if this is a UTF-8 string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The raw bytes of a string or byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Str(s) => Some(s.as_bytes()),
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array. An empty map reads as an empty array too, since
    /// Kong cannot tell them apart.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            Value::Map(entries) if entries.is_empty() => Some(&[]),
            _ => None,
        }
    }

    /// The entries, if this is a map. An empty array reads as an empty map too, since Kong
    /// sends an empty Lua table as an empty array.
    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(entries) => Some(entries),
            Value::Array(items) if items.is_empty() => Some(&[]),
            _ => None,
        }
    }

    /// The value under string key `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Decodes this value into a typed Rust value (a struct with `#[derive(Deserialize)]`,
    /// a `Vec`, a map...).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        let bytes = rmp_serde::to_vec(self).map_err(|e| e.to_string())?;
        rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
    }

    /// Encodes any serializable Rust value as a [`Value`] (structs become maps).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Value, String> {
        let mut bytes = Vec::new();
        value
            .serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map())
            .map_err(|e| e.to_string())?;
        rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
    }

    /// A map value from string keys.
    pub fn map<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Str(k.into()), v))
                .collect(),
        )
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident $(as $cast:ty)?),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant((v $(as $cast)?).into())
            }
        }
    )*};
}

value_from! {
    bool => Bool,
    i32 => Int as i64,
    i64 => Int,
    u16 => Int as i64,
    u32 => Int as i64,
    f64 => Float,
    String => Str,
    &str => Str,
    Vec<u8> => Bytes,
    Vec<Value> => Array,
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Nil, Into::into)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any MessagePack value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_owned()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

/// A byte string from Kong: a MessagePack `bin` (raw bodies) or a `str` taken as raw bytes
/// (header values and other strings need not be UTF-8). Sent to Kong as `bin`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// The bytes as text, if they are UTF-8.
    pub fn to_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.0)
    }

    /// The bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Like a Rust byte string literal: printable ASCII as is, the rest escaped.
        f.write_str("b\"")?;
        for &b in &self.0 {
            write!(f, "{}", std::ascii::escape_default(b))?;
        }
        f.write_str("\"")
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Bytes, E> {
                Ok(Bytes(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

/// Accepts a map, or an empty array in its place (Kong sends an empty Lua table as `[]`).
pub(crate) fn lenient_map<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    match Value::deserialize(d)? {
        Value::Array(items) if items.is_empty() => Ok(T::default()),
        Value::Nil => Ok(T::default()),
        other => T::deserialize(other).map_err(de::Error::custom),
    }
}

impl<'de> Deserializer<'de> for Value {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        use de::value::{MapDeserializer, SeqDeserializer};
        match self {
            Value::Nil => v.visit_unit(),
            Value::Bool(b) => v.visit_bool(b),
            Value::Int(i) => v.visit_i64(i),
            Value::Float(f) => v.visit_f64(f),
            Value::Str(s) => v.visit_string(s),
            Value::Bytes(b) => v.visit_byte_buf(b),
            Value::Array(items) => v.visit_seq(SeqDeserializer::new(items.into_iter())),
            Value::Map(entries) => v.visit_map(MapDeserializer::new(entries.into_iter())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Self::Error> {
        match self {
            Value::Nil => v.visit_none(),
            other => v.visit_some(other),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl de::IntoDeserializer<'_, de::value::Error> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_typed_getters_read_them() {
        let v = Value::map([
            ("n", Value::Int(3)),
            ("f", Value::Float(1.5)),
            ("s", Value::from("x")),
            ("b", Value::Bytes(vec![0xff])),
            ("a", Value::Array(vec![Value::Bool(true), Value::Nil])),
        ]);
        let bytes = rmp_serde::to_vec(&v).unwrap();
        let back: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.get("n").and_then(Value::as_f64), Some(3.0));
        assert_eq!(back.get("s").and_then(Value::as_str), Some("x"));
        assert_eq!(back.get("b").and_then(Value::as_bytes), Some(&[0xff][..]));
        assert_eq!(back.get("a").and_then(Value::as_array).unwrap().len(), 2);
        assert!(Value::Array(vec![]).as_map().unwrap().is_empty());
    }

    #[test]
    fn invalid_utf8_strings_decode_as_bytes() {
        let raw = [0xa2, 0xc3, 0x28];
        assert_eq!(
            rmp_serde::from_slice::<Value>(&raw).unwrap(),
            Value::Bytes(vec![0xc3, 0x28])
        );
        assert_eq!(
            rmp_serde::from_slice::<Bytes>(&raw).unwrap().0,
            [0xc3, 0x28]
        );
        assert!(rmp_serde::from_slice::<String>(&raw).is_err());
    }

    #[test]
    fn values_decode_into_typed_structs() {
        #[derive(Deserialize, Serialize, PartialEq, Debug)]
        struct Point {
            x: f64,
            name: Option<String>,
        }
        let v = Value::map([("x", Value::Int(2))]);
        assert_eq!(v.decode::<Point>().unwrap(), Point { x: 2.0, name: None });
        let back = Value::encode(&Point {
            x: 1.5,
            name: Some("p".into()),
        })
        .unwrap();
        assert_eq!(back.get("name").and_then(Value::as_str), Some("p"));
    }
}
