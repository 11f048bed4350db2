//! The request a test describes: what the simulated Kong answers PDK calls from.

use std::collections::BTreeMap;

use kong_rust_pdk::{
    Value,
    kong_versions::KongVersion,
    types::{Consumer, Credential, Multimap, Route, Service},
};

/// A request as Kong would see it, built with chained setters; start from
/// [`TestRequest::get`] or [`TestRequest::new`]. Everything has a sensible default
/// (`GET http://localhost:8000/`, client `127.0.0.1`), so describe only what the plugin
/// reads.
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub(crate) method: String,
    pub(crate) scheme: String,
    pub(crate) host: Option<String>,
    pub(crate) port: u16,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, Option<String>)>,
    pub(crate) headers: Multimap,
    pub(crate) body: Vec<u8>,
    pub(crate) http_version: f64,
    pub(crate) client_ip: String,
    pub(crate) client_port: u16,
    pub(crate) forwarded_ip: Option<String>,
    pub(crate) consumer: Option<Consumer>,
    pub(crate) credential: Option<Credential>,
    pub(crate) route: Option<Route>,
    pub(crate) service: Option<Service>,
    pub(crate) upstream: Option<UpstreamResponse>,
    pub(crate) ctx_shared: BTreeMap<String, Value>,
    pub(crate) nginx_ctx: BTreeMap<String, Value>,
    pub(crate) nginx_vars: BTreeMap<String, String>,
    pub(crate) vault: BTreeMap<String, String>,
    pub(crate) trusted_ips: Vec<String>,
    pub(crate) answers: BTreeMap<String, Option<Value>>,
    pub(crate) kong_version: KongVersion,
    pub(crate) gate_versions: bool,
}

impl Default for TestRequest {
    fn default() -> Self {
        TestRequest::new("GET", "/")
    }
}

impl TestRequest {
    /// A request with this method and path; the path may carry a query string
    /// (`/items?page=2&debug`).
    pub fn new(method: &str, path: &str) -> TestRequest {
        let mut req = TestRequest {
            method: method.to_owned(),
            scheme: "http".into(),
            host: None,
            port: 8000,
            path: String::new(),
            query: Vec::new(),
            headers: Multimap::new(),
            body: Vec::new(),
            http_version: 1.1,
            client_ip: "127.0.0.1".into(),
            client_port: 40000,
            forwarded_ip: None,
            consumer: None,
            credential: None,
            route: None,
            service: None,
            upstream: None,
            ctx_shared: BTreeMap::new(),
            nginx_ctx: BTreeMap::new(),
            nginx_vars: BTreeMap::new(),
            vault: BTreeMap::new(),
            trusted_ips: Vec::new(),
            answers: BTreeMap::new(),
            kong_version: KongVersion::HEAD,
            gate_versions: false,
        };
        req.set_path(path);
        req
    }

    /// `GET path`.
    pub fn get(path: &str) -> TestRequest {
        TestRequest::new("GET", path)
    }

    /// `POST path` with `body`.
    pub fn post(path: &str, body: impl Into<Vec<u8>>) -> TestRequest {
        TestRequest::new("POST", path).body(body)
    }

    fn set_path(&mut self, path: &str) {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        self.path = path.to_owned();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) => self.query.push((k.to_owned(), Some(v.to_owned()))),
                None => self.query.push((pair.to_owned(), None)),
            }
        }
    }

    /// The request method.
    pub fn method(mut self, method: &str) -> Self {
        self.method = method.to_owned();
        self
    }

    /// `https` instead of `http` (port 8443).
    pub fn https(mut self) -> Self {
        self.scheme = "https".into();
        self.port = 8443;
        self
    }

    /// The host (default: the `host` header, else `localhost`).
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// A query argument `name=value`.
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.to_owned(), Some(value.to_owned())));
        self
    }

    /// A query flag without value (`?name`).
    pub fn query_flag(mut self, name: &str) -> Self {
        self.query.push((name.to_owned(), None));
        self
    }

    /// A request header (names are lowercased, as nginx does); repeat for more values.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.add(name.to_ascii_lowercase(), value);
        self
    }

    /// The request body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The HTTP version (default 1.1).
    pub fn http_version(mut self, version: f64) -> Self {
        self.http_version = version;
        self
    }

    /// The address of the connected peer (default `127.0.0.1`).
    pub fn client_ip(mut self, ip: &str) -> Self {
        self.client_ip = ip.to_owned();
        self
    }

    /// The client address as seen through trusted proxies (default: the peer address).
    pub fn forwarded_ip(mut self, ip: &str) -> Self {
        self.forwarded_ip = Some(ip.to_owned());
        self
    }

    /// Addresses `kong.ip.is_trusted` accepts.
    pub fn trusted_ip(mut self, ip: &str) -> Self {
        self.trusted_ips.push(ip.to_owned());
        self
    }

    /// The consumer an auth plugin authenticated (also what `load_consumer` finds by id or
    /// username).
    pub fn consumer(mut self, consumer: Consumer) -> Self {
        self.consumer = Some(consumer);
        self
    }

    /// The credential an auth plugin attached.
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credential = Some(credential);
        self
    }

    /// The matched route.
    pub fn route(mut self, route: Route) -> Self {
        self.route = Some(route);
        self
    }

    /// The matched service.
    pub fn service(mut self, service: Service) -> Self {
        self.service = Some(service);
        self
    }

    /// The upstream's response, for the `response` and `log` phases.
    pub fn upstream_response(mut self, response: UpstreamResponse) -> Self {
        self.upstream = Some(response);
        self
    }

    /// A `kong.ctx.shared` value set by an earlier plugin.
    pub fn ctx_shared(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.ctx_shared.insert(key.to_owned(), value.into());
        self
    }

    /// An `ngx.ctx` value (`kong.nginx.get_ctx`).
    pub fn nginx_ctx(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.nginx_ctx.insert(key.to_owned(), value.into());
        self
    }

    /// An nginx variable (`kong.nginx.get_var`).
    pub fn nginx_var(mut self, name: &str, value: &str) -> Self {
        self.nginx_vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// A secret `kong.vault.get(reference)` resolves to.
    pub fn vault_secret(mut self, reference: &str, secret: &str) -> Self {
        self.vault.insert(reference.to_owned(), secret.to_owned());
        self
    }

    /// Plays Kong `version` instead of Kong's development branch, as the daemon does with
    /// `--kong-version`: a function that release lacks fails at the call with
    /// `PdkError::Unavailable` (recorded in `refused_calls`, never answered by Kong), and
    /// phases are checked as that release checks them.
    pub fn kong_version(mut self, version: KongVersion) -> Self {
        self.kong_version = version;
        self.gate_versions = true;
        self
    }

    /// Answers every call of `method` with `answer` (`None`: no value, as Kong answers a
    /// call that failed on its side), overriding the kit's own answer. Use it for a
    /// function's failure path or for PDK functions the kit does not model.
    pub fn answer(mut self, method: &str, answer: Option<Value>) -> Self {
        self.answers.insert(method.to_owned(), answer);
        self
    }
}

/// What the upstream service answered, for the `response` phase (and `log`).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamResponse {
    pub(crate) status: u16,
    pub(crate) headers: Multimap,
    pub(crate) body: Vec<u8>,
}

impl UpstreamResponse {
    /// A response with this status, no header and no body.
    pub fn new(status: u16) -> UpstreamResponse {
        UpstreamResponse {
            status,
            headers: Multimap::new(),
            body: Vec::new(),
        }
    }

    /// A header (name lowercased); repeat for more values.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.add(name.to_ascii_lowercase(), value);
        self
    }

    /// The body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}
