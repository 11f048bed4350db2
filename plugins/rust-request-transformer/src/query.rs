//! Editing a raw query string (`a=1&b&c=x%20y`) argument by argument.
//!
//! The plugin works on the raw query rather than on Kong's decoded `get_query` map: a
//! map cannot say "flag without value" when sent back (`?debug`), would re-encode every
//! argument and lose their order. Here arguments the configuration does not name go
//! upstream byte for byte.

/// One `name[=value]` argument, both parts as they were written (still percent-encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Arg {
    name: String,
    value: Option<String>,
}

/// The arguments of a query string, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query(Vec<Arg>);

impl Query {
    /// Splits a raw query string (without `?`).
    pub fn parse(raw: &str) -> Query {
        Query(
            raw.split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some((name, value)) => Arg {
                        name: name.to_owned(),
                        value: Some(value.to_owned()),
                    },
                    None => Arg {
                        name: pair.to_owned(),
                        value: None,
                    },
                })
                .collect(),
        )
    }

    /// Whether an argument is named `name` (compared decoded, so `a%20b` is `a b`).
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|arg| decode(&arg.name) == name)
    }

    /// Drops every argument named `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|arg| decode(&arg.name) != name);
    }

    /// Renames every argument named `from` to `to`, keeping its value and position.
    pub fn rename(&mut self, from: &str, to: &str) {
        for arg in &mut self.0 {
            if decode(&arg.name) == from {
                arg.name = encode(to);
            }
        }
    }

    /// Appends `name=value`.
    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push(Arg {
            name: encode(name),
            value: Some(encode(value)),
        });
    }
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, arg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("&")?;
            }
            f.write_str(&arg.name)?;
            if let Some(value) = &arg.value {
                write!(f, "={value}")?;
            }
        }
        Ok(())
    }
}

/// Percent-decodes a query component (`+` is a space, as in forms); invalid UTF-8 is
/// replaced, which only matters for comparing names.
fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_arguments_keep_their_bytes_order_and_flags() {
        let raw = "b=2&debug&a=x%2By&&c=";
        assert_eq!(Query::parse(raw).to_string(), "b=2&debug&a=x%2By&c=");
    }

    #[test]
    fn names_are_compared_decoded_and_written_encoded() {
        let mut q = Query::parse("user%20id=7&x+y=1&keep=1");
        assert!(q.contains("user id") && q.contains("x y"));
        q.rename("user id", "uid");
        q.remove("x y");
        q.push("new key", "a&b=c");
        assert_eq!(q.to_string(), "uid=7&keep=1&new%20key=a%26b%3Dc");
    }

    #[test]
    fn broken_escapes_are_kept_literally() {
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%zz%41"), "%zzA");
        assert_eq!(decode("%"), "%");
        assert_eq!(decode("%e2%82%ac"), "€");
    }
}
