//! The prefix and the plugins directory are not an attack surface for other local users:
//! nothing of theirs is followed, loaded or waited for.
//!
//! Other users are played by uid 65534 (`nobody`), which needs the tests to run as root
//! (as the daemon usually does); without root these tests say so and pass without checking.

use std::{
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        process::CommandExt,
    },
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use kong_rust_pluginserver_e2e::{daemon::Scratch, kong::Kong};
use serde_json::json;

/// The other user.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `script` with `sh` as the other user; panics if it fails.
fn as_nobody(script: &str) {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Lets the other user reach the prefix (a scratch directory is 0700).
fn open_to_others(scratch: &Scratch) {
    chmod(scratch.root(), 0o755);
}

/// The serve lock file a daemon made in the prefix.
fn lock_file(scratch: &Scratch) -> std::path::PathBuf {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = std::fs::read_dir(scratch.prefix())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "lock"));
        if let Some(path) = found {
            return path;
        }
        assert!(Instant::now() < deadline, "no lock file");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a daemon on `scratch` until it exits (at most 20 s: one that serves instead is
/// killed); returns whether it exited with success, and its stderr.
fn run_to_exit(scratch: &Scratch) -> (Option<bool>, String) {
    let mut daemon = scratch.spawn(|_| {});
    let status = daemon.signal_and_wait(0, Duration::from_secs(20));
    (status.map(|s| s.success()), daemon.stderr())
}

/// Learns the lock file's name from a daemon that ran once, then removes the file.
fn lock_path_after_one_run(scratch: &Scratch) -> std::path::PathBuf {
    let mut daemon = scratch.start(&["rust-hello"]);
    let path = lock_file(scratch);
    daemon.signal_and_wait(libc::SIGTERM, Duration::from_secs(10));
    std::fs::remove_file(&path).unwrap();
    path
}

#[test]
#[cfg_attr(
    not(krps_ci),
    ignore = "needs root to play another user; CI runs it (run as root: CI=1 cargo test, or -- --ignored)"
)]
fn a_private_copies_directory_made_by_another_user_is_never_written_through() {
    assert!(is_root(), "needs root to play another user");
    // A world-writable, sticky prefix, like /tmp.
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    open_to_others(&scratch);
    chmod(&scratch.prefix(), 0o1777);
    let victim = scratch.root().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    chmod(&victim, 0o644);
    let copies = scratch.prefix().join(".kong-rust-pluginserver-libs");

    // The other user makes the private-copies directory before the daemon does.
    as_nobody(&format!("mkdir -m 777 {}", copies.display()));
    let first = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.arg("--allow-insecure-prefix");
    });
    let second = scratch.spawn(|cmd| {
        cmd.arg("--allow-insecure-prefix");
    });
    second.wait_for_log("standing by to take over", Duration::from_secs(20));
    // It knows the standby's pid, so it knows the name of the standby's first copy, and
    // points that name at a file of root's.
    as_nobody(&format!(
        "ln -s {} {}/librust_hello-{}-0.so",
        victim.display(),
        copies.display(),
        second.pid()
    ));
    drop(first);
    second.wait_for_log("taking over", Duration::from_secs(20));
    let kong = Kong::new(scratch.socket("rust-hello"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while kong.start_instance("rust-hello", json!({})).is_err() {
        assert!(Instant::now() < deadline, "{}", second.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap_or_else(|_| "(not text)".into()),
        "precious\n",
        "the daemon wrote a library through another user's symlink:\n{}",
        second.stderr()
    );
}

#[test]
fn the_lock_file_is_private_under_any_umask() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let umask_zero = |cmd: &mut Command| {
        // SAFETY: umask(2) in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::umask(0);
                Ok(())
            });
        }
    };
    let _daemon = scratch.start_with(&["rust-hello"], umask_zero);
    let meta = std::fs::metadata(lock_file(&scratch)).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
}

#[test]
fn a_symlink_at_the_lock_path_is_refused_and_never_followed() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let lock = lock_path_after_one_run(&scratch);
    let victim = scratch.root().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let (success, stderr) = run_to_exit(&scratch);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "{stderr}"
    );
    assert_eq!(success, Some(false), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
}

#[test]
fn a_hard_link_at_the_lock_path_is_refused() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    let lock = lock_path_after_one_run(&scratch);
    let victim = scratch.prefix().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    chmod(&victim, 0o600);
    std::fs::hard_link(&victim, &lock).unwrap();
    let (success, stderr) = run_to_exit(&scratch);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "{stderr}"
    );
    assert_eq!(success, Some(false), "{stderr}");
    assert!(stderr.contains("links"), "{stderr}");
}

#[test]
#[cfg_attr(
    not(krps_ci),
    ignore = "needs root to play another user; CI runs it (run as root: CI=1 cargo test, or -- --ignored)"
)]
fn a_lock_file_of_another_user_is_refused_instead_of_waited_for() {
    assert!(is_root(), "needs root to play another user");
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    open_to_others(&scratch);
    let lock = lock_path_after_one_run(&scratch);
    // The other user got a lock file in (say, through a prefix that was writable once)
    // and holds its lock.
    std::fs::write(&lock, "").unwrap();
    chmod(&lock, 0o644);
    std::os::unix::fs::chown(&lock, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut holder = Command::new("flock")
        .arg("--exclusive")
        .arg(&lock)
        .args(["sleep", "60"])
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut daemon = scratch.spawn(|_| {});
    let status = daemon.signal_and_wait(0, Duration::from_secs(10));
    let _ = holder.kill();
    let _ = holder.wait();
    let stderr = daemon.stderr();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the daemon waited for another user's lock:\n{stderr}"
    );
    assert!(stderr.contains(&format!("uid {NOBODY}")), "{stderr}");
}

#[test]
fn a_prefix_others_may_write_is_refused_unless_allowed() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    chmod(&scratch.prefix(), 0o777);
    let (success, stderr) = run_to_exit(&scratch);
    assert_eq!(success, Some(false), "{stderr}");
    assert!(stderr.contains("--allow-insecure-prefix"), "{stderr}");
    assert!(stderr.contains("mode 777"), "{stderr}");
    let daemon = scratch.start_with(&["rust-hello"], |cmd| {
        cmd.arg("--allow-insecure-prefix");
    });
    daemon
        .kong()
        .start_instance("rust-hello", json!({}))
        .unwrap();
}

#[test]
fn a_plugins_directory_under_a_directory_others_may_write_is_refused() {
    let scratch = Scratch::with_plugins(&["rust-hello"]);
    // Anyone may rename `plugins` away and put a directory of theirs in its place.
    chmod(scratch.root(), 0o777);
    let (success, stderr) = run_to_exit(&scratch);
    assert_eq!(success, Some(false), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: refusing to load: group members or others may write it (mode 777)",
            scratch.root().display()
        )),
        "{stderr}"
    );
    // A sticky parent (like /tmp) is fine: only the owner may rename what is in it.
    chmod(scratch.root(), 0o1777);
    let _daemon = scratch.start(&["rust-hello"]);
}
