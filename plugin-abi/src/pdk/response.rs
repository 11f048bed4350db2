//! `kong.response`: shape the response Kong sends to the client, or end the request.
//!
//! [`exit`](Response::exit) and [`error`](Response::error) end the request: Kong never
//! answers them, so the handler stops there for good. They resolve to
//! `PdkResult<`[`Never`]`>`: write `kong.response().exit(..).await?`, which has type `!`,
//! so it can end a handler and the compiler flags code after it as unreachable. The future
//! completes only if the arguments cannot be encoded or the daemon refuses the call (an
//! `Err`); any later PDK call fails with [`PdkError::AfterExit`](crate::PdkError::AfterExit).
//!
//! ```
//! # use {kong_rust_pdk::{prelude::*, types::{Body, Multimap}}, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     if kong.request().get_header("x-token").await?.is_none() {
//!         let headers = Multimap::new().with("www-authenticate", "Token");
//!         let body = Body::json(&serde_json::json!({"message": "token required"}))?;
//!         kong.response().exit_with_headers(401, body, &headers).await?;
//!     }
//!     kong.response().set_header("x-checked", "yes").await
//! }
//!
//! let denied = TestRequest::get("/").run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(denied.response.status, 401);
//! assert_eq!(denied.response.body, br#"{"message":"token required"}"#);
//! assert_eq!(denied.response.header("www-authenticate"), Some("Token"));
//!
//! let allowed = TestRequest::get("/").header("x-token", "t")
//!     .run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(allowed.response.header("x-checked"), Some("yes"));
//! ```

use super::{Kong, NO_ARGS, args};
use crate::{
    error::{Never, PdkResult},
    types::{Body, JSON_CONTENT_TYPE, Multimap, WireBody},
    value::{Bytes, Value},
};

/// `kong.response`, from [`Kong::response`].
pub struct Response<'k> {
    pub(crate) kong: &'k Kong,
}

impl Response<'_> {
    /// `kong.response.get_status()`: the status about to be (or that was) sent.
    /// Phases: response, log (saved for the timer).
    pub async fn get_status(&self) -> PdkResult<u16> {
        self.kong.call("kong.response.get_status", &NO_ARGS).await
    }

    /// `kong.response.get_header(name)`: the first value of a response header, `None` if
    /// absent. Phases: response, log (saved for the timer).
    pub async fn get_header(&self, name: &str) -> PdkResult<Option<String>> {
        self.kong.call("kong.response.get_header", &(name,)).await
    }

    /// `kong.response.get_header(name)`, as raw bytes.
    pub async fn get_header_bytes(&self, name: &str) -> PdkResult<Option<Bytes>> {
        self.kong.call("kong.response.get_header", &(name,)).await
    }

    /// `kong.response.get_headers(max_headers)`: every response header.
    /// Phases: response, log (saved for the timer).
    pub async fn get_headers(&self, max_headers: Option<u16>) -> PdkResult<Multimap> {
        self.kong
            .call(
                "kong.response.get_headers",
                &args([Value::from(max_headers)]),
            )
            .await
    }

    /// `kong.response.get_source()`: `service` (the upstream answered), `exit` (a plugin
    /// ended the request) or `error`. Phases: response, log.
    pub async fn get_source(&self) -> PdkResult<String> {
        self.kong.call("kong.response.get_source", &NO_ARGS).await
    }

    /// `kong.response.set_status(status)`. Phases: rewrite, access, response.
    pub async fn set_status(&self, status: u16) -> PdkResult<()> {
        self.kong
            .call_unit("kong.response.set_status", &(status,))
            .await
    }

    /// `kong.response.set_header(name, value)`: sets a response header, replacing any
    /// value. Phases: rewrite, access, response.
    pub async fn set_header(&self, name: impl AsRef<str>, value: impl AsRef<str>) -> PdkResult<()> {
        self.kong
            .call_unit("kong.response.set_header", &(name.as_ref(), value.as_ref()))
            .await
    }

    /// `kong.response.add_header(name, value)`: adds a value to a response header.
    /// Phases: rewrite, access, response.
    pub async fn add_header(&self, name: impl AsRef<str>, value: impl AsRef<str>) -> PdkResult<()> {
        self.kong
            .call_unit("kong.response.add_header", &(name.as_ref(), value.as_ref()))
            .await
    }

    /// `kong.response.clear_header(name)`. Phases: rewrite, access, response.
    pub async fn clear_header(&self, name: impl AsRef<str>) -> PdkResult<()> {
        self.kong
            .call_unit("kong.response.clear_header", &(name.as_ref(),))
            .await
    }

    /// `kong.response.set_headers(headers)`: sets several headers at once.
    /// Phases: rewrite, access, response.
    pub async fn set_headers(&self, headers: &Multimap) -> PdkResult<()> {
        self.kong
            .call_unit("kong.response.set_headers", &(headers,))
            .await
    }

    /// `kong.response.exit(status, body)`: ends the request with this response. `body` is
    /// `()` for none, text, bytes, or [`Body::json`] (sent as JSON text with
    /// `Content-Type: application/json; charset=utf-8`, so empty lists stay `[]`).
    ///
    /// **Ends the handler**: Kong never answers, the event is finished as soon as Kong has
    /// the call, and the returned future never completes (except with an encoding error).
    /// Phases: rewrite, access, response, preread.
    pub async fn exit(&self, status: u16, body: impl Into<Body>) -> PdkResult<Never> {
        const METHOD: &str = "kong.response.exit";
        let body = body.into();
        if body.is_empty() {
            return self.kong.call_ending(METHOD, &(status,)).await;
        }
        match body.to_wire(METHOD)? {
            json @ WireBody::Json(_) => {
                let headers = Multimap::new().with("Content-Type", JSON_CONTENT_TYPE);
                self.kong
                    .call_ending(METHOD, &(status, json, headers))
                    .await
            }
            other => self.kong.call_ending(METHOD, &(status, other)).await,
        }
    }

    /// `kong.response.exit(status, body, headers)`: [`exit`](Self::exit) with response
    /// headers; a JSON body gets Kong's JSON content type unless `headers` name one. Ends
    /// the handler the same way. With `()` as body Kong gets `""` (a nil cannot come before
    /// the headers), so a status Kong has an error page for gets an empty body instead.
    pub async fn exit_with_headers(
        &self,
        status: u16,
        body: impl Into<Body>,
        headers: &Multimap,
    ) -> PdkResult<Never> {
        const METHOD: &str = "kong.response.exit";
        let body = body.into().to_wire(METHOD)?;
        let typed = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if matches!(body, WireBody::Json(_)) && !typed {
            let mut headers = headers.clone();
            headers.set("Content-Type", JSON_CONTENT_TYPE);
            return self
                .kong
                .call_ending(METHOD, &(status, body, &headers))
                .await;
        }
        self.kong
            .call_ending(METHOD, &(status, body, headers))
            .await
    }

    /// `kong.response.error(status, message)`: ends the request with Kong's error
    /// response for `status` (≥ 400), formatted as the client accepts (JSON, HTML...),
    /// with `message` or Kong's default text. Ends the handler like [`exit`](Self::exit).
    /// Phases: rewrite, access, response.
    pub async fn error(&self, status: u16, message: Option<&str>) -> PdkResult<Never> {
        self.kong
            .call_ending(
                "kong.response.error",
                &args([Value::from(status), Value::from(message)]),
            )
            .await
    }

    /// `kong.response.error(status, message, headers)`: [`error`](Self::error) with
    /// response headers. Ends the handler the same way.
    pub async fn error_with_headers(
        &self,
        status: u16,
        message: &str,
        headers: &Multimap,
    ) -> PdkResult<Never> {
        self.kong
            .call_ending("kong.response.error", &(status, message, headers))
            .await
    }
}
