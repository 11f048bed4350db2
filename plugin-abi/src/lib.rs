//! Write [Kong Gateway](https://konghq.com) plugins in Rust.
//!
//! A plugin is a `cdylib` that depends on this crate, implements [`Plugin`] and marks the
//! impl with [`#[plugin]`](macro@plugin). The `kong-rust-pluginserver` daemon loads every
//! plugin library from its plugins directory through a stable ABI (the
//! `kong-rust-plugin-abi` crate, which `#[plugin]` implements for you), serves Kong on one
//! socket per plugin and runs your phase handlers, each PDK call a round trip to Kong.
//!
//! - [`Plugin`]: the trait, one `async fn` per phase;
//! - [`Kong`]: the PDK handle a handler gets (`kong.request().get_header("host")`); every
//!   group of Kong's PDK is a method on it ([`pdk`] lists them, `docs/pdk.md` has the table);
//! - [`types`]: what PDK calls take and return (multimaps, entities, bodies, [`Value`]);
//! - [`schema`]: how the config type becomes the schema Kong validates configurations with;
//! - [`kong_versions`]: what each Kong release accepts and does (PDK functions, phases,
//!   schema rules).
//!
//! Handlers may await any tokio future (timers, sockets, clients built on tokio): each
//! plugin library gets a tokio runtime of its own, whose context the PDK enters while it
//! runs plugin code, and a waiting handler holds no thread of the daemon. Blocking code
//! goes to [`spawn_blocking`]. `docs/writing-plugins.md` explains what never to do on the
//! daemon's threads.
//!
//! Unit-test plugins with the `kong-rust-pdk-testkit` crate, a simulated Kong that runs
//! handlers in-process.

mod driver;
mod error;
mod exchange;
mod export;
mod host_log;
pub mod kong_versions;
mod panics;
pub mod pdk;
mod plugin;
mod runtime;
pub mod schema;
pub mod types;
mod value;

pub use error::{ConfigError, Never, PdkError, PdkResult};
pub use kong_rust_pdk_macros::plugin;
pub use kong_rust_plugin_abi::{InstanceInfo, OnFailure, Phase};
pub use pdk::Kong;
pub use plugin::Plugin;
pub use runtime::{SHUTDOWN_GRACE, spawn_blocking};
/// The `JsonSchema` derive a config type needs (re-exported so versions match).
pub use schemars;
pub use value::{Bytes, Value};

/// Everything a plugin usually needs: `use kong_rust_pdk::prelude::*;`. Besides the trait
/// and the PDK handle, the types handlers name: bodies, multimaps of headers and query
/// arguments, the consumer and credential of `kong.client`.
pub mod prelude {
    pub use crate::{
        ConfigError, InstanceInfo, Kong, Never, OnFailure, PdkError, PdkResult, Phase, Plugin,
        Value,
        pdk::QueryArg,
        types::{Body, Bytes, Consumer, Credential, Multimap},
    };
}

/// Items the `#[plugin]` macro and the test kit use; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
    pub use kong_rust_plugin_abi::{PluginModuleRef, encode_refusal};
    pub use serde_json;

    pub use crate::{
        export::{manifest_of, module_for},
        host_log::ABORT_ALLOWED_ENV,
        plugin::{check_schema, construct},
    };

    /// The plugin library's runtime, for the test kit.
    pub mod runtime {
        pub use crate::runtime::Lease;
    }

    /// The handler driver, for the test kit.
    pub mod driver {
        pub use crate::{
            driver::{EventDriver, Input, Step},
            exchange::ends_event,
            panics::panic_message,
        };
    }
}
