//! Handing descriptors to a child process at fixed numbers.

use std::os::{fd::RawFd, unix::process::CommandExt};

/// Makes the child of `command` get each `(source, target)` descriptor of this process as
/// `target`, open across the exec (every other descriptor of the daemon is close-on-exec).
pub fn at_fixed_numbers(command: &mut std::process::Command, fds: Vec<(RawFd, RawFd)>) {
    // SAFETY: the closure runs between fork and exec and calls only fcntl(2) and dup2(2),
    // which are async-signal-safe, on descriptors; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // Out of the way first, so a source that is another's target is not clobbered.
            let mut moved = [0 as RawFd; 16];
            for (i, &(source, _)) in fds.iter().enumerate().take(moved.len()) {
                let high = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, 512);
                if high < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                moved[i] = high;
            }
            for (i, &(_, target)) in fds.iter().enumerate().take(moved.len()) {
                // dup2 gives a copy without close-on-exec.
                if libc::dup2(moved[i], target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// Marks `fd` close-on-exec: a descriptor inherited at a fixed number must not leak into
/// the processes this one starts (a plugin may start some).
pub fn close_on_exec(fd: RawFd) {
    // SAFETY: fcntl(2) on a descriptor number; a bad number only returns an error.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

/// Makes the child of `command` start with at most `bytes` of address space (RLIMIT_AS):
/// a runaway allocation then fails in that process alone.
pub fn limit_address_space(command: &mut std::process::Command, bytes: u64) {
    // SAFETY: setrlimit(2) is async-signal-safe and touches only the child's own limits.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
