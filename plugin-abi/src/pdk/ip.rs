//! `kong.ip`: trusted-address checks.
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let peer = kong.client().get_ip().await?;
//!     if !kong.ip().is_trusted(&peer).await? {
//!         kong.response().exit(403, "untrusted peer").await?;
//!     }
//!     Ok(())
//! }
//!
//! let sim = TestRequest::get("/").client_ip("10.0.0.9").trusted_ip("10.0.0.1")
//!     .run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(sim.exit.as_ref().map(|e| e.status), Some(403));
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
