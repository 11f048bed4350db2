//! The MessagePack side of the transcoding: a borrowed value tree for the arguments a
//! plugin sends (small: a few arguments per call), and writers for results shaped as
//! Kong's MsgPack:1 client would send them (strings never as `str8`, integral numbers as
//! integers, raw bodies as `bin`).

use rmp::Marker;

/// Deepest nesting accepted (prost's own decoding limit is 100).
const MAX_DEPTH: usize = 64;

/// One MessagePack value, borrowing its strings from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Mp<'a> {
    /// nil.
    Nil,
    /// true / false.
    Bool(bool),
    /// A negative integer (or any that fits i64).
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// float32 / float64.
    Float(f64),
    /// `str` bytes (not checked for UTF-8, as Kong never checks).
    Str(&'a [u8]),
    /// `bin` bytes.
    Bin(&'a [u8]),
    /// An array.
    Array(Vec<Mp<'a>>),
    /// A map, in order.
    Map(Vec<(Mp<'a>, Mp<'a>)>),
    /// An extension value (never sent by our PDK).
    Ext,
}

/// Bytes that are not one MessagePack value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed MessagePack: {0}")]
pub struct MalformedMsgpack(pub &'static str);

impl<'a> Mp<'a> {
    /// Reads exactly one value from `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Mp<'a>, MalformedMsgpack> {
        let mut pos = 0;
        let value = read(bytes, &mut pos, 0)?;
        if pos != bytes.len() {
            return Err(MalformedMsgpack("trailing bytes after the value"));
        }
        Ok(value)
    }

    /// The bytes of a string or binary value.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Mp::Str(b) | Mp::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The value of an integer that fits i64.
    pub fn int(&self) -> Option<i64> {
        match *self {
            Mp::Int(i) => Some(i),
            Mp::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The value of any number, as f64.
    pub fn number(&self) -> Option<f64> {
        match *self {
            Mp::Int(i) => Some(i as f64),
            Mp::UInt(u) => Some(u as f64),
            Mp::Float(f) => Some(f),
            _ => None,
        }
    }

    /// The value under string key `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Mp<'a>> {
        match self {
            Mp::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| k.bytes() == Some(key.as_bytes()))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Whether this is nil.
    pub fn is_nil(&self) -> bool {
        matches!(self, Mp::Nil)
    }
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], MalformedMsgpack> {
    let end = pos
        .checked_add(n)
        .filter(|&end| end <= bytes.len())
        .ok_or(MalformedMsgpack("truncated"))?;
    let slice = &bytes[*pos..end];
    *pos = end;
    Ok(slice)
}

fn be(bytes: &[u8], pos: &mut usize, n: usize) -> Result<u64, MalformedMsgpack> {
    Ok(take(bytes, pos, n)?
        .iter()
        .fold(0u64, |acc, &b| acc << 8 | u64::from(b)))
}

fn read<'a>(bytes: &'a [u8], pos: &mut usize, depth: usize) -> Result<Mp<'a>, MalformedMsgpack> {
    if depth > MAX_DEPTH {
        return Err(MalformedMsgpack("nested too deeply"));
    }
    let marker = Marker::from_u8(take(bytes, pos, 1)?[0]);
    let len = |pos: &mut usize, n| be(bytes, pos, n).map(|l| l as usize);
    Ok(match marker {
        Marker::Null => Mp::Nil,
        Marker::True => Mp::Bool(true),
        Marker::False => Mp::Bool(false),
        Marker::FixPos(n) => Mp::Int(i64::from(n)),
        Marker::FixNeg(n) => Mp::Int(i64::from(n)),
        Marker::U8 => Mp::Int(be(bytes, pos, 1)? as i64),
        Marker::U16 => Mp::Int(be(bytes, pos, 2)? as i64),
        Marker::U32 => Mp::Int(be(bytes, pos, 4)? as i64),
        Marker::U64 => {
            let u = be(bytes, pos, 8)?;
            i64::try_from(u).map_or(Mp::UInt(u), Mp::Int)
        }
        Marker::I8 => Mp::Int(i64::from(be(bytes, pos, 1)? as u8 as i8)),
        Marker::I16 => Mp::Int(i64::from(be(bytes, pos, 2)? as u16 as i16)),
        Marker::I32 => Mp::Int(i64::from(be(bytes, pos, 4)? as u32 as i32)),
        Marker::I64 => Mp::Int(be(bytes, pos, 8)? as i64),
        Marker::F32 => Mp::Float(f64::from(f32::from_bits(be(bytes, pos, 4)? as u32))),
        Marker::F64 => Mp::Float(f64::from_bits(be(bytes, pos, 8)?)),
        Marker::FixStr(n) => Mp::Str(take(bytes, pos, usize::from(n))?),
        Marker::Str8 => {
            let n = len(pos, 1)?;
            Mp::Str(take(bytes, pos, n)?)
        }
        Marker::Str16 => {
            let n = len(pos, 2)?;
            Mp::Str(take(bytes, pos, n)?)
        }
        Marker::Str32 => {
            let n = len(pos, 4)?;
            Mp::Str(take(bytes, pos, n)?)
        }
        Marker::Bin8 => {
            let n = len(pos, 1)?;
            Mp::Bin(take(bytes, pos, n)?)
        }
        Marker::Bin16 => {
            let n = len(pos, 2)?;
            Mp::Bin(take(bytes, pos, n)?)
        }
        Marker::Bin32 => {
            let n = len(pos, 4)?;
            Mp::Bin(take(bytes, pos, n)?)
        }
        Marker::FixArray(n) => read_array(bytes, pos, usize::from(n), depth)?,
        Marker::Array16 => {
            let n = len(pos, 2)?;
            read_array(bytes, pos, n, depth)?
        }
        Marker::Array32 => {
            let n = len(pos, 4)?;
            read_array(bytes, pos, n, depth)?
        }
        Marker::FixMap(n) => read_map(bytes, pos, usize::from(n), depth)?,
        Marker::Map16 => {
            let n = len(pos, 2)?;
            read_map(bytes, pos, n, depth)?
        }
        Marker::Map32 => {
            let n = len(pos, 4)?;
            read_map(bytes, pos, n, depth)?
        }
        Marker::FixExt1 => skip_ext(bytes, pos, 1)?,
        Marker::FixExt2 => skip_ext(bytes, pos, 2)?,
        Marker::FixExt4 => skip_ext(bytes, pos, 4)?,
        Marker::FixExt8 => skip_ext(bytes, pos, 8)?,
        Marker::FixExt16 => skip_ext(bytes, pos, 16)?,
        Marker::Ext8 => {
            let n = len(pos, 1)?;
            skip_ext(bytes, pos, n)?
        }
        Marker::Ext16 => {
            let n = len(pos, 2)?;
            skip_ext(bytes, pos, n)?
        }
        Marker::Ext32 => {
            let n = len(pos, 4)?;
            skip_ext(bytes, pos, n)?
        }
        Marker::Reserved => return Err(MalformedMsgpack("the reserved marker 0xc1")),
    })
}

fn skip_ext<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<Mp<'a>, MalformedMsgpack> {
    take(bytes, pos, 1 + n)?;
    Ok(Mp::Ext)
}

fn read_array<'a>(
    bytes: &'a [u8],
    pos: &mut usize,
    n: usize,
    depth: usize,
) -> Result<Mp<'a>, MalformedMsgpack> {
    // Every element takes at least one byte: a bogus count cannot reserve much.
    let mut items = Vec::with_capacity(n.min(bytes.len() - *pos));
    for _ in 0..n {
        items.push(read(bytes, pos, depth + 1)?);
    }
    Ok(Mp::Array(items))
}

fn read_map<'a>(
    bytes: &'a [u8],
    pos: &mut usize,
    n: usize,
    depth: usize,
) -> Result<Mp<'a>, MalformedMsgpack> {
    let mut entries = Vec::with_capacity(n.min((bytes.len() - *pos) / 2));
    for _ in 0..n {
        let key = read(bytes, pos, depth + 1)?;
        let value = read(bytes, pos, depth + 1)?;
        entries.push((key, value));
    }
    Ok(Mp::Map(entries))
}

// ------------------------------------------------------------------ writers

fn ok<T, E: std::fmt::Debug>(result: Result<T, E>) -> T {
    result.expect("writing MessagePack into a Vec cannot fail")
}

/// nil.
pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// true / false.
pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.push(if b { 0xc3 } else { 0xc2 });
}

/// A string, as Kong writes it (fixstr, str16, str32).
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    crate::kong::write_str(out, s);
}

/// Binary bytes (raw bodies, as Kong's `fix_raw` sends them).
pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    ok(rmp::encode::write_bin(out, b));
}

/// An integer, in its smallest encoding.
pub fn write_int(out: &mut Vec<u8>, i: i64) {
    ok(rmp::encode::write_sint(out, i));
}

/// A number as lua-MessagePack writes a Lua number: an integer when it is integral and
/// exactly representable, else a float64.
pub fn write_number(out: &mut Vec<u8>, f: f64) {
    const EXACT: f64 = 9_007_199_254_740_991.0; // 2^53 - 1
    if f.fract() == 0.0 && f.abs() <= EXACT {
        write_int(out, f as i64);
    } else {
        ok(rmp::encode::write_f64(out, f));
    }
}

/// An array header.
pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    ok(rmp::encode::write_array_len(out, n as u32));
}

/// A map header.
pub fn write_map_len(out: &mut Vec<u8>, n: usize) {
    ok(rmp::encode::write_map_len(out, n as u32));
}

/// Writes `value` back as MessagePack (strings without `str8`).
pub fn write_value(out: &mut Vec<u8>, value: &Mp<'_>) {
    match value {
        Mp::Nil | Mp::Ext => write_nil(out),
        Mp::Bool(b) => write_bool(out, *b),
        Mp::Int(i) => write_int(out, *i),
        Mp::UInt(u) => {
            ok(rmp::encode::write_uint(out, *u));
        }
        Mp::Float(f) => ok(rmp::encode::write_f64(out, *f)),
        Mp::Str(s) => write_str(out, s),
        Mp::Bin(b) => write_bin(out, b),
        Mp::Array(items) => {
            write_array_len(out, items.len());
            for item in items {
                write_value(out, item);
            }
        }
        Mp::Map(entries) => {
            write_map_len(out, entries.len());
            for (k, v) in entries {
                write_value(out, k);
                write_value(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_write_back() {
        let value = rmpv::Value::Array(vec![
            rmpv::Value::Nil,
            true.into(),
            (-3).into(),
            300.into(),
            u64::MAX.into(),
            1.5.into(),
            "héllo".into(),
            rmpv::Value::Binary(vec![0xff, 0]),
            rmpv::Value::Map(vec![("k".into(), rmpv::Value::Array(vec![]))]),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &value).unwrap();
        let parsed = Mp::parse(&bytes).unwrap();
        let Mp::Array(items) = &parsed else {
            panic!("not an array")
        };
        assert_eq!(items[2], Mp::Int(-3));
        assert_eq!(items[4], Mp::UInt(u64::MAX));
        assert_eq!(items[6].bytes(), Some("héllo".as_bytes()));
        assert_eq!(items[8].get("k"), Some(&Mp::Array(vec![])));
        let mut back = Vec::new();
        write_value(&mut back, &parsed);
        assert_eq!(
            rmpv::decode::read_value(&mut back.as_slice()).unwrap(),
            value
        );
        assert!(Mp::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(Mp::parse(&[0xc1]).is_err());
        assert!(
            Mp::parse(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "a bogus count"
        );
        let deep = [vec![0x91; 100], vec![0xc0]].concat();
        assert!(Mp::parse(&deep).is_err());
    }

    #[test]
    fn numbers_are_written_as_lua_messagepack_does() {
        let mut out = Vec::new();
        write_number(&mut out, 2.0);
        write_number(&mut out, 1.1);
        write_number(&mut out, -5.0);
        assert_eq!(out[0], 0x02);
        assert_eq!(out[1], 0xcb);
        assert_eq!(out[10], 0xfb);
    }
}
