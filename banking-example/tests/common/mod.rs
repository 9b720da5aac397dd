//! Shared helpers of the end-to-end tests: a real server on an ephemeral
//! port, driven over HTTP.
#![allow(dead_code)]

use banking_example::auth::config::Argon2Params;
use banking_example::auth::AuthConfig;
use banking_example::rate_limit::RateLimitConfig;
use banking_example::{AppConfig, RunningServer};
use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

/// The password of every test user.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// Test auth settings: fixed secrets (so tokens work across restarts and
/// on several instances), cheap Argon2, no auth rate limit, no progressive
/// login delay (tests of the lockout fail in a row; `lockout.rs` tests
/// the delay).
pub(crate) fn auth_config() -> AuthConfig {
    AuthConfig {
        jwt_secret: b"test-only-jwt-secret-0123456789abcdef".to_vec(),
        refresh_token_secret: b"test-only-refresh-secret-0123456789abcdef".to_vec(),
        rate_limit_requests: 0,
        login_backoff: std::time::Duration::ZERO,
        argon2: Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..AuthConfig::default()
    }
}

/// A config on 127.0.0.1:0 (the operations listener too) with rate
/// limiting off.
pub(crate) fn config() -> AppConfig {
    AppConfig {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        admin_bind_addr: Some("127.0.0.1:0".parse().unwrap()),
        rate_limit: RateLimitConfig {
            requests_per_minute: 0,
            ..RateLimitConfig::default()
        },
        auth: auth_config(),
        ..AppConfig::default()
    }
}

/// A fresh unique username.
pub(crate) fn username() -> String {
    format!("u{}@test.example", uuid::Uuid::new_v4().simple())
}

/// Registers `username` and logs in; returns the login body.
pub(crate) async fn register_and_login(base: &str, username: &str) -> Value {
    let http = Client::new();
    let r = http
        .post(format!("{base}/auth/register"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    login(base, username, PASSWORD).await
}

/// Logs in; returns the token pair.
pub(crate) async fn login(base: &str, username: &str, password: &str) -> Value {
    let r = Client::new()
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// A server on in-memory backends with `config`.
pub(crate) async fn start_with(config: AppConfig) -> RunningServer {
    Backend::Memory.start_with(config).await
}

/// A server on in-memory backends with the test config.
pub(crate) async fn start() -> RunningServer {
    start_with(config()).await
}

/// A test client bound to one server, one client id and one user.
#[derive(Clone)]
pub(crate) struct Api {
    pub http: Client,
    pub base: String,
    pub client_id: String,
    pub username: String,
    pub token: String,
    pub refresh_token: String,
}

impl Api {
    /// A new customer (registered and logged in) calling as `client_id`.
    pub(crate) async fn new(server: &RunningServer, client_id: &str) -> Self {
        let username = username();
        let tokens = register_and_login(&server.url(), &username).await;
        Self::with_tokens(server, client_id, &username, &tokens)
    }

    /// A client for an existing user.
    pub(crate) async fn login(server: &RunningServer, client_id: &str, username: &str) -> Self {
        let tokens = login(&server.url(), username, PASSWORD).await;
        Self::with_tokens(server, client_id, username, &tokens)
    }

    /// A new customer (registered and logged in) of the server at `base`
    /// (a server process).
    pub(crate) async fn register_at(base: &str, client_id: &str) -> Self {
        let username = username();
        let tokens = register_and_login(base, &username).await;
        Self::at(base, client_id, &username, &tokens)
    }

    fn with_tokens(server: &RunningServer, client_id: &str, username: &str, tokens: &Value) -> Self {
        Self::at(&server.url(), client_id, username, tokens)
    }

    fn at(base: &str, client_id: &str, username: &str, tokens: &Value) -> Self {
        Self {
            http: Client::new(),
            base: base.to_owned(),
            client_id: client_id.into(),
            username: username.into(),
            token: tokens["access_token"].as_str().unwrap().into(),
            refresh_token: tokens["refresh_token"].as_str().unwrap().into(),
        }
    }

    /// The same user calling as another client.
    pub(crate) fn as_client(&self, client_id: &str) -> Self {
        Self {
            client_id: client_id.into(),
            ..self.clone()
        }
    }

    /// The same user and token against another server.
    pub(crate) fn on(&self, server: &RunningServer) -> Self {
        self.at_base(&server.url())
    }

    /// The same user and token against the server at `base`.
    pub(crate) fn at_base(&self, base: &str) -> Self {
        Self {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    /// The user id (from `/auth/me`).
    pub(crate) async fn user_id(&self) -> String {
        let (status, me) = read(self.authed(self.http.get(self.url("/auth/me"))).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{me}");
        me["user_id"].as_str().unwrap().to_owned()
    }

    /// Adds the client id and the bearer token.
    pub(crate) fn authed(&self, rb: RequestBuilder) -> RequestBuilder {
        rb.header("x-client-id", &self.client_id).bearer_auth(&self.token)
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Response {
        self.authed(self.http.post(self.url(path)))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn post_keyed(&self, path: &str, key: &str, body: Value) -> Response {
        self.authed(self.http.post(self.url(path)))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Response {
        self.authed(self.http.put(self.url(path)))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn get(&self, path: &str) -> Response {
        self.authed(self.http.get(self.url(path))).send().await.unwrap()
    }

    /// GET with the token only (no client id).
    pub(crate) async fn get_raw(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    /// Opens an account and returns its id.
    pub(crate) async fn open(&self, owner: &str, balance: Value) -> String {
        let r = self
            .post("/accounts", json!({"owner_name": owner, "initial_balance": balance}))
            .await;
        let (status, body) = read(r).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }
}

/// The account's view once it has reached `version`: a server started on
/// an existing database rebuilds its read model from the log, which an
/// open transaction elsewhere in the cluster may hold back a moment.
pub(crate) async fn view_at_least(api: &Api, account: &str, version: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, view) = read(api.get(&format!("/accounts/{account}")).await).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        if view["version"].as_u64().is_some_and(|v| v >= version) {
            return view;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the view never reached version {version}: {view}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Status and JSON body (the body is always JSON in this API).
pub(crate) async fn read(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts an error answer: status, and the `{"error"}` shape with only
/// that key; returns the message.
pub(crate) async fn expect_error(r: Response, status: StatusCode) -> String {
    let (got, body) = read(r).await;
    assert_eq!(got, status, "unexpected status, body {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(obj.len(), 1, "error body has extra keys: {body}");
    obj["error"].as_str().unwrap().to_owned()
}

/// The raw JSON text of a field, to check exact decimal digits.
pub(crate) fn raw_number(body_text: &str, field: &str) -> String {
    let start = body_text.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
    body_text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect()
}

pub(crate) mod backend;
pub(crate) mod metrics;
pub(crate) mod pg;
pub(crate) mod process;
pub(crate) mod redis;
pub(crate) mod tls;

pub(crate) use backend::Backend;

/// A server on in-memory backends whose auth service tells time by
/// `clock`.
pub(crate) async fn start_with_clock(config: AppConfig, clock: es_core::ManualClock) -> RunningServer {
    Backend::Memory.start_with_clock(config, clock).await
}

/// POSTs JSON to `path` with an optional bearer token.
pub(crate) async fn post_json(base: &str, path: &str, token: Option<&str>, body: Value) -> Response {
    let mut rb = Client::new().post(format!("{base}{path}")).json(&body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap()
}

/// 20 clients each deposit 1.01 ten times into `id` at once; asserts every
/// deposit succeeded and none was lost (balance 202.00, version 201 on an
/// account opened with 0).
pub(crate) async fn twenty_clients_deposit(owner: &Api, id: &str, client_prefix: &str) {
    let tasks: Vec<_> = (0..20)
        .map(|c| {
            let api = owner.as_client(&format!("{client_prefix}-{c}"));
            let path = format!("/accounts/{id}/deposit");
            tokio::spawn(async move {
                for _ in 0..10 {
                    let (status, body) = read(api.post(&path, serde_json::json!({"amount": 1.01})).await).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (_, account) = read(owner.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(account["balance"].to_string(), "202.00");
    assert_eq!(account["version"], 201);
}
