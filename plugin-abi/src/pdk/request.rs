//! `kong.request`: read the client's request.
//!
//! Phases: rewrite, access, response and log unless a method says otherwise; in `log`
//! only the headers are reliable (Kong answers them from data saved for the log timer).
//!
//! ```
//! # use {kong_rust_pdk::prelude::*, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let req = kong.request();
//!     let method = req.get_method().await?;
//!     let path = req.get_path().await?;
//!     let debug = req.get_query(None).await?.contains("debug");
//!     let agent = req.get_header("user-agent").await?.unwrap_or_default();
//!     kong.log().info(&format!("{method} {path} debug={debug} by {agent}")).await
//! }
//!
//! let sim = TestRequest::get("/items?debug").header("User-Agent", "curl")
//!     .run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert!(sim.logged("info", "GET /items debug=true by curl"));
//! ```

use super::{Kong, NO_ARGS, args};
use crate::{
    error::PdkResult,
    types::{Multimap, UriCaptures},
    value::{Bytes, Value},
};

/// `kong.request`, from [`Kong::request`].
pub struct Request<'k> {
    pub(crate) kong: &'k Kong,
}

/// One query argument (`kong.request.get_query_arg`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum QueryArg {
    /// `?name=value`: the (first) value.
    Value(String),
    /// `?name` without a value (Kong answers `true`).
    Flag(bool),
}

impl QueryArg {
    /// The value, `None` for a flag.
    pub fn value(&self) -> Option<&str> {
        match self {
            QueryArg::Value(v) => Some(v),
            QueryArg::Flag(_) => None,
        }
    }
}

macro_rules! getters {
    ($($(#[$doc:meta])* $name:ident -> $ty:ty = $method:literal;)*) => {$(
        $(#[$doc])*
        pub async fn $name(&self) -> PdkResult<$ty> {
            self.kong.call($method, &NO_ARGS).await
        }
    )*};
}

impl Request<'_> {
    getters! {
        /// `kong.request.get_scheme()`: `http` or `https`.
        get_scheme -> String = "kong.request.get_scheme";
        /// `kong.request.get_host()`: the host the client asked for, lowercase.
        get_host -> String = "kong.request.get_host";
        /// `kong.request.get_port()`: the port the request was received on.
        get_port -> u16 = "kong.request.get_port";
        /// `kong.request.get_forwarded_scheme()`: the scheme, honouring trusted
        /// `X-Forwarded-Proto`.
        get_forwarded_scheme -> String = "kong.request.get_forwarded_scheme";
        /// `kong.request.get_forwarded_host()`: the host, honouring trusted
        /// `X-Forwarded-Host`.
        get_forwarded_host -> String = "kong.request.get_forwarded_host";
        /// `kong.request.get_forwarded_port()`: the port, honouring trusted
        /// `X-Forwarded-Port`.
        get_forwarded_port -> u16 = "kong.request.get_forwarded_port";
        /// `kong.request.get_forwarded_path()`: the path, honouring trusted
        /// `X-Forwarded-Path`.
        get_forwarded_path -> String = "kong.request.get_forwarded_path";
        /// `kong.request.get_forwarded_prefix()`: the trusted `X-Forwarded-Prefix`, or the
        /// stripped route prefix; `None` if neither.
        get_forwarded_prefix -> Option<String> = "kong.request.get_forwarded_prefix";
        /// `kong.request.get_http_version()`: `1.0`, `1.1`, `2.0`...
        get_http_version -> f64 = "kong.request.get_http_version";
        /// `kong.request.get_method()`: the request method, e.g. `GET`.
        get_method -> String = "kong.request.get_method";
        /// `kong.request.get_path()`: the normalized request path.
        get_path -> String = "kong.request.get_path";
        /// `kong.request.get_raw_path()`: the path as the client sent it.
        get_raw_path -> String = "kong.request.get_raw_path";
        /// `kong.request.get_path_with_query()`: the path and query string.
        get_path_with_query -> String = "kong.request.get_path_with_query";
        /// `kong.request.get_raw_query()`: the query string without `?`.
        get_raw_query -> String = "kong.request.get_raw_query";
        /// `kong.request.get_start_time()`: when the request started, unix milliseconds.
        get_start_time -> f64 = "kong.request.get_start_time";
        /// `kong.request.get_uri_captures()`: the regex captures of the matched route path.
        get_uri_captures -> UriCaptures = "kong.request.get_uri_captures";
    }

    /// `kong.request.get_query_arg(name)`: one query argument, `None` if absent.
    pub async fn get_query_arg(&self, name: &str) -> PdkResult<Option<QueryArg>> {
        self.kong.call("kong.request.get_query_arg", &(name,)).await
    }

    /// `kong.request.get_query(max_args)`: every query argument (a flag without value has
    /// no values); `max_args` 1–1000, Kong's default 100.
    pub async fn get_query(&self, max_args: Option<u16>) -> PdkResult<Multimap> {
        self.kong
            .call("kong.request.get_query", &args([Value::from(max_args)]))
            .await
    }

    /// `kong.request.get_header(name)`: the first value of a request header, `None` if
    /// absent. Case-insensitive, `_` matches `-`. A value that is not UTF-8 is a decode
    /// error: use [`get_header_bytes`](Self::get_header_bytes) for those.
    /// Phases: rewrite, access, response, log.
    pub async fn get_header(&self, name: &str) -> PdkResult<Option<String>> {
        self.kong.call("kong.request.get_header", &(name,)).await
    }

    /// `kong.request.get_header(name)`, as raw bytes (any byte value).
    pub async fn get_header_bytes(&self, name: &str) -> PdkResult<Option<Bytes>> {
        self.kong.call("kong.request.get_header", &(name,)).await
    }

    /// `kong.request.get_headers(max_headers)`: every request header, names lowercase;
    /// `max_headers` 1–1000, Kong's default 100 (ignored in `log`).
    pub async fn get_headers(&self, max_headers: Option<u16>) -> PdkResult<Multimap> {
        self.kong
            .call(
                "kong.request.get_headers",
                &args([Value::from(max_headers)]),
            )
            .await
    }

    /// `kong.request.get_raw_body(max_allowed_file_size)`: the body bytes. Kong fails the
    /// call when the body was buffered to a file larger than allowed.
    /// Phases: rewrite, access, response.
    pub async fn get_raw_body(&self, max_allowed_file_size: Option<u64>) -> PdkResult<Bytes> {
        self.kong
            .call(
                "kong.request.get_raw_body",
                &args([max_allowed_file_size.map_or(Value::Nil, file_size)]),
            )
            .await
    }

    /// `kong.request.get_body(mimetype, max_args, max_allowed_file_size)`: the body parsed
    /// from JSON, form or multipart; `None` if it cannot be parsed. `mimetype` `None` parses
    /// by the request's `Content-Type`; `max_args` (forms, 1–1000) `None` is Kong's default;
    /// `max_allowed_file_size` (Kong 3.8+, ignored before) limits a body buffered to a file.
    ///
    /// Lua drops every argument after a nil, so a `None` before a `Some` goes as the value
    /// Kong would use: `false` for the mimetype (Kong reads `mimetype or <Content-Type>`)
    /// and 100 for `max_args` (Kong's default `lua_max_post_args`; a form body then gets at
    /// most 100 arguments even if kong.conf raised it).
    /// Phases: rewrite, access, response.
    pub async fn get_body(
        &self,
        mimetype: Option<&str>,
        max_args: Option<u16>,
        max_allowed_file_size: Option<u64>,
    ) -> PdkResult<Option<Value>> {
        let file_size = max_allowed_file_size.map(file_size);
        let max_args = match (max_args, &file_size) {
            (None, Some(_)) => Some(DEFAULT_MAX_POST_ARGS),
            (given, _) => given,
        };
        let mimetype = match (mimetype, max_args) {
            (None, Some(_)) => Value::Bool(false),
            (given, _) => Value::from(given),
        };
        self.kong
            .call(
                "kong.request.get_body",
                &args([
                    mimetype,
                    Value::from(max_args),
                    file_size.unwrap_or_default(),
                ]),
            )
            .await
    }
}

/// Kong's default `lua_max_post_args`: what `get_body` parses at most without `max_args`.
pub(crate) const DEFAULT_MAX_POST_ARGS: u16 = 100;

/// A file size limit as Kong's Lua number: past `i64::MAX` it is as unlimited as can be
/// (a wrapped negative number would make Kong refuse every buffered body).
fn file_size(limit: u64) -> Value {
    Value::Int(i64::try_from(limit).unwrap_or(i64::MAX))
}
