//! `kong.response`: shape the response Kong sends to the client.

use std::collections::BTreeMap;

use super::Kong;
use crate::error::PdkResult;

/// `kong.response`, from [`Kong::response`].
pub struct Response<'k> {
    pub(crate) kong: &'k Kong,
}

impl Response<'_> {
    /// `kong.response.set_header(name, value)`: sets a response header, replacing any value.
    /// Phases: rewrite, access, response.
    pub async fn set_header(&self, name: &str, value: &str) -> PdkResult<()> {
        self.kong
            .call_unit("kong.response.set_header", &(name, value))
            .await
    }

    /// `kong.response.exit(status, body, headers)`: ends the request with this response.
    ///
    /// Kong never answers this call, so the handler ends here: the returned future never
    /// completes and the daemon drops the handler once Kong has the call. Write it as the
    /// last statement of a handler, e.g. `return kong.response().exit(403, ..).await;`.
    /// Phases: rewrite, access, response, preread.
    pub async fn exit(
        &self,
        status: u16,
        body: Option<&str>,
        headers: Option<&BTreeMap<String, String>>,
    ) -> PdkResult<()> {
        match (body, headers) {
            (None, None) => self.kong.call_unit("kong.response.exit", &(status,)).await,
            (Some(body), None) => {
                self.kong
                    .call_unit("kong.response.exit", &(status, body))
                    .await
            }
            (body, Some(headers)) => {
                self.kong
                    .call_unit("kong.response.exit", &(status, body.unwrap_or(""), headers))
                    .await
            }
        }
    }
}
