//! A daemon process under test.

use std::{
    fs::Permissions,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{artifacts, kong::Kong};

/// How long a daemon may take to open its sockets.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A scratch Kong prefix and plugins directory.
pub struct Scratch {
    dir: TempDir,
}

impl Scratch {
    /// An empty prefix and plugins directory.
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("krp-e2e-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        std::fs::create_dir(dir.path().join("prefix")).unwrap();
        // As an operator installs them: not writable by group or others (the daemon
        // refuses plugins that are), whatever the umask.
        for sub in ["plugins", "prefix"] {
            std::fs::set_permissions(dir.path().join(sub), Permissions::from_mode(0o755)).unwrap();
        }
        Scratch { dir }
    }

    /// Holds copies of the given workspace plugin crates' libraries.
    pub fn with_plugins(crates: &[&str]) -> Scratch {
        let scratch = Scratch::new();
        for name in crates {
            scratch.add_plugin(name);
        }
        scratch
    }

    /// Copies the library of workspace crate `crate_name` into the plugins directory.
    pub fn add_plugin(&self, crate_name: &str) -> PathBuf {
        let source = artifacts::plugin_library(crate_name);
        let target = self.plugins_dir().join(source.file_name().unwrap());
        std::fs::copy(&source, &target).expect("copy plugin library");
        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).unwrap();
        target
    }

    /// The scratch directory holding the plugins directory and the prefix.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The plugins directory.
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// The Kong prefix.
    pub fn prefix(&self) -> PathBuf {
        self.dir.path().join("prefix")
    }

    /// The socket path of `plugin`.
    pub fn socket(&self, plugin: &str) -> PathBuf {
        self.prefix().join(format!("{plugin}.socket"))
    }

    /// A daemon command on this scratch directory (not started).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(artifacts::daemon_binary());
        cmd.arg("--plugins-directory")
            .arg(self.plugins_dir())
            .arg("--kong-prefix")
            .arg(self.prefix())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts the daemon and waits until every plugin in `plugins` has its socket.
    pub fn start(&self, plugins: &[&str]) -> Daemon {
        self.start_with(plugins, |_| {})
    }

    /// Starts a daemon without waiting for anything (for one that will stand by).
    pub fn spawn(&self, configure: impl FnOnce(&mut Command)) -> Daemon {
        self.start_with(&[], configure)
    }

    /// Starts a daemon as a successor to a running one, as Kong does after `kong reload`:
    /// from another parent process (a new nginx worker; here a shell that waits for it).
    /// Waits for nothing; [`Daemon::pid`] is the shell's.
    pub fn start_successor(&self) -> Daemon {
        self.start_successor_with(&[])
    }

    /// [`start_successor`](Self::start_successor) with extra arguments.
    pub fn start_successor_with(&self, extra: &[&str]) -> Daemon {
        let mut daemon = self.command();
        daemon.args(extra);
        let mut args = vec![
            "-c".to_owned(),
            r#""$@" & wait $!"#.to_owned(),
            "sh".to_owned(),
            daemon.get_program().to_string_lossy().into_owned(),
        ];
        args.extend(daemon.get_args().map(|a| a.to_string_lossy().into_owned()));
        self.start_with_program("/bin/sh", &args, &[])
    }

    fn start_with_program(&self, program: &str, args: &[String], plugins: &[&str]) -> Daemon {
        let stderr = self.stderr_path();
        let child = Command::new(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn the daemon");
        let mut daemon = Daemon {
            child,
            stderr,
            sockets: plugins.iter().map(|p| self.socket(p)).collect(),
        };
        daemon.wait_ready();
        daemon
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join(format!(
            "daemon-{}.stderr",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
    }

    /// Like [`start`](Self::start), with extra arguments or environment.
    pub fn start_with(&self, plugins: &[&str], configure: impl FnOnce(&mut Command)) -> Daemon {
        let stderr = self.stderr_path();
        let mut cmd = self.command();
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        configure(&mut cmd);
        let child = cmd.spawn().expect("spawn the daemon");
        let mut daemon = Daemon {
            child,
            stderr,
            sockets: plugins.iter().map(|p| self.socket(p)).collect(),
        };
        daemon.wait_ready();
        daemon
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    child: Child,
    stderr: PathBuf,
    sockets: Vec<PathBuf>,
}

impl Daemon {
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        for socket in &self.sockets {
            while std::os::unix::net::UnixStream::connect(socket).is_err() {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "daemon exited with {status} before opening {}:\n{}",
                        socket.display(),
                        std::fs::read_to_string(&self.stderr).unwrap_or_default()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "daemon did not open {} in time:\n{}",
                    socket.display(),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A simulated Kong worker on the socket of `plugin` (the first one started with).
    pub fn kong(&self) -> Kong {
        Kong::new(&self.sockets[0])
    }

    /// A simulated Kong worker speaking ProtoBuf:1 on the first socket.
    pub fn kong_pb(&self) -> crate::kong_pb::KongPb {
        crate::kong_pb::KongPb::new(&self.sockets[0])
    }

    /// A simulated Kong worker on any socket.
    pub fn kong_on(&self, socket: impl AsRef<Path>) -> Kong {
        Kong::new(socket)
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the daemon's stderr contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "daemon never logged {needle:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` and waits up to `timeout` for the exit status.
    pub fn signal_and_wait(
        &mut self,
        signal: i32,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failed test shows what the daemon said, whatever its assertion printed.
        if std::thread::panicking() {
            eprintln!(
                "---- the daemon's stderr ----\n{}---- end of the daemon's stderr ----",
                self.stderr()
            );
        }
    }
}
