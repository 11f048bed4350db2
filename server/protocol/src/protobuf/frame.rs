//! ProtoBuf:1 framing: every frame is a 4-byte little-endian unsigned length, then that
//! many bytes (Kong: `lua_pack.pack("I", #msg)`, native order on every platform Kong runs
//! on; go-pdk: `binary.LittleEndian`). A zero-length frame is legal and meaningful: the
//! end of an event's PDK loop, an empty argument message, a nil result.

/// Bytes of a frame's length prefix.
pub const HEADER: usize = 4;

/// A frame announced longer than the limit: nothing after it can be found again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a ProtoBuf:1 frame of {len} bytes exceeds the limit of {max}")]
pub struct FrameTooLarge {
    /// The announced length.
    pub len: usize,
    /// The limit.
    pub max: usize,
}

/// Where the first frame of `buf` is: `Some(payload range)` when it is complete, `None`
/// when more bytes are needed.
pub fn first(buf: &[u8], max: usize) -> Result<Option<std::ops::Range<usize>>, FrameTooLarge> {
    let Some(prefix) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(prefix.try_into().expect("four bytes")) as usize;
    if len > max {
        return Err(FrameTooLarge { len, max });
    }
    Ok((buf.len() >= HEADER + len).then_some(HEADER..HEADER + len))
}

/// Appends one frame holding `payload`.
pub fn write(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Appends one frame holding `message`, encoded in place (no intermediate buffer).
pub fn write_message(out: &mut Vec<u8>, message: &impl prost::Message) {
    let len = message.encoded_len();
    out.reserve(HEADER + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    message
        .encode(out)
        .expect("a Vec grows to hold any message");
}

/// Appends a frame whose payload `fill` writes, patching the length afterwards.
pub fn write_with(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    fill(out);
    let len = (out.len() - start - HEADER) as u32;
    out[start..start + HEADER].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::messages::Str;

    #[test]
    fn frames_are_little_endian_length_prefixed() {
        let mut out = Vec::new();
        write(&mut out, b"kong.request.get_header");
        write(&mut out, b"");
        write_message(
            &mut out,
            &Str {
                v: b"host".to_vec(),
            },
        );
        let mut expected = vec![0x17, 0, 0, 0];
        expected.extend_from_slice(b"kong.request.get_header");
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&[0x06, 0, 0, 0, 0x0a, 0x04, b'h', b'o', b's', b't']);
        assert_eq!(out, expected);

        assert_eq!(first(&out, 1 << 20), Ok(Some(4..27)));
        assert_eq!(first(&out[27..], 1 << 20), Ok(Some(4..4)), "an empty frame");
        assert_eq!(first(&out[..26], 1 << 20), Ok(None));
        assert_eq!(first(&out[..3], 1 << 20), Ok(None));
        assert_eq!(first(&out, 22), Err(FrameTooLarge { len: 23, max: 22 }));

        let mut patched = Vec::new();
        write_with(&mut patched, |o| o.extend_from_slice(b"abc"));
        assert_eq!(patched, [3, 0, 0, 0, b'a', b'b', b'c']);
    }
}
