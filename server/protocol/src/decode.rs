//! Reading Kong's requests.
//!
//! A small cursor over one framed message. It borrows everything from the input (strings are
//! byte slices: Kong's strings may be any bytes) and hands out the raw bytes of values the
//! daemon only passes through, such as a Step's `Data`, so they reach the plugin uncopied.
//! It is lenient where Kong is loose: any integer width, integral floats as integers, an
//! empty array where an empty map is meant.

use super::frame::value_len;

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended inside a value.
    #[error("truncated message")]
    Truncated,
    /// A value of another type was found.
    #[error("expected {expected}, found {found}")]
    Type {
        /// What the protocol requires here.
        expected: &'static str,
        /// A description of the marker found.
        found: &'static str,
    },
    /// A number that does not fit.
    #[error("number out of range for {0}")]
    Range(&'static str),
    /// A required map key is absent.
    #[error("missing key `{0}`")]
    MissingKey(&'static str),
}

type Result<T> = std::result::Result<T, DecodeError>;

/// A cursor over one complete MessagePack message.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn peek(&self) -> Result<u8> {
        self.buf.first().copied().ok_or(DecodeError::Truncated)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
    }

    /// Whether the next value is `nil`.
    pub fn is_nil(&self) -> bool {
        self.buf.first() == Some(&0xc0)
    }

    /// An array header; returns the element count.
    pub fn array_len(&mut self) -> Result<usize> {
        let marker = self.peek()?;
        let len = match marker {
            0x90..=0x9f => {
                self.take(1)?;
                u64::from(marker & 0x0f)
            }
            0xdc => {
                self.take(1)?;
                self.be(2)?
            }
            0xdd => {
                self.take(1)?;
                self.be(4)?
            }
            _ => return Err(self.type_error("an array")),
        };
        usize::try_from(len).map_err(|_| DecodeError::Range("an array length"))
    }

    /// A map header; returns the entry count. An empty array counts as an empty map, since
    /// Kong's encoder turns every empty Lua table into one.
    pub fn map_len(&mut self) -> Result<usize> {
        let marker = self.peek()?;
        let len = match marker {
            0x80..=0x8f => {
                self.take(1)?;
                u64::from(marker & 0x0f)
            }
            0xde => {
                self.take(1)?;
                self.be(2)?
            }
            0xdf => {
                self.take(1)?;
                self.be(4)?
            }
            0x90 => {
                self.take(1)?;
                0
            }
            _ => return Err(self.type_error("a map")),
        };
        usize::try_from(len).map_err(|_| DecodeError::Range("a map length"))
    }

    /// A string (or binary) as raw bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let marker = self.peek()?;
        let len = match marker {
            0xa0..=0xbf => {
                self.take(1)?;
                u64::from(marker & 0x1f)
            }
            0xd9 | 0xc4 => {
                self.take(1)?;
                self.be(1)?
            }
            0xda | 0xc5 => {
                self.take(1)?;
                self.be(2)?
            }
            0xdb | 0xc6 => {
                self.take(1)?;
                self.be(4)?
            }
            _ => return Err(self.type_error("a string")),
        };
        let len = usize::try_from(len).map_err(|_| DecodeError::Range("a string length"))?;
        self.take(len)
    }

    /// An integer in `0..=u64::MAX`, from any integer encoding or an integral float.
    pub fn u64(&mut self) -> Result<u64> {
        let marker = self.peek()?;
        self.take(1)?;
        let value: i128 = match marker {
            0x00..=0x7f => i128::from(marker),
            0xe0..=0xff => i128::from(marker as i8),
            0xcc => i128::from(self.be(1)?),
            0xcd => i128::from(self.be(2)?),
            0xce => i128::from(self.be(4)?),
            0xcf => i128::from(self.be(8)?),
            0xd0 => i128::from(self.be(1)? as u8 as i8),
            0xd1 => i128::from(self.be(2)? as u16 as i16),
            0xd2 => i128::from(self.be(4)? as u32 as i32),
            0xd3 => i128::from(self.be(8)? as i64),
            0xca => float_to_int(f64::from(f32::from_bits(self.be(4)? as u32)))?,
            0xcb => float_to_int(f64::from_bits(self.be(8)?))?,
            _ => {
                return Err(DecodeError::Type {
                    expected: "an integer",
                    found: describe(marker),
                });
            }
        };
        u64::try_from(value).map_err(|_| DecodeError::Range("a non-negative integer"))
    }

    /// The raw bytes of the next value, whatever it is, and moves past it.
    pub fn raw(&mut self) -> Result<&'a [u8]> {
        match value_len(self.buf, usize::MAX) {
            Ok(Some(n)) => self.take(n),
            Ok(None) => Err(DecodeError::Truncated),
            Err(_) => Err(DecodeError::Type {
                expected: "a MessagePack value",
                found: "an invalid marker",
            }),
        }
    }

    /// Skips the next value.
    pub fn skip(&mut self) -> Result<()> {
        self.raw().map(|_| ())
    }

    /// Whether `other` is at the same position (a copy that read nothing since).
    pub fn is_at(&self, other: &Reader<'_>) -> bool {
        self.buf.as_ptr() == other.buf.as_ptr()
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn type_error(&self, expected: &'static str) -> DecodeError {
        match self.buf.first() {
            Some(&m) => DecodeError::Type {
                expected,
                found: describe(m),
            },
            None => DecodeError::Truncated,
        }
    }
}

fn float_to_int(f: f64) -> Result<i128> {
    if f.fract() == 0.0 && f.is_finite() && f.abs() < 1.8e19 {
        Ok(f as i128)
    } else {
        Err(DecodeError::Range("an integer"))
    }
}

/// A short name of the type a marker starts.
pub fn describe(marker: u8) -> &'static str {
    match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => "an integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0xc4..=0xc6 => "binary data",
        0xca | 0xcb => "a float",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension value",
        0xc1 => "an invalid marker",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &rmpv::Value) -> Vec<u8> {
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, value).unwrap();
        buf
    }

    #[test]
    fn integers_of_every_width_and_integral_floats_read_as_u64() {
        for (value, expected) in [
            (rmpv::Value::from(5u8), 5u64),
            (rmpv::Value::from(200u8), 200),
            (rmpv::Value::from(60_000u16), 60_000),
            (rmpv::Value::from(4_000_000_000u32), 4_000_000_000),
            (rmpv::Value::from(u64::MAX), u64::MAX),
            (rmpv::Value::F64(7.0), 7),
            (rmpv::Value::F32(9.0), 9),
        ] {
            assert_eq!(
                Reader::new(&encode(&value)).u64(),
                Ok(expected),
                "{value:?}"
            );
        }
        // Signed encodings of non-negative numbers, as some encoders write them.
        assert_eq!(Reader::new(&[0xd3, 0, 0, 0, 0, 0, 0, 0, 42]).u64(), Ok(42));
        assert_eq!(
            Reader::new(&[0xff]).u64(),
            Err(DecodeError::Range("a non-negative integer"))
        );
        assert_eq!(
            Reader::new(&encode(&rmpv::Value::F64(1.5))).u64(),
            Err(DecodeError::Range("an integer"))
        );
    }

    #[test]
    fn strings_of_every_width_and_invalid_utf8_read_as_bytes() {
        let mut str16 = vec![0xda, 0x00, 0x03];
        str16.extend_from_slice(b"abc");
        assert_eq!(Reader::new(&str16).bytes(), Ok(&b"abc"[..]));
        assert_eq!(
            Reader::new(&[0xa2, 0xff, 0xfe]).bytes(),
            Ok(&[0xff, 0xfe][..])
        );
        assert_eq!(Reader::new(&[0xc4, 0x01, 0x07]).bytes(), Ok(&[0x07][..]));
        assert_eq!(
            Reader::new(&[0xa5, b'a']).bytes(),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn an_empty_array_is_an_empty_map() {
        assert_eq!(Reader::new(&[0x90]).map_len(), Ok(0));
        assert!(Reader::new(&[0x91, 0x01]).map_len().is_err());
    }

    #[test]
    fn raw_returns_whole_values() {
        let value = rmpv::Value::Map(vec![(
            rmpv::Value::from("Method"),
            rmpv::Value::Array(vec![rmpv::Value::from(1), rmpv::Value::from("x")]),
        )]);
        let mut bytes = encode(&value);
        let len = bytes.len();
        bytes.push(0x07);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.raw().unwrap().len(), len);
        assert_eq!(reader.u64(), Ok(7));
        assert!(reader.is_empty());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::strategies::{
        config, neg, payload, rmpv_decode, uint, value, write_array_len, write_bin, write_map_len,
        write_neg, write_str, write_uint,
    };

    proptest! {
        #![proptest_config(config())]

        /// Every width a non-negative integer fits in reads back as that integer, and so do
        /// floats that hold it exactly.
        #[test]
        fn integers_of_every_width_read_back(v in uint(), c in any::<u8>()) {
            let mut bytes = Vec::new();
            write_uint(&mut bytes, v, c);
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.u64(), Ok(v));
            prop_assert!(r.is_empty());
            let f = v as f64;
            if f as u64 == v && f < 1.8e19 {
                let mut bytes = vec![0xcb];
                bytes.extend_from_slice(&f.to_bits().to_be_bytes());
                prop_assert_eq!(Reader::new(&bytes).u64(), Ok(v));
            }
        }

        /// Negative integers, in any width, are out of range (ids are never negative).
        #[test]
        fn negative_integers_are_refused(v in neg(), c in any::<u8>()) {
            let mut bytes = Vec::new();
            write_neg(&mut bytes, v, c);
            prop_assert_eq!(Reader::new(&bytes).u64(), Err(DecodeError::Range("a non-negative integer")));
        }

        /// A float reads as an integer exactly when it is a non-negative integral value that
        /// fits; anything else (fractions, NaN, infinities, negatives, huge) is refused.
        #[test]
        fn floats_read_as_integers_only_when_integral(f in any::<f64>(), single in any::<bool>()) {
            let (bytes, f) = if single {
                let g = f as f32;
                let mut bytes = vec![0xca];
                bytes.extend_from_slice(&g.to_bits().to_be_bytes());
                (bytes, f64::from(g))
            } else {
                let mut bytes = vec![0xcb];
                bytes.extend_from_slice(&f.to_bits().to_be_bytes());
                (bytes, f)
            };
            match Reader::new(&bytes).u64() {
                Ok(n) => prop_assert!(f.fract() == 0.0 && f >= 0.0 && n as f64 == f, "{} read as {}", f, n),
                Err(DecodeError::Range(_)) => {
                    prop_assert!(!(f.is_finite() && f.fract() == 0.0 && (0.0..1.8e19).contains(&f)), "{} refused", f)
                }
                Err(e) => prop_assert!(false, "{}: unexpected {:?}", f, e),
            }
        }

        /// Strings and binaries of every width read as their bytes, valid UTF-8 or not.
        #[test]
        fn strings_and_binaries_of_every_width_read_as_bytes(
            s in payload(), c in any::<u8>(), binary in any::<bool>(), next in vec(any::<u8>(), 0..4),
        ) {
            let mut bytes = Vec::new();
            if binary { write_bin(&mut bytes, &s, c) } else { write_str(&mut bytes, &s, c) }
            let len = bytes.len();
            bytes.extend_from_slice(&next);
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.bytes(), Ok(&s[..]));
            prop_assert_eq!(r.buf, &next[..]);
            // A string cut short is truncated, never a panic or a wrong slice.
            for cut in 0..len {
                prop_assert_eq!(Reader::new(&bytes[..cut]).bytes(), Err(DecodeError::Truncated));
            }
        }

        /// Container headers of every width give their declared count.
        #[test]
        fn container_headers_of_every_width(n in prop_oneof![0usize..20, 0usize..70_000], c in any::<u8>()) {
            let mut bytes = Vec::new();
            write_array_len(&mut bytes, n, c);
            prop_assert_eq!(Reader::new(&bytes).array_len(), Ok(n));
            let mut bytes = Vec::new();
            write_map_len(&mut bytes, n, c);
            prop_assert_eq!(Reader::new(&bytes).map_len(), Ok(n));
        }

        /// `raw` hands out each value of a sequence, exactly, and then reports truncation.
        #[test]
        fn raw_splits_a_sequence_into_its_values(values in vec(value(), 0..5)) {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.bytes.iter().copied()).collect();
            let mut r = Reader::new(&bytes);
            for v in &values {
                prop_assert_eq!(r.raw(), Ok(&v.bytes[..]));
            }
            prop_assert!(r.is_empty());
            prop_assert_eq!(r.raw(), Err(DecodeError::Truncated));
        }

        /// Any sequence of reads on arbitrary bytes returns values or errors, never panics,
        /// and what it returns agrees with rmpv.
        #[test]
        fn reads_on_arbitrary_bytes_never_panic(
            bytes in vec(any::<u8>(), 0..200),
            ops in vec(0u8..7, 1..24),
        ) {
            let mut r = Reader::new(&bytes);
            for op in ops {
                let before = r.clone();
                let moved = match op {
                    0 => r.array_len().is_ok(),
                    1 => r.map_len().is_ok(),
                    2 => match r.bytes() {
                        Ok(b) => {
                            let (value, _) = rmpv_decode(before.buf).expect("rmpv reads what bytes() read");
                            let raw = match &value {
                                rmpv::Value::String(s) => s.as_bytes(),
                                rmpv::Value::Binary(b) => b,
                                other => { prop_assert!(false, "bytes() read {:?}", other); unreachable!() }
                            };
                            prop_assert_eq!(raw, b);
                            true
                        }
                        Err(_) => false,
                    },
                    3 => r.u64().is_ok(),
                    4 => match r.raw() {
                        Ok(raw) => {
                            let (_, len) = rmpv_decode(before.buf).expect("rmpv reads what raw() read");
                            prop_assert_eq!(len, raw.len());
                            prop_assert_eq!(raw, &before.buf[..len]);
                            true
                        }
                        Err(_) => false,
                    },
                    5 => r.skip().is_ok(),
                    _ => { let _ = r.is_nil(); false }
                };
                if moved {
                    prop_assert!(!before.is_at(&r), "a successful read consumed nothing");
                }
            }
        }
    }
}
