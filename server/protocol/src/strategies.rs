//! Generators for the protocol's property tests (test builds only).
//!
//! A generated value comes with one of its valid encodings, picked among every width the
//! value fits in (an integer 5 may be a fixint, a `uint8` ... `uint64` or an `int8` ...
//! `int64`; a string may be a fixstr, `str8`, `str16` or `str32`; and so on), and with a
//! [`Model`] of what it means, to compare decoders against. Strings are arbitrary bytes:
//! Kong's may be invalid UTF-8.
//!
//! Case counts: [`config`] runs [`DEFAULT_CASES`] cases per property so the normal test
//! suite stays fast; `PROPTEST_CASES=N` raises (or lowers) it.

use proptest::{collection::vec, prelude::*, sample::select, test_runner::Config};

/// Cases per property when `PROPTEST_CASES` is not set.
pub const DEFAULT_CASES: u32 = 256;

/// The configuration every property of the protocol uses.
pub fn config() -> Config {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        // Proptest's default reads PROPTEST_CASES.
        Config::default()
    } else {
        Config::with_cases(DEFAULT_CASES)
    }
}

/// What a MessagePack value is, independent of its encoding.
#[derive(Debug, Clone)]
pub enum Model {
    Nil,
    Bool(bool),
    /// A non-negative integer.
    Uint(u64),
    /// A negative integer.
    Neg(i64),
    F32(f32),
    F64(f64),
    Str(Vec<u8>),
    Bin(Vec<u8>),
    Array(Vec<Model>),
    Map(Vec<(Model, Model)>),
    Ext(i8, Vec<u8>),
}

impl Model {
    /// Whether `value`, as rmpv decoded it, is this value (floats compared bit for bit).
    pub fn matches(&self, value: &rmpv::Value) -> bool {
        use rmpv::Value as V;
        match (self, value) {
            (Model::Nil, V::Nil) => true,
            (Model::Bool(a), V::Boolean(b)) => a == b,
            (Model::Uint(a), V::Integer(b)) => b.as_u64() == Some(*a),
            (Model::Neg(a), V::Integer(b)) => b.as_i64() == Some(*a),
            (Model::F32(a), V::F32(b)) => a.to_bits() == b.to_bits(),
            (Model::F64(a), V::F64(b)) => a.to_bits() == b.to_bits(),
            (Model::Str(a), V::String(b)) => a.as_slice() == b.as_bytes(),
            (Model::Bin(a), V::Binary(b)) => a == b,
            (Model::Array(a), V::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(m, v)| m.matches(v))
            }
            (Model::Map(a), V::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((mk, mv), (k, v))| mk.matches(k) && mv.matches(v))
            }
            (Model::Ext(ta, a), V::Ext(tb, b)) => ta == tb && a == b,
            _ => false,
        }
    }
}

/// A value and one valid encoding of it.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub model: Model,
    pub bytes: Vec<u8>,
}

/// Picks one of `candidates` with `choice`.
fn pick<T: Copy>(candidates: &[T], choice: u8) -> T {
    candidates[usize::from(choice) % candidates.len()]
}

/// Writes a non-negative integer in one of the encodings it fits in.
pub fn write_uint(out: &mut Vec<u8>, v: u64, choice: u8) {
    let mut widths: Vec<(u8, usize)> = Vec::new();
    if v <= 0x7f {
        widths.push((0x00, 0)); // positive fixint
        widths.push((0xd0, 1));
    }
    if v <= 0x7fff {
        widths.push((0xd1, 2));
    }
    if v <= 0x7fff_ffff {
        widths.push((0xd2, 4));
    }
    if v <= i64::MAX as u64 {
        widths.push((0xd3, 8));
    }
    if v <= 0xff {
        widths.push((0xcc, 1));
    }
    if v <= 0xffff {
        widths.push((0xcd, 2));
    }
    if v <= 0xffff_ffff {
        widths.push((0xce, 4));
    }
    widths.push((0xcf, 8));
    match pick(&widths, choice) {
        (0x00, _) => out.push(v as u8),
        (marker, width) => {
            out.push(marker);
            out.extend_from_slice(&v.to_be_bytes()[8 - width..]);
        }
    }
}

/// Writes a negative integer in one of the encodings it fits in.
pub fn write_neg(out: &mut Vec<u8>, v: i64, choice: u8) {
    assert!(v < 0);
    let mut widths: Vec<(u8, usize)> = Vec::new();
    if v >= -32 {
        widths.push((0xe0, 0)); // negative fixint
    }
    if v >= i64::from(i8::MIN) {
        widths.push((0xd0, 1));
    }
    if v >= i64::from(i16::MIN) {
        widths.push((0xd1, 2));
    }
    if v >= i64::from(i32::MIN) {
        widths.push((0xd2, 4));
    }
    widths.push((0xd3, 8));
    match pick(&widths, choice) {
        (0xe0, _) => out.push(v as u8),
        (marker, width) => {
            out.push(marker);
            out.extend_from_slice(&v.to_be_bytes()[8 - width..]);
        }
    }
}

/// Writes a length-prefixed header: the fix form (if `fix_max` allows it) or one of the
/// 8/16/32-bit forms that fit (`markers[i]` for a length field of `1 << i` bytes; 0 = none).
fn write_len(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, markers: [u8; 3], c: u8) {
    let mut forms: Vec<(u8, usize)> = Vec::new();
    if let Some((base, max)) = fix
        && len <= max
    {
        forms.push((base | len as u8, 0));
    }
    for (i, marker) in markers.into_iter().enumerate() {
        let width = 1usize << i;
        if marker != 0 && (width == 4 || len < 1usize << (8 * width)) {
            forms.push((marker, width));
        }
    }
    let (marker, width) = pick(&forms, c);
    out.push(marker);
    out.extend_from_slice(&(len as u64).to_be_bytes()[8 - width..]);
}

/// A string header (fixstr, str8, str16, str32) and its bytes.
pub fn write_str(out: &mut Vec<u8>, bytes: &[u8], choice: u8) {
    write_len(
        out,
        bytes.len(),
        Some((0xa0, 31)),
        [0xd9, 0xda, 0xdb],
        choice,
    );
    out.extend_from_slice(bytes);
}

/// A binary header (bin8, bin16, bin32) and its bytes.
pub fn write_bin(out: &mut Vec<u8>, bytes: &[u8], choice: u8) {
    write_len(out, bytes.len(), None, [0xc4, 0xc5, 0xc6], choice);
    out.extend_from_slice(bytes);
}

/// An array header (fixarray, array16, array32).
pub fn write_array_len(out: &mut Vec<u8>, len: usize, choice: u8) {
    write_len(out, len, Some((0x90, 15)), [0, 0xdc, 0xdd], choice);
}

/// A map header (fixmap, map16, map32).
pub fn write_map_len(out: &mut Vec<u8>, len: usize, choice: u8) {
    write_len(out, len, Some((0x80, 15)), [0, 0xde, 0xdf], choice);
}

/// An extension value (fixext1..16, ext8, ext16, ext32).
pub fn write_ext(out: &mut Vec<u8>, ty: i8, data: &[u8], choice: u8) {
    let fixed = match data.len() {
        1 => Some(0xd4),
        2 => Some(0xd5),
        4 => Some(0xd6),
        8 => Some(0xd7),
        16 => Some(0xd8),
        _ => None,
    };
    match fixed {
        Some(marker) if choice.is_multiple_of(2) => out.push(marker),
        _ => write_len(out, data.len(), None, [0xc7, 0xc8, 0xc9], choice / 2),
    }
    out.push(ty as u8);
    out.extend_from_slice(data);
}

/// Integers biased towards the edges of every encoding.
pub fn uint() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => any::<u64>(),
        3 => 0u64..300,
        4 => select(vec![
            0,
            0x7f,
            0x80,
            0xff,
            0x100,
            0x7fff,
            0x8000,
            0xffff,
            0x1_0000,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            0x1_0000_0000,
            (1 << 53) - 1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX,
        ]),
    ]
}

/// Negative integers biased towards the edges of every encoding.
pub fn neg() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>().prop_map(|v| if v < 0 { v } else { -1 - v }),
        -300i64..0,
        select(vec![
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i64::from(i32::MIN),
            i64::from(i32::MIN) - 1,
            i64::MIN,
        ]),
    ]
}

/// Arbitrary bytes, usually short, sometimes past the 8-bit length forms.
pub fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..40),
        1 => vec(any::<u8>(), 250..300),
    ]
}

/// A scalar (non-container) value with an encoding.
pub fn scalar() -> impl Strategy<Value = Encoded> {
    let enc = |model: Model, write: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = Vec::new();
        write(&mut bytes);
        Encoded { model, bytes }
    };
    prop_oneof![
        Just(enc(Model::Nil, &|o| o.push(0xc0))),
        any::<bool>().prop_map(move |b| enc(Model::Bool(b), &|o| o.push(0xc2 | u8::from(b)))),
        (uint(), any::<u8>()).prop_map(move |(v, c)| enc(Model::Uint(v), &|o| write_uint(o, v, c))),
        (neg(), any::<u8>()).prop_map(move |(v, c)| enc(Model::Neg(v), &|o| write_neg(o, v, c))),
        any::<f32>().prop_map(move |f| enc(Model::F32(f), &|o| {
            o.push(0xca);
            o.extend_from_slice(&f.to_bits().to_be_bytes());
        })),
        any::<f64>().prop_map(move |f| enc(Model::F64(f), &|o| {
            o.push(0xcb);
            o.extend_from_slice(&f.to_bits().to_be_bytes());
        })),
        (payload(), any::<u8>()).prop_map(move |(s, c)| {
            let mut bytes = Vec::new();
            write_str(&mut bytes, &s, c);
            Encoded {
                model: Model::Str(s),
                bytes,
            }
        }),
        (payload(), any::<u8>()).prop_map(move |(b, c)| {
            let mut bytes = Vec::new();
            write_bin(&mut bytes, &b, c);
            Encoded {
                model: Model::Bin(b),
                bytes,
            }
        }),
        (any::<i8>(), vec(any::<u8>(), 0..20), any::<u8>()).prop_map(move |(t, d, c)| {
            let mut bytes = Vec::new();
            write_ext(&mut bytes, t, &d, c);
            Encoded {
                model: Model::Ext(t, d),
                bytes,
            }
        }),
    ]
}

/// An array of `items`, with a header of any width that fits.
pub fn array_of(items: Vec<Encoded>, choice: u8) -> Encoded {
    let mut bytes = Vec::new();
    write_array_len(&mut bytes, items.len(), choice);
    let mut models = Vec::with_capacity(items.len());
    for item in items {
        bytes.extend_from_slice(&item.bytes);
        models.push(item.model);
    }
    Encoded {
        model: Model::Array(models),
        bytes,
    }
}

/// A map of `entries`, with a header of any width that fits.
pub fn map_of(entries: Vec<(Encoded, Encoded)>, choice: u8) -> Encoded {
    let mut bytes = Vec::new();
    write_map_len(&mut bytes, entries.len(), choice);
    let mut models = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        bytes.extend_from_slice(&key.bytes);
        bytes.extend_from_slice(&value.bytes);
        models.push((key.model, value.model));
    }
    Encoded {
        model: Model::Map(models),
        bytes,
    }
}

/// Any value: scalars and nested arrays and maps, every part in a width of its own.
pub fn value() -> BoxedStrategy<Encoded> {
    scalar()
        .prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                (vec(inner.clone(), 0..6), any::<u8>()).prop_map(|(items, c)| array_of(items, c)),
                (vec((inner.clone(), inner), 0..4), any::<u8>())
                    .prop_map(|(entries, c)| map_of(entries, c)),
            ]
        })
        .boxed()
}

/// A string value (any bytes) with an encoding, as a map key.
pub fn str_value() -> impl Strategy<Value = Encoded> {
    (payload(), any::<u8>()).prop_map(|(s, c)| {
        let mut bytes = Vec::new();
        write_str(&mut bytes, &s, c);
        Encoded {
            model: Model::Str(s),
            bytes,
        }
    })
}

/// Decodes one value with rmpv (no depth limit to speak of), returning it and its length.
pub fn rmpv_decode(bytes: &[u8]) -> Result<(rmpv::Value, usize), rmpv::decode::Error> {
    let mut rest = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, usize::MAX)?;
    Ok((value, bytes.len() - rest.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #![proptest_config(config())]

        /// The generators themselves: rmpv reads every generated encoding as its model.
        #[test]
        fn rmpv_reads_every_generated_encoding_as_its_model(v in value()) {
            let (decoded, len) = rmpv_decode(&v.bytes).expect("a valid encoding");
            prop_assert_eq!(len, v.bytes.len());
            prop_assert!(v.model.matches(&decoded), "{:?} read as {:?}", v.model, decoded);
        }
    }

    #[test]
    fn every_width_is_generated() {
        // Pick each candidate once for values at the edges; rmpv must read them all back.
        for v in [0u64, 0x7f, 0x80, 0xffff, 0x1_0000, u64::MAX] {
            for c in 0..=9u8 {
                let mut out = Vec::new();
                write_uint(&mut out, v, c);
                let (decoded, _) = rmpv_decode(&out).unwrap();
                assert_eq!(decoded.as_u64(), Some(v), "{out:x?}");
            }
        }
        let mut markers = std::collections::BTreeSet::new();
        for c in 0..=9u8 {
            let mut out = Vec::new();
            write_uint(&mut out, 5, c);
            markers.insert(out[0]);
            let mut out = Vec::new();
            write_str(&mut out, b"ab", c);
            markers.insert(out[0]);
        }
        assert_eq!(
            markers.into_iter().collect::<Vec<_>>(),
            [
                0x05, 0xa2, 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xd9, 0xda, 0xdb
            ]
        );
    }
}
