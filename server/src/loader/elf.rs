//! Whether a file holds a whole ELF library: its headers and every part they describe lie
//! inside the file.
//!
//! The dynamic loader maps what the program headers describe and never checks that the file
//! is long enough, so a copy cut short (a build still being written, a full disk) can load
//! and then fail at run time (SIGBUS on the missing pages), or load with its tail silently
//! missing. The section headers come last in a linked library, so a cut anywhere shows.

use std::{fs::File, os::unix::fs::FileExt};

/// Why a file is not a whole library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its {part} ends at byte {end}, past the end of the file ({size} bytes)")]
pub struct Truncated {
    /// The part that does not fit.
    pub part: String,
    /// Where it ends.
    pub end: u64,
    /// The file's size.
    pub size: u64,
}

const SHT_NOBITS: u32 = 8;

/// The fields of an ELF header that locate the rest, for this machine's class and byte
/// order.
struct Layout {
    wide: bool,
    little: bool,
}

impl Layout {
    fn u16(&self, b: &[u8], at: usize) -> u64 {
        let bytes = [b[at], b[at + 1]];
        u64::from(if self.little {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        })
    }

    fn u32(&self, b: &[u8], at: usize) -> u64 {
        let bytes = b[at..at + 4].try_into().expect("4 bytes");
        u64::from(if self.little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    }

    fn u64(&self, b: &[u8], at: usize) -> u64 {
        let bytes = b[at..at + 8].try_into().expect("8 bytes");
        if self.little {
            u64::from_le_bytes(bytes)
        } else {
            u64::from_be_bytes(bytes)
        }
    }

    /// A word: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, b: &[u8], at64: usize, at32: usize) -> u64 {
        if self.wide {
            self.u64(b, at64)
        } else {
            self.u32(b, at32)
        }
    }
}

/// Checks that `file` (`size` bytes) covers its ELF header, program headers, segments,
/// section headers and sections. Files that are not ELF of this machine's class and byte
/// order pass: the dynamic loader refuses those with its own message.
pub fn check_whole(file: &File, size: u64) -> Result<(), Truncated> {
    let mut ident = [0u8; 6];
    if file.read_exact_at(&mut ident, 0).is_err() || &ident[..4] != b"\x7fELF" {
        return Ok(());
    }
    let wide = ident[4] == 2;
    let little = ident[5] == 1;
    if (ident[4] == 2) != cfg!(target_pointer_width = "64")
        || little != cfg!(target_endian = "little")
    {
        return Ok(());
    }
    let layout = Layout { wide, little };
    let cut = |part: String, end: u64| Truncated { part, end, size };
    let header_len: u64 = if wide { 64 } else { 52 };
    if size < header_len {
        return Err(cut("ELF header".into(), header_len));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 0)
        .map_err(|_| cut("ELF header".into(), header_len))?;
    let phoff = layout.word(&header, 0x20, 0x1c);
    let shoff = layout.word(&header, 0x28, 0x20);
    let (phentsize, phnum) = if wide {
        (layout.u16(&header, 0x36), layout.u16(&header, 0x38))
    } else {
        (layout.u16(&header, 0x2a), layout.u16(&header, 0x2c))
    };
    let (shentsize, shnum) = if wide {
        (layout.u16(&header, 0x3a), layout.u16(&header, 0x3c))
    } else {
        (layout.u16(&header, 0x2e), layout.u16(&header, 0x30))
    };

    let table = |what: &str, offset: u64, entsize: u64, count: u64| -> Result<Vec<u8>, Truncated> {
        let end = entsize
            .checked_mul(count)
            .and_then(|len| len.checked_add(offset))
            .unwrap_or(u64::MAX);
        if end > size {
            return Err(cut(format!("{what} table"), end));
        }
        let mut bytes = vec![0u8; (end - offset) as usize];
        file.read_exact_at(&mut bytes, offset)
            .map_err(|_| cut(format!("{what} table"), end))?;
        Ok(bytes)
    };
    let within = |part: String, offset: u64, len: u64| -> Result<(), Truncated> {
        let end = offset.saturating_add(len);
        if end > size {
            Err(cut(part, end))
        } else {
            Ok(())
        }
    };

    let min_ph = if wide { 56 } else { 32 };
    if phnum > 0 && phentsize >= min_ph {
        let phdrs = table("program header", phoff, phentsize, phnum)?;
        for (i, ph) in phdrs.chunks_exact(phentsize as usize).enumerate() {
            let (offset, filesz) = if wide {
                (layout.u64(ph, 0x08), layout.u64(ph, 0x20))
            } else {
                (layout.u32(ph, 0x04), layout.u32(ph, 0x10))
            };
            if filesz > 0 {
                within(format!("segment {i}"), offset, filesz)?;
            }
        }
    }
    let min_sh = if wide { 64 } else { 40 };
    if shoff > 0 && shentsize >= min_sh {
        // With 0xffff or more sections, the count is in the size of section 0.
        let first = table("section header", shoff, shentsize, 1)?;
        let count = match shnum {
            0 => layout.word(&first, 0x20, 0x14),
            n => n,
        };
        let shdrs = table("section header", shoff, shentsize, count)?;
        for (i, sh) in shdrs.chunks_exact(shentsize as usize).enumerate() {
            let kind = layout.u32(sh, 0x04) as u32;
            let (offset, len) = if wide {
                (layout.u64(sh, 0x18), layout.u64(sh, 0x20))
            } else {
                (layout.u32(sh, 0x10), layout.u32(sh, 0x14))
            };
            if kind != SHT_NOBITS && i > 0 {
                within(format!("section {i}"), offset, len)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// This test binary itself: a whole ELF file.
    fn own_executable() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn a_whole_file_passes_and_any_cut_is_found() {
        let bytes = own_executable();
        let size = bytes.len() as u64;
        check_whole(&file_with(&bytes), size).unwrap();
        for percent in [99, 95, 50, 10, 1] {
            let len = bytes.len() * percent / 100;
            let err = check_whole(&file_with(&bytes[..len]), len as u64).unwrap_err();
            assert_eq!(err.size, len as u64, "{err}");
            assert!(err.end > len as u64, "{err}");
        }
    }

    #[test]
    fn files_that_are_not_elf_are_left_to_the_dynamic_loader() {
        check_whole(&file_with(b"not an ELF file"), 15).unwrap();
        check_whole(&file_with(b""), 0).unwrap();
        let err = check_whole(&file_with(b"\x7fELF\x02\x01\x01"), 7).unwrap_err();
        assert_eq!(err.part, "ELF header");
    }
}
