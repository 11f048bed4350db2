//! A Kong Gateway release, as `major.minor`.

use std::{fmt, str::FromStr};

/// A Kong Gateway version, `major.minor` (the patch level never changes what this crate
/// models). Ordered, so `v >= KongVersion::V3_4` reads as "3.4 or later".
///
/// [`KongVersion::HEAD`] is Kong's development branch as last read (3.10.0-dev): the
/// behaviour assumed when no version is configured, and for any release newer than it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KongVersion {
    major: u16,
    minor: u16,
}

/// Why a version string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KongVersionError {
    /// Not `X.Y` or `X.Y.Z`.
    #[error("{0:?} is not a Kong version; write it as 3.4 or 3.4.2")]
    Syntax(String),
    /// Older than the oldest Kong the pluginserver supports.
    #[error("Kong {0} is not supported; kong-rust-pluginserver serves Kong 3.0 and later")]
    TooOld(KongVersion),
}

impl KongVersion {
    /// Kong `major.minor`.
    pub const fn new(major: u16, minor: u16) -> KongVersion {
        KongVersion { major, minor }
    }

    /// Kong 3.0, the oldest supported.
    pub const V3_0: KongVersion = KongVersion::new(3, 0);
    /// Kong 3.1.
    pub const V3_1: KongVersion = KongVersion::new(3, 1);
    /// Kong 3.2.
    pub const V3_2: KongVersion = KongVersion::new(3, 2);
    /// Kong 3.3.
    pub const V3_3: KongVersion = KongVersion::new(3, 3);
    /// Kong 3.4.
    pub const V3_4: KongVersion = KongVersion::new(3, 4);
    /// Kong 3.5.
    pub const V3_5: KongVersion = KongVersion::new(3, 5);
    /// Kong 3.6.
    pub const V3_6: KongVersion = KongVersion::new(3, 6);
    /// Kong 3.7.
    pub const V3_7: KongVersion = KongVersion::new(3, 7);
    /// Kong 3.8.
    pub const V3_8: KongVersion = KongVersion::new(3, 8);
    /// Kong 3.9.
    pub const V3_9: KongVersion = KongVersion::new(3, 9);
    /// Kong's development branch as last read (3.10.0-dev, commit 22246ef28c).
    pub const HEAD: KongVersion = KongVersion::new(3, 10);

    /// The oldest Kong supported.
    pub const OLDEST: KongVersion = KongVersion::V3_0;

    /// The major version.
    pub const fn major(self) -> u16 {
        self.major
    }

    /// The minor version.
    pub const fn minor(self) -> u16 {
        self.minor
    }

    /// Parses `3.4`, `3.4.2` or `3.10.0-dev` (the patch and any suffix are ignored).
    pub fn parse(text: &str) -> Result<KongVersion, KongVersionError> {
        let syntax = || KongVersionError::Syntax(text.to_owned());
        let core = text.trim().split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let mut number = || -> Result<u16, KongVersionError> {
            let part = parts.next().ok_or_else(syntax)?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            part.parse().map_err(|_| syntax())
        };
        let version = KongVersion::new(number()?, number()?);
        match parts.next() {
            None => {}
            Some(patch) if !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit()) => {}
            Some(_) => return Err(syntax()),
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        if version < KongVersion::OLDEST {
            return Err(KongVersionError::TooOld(version));
        }
        Ok(version)
    }
}

impl fmt::Display for KongVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl FromStr for KongVersion {
    type Err = KongVersionError;
    fn from_str(s: &str) -> Result<KongVersion, KongVersionError> {
        KongVersion::parse(s)
    }
}

impl serde::Serialize for KongVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KongVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KongVersion, D::Error> {
        /// A version may be written as a TOML string or a bare float such as `3.4`.
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Text {
            Str(String),
            Float(f64),
        }
        let text = match Text::deserialize(d)? {
            Text::Str(s) => s,
            Text::Float(f) => {
                return Err(serde::de::Error::custom(format!(
                    "write the Kong version as a string (\"{f}\"), a number cannot tell 3.1 from 3.10"
                )));
            }
        };
        KongVersion::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        assert_eq!(KongVersion::parse("3.4").unwrap(), KongVersion::V3_4);
        assert_eq!(KongVersion::parse("3.4.2").unwrap(), KongVersion::V3_4);
        assert_eq!(KongVersion::parse("3.10.0-dev").unwrap(), KongVersion::HEAD);
        assert_eq!(KongVersion::parse(" 3.9 ").unwrap(), KongVersion::V3_9);
        assert!(KongVersion::V3_9 < KongVersion::HEAD);
        assert!(
            KongVersion::V3_1 < KongVersion::new(3, 10),
            "numeric, not text, order"
        );
        assert_eq!(KongVersion::V3_6.to_string(), "3.6");
        for bad in ["", "3", "3.", "x.4", "3.4.x", "3.4.5.6", "3..4", "v3.4"] {
            assert!(
                matches!(KongVersion::parse(bad), Err(KongVersionError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            KongVersion::parse("2.8").unwrap_err().to_string(),
            "Kong 2.8 is not supported; kong-rust-pluginserver serves Kong 3.0 and later"
        );
    }

    #[test]
    fn versions_read_from_toml_strings_only() {
        #[derive(serde::Deserialize)]
        struct File {
            v: KongVersion,
        }
        let file: File = toml::from_str("v = \"3.6\"").unwrap();
        assert_eq!(file.v, KongVersion::V3_6);
        let err = toml::from_str::<File>("v = 3.1").err().unwrap().to_string();
        assert!(err.contains("3.1 from 3.10"), "{err}");
    }
}
