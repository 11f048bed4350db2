//! `kong.node`, `kong.cluster` and `kong.plugin`: where the plugin runs.
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::{self as testkit, TestRequest}};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let node = kong.node().get_id().await?;
//!     let plugin = kong.plugin().get_id().await?;
//!     let cluster = kong.cluster().get_id().await?.unwrap_or_else(|| "none".into());
//!     let workers = kong.node().get_memory_stats().await?.workers_lua_vms.len();
//!     kong.log().debug(&format!("{plugin} on {node} in {cluster}: {workers} workers")).await
//! }
//!
//! let sim = TestRequest::get("/").run_handler(Phase::Access, |k| Box::pin(access(k)));
//! let line = format!("{} on {} in none: 1 workers", testkit::PLUGIN_ID, testkit::NODE_ID);
//! assert!(sim.logged("debug", &line));
//! ```

use super::{Kong, NO_ARGS};
use crate::{error::PdkResult, types::MemoryStats};

/// `kong.node`, from [`Kong::node`].
pub struct Node<'k> {
    pub(crate) kong: &'k Kong,
}

impl Node<'_> {
    /// `kong.node.get_id()`: this node's UUID. All phases.
    pub async fn get_id(&self) -> PdkResult<String> {
        self.kong.call("kong.node.get_id", &NO_ARGS).await
    }

    /// `kong.node.get_memory_stats()`: shared-dictionary and worker memory, in bytes.
    /// All phases.
    pub async fn get_memory_stats(&self) -> PdkResult<MemoryStats> {
        self.kong.call("kong.node.get_memory_stats", &NO_ARGS).await
    }

    /// `kong.node.get_memory_stats(unit, scale)`: sizes as text in `unit` (`k`, `m`, `g`)
    /// with `scale` decimals. All phases.
    pub async fn get_memory_stats_in(&self, unit: &str, scale: u32) -> PdkResult<MemoryStats> {
        self.kong
            .call("kong.node.get_memory_stats", &(unit, scale))
            .await
    }

    /// `kong.node.get_hostname()`: this node's host name. All phases.
    pub async fn get_hostname(&self) -> PdkResult<String> {
        self.kong.call("kong.node.get_hostname", &NO_ARGS).await
    }
}

/// `kong.cluster`, from [`Kong::cluster`].
pub struct Cluster<'k> {
    pub(crate) kong: &'k Kong,
}

impl Cluster<'_> {
    /// `kong.cluster.get_id()`: the cluster's UUID, `None` when Kong has none (e.g. no
    /// database). All phases.
    pub async fn get_id(&self) -> PdkResult<Option<String>> {
        self.kong.call("kong.cluster.get_id", &NO_ARGS).await
    }
}

/// `kong.plugin`: the plugin entity (Kong's configured plugin) this handler runs for, from
/// [`Kong::plugin`].
pub struct PluginEntity<'k> {
    pub(crate) kong: &'k Kong,
}

impl PluginEntity<'_> {
    /// `kong.plugin.get_id()`: the UUID of the plugin entity running (Kong 3.3+).
    /// All phases.
    pub async fn get_id(&self) -> PdkResult<String> {
        self.kong.call("kong.plugin.get_id", &NO_ARGS).await
    }
}
