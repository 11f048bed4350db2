//! `kong.service`, `kong.service.request` and `kong.service.response`: the upstream.
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::{Simulation, TestRequest, UpstreamResponse}};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let upstream = kong.service().request();
//!     upstream.set_header("x-forwarded-by", "rust").await?;
//!     upstream.set_path("/v2/items").await?;
//!     kong.service().set_timeouts(1_000, 5_000, 5_000).await
//! }
//!
//! async fn response(kong: &Kong) -> PdkResult<()> {
//!     let status = kong.service().response().get_status().await?.unwrap_or(0);
//!     let body = kong.service().response().get_raw_body().await?;
//!     kong.response().set_header("x-upstream", format!("{status} {}", body.len())).await
//! }
//!
//! let request = TestRequest::get("/items")
//!     .upstream_response(UpstreamResponse::new(200).body("[1,2]"));
//! let mut sim = Simulation::new(request);
//! sim.run_handler(Phase::Access, |k| Box::pin(access(k))).result.unwrap();
//! sim.run_handler(Phase::Response, |k| Box::pin(response(k))).result.unwrap();
//! assert_eq!(sim.upstream_request.path, "/v2/items");
//! assert_eq!(sim.upstream_request.timeouts, Some((1_000, 5_000, 5_000)));
//! assert_eq!(sim.response.header("x-upstream"), Some("200 5"));
//! ```

use serde::Serialize;

use super::{Kong, NO_ARGS, args};
use crate::{
    error::{PdkError, PdkResult},
    types::{Multimap, json_text},
    value::{Bytes, Value},
};

/// `kong.service`, from [`Kong::service`]. Phase: access unless noted.
pub struct Service<'k> {
    pub(crate) kong: &'k Kong,
}

impl<'k> Service<'k> {
    /// `kong.service.request`: the request Kong sends upstream.
    pub fn request(&self) -> ServiceRequest<'k> {
        ServiceRequest { kong: self.kong }
    }

    /// `kong.service.response`: the response the upstream sent.
    pub fn response(&self) -> ServiceResponse<'k> {
        ServiceResponse { kong: self.kong }
    }

    /// `kong.service.set_upstream(host)`: proxy to the upstream entity `host`; Kong
    /// answers `true`, or nothing when there is no such upstream (a
    /// [`PdkError::NoValue`]). Phase: access.
    pub async fn set_upstream(&self, host: &str) -> PdkResult<bool> {
        self.kong.call("kong.service.set_upstream", &(host,)).await
    }

    /// `kong.service.set_target(host, port)`: proxy to this host and port.
    /// Phases: rewrite, access, preread (access only before Kong 3.8).
    pub async fn set_target(&self, host: &str, port: u16) -> PdkResult<()> {
        self.kong
            .call_unit("kong.service.set_target", &(host, port))
            .await
    }

    /// `kong.service.set_retries(retries)` (Kong 3.8+). Phase: access.
    pub async fn set_retries(&self, retries: u32) -> PdkResult<()> {
        self.kong
            .call_unit("kong.service.set_retries", &(retries,))
            .await
    }

    /// `kong.service.set_timeouts(connect, write, read)`, milliseconds (Kong 3.8+).
    /// Phase: access.
    pub async fn set_timeouts(
        &self,
        connect_ms: u32,
        write_ms: u32,
        read_ms: u32,
    ) -> PdkResult<()> {
        self.kong
            .call_unit(
                "kong.service.set_timeouts",
                &(connect_ms, write_ms, read_ms),
            )
            .await
    }

    /// `kong.service.set_tls_verify(on)`: whether to verify the upstream's certificate.
    /// Phases: rewrite, access, preread (preread from Kong 3.2).
    pub async fn set_tls_verify(&self, on: bool) -> PdkResult<bool> {
        self.kong.call("kong.service.set_tls_verify", &(on,)).await
    }

    /// `kong.service.set_tls_verify_depth(depth)`. Phases: rewrite, access, preread.
    pub async fn set_tls_verify_depth(&self, depth: u32) -> PdkResult<bool> {
        self.kong
            .call("kong.service.set_tls_verify_depth", &(depth,))
            .await
    }
}

/// `kong.service.request`, from [`Service::request`]. Phases: rewrite, access.
pub struct ServiceRequest<'k> {
    pub(crate) kong: &'k Kong,
}

/// Setters whose arguments are all strings: each takes anything that is one (`&str`,
/// `String`, `format!(..)`), so callers need no `&`.
macro_rules! str_setters {
    ($($(#[$doc:meta])* $name:ident($($arg:ident),*) = $method:literal;)*) => {$(
        $(#[$doc])*
        pub async fn $name(&self, $($arg: impl AsRef<str>),*) -> PdkResult<()> {
            self.kong.call_unit($method, &($($arg.as_ref(),)*)).await
        }
    )*};
}

impl ServiceRequest<'_> {
    str_setters! {
        /// `kong.service.request.set_scheme(scheme)`: `http` or `https` (access only before
        /// Kong 3.8).
        set_scheme(scheme) = "kong.service.request.set_scheme";
        /// `kong.service.request.set_path(path)` (access only before Kong 3.8).
        set_path(path) = "kong.service.request.set_path";
        /// `kong.service.request.set_raw_query(query)`: the query string without `?`.
        set_raw_query(query) = "kong.service.request.set_raw_query";
        /// `kong.service.request.set_method(method)`.
        set_method(method) = "kong.service.request.set_method";
        /// `kong.service.request.set_header(name, value)`.
        set_header(name, value) = "kong.service.request.set_header";
        /// `kong.service.request.add_header(name, value)`.
        add_header(name, value) = "kong.service.request.add_header";
        /// `kong.service.request.clear_header(name)`.
        clear_header(name) = "kong.service.request.clear_header";
        /// `kong.service.request.clear_query_arg(name)` (Kong 3.9+).
        clear_query_arg(name) = "kong.service.request.clear_query_arg";
    }

    /// `kong.service.request.set_query(args)`: replaces the query string.
    pub async fn set_query(&self, query: &Multimap) -> PdkResult<()> {
        self.kong
            .call_unit("kong.service.request.set_query", &(query,))
            .await
    }

    /// `kong.service.request.set_headers(headers)`.
    pub async fn set_headers(&self, headers: &Multimap) -> PdkResult<()> {
        self.kong
            .call_unit("kong.service.request.set_headers", &(headers,))
            .await
    }

    /// `kong.service.request.set_raw_body(body)`: the upstream request body (sent as
    /// bytes; Kong takes them as its string).
    pub async fn set_raw_body(&self, body: &[u8]) -> PdkResult<()> {
        self.kong
            .call_unit(
                "kong.service.request.set_raw_body",
                &(Bytes(body.to_vec()),),
            )
            .await
    }

    /// `kong.service.request.enable_buffering()`: buffer the upstream response, so
    /// `kong.service.response.get_raw_body` works in `response`. Phases: rewrite, access.
    pub async fn enable_buffering(&self) -> PdkResult<()> {
        self.kong
            .call_unit("kong.service.request.enable_buffering", &NO_ARGS)
            .await
    }

    /// `kong.service.request.set_body(args, mimetype)`: encodes `body` (any serializable
    /// map) as JSON, form or multipart, by `mimetype` or else the request's
    /// `Content-Type`; `None` when Kong refused it (see Kong's error.log).
    ///
    /// A JSON body is encoded here and sent as text (`set_raw_body` and the
    /// `Content-Type` header, which is what Kong's `set_body` does with its own encoding):
    /// Kong's cjson would turn an empty list into `{}` and drop `null` members. Without a
    /// `mimetype` that costs one more call, to read the request's `Content-Type`. Forms and
    /// multipart bodies go to Kong's `set_body` as a table (sent as a MessagePack map).
    pub async fn set_body<T: Serialize + ?Sized>(
        &self,
        body: &T,
        mimetype: Option<&str>,
    ) -> PdkResult<Option<bool>> {
        const METHOD: &str = "kong.service.request.set_body";
        let encode_error = |reason| PdkError::Encode {
            method: METHOD.into(),
            reason,
        };
        let body = Value::encode(body).map_err(encode_error)?;
        let content_type = match mimetype {
            Some(given) => Some(given.to_owned()),
            None => self.kong.request().get_header("content-type").await?,
        };
        if let Some(content_type) = content_type.filter(|t| is_json(t)) {
            let text = json_text(&body).map_err(encode_error)?;
            self.set_raw_body(text.as_bytes()).await?;
            self.set_header("Content-Type", &content_type).await?;
            return Ok(Some(true));
        }
        self.kong
            .call(METHOD, &args([body, Value::from(mimetype)]))
            .await
    }

    /// `kong.service.request.disable_tls()`: plain TCP to the upstream. Phase: preread.
    pub async fn disable_tls(&self) -> PdkResult<bool> {
        self.kong
            .call("kong.service.request.disable_tls", &NO_ARGS)
            .await
    }
}

/// Whether Kong's `set_body` encodes this content type as JSON (its handler is keyed by
/// the type without parameters).
fn is_json(content_type: &str) -> bool {
    let bare = content_type.split(';').next().unwrap_or_default().trim();
    bare.eq_ignore_ascii_case("application/json")
}

/// `kong.service.response`, from [`Service::response`]. Phases: response (buffered
/// proxying), log.
pub struct ServiceResponse<'k> {
    pub(crate) kong: &'k Kong,
}

impl ServiceResponse<'_> {
    /// `kong.service.response.get_status()`: the upstream status, `None` if Kong did not
    /// proxy (e.g. a plugin exited).
    pub async fn get_status(&self) -> PdkResult<Option<u16>> {
        self.kong
            .call("kong.service.response.get_status", &NO_ARGS)
            .await
    }

    /// `kong.service.response.get_header(name)`: the first value of an upstream header.
    pub async fn get_header(&self, name: &str) -> PdkResult<Option<String>> {
        self.kong
            .call("kong.service.response.get_header", &(name,))
            .await
    }

    /// `kong.service.response.get_header(name)`, as raw bytes.
    pub async fn get_header_bytes(&self, name: &str) -> PdkResult<Option<Bytes>> {
        self.kong
            .call("kong.service.response.get_header", &(name,))
            .await
    }

    /// `kong.service.response.get_headers(max_headers)`. In the `response` phase Kong
    /// answers an empty map (its proxy table cannot be sent): use
    /// [`get_header`](Self::get_header) there.
    pub async fn get_headers(&self, max_headers: Option<u16>) -> PdkResult<Multimap> {
        self.kong
            .call(
                "kong.service.response.get_headers",
                &args([Value::from(max_headers)]),
            )
            .await
    }

    /// `kong.service.response.get_raw_body()`: the buffered upstream body. Phase: response.
    pub async fn get_raw_body(&self) -> PdkResult<Bytes> {
        self.kong
            .call("kong.service.response.get_raw_body", &NO_ARGS)
            .await
    }

    /// `kong.service.response.get_body(mimetype, max_args)`: the upstream body parsed
    /// (JSON, form...), `None` if it cannot be. A `mimetype` of `None` with a `max_args`
    /// goes as `false` (Kong reads `mimetype or <Content-Type>`): Lua would drop the
    /// arguments after a nil. Phase: response.
    pub async fn get_body(
        &self,
        mimetype: Option<&str>,
        max_args: Option<u16>,
    ) -> PdkResult<Option<Value>> {
        let mimetype = match (mimetype, max_args) {
            (None, Some(_)) => Value::Bool(false),
            (given, _) => Value::from(given),
        };
        self.kong
            .call(
                "kong.service.response.get_body",
                &args([mimetype, Value::from(max_args)]),
            )
            .await
    }
}
