//! `kong.request`: read the client's request.

use super::{Kong, NO_ARGS};
use crate::error::PdkResult;

/// `kong.request`, from [`Kong::request`].
pub struct Request<'k> {
    pub(crate) kong: &'k Kong,
}

impl Request<'_> {
    /// `kong.request.get_header(name)`: the first value of a request header, `None` if absent.
    /// Phases: rewrite, access, response, log.
    pub async fn get_header(&self, name: &str) -> PdkResult<Option<String>> {
        self.kong.call("kong.request.get_header", &(name,)).await
    }

    /// `kong.request.get_method()`: the request method, e.g. `GET`.
    /// Phases: rewrite, access, response, log.
    pub async fn get_method(&self) -> PdkResult<String> {
        self.kong.call("kong.request.get_method", &NO_ARGS).await
    }

    /// `kong.request.get_path()`: the normalized request path.
    /// Phases: rewrite, access, response, log.
    pub async fn get_path(&self) -> PdkResult<String> {
        self.kong.call("kong.request.get_path", &NO_ARGS).await
    }
}
