//! `rust-ext-authz`: external authorization. In the `access` phase it describes the
//! request to an HTTP service and lets the service decide:
//!
//! - the plugin POSTs `{"method", "path", "client_ip", "headers"}` (JSON; `headers` holds
//!   the request headers named in `forward_headers`, lower-case) to `url`;
//! - a `2xx` answer allows the request; the answer's headers named in `upstream_headers`
//!   (say `x-user-id`) are set on the upstream request, and a client-sent header of the
//!   same name is removed, so it cannot be forged;
//! - `401` or `403` denies it with the same status (and the service's `WWW-Authenticate`);
//! - anything else, or no answer within `timeout_ms`, or no connection at all, **denies**
//!   it with `status_on_error` (503 by default) and logs why: an authorization check that
//!   cannot run must not let requests through.
//!
//! The call is awaited on the plugin library's runtime: while the service thinks, the
//! daemon serves other events on the same thread.
//!
//! ```json
//! {
//!   "url": "http://authz.internal:8080/check",
//!   "timeout_ms": 300,
//!   "forward_headers": ["authorization"],
//!   "upstream_headers": ["x-user-id"]
//! }
//! ```

use std::{collections::BTreeMap, time::Duration};

use kong_rust_pdk::{prelude::*, types::Multimap};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The plugin configuration (`config` of the plugin entity in Kong).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Config {
    /// The authorization service: every request is described to it in a POST to this
    /// `http://` URL.
    #[schemars(length(min = 8, max = 2048))]
    pub url: String,
    /// How long the service may take to answer, connecting included, in milliseconds.
    /// Past it the request is denied.
    #[serde(default = "defaults::timeout_ms")]
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: u32,
    /// Request headers sent to the service (names are case-insensitive).
    #[serde(default = "defaults::forward_headers")]
    pub forward_headers: Vec<String>,
    /// Headers of an allowing answer set on the upstream request (say `x-user-id`).
    #[serde(default)]
    pub upstream_headers: Vec<String>,
    /// The status a request is denied with when the service cannot decide: no answer in
    /// time, no connection, or an answer other than 2xx, 401 and 403.
    #[serde(default = "defaults::status_on_error")]
    #[schemars(range(min = 400, max = 599))]
    pub status_on_error: u16,
}

mod defaults {
    pub fn timeout_ms() -> u32 {
        300
    }
    pub fn forward_headers() -> Vec<String> {
        vec!["authorization".into()]
    }
    pub fn status_on_error() -> u16 {
        503
    }
}

/// What the service is told about a request.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct CheckRequest {
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The client address (behind trusted proxies, the real client).
    pub client_ip: String,
    /// The forwarded request headers, lower-case names, first value each.
    pub headers: BTreeMap<String, String>,
}

/// What the service decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the request goes on, with these headers for the upstream.
    Allow(Vec<(String, String)>),
    /// 401 or 403, with the service's `WWW-Authenticate`, if any.
    Deny {
        /// 401 or 403.
        status: u16,
        /// The challenge to pass on.
        www_authenticate: Option<String>,
    },
}

/// Why the service could not decide.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No answer within the timeout.
    #[error("no answer within {0} ms")]
    Timeout(u32),
    /// No connection, or a broken exchange.
    #[error("{0}")]
    Transport(String),
    /// An answer that is neither an allowance nor a denial.
    #[error("unexpected status {0}")]
    Status(u16),
}

/// One per distinct configuration: the HTTP client (its connection pool is shared by
/// concurrent requests).
pub struct ExtAuthz {
    config: Config,
    client: reqwest::Client,
}

impl ExtAuthz {
    /// Asks the service about `request`.
    pub async fn check(&self, request: &CheckRequest) -> Result<Verdict, CheckError> {
        let body = serde_json::to_vec(request).map_err(|e| CheckError::Transport(e.to_string()))?;
        let answer = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = answer.status().as_u16();
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match status {
            200..=299 => Ok(Verdict::Allow(
                self.config
                    .upstream_headers
                    .iter()
                    .filter_map(|name| Some((name.clone(), header(name)?)))
                    .collect(),
            )),
            401 | 403 => Ok(Verdict::Deny {
                status,
                www_authenticate: header("www-authenticate"),
            }),
            other => Err(CheckError::Status(other)),
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> CheckError {
        if e.is_timeout() {
            CheckError::Timeout(self.config.timeout_ms)
        } else {
            // The chain of causes names the real problem (connection refused...).
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            CheckError::Transport(message)
        }
    }

    /// The description of the request Kong is handling.
    async fn describe(&self, kong: &Kong) -> PdkResult<CheckRequest> {
        let request = kong.request();
        let mut headers = BTreeMap::new();
        if !self.config.forward_headers.is_empty() {
            let all = request.get_headers(None).await?;
            for name in &self.config.forward_headers {
                if let Some(value) = all.get(name) {
                    headers.insert(name.to_ascii_lowercase(), value.to_owned());
                }
            }
        }
        Ok(CheckRequest {
            method: request.get_method().await?,
            path: request.get_path().await?,
            client_ip: kong.client().get_forwarded_ip().await?,
            headers,
        })
    }
}

#[kong_rust_pdk::plugin]
impl Plugin for ExtAuthz {
    type Config = Config;
    /// With authentication plugins (key-auth is 1250), before rate limiting (910).
    const PRIORITY: i64 = 1200;

    fn new(config: Config) -> Result<Self, ConfigError> {
        if !config.url.starts_with("http://") {
            return Err(ConfigError::rejected(format!(
                "url `{}` must be an http:// URL",
                config.url
            )));
        }
        let timeout = Duration::from_millis(u64::from(config.timeout_ms));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| ConfigError::rejected(format!("cannot build the HTTP client: {e}")))?;
        Ok(ExtAuthz { config, client })
    }

    async fn access(&self, kong: &Kong) -> PdkResult<()> {
        let request = self.describe(kong).await?;
        match self.check(&request).await {
            Ok(Verdict::Allow(headers)) => {
                let upstream = kong.service().request();
                for name in &self.config.upstream_headers {
                    match headers.iter().find(|(n, _)| n == name) {
                        Some((_, value)) => upstream.set_header(name, value).await?,
                        // Not vouched for by the service: the client's own is dropped.
                        None => upstream.clear_header(name).await?,
                    }
                }
                Ok(())
            }
            Ok(Verdict::Deny {
                status,
                www_authenticate,
            }) => {
                let message = if status == 401 {
                    "Unauthorized"
                } else {
                    "Forbidden"
                };
                match www_authenticate {
                    Some(challenge) => {
                        let headers = Multimap::new().with("WWW-Authenticate", challenge);
                        kong.response()
                            .error_with_headers(status, message, &headers)
                            .await?
                    }
                    None => kong.response().error(status, Some(message)).await?,
                }
            }
            Err(e) => {
                kong.log()
                    .err(&format!(
                        "authorization service {} failed, request denied: {e}",
                        self.config.url
                    ))
                    .await?;
                kong.response()
                    .error(
                        self.config.status_on_error,
                        Some("Authorization service unavailable"),
                    )
                    .await?
            }
        }
    }
}

#[cfg(test)]
mod tests;
