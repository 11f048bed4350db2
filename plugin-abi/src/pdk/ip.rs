//! `kong.ip`: trusted-address checks.
//!
//! ```
//! # use kong_rust_pdk::prelude::*;
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let peer = kong.client().get_ip().await?;
//!     if !kong.ip().is_trusted(&peer).await? {
//!         kong.log().notice("untrusted peer").await?;
//!     }
//!     Ok(())
//! }
//! ```

use super::Kong;
use crate::error::PdkResult;

/// `kong.ip`, from [`Kong::ip`].
pub struct Ip<'k> {
    pub(crate) kong: &'k Kong,
}

impl Ip<'_> {
    /// `kong.ip.is_trusted(address)`: whether `address` is in `trusted_ips`. All phases.
    pub async fn is_trusted(&self, address: &str) -> PdkResult<bool> {
        self.kong.call("kong.ip.is_trusted", &(address,)).await
    }
}
