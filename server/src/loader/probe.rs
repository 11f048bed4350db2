//! Trying a plugin library in a short-lived process before the daemon maps it.
//!
//! Loading a library runs its code: its load-time constructors (`.init_array`), and the
//! dynamic loader touches every page it maps. A truncated file (SIGBUS when a page past the
//! end is touched), a constructor that calls `abort` or `exit`, or one that never returns
//! would stop or hang the daemon, and with it every other plugin (and Kong's query command,
//! so Kong could not start). So a library is first checked here:
//!
//! 1. in this process, without mapping anything: the file is a 64-bit ELF shared object for
//!    this machine, and every segment its program headers name lies inside the file;
//! 2. in a child process (this same binary, run as `__probe`): the library is loaded as the
//!    daemon would load it, its root module initialized and its manifest read and
//!    validated. The child prints one line of JSON and leaves at once with `_exit`.
//!
//! A file the child cannot load cleanly (killed by a signal, exiting by itself, printing
//! nothing, or taking longer than the probe timeout) is refused with the reason, and the
//! other plugins are served. A library the child loads and then refuses (not a plugin,
//! another ABI, an invalid manifest) is left to the caller, which refuses it with the
//! loader's own message.

use std::{
    ffi::OsStr,
    io::{Read, Seek},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::process::ExitStatusExt,
    },
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use kong_rust_pdk::kong_versions::KongVersion;
use kong_rust_plugin_abi::Manifest;
use serde::{Deserialize, Serialize};

use crate::loader::{self, LoadOptions};

/// The hidden subcommand that runs a probe.
pub const SUBCOMMAND: &str = "__probe";

/// How libraries are probed.
#[derive(Debug, Clone)]
pub struct Probe {
    /// How long the child may take.
    pub timeout: Duration,
    /// The Kong release served: the child checks the plugin's dump against its rules.
    pub kong_version: Option<KongVersion>,
}

impl Default for Probe {
    fn default() -> Probe {
        Probe {
            timeout: Duration::from_secs(10),
            kong_version: None,
        }
    }
}

/// Why a library was refused without being loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The file is not a shared object this daemon could map safely.
    #[error("{0}")]
    Elf(String),
    /// Loading it killed the probe process.
    #[error(
        "loading it crashed a test process ({0}); a load-time constructor aborted, or the file is damaged"
    )]
    Crashed(String),
    /// The probe process exited while loading it.
    #[error(
        "loading it ended a test process (exit status {0}): a load-time constructor calls exit"
    )]
    Exited(i32),
    /// The probe process did not finish in time.
    #[error("loading it did not finish within {0} s: a load-time constructor hangs")]
    Hung(u64),
    /// The probe process could not run at all.
    #[error("cannot start the probe process: {0}")]
    Spawn(String),
}

/// What the probe process found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Report {
    /// The library loaded; its validated manifest.
    Plugin(Box<Manifest>),
    /// The library loaded and is refused by the loader, with its message.
    Refused(String),
}

impl Probe {
    /// Probes the library at `path`.
    pub fn path(&self, path: &Path) -> Result<Report, ProbeError> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| ProbeError::Elf(format!("cannot open it: {e}")))?;
        check_elf(&mut file)?;
        self.run(path.as_os_str(), None)
    }

    /// Probes the library held by `fd` (a sealed copy in memory); the child inherits it.
    pub fn fd(&self, fd: &OwnedFd) -> Result<Report, ProbeError> {
        let mut file = std::fs::File::from(
            fd.try_clone()
                .map_err(|e| ProbeError::Spawn(e.to_string()))?,
        );
        check_elf(&mut file)?;
        self.run(OsStr::new(INHERITED_PATH), Some(fd.as_raw_fd()))
    }

    /// Runs the child on `target`, with `inherit` as its descriptor 3 if given.
    fn run(&self, target: &OsStr, inherit: Option<i32>) -> Result<Report, ProbeError> {
        let mut command = Command::new(own_binary());
        command.arg(SUBCOMMAND).arg(target);
        if let Some(version) = self.kong_version {
            command.arg(version.to_string());
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(fd) = inherit {
            crate::inherit::at_fixed_numbers(&mut command, vec![(fd, INHERITED_FD)]);
        }
        let mut child = command
            .spawn()
            .map_err(|e| ProbeError::Spawn(e.to_string()))?;
        let mut stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(ProbeError::Hung(self.timeout.as_secs()));
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Err(err) => return Err(ProbeError::Spawn(err.to_string())),
            }
        };
        let out = reader.join().unwrap_or_default();
        judge(status, &out)
    }
}

/// Reads the child's verdict from its exit status and output.
fn judge(status: ExitStatus, out: &[u8]) -> Result<Report, ProbeError> {
    if let Some(signal) = status.signal() {
        return Err(ProbeError::Crashed(signal_name(signal)));
    }
    let report = std::str::from_utf8(out)
        .ok()
        .and_then(|text| text.lines().last())
        .and_then(|line| serde_json::from_str::<Report>(line).ok());
    match (status.code(), report) {
        (Some(0), Some(report)) => Ok(report),
        (Some(code), _) => Err(ProbeError::Exited(code)),
        (None, _) => Err(ProbeError::Crashed("no exit status".into())),
    }
}

/// A signal's name, for messages (`SIGSEGV (signal 11)`).
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    };
    format!("{name} (signal {signal})")
}

/// This very binary, even if its file was replaced since it started.
pub fn own_binary() -> PathBuf {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        proc_exe
    } else {
        std::env::current_exe().unwrap_or(proc_exe)
    }
}

/// The descriptor a probed (or served) in-memory library is inherited as.
const INHERITED_FD: i32 = 3;
const INHERITED_PATH: &str = "/proc/self/fd/3";

/// `__probe <library> [kong version]`: loads the library as the daemon would, prints one line of JSON,
/// and leaves without running any exit handler or library destructor.
pub fn child_main(args: &[std::ffi::OsString]) -> ExitCode {
    // SAFETY: prctl(2) with PR_SET_PDEATHSIG has no memory preconditions; a probe whose
    // daemon is gone has no reason to go on.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let Some(target) = args.first() else {
        eprintln!("usage: {SUBCOMMAND} <library> [kong version]");
        return ExitCode::from(2);
    };
    let kong_version = args
        .get(1)
        .and_then(|v| v.to_str())
        .and_then(|v| KongVersion::parse(v).ok());
    let options = LoadOptions {
        allow_insecure: true,
        probe: None,
        kong_version,
    };
    let report = match loader::load(Path::new(target), &options) {
        Ok(plugin) => Report::Plugin(Box::new(plugin.manifest.clone())),
        Err(err) => Report::Refused(err.to_string()),
    };
    let mut line = serde_json::to_string(&report).unwrap_or_else(|_| "{}".into());
    line.push('\n');
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush());
    // SAFETY: _exit(2) ends the process at once: no atexit handler and no library
    // destructor of the probed library runs (they are not what is being checked).
    unsafe { libc::_exit(if written.is_ok() { 0 } else { 1 }) }
}

/// ELF64 header and program header fields this check reads.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ET_DYN: u16 = 3;

#[cfg(target_arch = "x86_64")]
const MACHINE: Option<u16> = Some(62);
#[cfg(target_arch = "aarch64")]
const MACHINE: Option<u16> = Some(183);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const MACHINE: Option<u16> = None;

/// Checks, by reading only, that `file` is a 64-bit little-endian ELF shared object for
/// this machine, whole (every part its headers describe lies inside the file): what keeps
/// `dlopen` from touching a page past its end (SIGBUS).
pub fn check_elf(file: &mut std::fs::File) -> Result<(), ProbeError> {
    let bad = |reason: &str| ProbeError::Elf(reason.to_owned());
    let len = file
        .metadata()
        .map_err(|e| ProbeError::Elf(format!("cannot read it: {e}")))?
        .len();
    let mut header = Vec::with_capacity(64);
    file.rewind()
        .and_then(|()| file.by_ref().take(64).read_to_end(&mut header))
        .map_err(|e| ProbeError::Elf(format!("cannot read it: {e}")))?;
    if !header.starts_with(ELF_MAGIC) {
        return Err(bad("it is not an ELF shared library (no ELF header)"));
    }
    if header.len() < 64 {
        return Err(bad("it is not an ELF shared library (too short)"));
    }
    if header[4] != 2 || header[5] != 1 {
        return Err(bad(
            "it is not a 64-bit little-endian library, as this daemon is",
        ));
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    if u16_at(&header, 16) != ET_DYN {
        return Err(bad("it is an ELF file but not a shared library"));
    }
    let machine = u16_at(&header, 18);
    if MACHINE.is_some_and(|own| own != machine) {
        return Err(ProbeError::Elf(format!(
            "it was built for another machine (ELF machine {machine})"
        )));
    }
    // The rest (every header, segment and section inside the file) is the loader's check.
    crate::loader::check_whole_elf(file, len)
        .map_err(|cut| ProbeError::Elf(format!("it is truncated: {cut}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_library() -> Option<PathBuf> {
        // Any shared library of the system will do for the header checks.
        [
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/aarch64-linux-gnu/libc.so.6",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    }

    #[test]
    fn garbage_and_truncated_files_are_refused_by_reading_alone() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.so");
        std::fs::write(&garbage, b"this is not a library at all, not even close").unwrap();
        let err = check_elf(&mut std::fs::File::open(&garbage).unwrap()).unwrap_err();
        assert!(err.to_string().contains("no ELF header"), "{err}");
        let Some(library) = own_library() else {
            return;
        };
        let bytes = std::fs::read(&library).unwrap();
        check_elf(&mut std::fs::File::open(&library).unwrap()).unwrap();
        let truncated = dir.path().join("truncated.so");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = check_elf(&mut std::fs::File::open(&truncated).unwrap()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        std::fs::write(&truncated, &bytes[..40]).unwrap();
        let err = check_elf(&mut std::fs::File::open(&truncated).unwrap()).unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
    }

    #[test]
    fn the_childs_end_decides_the_verdict() {
        use std::os::unix::process::ExitStatusExt;
        let crashed = judge(ExitStatus::from_raw(libc::SIGBUS), b"").unwrap_err();
        assert!(crashed.to_string().contains("SIGBUS"), "{crashed}");
        let exited = judge(ExitStatus::from_raw(3 << 8), b"").unwrap_err();
        assert_eq!(exited, ProbeError::Exited(3));
        // Exit 0 without a report: a constructor called exit(0).
        assert_eq!(
            judge(ExitStatus::from_raw(0), b"").unwrap_err(),
            ProbeError::Exited(0)
        );
        let refused = judge(ExitStatus::from_raw(0), b"{\"refused\":\"nope\"}\n").unwrap();
        assert!(matches!(refused, Report::Refused(r) if r == "nope"));
    }
}
