//! `kong.router`: the route and service the request matched.
//!
//! ```
//! # use {kong_rust_pdk::{prelude::*, types::Route}, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     if let Some(route) = kong.router().get_route().await? {
//!         let name = route.name.unwrap_or(route.id);
//!         kong.response().set_header("x-route", &name).await?;
//!     }
//!     Ok(())
//! }
//!
//! let route = Route { id: "r1".into(), name: Some("items".into()), ..Route::default() };
//! let sim = TestRequest::get("/").route(route).run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(sim.response.header("x-route"), Some("items"));
//! ```

use super::{Kong, NO_ARGS};
use crate::{
    error::PdkResult,
    types::{Route, Service},
};

/// `kong.router`, from [`Kong::router`].
pub struct Router<'k> {
    pub(crate) kong: &'k Kong,
}

impl Router<'_> {
    /// `kong.router.get_route()`: the matched route, `None` before routing (`rewrite`).
    /// Phases: access, response, log.
    pub async fn get_route(&self) -> PdkResult<Option<Route>> {
        self.kong.call("kong.router.get_route", &NO_ARGS).await
    }

    /// `kong.router.get_service()`: the matched route's service, `None` if it has none.
    /// Phases: access, response, log.
    pub async fn get_service(&self) -> PdkResult<Option<Service>> {
        self.kong.call("kong.router.get_service", &NO_ARGS).await
    }
}
