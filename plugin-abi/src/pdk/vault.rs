//! `kong.vault`: resolve secret references such as `{vault://env/my-secret}`.
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let reference = "{vault://env/api-key}";
//!     if kong.vault().is_reference(reference).await? {
//!         let key = kong.vault().get(reference).await?.unwrap_or_default();
//!         kong.service().request().set_header("x-api-key", &key).await?;
//!     }
//!     Ok(())
//! }
//!
//! let sim = TestRequest::get("/").vault_secret("{vault://env/api-key}", "s3cret")
//!     .run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(sim.upstream_request.header("x-api-key"), Some("s3cret"));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Kong, NO_ARGS};
use crate::{error::PdkResult, value::Value};

/// `kong.vault`, from [`Kong::vault`].
pub struct Vault<'k> {
    pub(crate) kong: &'k Kong,
}

/// A parsed vault reference (`kong.vault.parse_reference`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaultReference {
    /// The vault name (`env`, `aws`...).
    pub name: String,
    /// The secret's resource.
    pub resource: String,
    /// The key inside the secret, if any.
    pub key: Option<String>,
    /// The secret version, if any.
    pub version: Option<i64>,
    /// Fields not named above (e.g. `config`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Vault<'_> {
    /// `kong.vault.get(reference)`: the secret, `None` if it cannot be resolved.
    /// All phases.
    pub async fn get(&self, reference: &str) -> PdkResult<Option<String>> {
        self.kong.call("kong.vault.get", &(reference,)).await
    }

    /// `kong.vault.is_reference(s)`: whether `s` is a vault reference. All phases.
    pub async fn is_reference(&self, s: &str) -> PdkResult<bool> {
        self.kong.call("kong.vault.is_reference", &(s,)).await
    }

    /// `kong.vault.parse_reference(s)`: the parts of a reference, `None` if it is not one.
    /// All phases.
    pub async fn parse_reference(&self, s: &str) -> PdkResult<Option<VaultReference>> {
        self.kong.call("kong.vault.parse_reference", &(s,)).await
    }

    /// `kong.vault.flush()`: empties Kong's secret cache and starts rotating every secret
    /// (Kong 3.3+). All phases.
    pub async fn flush(&self) -> PdkResult<()> {
        self.kong.call_unit("kong.vault.flush", &NO_ARGS).await
    }

    /// `kong.vault.update(options)`: `options` (values with a `$refs` map of vault
    /// references) with each referenced value replaced by the secret's current value
    /// (Kong 3.4+, experimental in Kong). All phases.
    pub async fn update(&self, options: &Value) -> PdkResult<Value> {
        let updated: Option<Value> = self.kong.call("kong.vault.update", &(options,)).await?;
        Ok(updated.unwrap_or_default())
    }

    /// `kong.vault.warmup(input)`: resolves every vault reference among `input`'s keys and
    /// values (nested tables included) into Kong's cache (Kong 3.5+). All phases.
    pub async fn warmup(&self, input: &Value) -> PdkResult<()> {
        self.kong.call_unit("kong.vault.warmup", &(input,)).await
    }
}
