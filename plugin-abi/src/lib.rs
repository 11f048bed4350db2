//! Write [Kong Gateway](https://konghq.com) plugins in Rust.
//!
//! A plugin is a `cdylib` that depends on this crate, implements [`Plugin`] and marks the
//! impl with [`#[plugin]`](macro@plugin). The `kong-rust-pluginserver` daemon loads every
//! plugin library from its plugins directory through the stable ABI in [`ffi`], serves Kong
//! on one socket per plugin and runs your phase handlers, each PDK call a round trip to Kong.
//!
//! - [`Plugin`]: the trait, one `async fn` per phase;
//! - [`Kong`]: the PDK handle a handler gets (`kong.request().get_header("host")`); every
//!   group of Kong's PDK is a method on it ([`pdk`] lists them, `docs/pdk.md` has the table);
//! - [`types`]: what PDK calls take and return (multimaps, entities, bodies, [`Value`]);
//! - `testkit` (cargo feature `testkit`): a simulated Kong to unit-test plugins in-process;
//! - [`ffi`]: the binary interface between daemon and plugin (not for plugin authors).

#![deny(missing_docs)]

mod driver;
mod error;
mod exchange;
mod host_log;
// abi_stable's #[sabi_trait] expands to impls inside a const block.
#[allow(non_local_definitions)]
pub mod ffi;
mod instance;
pub mod pdk;
mod plugin;
pub mod schema;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;
mod value;

pub use driver::{EventDriver, Input, Step, panic_message};
pub use error::{ConfigError, PdkError, PdkResult};
pub use ffi::Phase;
pub use instance::InstanceInfo;
pub use kong_rust_pdk_macros::plugin;
pub use pdk::Kong;
pub use plugin::{Plugin, construct};
/// The `JsonSchema` derive a config type needs (re-exported so versions match).
pub use schemars;
pub use value::{Bytes, Value};

/// Everything a plugin usually needs: `use kong_rust_pdk::prelude::*;`.
pub mod prelude {
    pub use crate::{ConfigError, InstanceInfo, Kong, PdkError, PdkResult, Phase, Plugin, Value};
}

/// Items the macros refer to; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
    pub use serde_json;
}
