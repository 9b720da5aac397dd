//! Shared helpers of the end-to-end tests: a real server on an ephemeral
//! port, driven over HTTP.
#![allow(dead_code)]

use banking_example::rate_limit::RateLimitConfig;
use banking_example::{AppConfig, Backends, RunningServer};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

/// A config on 127.0.0.1:0 with rate limiting off.
pub fn config() -> AppConfig {
    AppConfig {
        bind_addr: "127.0.0.1:0".parse().unwrap(),
        rate_limit: RateLimitConfig {
            requests_per_minute: 0,
            ..RateLimitConfig::default()
        },
        ..AppConfig::default()
    }
}

pub async fn start_with(config: AppConfig) -> RunningServer {
    let backends = Backends::in_memory(&config);
    banking_example::start(config, backends).await.unwrap()
}

pub async fn start() -> RunningServer {
    start_with(config()).await
}

/// A test client bound to one server and one client id.
#[derive(Clone)]
pub struct Api {
    pub http: Client,
    pub base: String,
    pub client_id: String,
}

impl Api {
    pub fn new(server: &RunningServer, client_id: &str) -> Self {
        Self {
            http: Client::new(),
            base: server.url(),
            client_id: client_id.into(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .header("x-client-id", &self.client_id)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_keyed(&self, path: &str, key: &str, body: Value) -> Response {
        self.http
            .post(self.url(path))
            .header("x-client-id", &self.client_id)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(self.url(path))
            .header("x-client-id", &self.client_id)
            .send()
            .await
            .unwrap()
    }

    /// Opens an account and returns its id.
    pub async fn open(&self, owner: &str, balance: Value) -> String {
        let r = self
            .post("/accounts", json!({"owner_name": owner, "initial_balance": balance}))
            .await;
        let (status, body) = read(r).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }
}

/// Status and JSON body (the body is always JSON in this API).
pub async fn read(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts an error answer: status, and the `{"error"}` shape with only
/// that key; returns the message.
pub async fn expect_error(r: Response, status: StatusCode) -> String {
    let (got, body) = read(r).await;
    assert_eq!(got, status, "unexpected status, body {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(obj.len(), 1, "error body has extra keys: {body}");
    obj["error"].as_str().unwrap().to_owned()
}

/// The raw JSON text of a field, to check exact decimal digits.
pub fn raw_number(body_text: &str, field: &str) -> String {
    let start = body_text.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
    body_text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect()
}

pub mod pg;
