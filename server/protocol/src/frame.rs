//! Finding message boundaries in a MessagePack stream.
//!
//! MsgPack:1 has no length prefix: messages are concatenated MessagePack values. Before
//! decoding, the connection asks [`value_len`] whether a whole value has arrived. It walks
//! the markers without allocating and without recursion, and refuses a value whose declared
//! size passes the limit *before* waiting for (or allocating) the bytes.

/// Why a byte stream is not a MessagePack value we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// 0xc1 is never used by MessagePack; the stream is not MessagePack.
    #[error("invalid MessagePack marker 0x{marker:02x} at byte {offset}")]
    InvalidMarker {
        /// The marker byte.
        marker: u8,
        /// Its offset in the message.
        offset: usize,
    },
    /// The value declares more bytes (or elements) than the configured maximum.
    #[error("message larger than the {max} byte limit")]
    TooLarge {
        /// The limit in force.
        max: usize,
    },
}

/// The length of the first complete MessagePack value in `buf`, `None` if more bytes are
/// needed, or an error if `buf` cannot start a value of at most `max_len` bytes.
pub fn value_len(buf: &[u8], max_len: usize) -> Result<Option<usize>, FrameError> {
    let too_large = FrameError::TooLarge { max: max_len };
    let mut pos: usize = 0;
    // Values still to read; every value takes at least one byte, which bounds this too.
    let mut pending: u64 = 1;
    while pending > 0 {
        if (pos as u64).saturating_add(pending) > max_len as u64 {
            return Err(too_large);
        }
        let Some(&marker) = buf.get(pos) else {
            return Ok(None);
        };
        let offset = pos;
        pos += 1;
        pending -= 1;
        // (bytes of length field, bytes of payload after it if fixed, container multiplier)
        let skip: u64 = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
            0x80..=0x8f => {
                pending += 2 * u64::from(marker & 0x0f);
                0
            }
            0x90..=0x9f => {
                pending += u64::from(marker & 0x0f);
                0
            }
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xc1 => return Err(FrameError::InvalidMarker { marker, offset }),
            0xc4 | 0xd9 => match read_be(buf, pos, 1) {
                Some(n) => 1 + n,
                None => return Ok(None),
            },
            0xc5 | 0xda => match read_be(buf, pos, 2) {
                Some(n) => 2 + n,
                None => return Ok(None),
            },
            0xc6 | 0xdb => match read_be(buf, pos, 4) {
                Some(n) => 4 + n,
                None => return Ok(None),
            },
            0xc7 => match read_be(buf, pos, 1) {
                Some(n) => 2 + n,
                None => return Ok(None),
            },
            0xc8 => match read_be(buf, pos, 2) {
                Some(n) => 3 + n,
                None => return Ok(None),
            },
            0xc9 => match read_be(buf, pos, 4) {
                Some(n) => 5 + n,
                None => return Ok(None),
            },
            0xca | 0xce | 0xd2 => 4,
            0xcb | 0xcf | 0xd3 => 8,
            0xcc | 0xd0 => 1,
            0xcd | 0xd1 => 2,
            0xd4 => 2,
            0xd5 => 3,
            0xd6 => 5,
            0xd7 => 9,
            0xd8 => 17,
            0xdc | 0xde => match read_be(buf, pos, 2) {
                Some(n) => {
                    pending += if marker == 0xde { 2 * n } else { n };
                    2
                }
                None => return Ok(None),
            },
            0xdd | 0xdf => match read_be(buf, pos, 4) {
                Some(n) => {
                    pending += if marker == 0xdf { 2 * n } else { n };
                    4
                }
                None => return Ok(None),
            },
        };
        let end = (pos as u64).saturating_add(skip);
        if end > max_len as u64 {
            return Err(too_large);
        }
        pos = end as usize;
    }
    if pos > buf.len() {
        return Ok(None);
    }
    Ok(Some(pos))
}

/// Reads a big-endian unsigned integer of `width` bytes at `pos`, if present.
fn read_be(buf: &[u8], pos: usize, width: usize) -> Option<u64> {
    let bytes = buf.get(pos..pos + width)?;
    Some(bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    fn encode(value: &rmpv::Value) -> Vec<u8> {
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, value).unwrap();
        buf
    }

    #[test]
    fn complete_values_are_measured_and_prefixes_wait() {
        use rmpv::Value as V;
        let values = [
            V::Nil,
            V::from(7),
            V::from(-3000),
            V::from(u64::MAX),
            V::from(1.5),
            V::from("x".repeat(40)),
            V::from("y".repeat(70_000)),
            V::Binary(vec![1; 300]),
            V::Array(vec![
                V::from(0),
                V::from(1),
                V::from("plugin.Step"),
                V::Array(vec![]),
            ]),
            V::Map(vec![
                (V::from("EventId"), V::from(3)),
                (V::from("Data"), V::Nil),
            ]),
            V::Ext(5, vec![1, 2, 3]),
            V::Ext(1, vec![9; 16]),
            V::Array((0..20).map(V::from).collect()),
        ];
        for value in &values {
            let bytes = encode(value);
            let mut stream = bytes.clone();
            stream.extend_from_slice(&[0x93, 0x01]); // the start of a next message
            assert_eq!(value_len(&stream, MAX), Ok(Some(bytes.len())), "{value:?}");
            for cut in 0..bytes.len() {
                assert_eq!(
                    value_len(&bytes[..cut], MAX),
                    Ok(None),
                    "{value:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn oversized_declarations_fail_before_the_bytes_arrive() {
        // str32 declaring 4 GiB, array32 declaring 4 billion elements, map32 likewise.
        for header in [
            &[0xdb, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xdf, 0xff, 0xff, 0xff, 0xff],
            &[0xc6, 0x00, 0x10, 0x00, 0x01],
        ] {
            assert_eq!(
                value_len(header, MAX),
                Err(FrameError::TooLarge { max: MAX }),
                "{header:x?}"
            );
        }
    }

    #[test]
    fn the_unused_marker_is_refused() {
        assert_eq!(
            value_len(&[0x92, 0x01, 0xc1], MAX),
            Err(FrameError::InvalidMarker {
                marker: 0xc1,
                offset: 2
            })
        );
    }
}

#[cfg(test)]
mod proptests {
    use proptest::{collection::vec, prelude::*};

    use super::*;
    use crate::strategies::{config, rmpv_decode, value, write_array_len, write_map_len};

    /// Encodes containers around a value: `depth` nested one-element arrays or maps.
    fn nest(inner: &[u8], depth: usize, maps: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..depth {
            if maps {
                write_map_len(&mut out, 1, 0);
                out.push(0x00); // key
            } else {
                write_array_len(&mut out, 1, 0);
            }
        }
        out.extend_from_slice(inner);
        out
    }

    proptest! {
        #![proptest_config(config())]

        /// A complete value is measured exactly, whatever follows it.
        #[test]
        fn a_whole_value_is_measured_exactly(v in value(), next in vec(any::<u8>(), 0..8)) {
            let mut stream = v.bytes.clone();
            stream.extend_from_slice(&next);
            prop_assert_eq!(value_len(&stream, usize::MAX), Ok(Some(v.bytes.len())));
        }

        /// Until the last byte of a value has arrived, the framer asks for more.
        #[test]
        fn every_strict_prefix_waits_for_more(v in value()) {
            for cut in 0..v.bytes.len() {
                prop_assert_eq!(value_len(&v.bytes[..cut], usize::MAX), Ok(None), "cut at {}", cut);
            }
        }

        /// The limit is exact: a value of `len` bytes passes iff `len <= max`.
        #[test]
        fn the_limit_is_exact(v in value(), max in 0usize..700) {
            let len = v.bytes.len();
            let expected = if len <= max { Ok(Some(len)) } else { Err(FrameError::TooLarge { max }) };
            prop_assert_eq!(value_len(&v.bytes, max), expected);
        }

        /// Arbitrary bytes never panic the framer, and it agrees with rmpv: a value it
        /// measures decodes to exactly that many bytes, and a value rmpv reads within the
        /// limit is measured at rmpv's length.
        #[test]
        fn arbitrary_bytes_agree_with_rmpv(
            bytes in vec(any::<u8>(), 0..300),
            max in prop_oneof![Just(usize::MAX), 0usize..400],
        ) {
            let measured = value_len(&bytes, max);
            match (measured.clone(), rmpv_decode(&bytes)) {
                (Ok(Some(n)), Ok((_, len))) => {
                    prop_assert_eq!(n, len);
                    prop_assert!(n <= max && n <= bytes.len());
                }
                (Ok(Some(n)), Err(e)) => prop_assert!(false, "measured {} but rmpv failed: {}", n, e),
                (Err(FrameError::TooLarge { .. }), Ok((_, len))) => prop_assert!(len > max),
                // rmpv reads the unused marker 0xc1 as nil; the framer refuses it.
                (Err(FrameError::InvalidMarker { offset, .. }), Ok((_, len))) => prop_assert!(offset < len),
                (_, Ok((_, len))) => prop_assert!(false, "rmpv read {} bytes, framer said {:?}", len, measured),
                (Ok(None) | Err(_), Err(_)) => {}
            }
            if let Err(FrameError::InvalidMarker { marker, offset }) = measured {
                prop_assert_eq!(marker, 0xc1);
                prop_assert_eq!(bytes[offset], 0xc1);
            }
        }

        /// A declared length past the limit is refused as soon as its header is in, at any
        /// depth, before any of the declared bytes (or elements) exist.
        #[test]
        fn huge_declarations_are_refused_from_their_header(
            marker in prop::sample::select(vec![0xc4u8, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf]),
            extra in any::<u32>(),
            max in 0usize..70_000,
            depth in 0usize..4,
            maps in any::<bool>(),
        ) {
            let width = match marker {
                0xc4 | 0xc7 | 0xd9 => 1,
                0xc5 | 0xc8 | 0xda | 0xdc | 0xde => 2,
                _ => 4,
            };
            // The largest length the field holds, and a declaration past the limit.
            let field_max = u64::MAX >> (64 - 8 * width);
            let max = max.min(field_max as usize - 1);
            let declared = max as u64 + 1 + u64::from(extra) % (field_max - max as u64);
            let mut header = vec![marker];
            header.extend_from_slice(&declared.to_be_bytes()[8 - width..]);
            let message = nest(&header, depth, maps);
            prop_assert_eq!(value_len(&message, max), Err(FrameError::TooLarge { max }));
        }
    }
}
