//! CPU time and memory of a process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.

use std::{fs, io};

/// Why a process could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process exited?).
    #[error("reading /proc/{pid}/{file}: {source}")]
    Read {
        /// The process.
        pid: u32,
        /// The file under its /proc directory.
        file: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The file does not have the expected shape.
    #[error("unexpected format of /proc/{pid}/{file}")]
    Format {
        /// The process.
        pid: u32,
        /// The file.
        file: &'static str,
    },
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// user + system CPU time of all its threads, in nanoseconds (clock-tick resolution).
    pub cpu_ns: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM), KiB.
    pub hwm_kib: u64,
}

fn read(pid: u32, file: &'static str) -> Result<String, ProcError> {
    fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|source| ProcError::Read {
        pid,
        file,
        source,
    })
}

/// Nanoseconds per clock tick (`sysconf(_SC_CLK_TCK)`).
pub fn ns_per_tick() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / if hz > 0 { hz as u64 } else { 100 }
}

/// utime + stime of `pid`, in nanoseconds.
pub fn cpu_ns(pid: u32) -> Result<u64, ProcError> {
    let stat = read(pid, "stat")?;
    let format = || ProcError::Format { pid, file: "stat" };
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')').ok_or_else(format)? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': state is field 3, so utime (14) and stime (15) are the 12th and 13th.
    let utime: u64 = fields
        .nth(11)
        .and_then(|f| f.parse().ok())
        .ok_or_else(format)?;
    let stime: u64 = fields
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(format)?;
    Ok((utime + stime) * ns_per_tick())
}

/// VmRSS and VmHWM of `pid`, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64), ProcError> {
    let status = read(pid, "status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or(ProcError::Format {
                pid,
                file: "status",
            })
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A full reading of `pid`.
pub fn sample(pid: u32) -> Result<Sample, ProcError> {
    let cpu_ns = cpu_ns(pid)?;
    let (rss_kib, hwm_kib) = memory_kib(pid)?;
    Ok(Sample {
        cpu_ns,
        rss_kib,
        hwm_kib,
    })
}

/// This process's own user + system CPU time, in nanoseconds (all threads).
pub fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let s = sample(pid).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert!(cpu_ns(pid).unwrap() >= s.cpu_ns);
    }
}
