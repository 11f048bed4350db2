//! Mapping a plugin library from exactly the bytes that were checked.
//!
//! A library loaded by path is opened again by the dynamic loader, after any check made on
//! that path: whoever can change the path in between chooses the code that runs. So the file
//! is opened once, without following a symbolic link, and checked through that descriptor;
//! its bytes are copied into a sealed memory file (`memfd`) that nobody can change, checked to
//! be a whole library, and the dynamic loader maps that memory file through
//! `/proc/self/fd/N`. The copy also lets a reload map a new build of a file while the old
//! build keeps running, and keeps a build written over the original in place from changing
//! code that runs.

use std::{
    ffi::CString,
    fs::File,
    io::{self, Seek},
    os::{
        fd::{AsRawFd, FromRawFd, IntoRawFd},
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::Path,
};

use abi_stable::library::{LibHeader, LibraryError, lib_header_from_path};

/// Opens the file at `path` for reading, without following a symbolic link unless
/// `follow_links` (nor blocking on a FIFO); returns it with its metadata, read through the
/// descriptor.
pub fn open_once(path: &Path, follow_links: bool) -> io::Result<(File, std::fs::Metadata)> {
    let no_follow = if follow_links { 0 } else { libc::O_NOFOLLOW };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(no_follow | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| {
            if err.raw_os_error() == Some(libc::ELOOP) {
                io::Error::other("it is a symbolic link (install the library file itself)")
            } else {
                err
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    Ok((file, meta))
}

/// What went wrong while mapping a library.
#[derive(Debug)]
pub enum MapError {
    /// The sealed copy could not be made.
    Copy(io::Error),
    /// The file does not hold a whole library.
    Truncated(super::elf::Truncated),
    /// The dynamic loader or abi_stable refused it.
    Library(LibraryError),
    /// Tried in a short-lived process first, it failed there (see [`super::probe`]).
    Probe(String),
}

/// Copies `file` (`expected_len` bytes, as checked) into a sealed memory file, checks that
/// it is a whole library and maps it; returns its abi_stable header.
pub fn map(
    file: &File,
    name: &str,
    expected_len: u64,
    probe: Option<&super::probe::Probe>,
) -> Result<&'static LibHeader, MapError> {
    let memory = sealed_copy(file, name, expected_len).map_err(MapError::Copy)?;
    super::elf::check_whole(&memory, expected_len).map_err(MapError::Truncated)?;
    if let Some(probe) = probe {
        // The very bytes about to be mapped, so a constructor that exits or crashes takes
        // down the probe's process, not the daemon.
        probe
            .fd(&memory.try_clone().map_err(MapError::Copy)?.into())
            .map_err(|err| MapError::Probe(err.to_string()))?;
    }
    let fd = memory.as_raw_fd();
    // The dynamic loader knows a loaded library by its name too: the descriptor stays open
    // for the life of the process (libraries are never unloaded), so `/proc/self/fd/N` never
    // names another library.
    let memory_ino = memory.metadata().map_err(MapError::Copy)?.ino();
    let _ = memory.into_raw_fd();
    let header = lib_header_from_path(Path::new(&format!("/proc/self/fd/{fd}")))
        .map_err(MapError::Library)?;
    verify_mapped_from(header as *const LibHeader as usize, memory_ino).map_err(MapError::Copy)?;
    Ok(header)
}

/// A memory file holding the bytes of `file` (`expected_len`, as checked; `name` labels it),
/// sealed against any change.
pub fn sealed_copy(file: &File, name: &str, expected_len: u64) -> io::Result<File> {
    let label: String = format!("kong-rust-plugin:{name}")
        .chars()
        .take(200)
        .collect();
    let label = CString::new(label.replace('\0', "_")).expect("no NUL left");
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // Ask for an executable memory file where the kernel knows the flag (it may default
    // them to no-exec, vm.memfd_noexec); older kernels refuse the flag.
    // SAFETY: memfd_create(2) with a valid C string; the descriptor is owned below.
    let mut fd = unsafe { libc::memfd_create(label.as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(label.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let mut memory = unsafe { File::from_raw_fd(fd) };
    let mut source = file;
    source.rewind()?;
    let copied = io::copy(&mut source, &mut memory)?;
    if copied != expected_len || file.metadata()?.len() != expected_len {
        return Err(io::Error::other(
            "it changed while it was read (install new builds by renaming a finished file into place)",
        ));
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl(2) on a descriptor we own.
    if unsafe { libc::fcntl(memory.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(memory)
}

/// Checks that the mapping holding `address` comes from the inode `ino`: the library the
/// dynamic loader mapped is the sealed copy, not anything found by name.
fn verify_mapped_from(address: usize, ino: u64) -> io::Result<()> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(_perms), Some(_offset), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        if (start..end).contains(&address) {
            return if inode.parse::<u64>().ok() == Some(ino) {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "the dynamic loader mapped another file (inode {inode}) than the checked copy (inode {ino})"
                )))
            };
        }
    }
    Err(io::Error::other(
        "the library's header lies in no mapping of /proc/self/maps",
    ))
}
