//! Header and query multimaps: one name, any number of values.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeMap};

use crate::value::Value;

/// A header or query-argument map as Kong sends it (`kong.request.get_headers`,
/// `kong.request.get_query`, ...) and takes it (`kong.response.set_headers`, the headers of
/// `kong.response.exit`): a name maps to its list of values.
///
/// Decoding accepts what Kong really sends: a value list, a single string, or `true` for a
/// query flag without value (`?debug`, an empty list), and an empty array for an empty
/// map. A query argument given both as a flag and with values arrives as a list holding
/// `true` for each flag occurrence (`?a&a=1` is `{"a": [true, "1"]}`): a flag adds no
/// value, so that reads as `a: ["1"]` (and `contains("a")` either way). Header names from Kong are lowercase. A value that is not UTF-8 has its invalid
/// bytes replaced by `U+FFFD`; read such a header with `get_header_bytes`. Sent to Kong, a one-value name becomes a
/// plain string and a many-value name a list of strings, which every Kong version takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Multimap(pub BTreeMap<String, Vec<String>>);

impl Multimap {
    /// An empty map.
    pub fn new() -> Multimap {
        Multimap::default()
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)?.first().map(String::as_str)
    }

    /// Every value of `name` (empty for a query flag or an absent name).
    pub fn get_all(&self, name: &str) -> &[String] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether `name` is present (a query flag without value is present).
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// Appends a value to `name`.
    pub fn add(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.entry(name.into()).or_default().push(value.into());
        self
    }

    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.into(), vec![value.into()]);
        self
    }

    /// Builder form of [`add`](Self::add).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.add(name, value);
        self
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no name.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over `(name, values)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Multimap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Multimap {
        let mut map = Multimap::new();
        for (k, v) in iter {
            map.add(k, v);
        }
        map
    }
}

impl Serialize for Multimap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, values) in &self.0 {
            match values.as_slice() {
                [one] => map.serialize_entry(name, one)?,
                many => map.serialize_entry(name, many)?,
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Multimap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Multimap, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(d)?;
        let entries = value
            .as_map()
            .ok_or_else(|| D::Error::custom("expected a map of names to values"))?;
        let mut map = Multimap::new();
        for (name, values) in entries {
            let name = text(name).ok_or_else(|| D::Error::custom("a name is not a string"))?;
            let list = map.0.entry(name.clone().into_owned()).or_default();
            match values {
                Value::Bool(true) => {}
                Value::Array(items) => {
                    // `true` is a flag occurrence (`?a&a=1`): present, without a value.
                    for item in items.iter().filter(|item| **item != Value::Bool(true)) {
                        list.push(
                            text(item)
                                .ok_or_else(|| {
                                    D::Error::custom(format!("{name}: a value is not a string"))
                                })?
                                .into_owned(),
                        );
                    }
                }
                single => list.push(
                    text(single)
                        .ok_or_else(|| D::Error::custom(format!("{name}: not a string")))?
                        .into_owned(),
                ),
            }
        }
        Ok(map)
    }
}

/// Text of a value; numbers are allowed because Lua turns numeric-looking query values
/// into numbers in some PDK paths.
fn text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::Str(s) => Some(s.as_str().into()),
        Value::Int(i) => Some(i.to_string().into()),
        Value::Float(f) => Some(f.to_string().into()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kongs_shapes_and_encodes_single_values_as_strings() {
        let kong = Value::map([
            ("a", Value::Array(vec!["1".into(), "2".into()])),
            ("flag", Value::Array(vec![])),
            ("t", Value::Bool(true)),
            ("s", Value::from("x")),
        ]);
        let m: Multimap = rmp_serde::from_slice(&rmp_serde::to_vec(&kong).unwrap()).unwrap();
        assert_eq!(m.get_all("a"), ["1", "2"]);
        assert!(m.contains("flag") && m.get("flag").is_none());
        assert!(m.contains("t") && m.get_all("t").is_empty());
        assert_eq!(m.get("s"), Some("x"));
        // `?a&a=1&b=2&b` in Kong: flags mixed with values.
        let mixed = Value::map([
            ("a", Value::Array(vec![Value::Bool(true), "1".into()])),
            ("b", Value::Array(vec!["2".into(), Value::Bool(true)])),
        ]);
        let m: Multimap = rmp_serde::from_slice(&rmp_serde::to_vec(&mixed).unwrap()).unwrap();
        assert_eq!(m.get_all("a"), ["1"]);
        assert_eq!(m.get_all("b"), ["2"]);
        let empty: Multimap = rmp_serde::from_slice(&[0x90]).unwrap();
        assert!(empty.is_empty());

        let sent: Value = rmp_serde::from_slice(
            &rmp_serde::to_vec(&Multimap::new().with("a", "1").with("b", "2").with("b", "3"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(sent.get("a"), Some(&Value::from("1")));
        assert_eq!(
            sent.get("b"),
            Some(&Value::Array(vec!["2".into(), "3".into()]))
        );
    }
}
