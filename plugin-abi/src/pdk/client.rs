//! `kong.client` and `kong.client.tls`: who is calling.
//!
//! ```
//! # use {kong_rust_pdk::{prelude::*, types::Consumer}, kong_rust_pdk_testkit::TestRequest};
//! async fn access(kong: &Kong) -> PdkResult<()> {
//!     let ip = kong.client().get_forwarded_ip().await?;
//!     match kong.client().get_consumer().await? {
//!         Some(consumer) => kong.log().info(&format!("{ip} is {}", consumer.id)).await,
//!         None => kong.response().exit(401, "who are you?").await?,
//!     }
//! }
//!
//! let anonymous = TestRequest::get("/").run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert_eq!(anonymous.response.status, 401);
//!
//! let alice = Consumer { id: "c1".into(), ..Consumer::default() };
//! let known = TestRequest::get("/")
//!     .forwarded_ip("203.0.113.7")
//!     .consumer(alice)
//!     .run_handler(Phase::Access, |k| Box::pin(access(k)));
//! assert!(known.logged("info", "203.0.113.7 is c1"));
//! ```

use super::{Kong, NO_ARGS, args};
use crate::{
    error::{PdkError, PdkResult},
    types::{Consumer, Credential},
    value::Value,
};

/// `kong.client`, from [`Kong::client`].
pub struct Client<'k> {
    pub(crate) kong: &'k Kong,
}

impl<'k> Client<'k> {
    /// `kong.client.get_ip()`: the address of the directly connected peer.
    /// Phases: all (not in the log timer, which has no connection).
    pub async fn get_ip(&self) -> PdkResult<String> {
        self.kong.call("kong.client.get_ip", &NO_ARGS).await
    }

    /// `kong.client.get_forwarded_ip()`: the client address, honouring trusted proxies.
    /// Phases: all (not in the log timer, which has no connection).
    pub async fn get_forwarded_ip(&self) -> PdkResult<String> {
        self.kong
            .call("kong.client.get_forwarded_ip", &NO_ARGS)
            .await
    }

    /// `kong.client.get_port()`: the port of the directly connected peer.
    /// Phases: all (not in the log timer, which has no connection).
    pub async fn get_port(&self) -> PdkResult<u16> {
        self.kong.call("kong.client.get_port", &NO_ARGS).await
    }

    /// `kong.client.get_forwarded_port()`: the client port, honouring trusted proxies.
    /// Phases: all (not in the log timer, which has no connection).
    pub async fn get_forwarded_port(&self) -> PdkResult<u16> {
        self.kong
            .call("kong.client.get_forwarded_port", &NO_ARGS)
            .await
    }

    /// `kong.client.get_credential()`: the credential an auth plugin attached, if any.
    /// Phases: access, response, log.
    pub async fn get_credential(&self) -> PdkResult<Option<Credential>> {
        self.kong.call("kong.client.get_credential", &NO_ARGS).await
    }

    /// `kong.client.load_consumer(consumer_id, by_username)`: loads a consumer by id (or by
    /// username when `by_username`); `None` if there is none. Phases: access, response, log.
    pub async fn load_consumer(
        &self,
        consumer_id: &str,
        by_username: bool,
    ) -> PdkResult<Option<Consumer>> {
        self.kong
            .call("kong.client.load_consumer", &(consumer_id, by_username))
            .await
    }

    /// `kong.client.get_consumer()`: the authenticated consumer, if any.
    /// Phases: access, response, log.
    pub async fn get_consumer(&self) -> PdkResult<Option<Consumer>> {
        self.kong.call("kong.client.get_consumer", &NO_ARGS).await
    }

    /// `kong.client.authenticate(consumer, credential)`: marks the request authenticated.
    /// Kong requires at least one of the two. Phase: access.
    ///
    /// `authenticate(None, Some(credential))` works: Kong receives `[nil, credential]`,
    /// and LuaJIT's `unpack` keeps a single leading nil (both arguments arrive).
    pub async fn authenticate(
        &self,
        consumer: Option<&Consumer>,
        credential: Option<&Credential>,
    ) -> PdkResult<()> {
        const METHOD: &str = "kong.client.authenticate";
        let encode = |v: Option<Value>| v.unwrap_or_default();
        let consumer = consumer.map(Value::encode).transpose();
        let credential = credential.map(Value::encode).transpose();
        let (consumer, credential) = match (consumer, credential) {
            (Ok(a), Ok(b)) => (encode(a), encode(b)),
            (Err(reason), _) | (_, Err(reason)) => {
                return Err(PdkError::Encode {
                    method: METHOD.into(),
                    reason,
                });
            }
        };
        self.kong
            .call_unit(METHOD, &args([consumer, credential]))
            .await
    }

    /// `kong.client.get_protocol(allow_terminated)`: `http`, `https`, `tcp`, `tls`...;
    /// `None` if Kong cannot tell. Phases: access, response, log.
    pub async fn get_protocol(&self, allow_terminated: Option<bool>) -> PdkResult<Option<String>> {
        self.kong
            .call(
                "kong.client.get_protocol",
                &args([Value::from(allow_terminated)]),
            )
            .await
    }

    /// `kong.client.tls`: the client's TLS connection (HTTP subsystem).
    pub fn tls(&self) -> ClientTls<'k> {
        ClientTls { kong: self.kong }
    }
}

/// `kong.client.tls`, from [`Client::tls`].
pub struct ClientTls<'k> {
    pub(crate) kong: &'k Kong,
}

impl ClientTls<'_> {
    /// `kong.client.tls.request_client_certificate()`: asks the client for a certificate
    /// (the CA-list argument is Lua-only and not offered). Phase: certificate.
    pub async fn request_client_certificate(&self) -> PdkResult<bool> {
        self.kong
            .call("kong.client.tls.request_client_certificate", &NO_ARGS)
            .await
    }

    /// `kong.client.tls.disable_session_reuse()`: forces a full handshake next time.
    /// Phase: certificate.
    pub async fn disable_session_reuse(&self) -> PdkResult<bool> {
        self.kong
            .call("kong.client.tls.disable_session_reuse", &NO_ARGS)
            .await
    }

    /// `kong.client.tls.get_full_client_certificate_chain()`: the client chain as PEM,
    /// `None` when the client sent none. Phases: rewrite, access, response, log.
    pub async fn get_full_client_certificate_chain(&self) -> PdkResult<Option<String>> {
        self.kong
            .call(
                "kong.client.tls.get_full_client_certificate_chain",
                &NO_ARGS,
            )
            .await
    }

    /// `kong.client.tls.set_client_verify(v)`: overrides the verification result
    /// (`SUCCESS`, `FAILED:<reason>`, `NONE`). Phases: rewrite, access, response.
    pub async fn set_client_verify(&self, v: &str) -> PdkResult<()> {
        self.kong
            .call_unit("kong.client.tls.set_client_verify", &(v,))
            .await
    }
}
