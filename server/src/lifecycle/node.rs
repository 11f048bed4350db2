//! What serves the plugin sockets, as the lifecycle sees it: the plugins in this process
//! ([`InProcess`], `--isolation none`), or a supervisor of worker processes
//! ([`crate::lifecycle::isolation::supervisor::Supervisor`], `--isolation process`). The lifecycle
//! (lock, standby, hand-over, signals, drain) is the same for both.

use std::{
    io,
    os::unix::net::UnixStream,
    path::PathBuf,
    sync::{Arc, mpsc},
    time::Instant,
};

use super::reload::{self, Reloaded};
use crate::{
    admin::MetricsSource,
    daemon::{Daemon, Scope},
    loader::LoadOptions,
    metrics::{Gauges, PluginGauge},
    serving::{Handed, Serving},
    sockets::{PluginSocket, SocketAccess},
};

/// What serves the plugin sockets.
pub trait Node: Send + Sync + 'static {
    /// The sockets to bind: each plugin's name (and the scope of its connections).
    fn sockets(&self) -> Vec<(String, Scope)>;
    /// Starts serving `socket`.
    fn listen(&self, socket: PluginSocket) -> io::Result<()>;
    /// Serves a connection a predecessor handed over, with the bytes it had read.
    fn adopt(&self, stream: UnixStream, plugin: &str, pending: Vec<u8>);
    /// Stops accepting on the sockets of `plugins` (a successor owns their paths now).
    fn stop_accepting(&self, plugins: &[String]);
    /// Connections go to `successor` at their next request that is not a Step of one of
    /// this daemon's events.
    fn hand_over_to(&self, successor: mpsc::Sender<Handed>);
    /// Every connection goes to the successor now, idle ones too.
    fn hand_over_idle(&self);
    /// The hand-over ends.
    fn end_hand_over(&self);
    /// SIGTERM: finish the events in flight, refusing nothing.
    fn begin_shutdown(&self);
    /// Events alive now.
    fn live_events(&self) -> usize;
    /// Waits until no event is alive (but those stuck), or `deadline`; returns how many
    /// are left.
    fn wait_for_events(&self, deadline: Instant) -> usize;
    /// Waits until no connection is open, or `deadline`; returns how many are left.
    fn wait_for_connections(&self, deadline: Instant) -> usize;
    /// SIGHUP: picks up new plugins and new builds.
    fn reload(&self, access: SocketAccess, options: &LoadOptions) -> Reloaded;
    /// The Prometheus text of everything.
    fn render_metrics(&self) -> String;
    /// The daemon stops: whatever still runs ends now.
    fn finish(&self) {}
}

/// The plugins, loaded in this process.
pub struct InProcess {
    /// The daemon's state.
    pub daemon: Arc<Daemon>,
    /// Its connections.
    pub serving: Arc<Serving>,
    /// The plugins directory.
    pub plugins_directory: PathBuf,
    /// Kong's prefix.
    pub kong_prefix: PathBuf,
}

impl Node for InProcess {
    fn sockets(&self) -> Vec<(String, Scope)> {
        self.daemon
            .plugins()
            .iter()
            .map(|p| (p.name().to_owned(), Scope::One(p.slot())))
            .collect()
    }

    fn listen(&self, socket: PluginSocket) -> io::Result<()> {
        self.serving.listen(socket)
    }

    fn adopt(&self, stream: UnixStream, plugin: &str, pending: Vec<u8>) {
        self.serving.adopt(stream, plugin, pending);
    }

    fn stop_accepting(&self, plugins: &[String]) {
        self.serving.stop_accepting(plugins);
    }

    fn hand_over_to(&self, successor: mpsc::Sender<Handed>) {
        self.serving.hand_over_to(successor);
    }

    fn hand_over_idle(&self) {
        self.serving.hand_over_idle();
    }

    fn end_hand_over(&self) {
        self.serving.end_hand_over();
    }

    fn begin_shutdown(&self) {
        self.daemon.begin_shutdown();
    }

    fn live_events(&self) -> usize {
        self.daemon.live_events()
    }

    fn wait_for_events(&self, deadline: Instant) -> usize {
        self.daemon.wait_for_events(deadline)
    }

    fn wait_for_connections(&self, deadline: Instant) -> usize {
        self.serving.wait_for_connections(deadline)
    }

    fn reload(&self, access: SocketAccess, options: &LoadOptions) -> Reloaded {
        reload::reload(
            &self.serving,
            &self.plugins_directory,
            &self.kong_prefix,
            access,
            options,
        )
    }

    fn render_metrics(&self) -> String {
        render_metrics(&self.daemon, &self.serving)
    }
}

/// The Prometheus text of a daemon and its connections.
pub fn render_metrics(daemon: &Daemon, serving: &Serving) -> String {
    let gauges = Gauges {
        events_in_flight: daemon.live_events(),
        connections: serving.connections(),
        plugins: daemon
            .plugins()
            .iter()
            .map(|plugin| PluginGauge {
                name: plugin.name().to_owned(),
                version: plugin.manifest().version.clone(),
                file: plugin.loaded().path.display().to_string(),
                instances: daemon.instance_count(plugin),
            })
            .collect(),
    };
    daemon.metrics().render(&gauges)
}

/// The metrics endpoint's view of a node.
pub struct NodeMetrics(pub Arc<dyn Node>);

impl MetricsSource for NodeMetrics {
    fn render_metrics(&self) -> String {
        self.0.render_metrics()
    }
}
