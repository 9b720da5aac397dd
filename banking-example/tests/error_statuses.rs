//! Every error status of the API, always as `{"error": "..."}`.

mod common;

use common::Backend;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use banking_example::Backends;
use common::{expect_error, Api};
use es_core::{
    AppendResult, EventFilter, EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, RecordedEvent, StoreError,
    StreamId,
};
use reqwest::StatusCode;
use serde_json::json;

async fn validation_errors_are_400_with_all_messages(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "v-client").await;
    let msg = expect_error(
        api.post("/accounts", json!({"owner_name": "  ", "initial_balance": -1}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "owner_name is required, initial_balance must be non-negative");
    let msg = expect_error(api.post("/accounts", json!({})).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(msg, "owner_name is required, initial_balance is required");
    let id = api.open("Val", json!(10)).await;
    let msg = expect_error(
        api.post(&format!("/accounts/{id}/deposit"), json!({"amount": 0})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "amount must be greater than zero");
    let msg = expect_error(
        api.post(&format!("/accounts/{id}/withdraw"), json!({"amount": 1.005}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "amount must have at most 2 decimal places");
    let msg = expect_error(
        api.post(&format!("/accounts/{id}/deposit"), json!({"amount": 100000000}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "amount must not exceed 1000000.00");
    let msg = expect_error(
        api.post(&format!("/accounts/{id}/close"), json!({})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "reason is required");
    server.stop().await.unwrap();
}

async fn malformed_payloads_are_400(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "m-client").await;
    let send_raw = |body: &'static str| {
        api.http
            .post(api.url("/accounts"))
            .header("x-client-id", "m-client")
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        "{",
        "",
        "not json",
        "[]",
        "null",
        r#"{"owner_name": 5, "initial_balance": 1}"#,
        r#"{"owner_name": "A", "initial_balance": "100"}"#,
        r#"{"owner_name": "A", "initial_balance": 1, "admin": true}"#,
        r#"{"owner_name": "A", "initial_balance": 1e999}"#,
    ] {
        let msg = expect_error(send_raw(body).await.unwrap(), StatusCode::BAD_REQUEST).await;
        assert!(!msg.is_empty(), "{body}");
    }
    let msg = expect_error(
        send_raw(r#"{"owner_name": "A", "initial_balance": 1, "admin": true}"#)
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("unknown field `admin`"), "{msg}");
    // No JSON content type.
    let r = api
        .http
        .post(api.url("/accounts"))
        .header("x-client-id", "m-client")
        .bearer_auth(&api.token)
        .body(r#"{"owner_name": "A", "initial_balance": 1}"#)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    server.stop().await.unwrap();
}

async fn client_id_is_required_and_checked(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "c").await;
    let body = json!({"owner_name": "A", "initial_balance": 1});
    let r = api
        .http
        .post(api.url("/accounts"))
        .bearer_auth(&api.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(r, StatusCode::BAD_REQUEST).await,
        "x-client-id header is required"
    );
    for bad in ["", "has space", &"x".repeat(129)] {
        let r = api
            .http
            .post(api.url("/accounts"))
            .bearer_auth(&api.token)
            .header("x-client-id", bad)
            .json(&body)
            .send()
            .await
            .unwrap();
        let msg = expect_error(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(msg, "x-client-id must be 1-128 visible ASCII characters", "{bad:?}");
    }
    let r = api
        .http
        .get(api.url(&format!("/accounts/{}", uuid::Uuid::nil())))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST).await;
    // 128 characters is fine.
    let ok = Api::new(&server, &"y".repeat(128)).await;
    ok.open("A", json!(1)).await;
    // Neither a token nor a client id: who is calling is asked first.
    let r = reqwest::Client::new()
        .post(format!("{}/accounts", server.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    expect_error(r, StatusCode::UNAUTHORIZED).await;
    server.stop().await.unwrap();
}

async fn unknown_accounts_and_bad_ids_are_404(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "nf").await;
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("/accounts/{unknown}"),
        format!("/accounts/{unknown}/events"),
        "/accounts/not-a-uuid".to_owned(),
        "/accounts/not-a-uuid/events".to_owned(),
        "/no/such/route".to_owned(),
    ] {
        expect_error(api.get(&path).await, StatusCode::NOT_FOUND).await;
    }
    let msg = expect_error(
        api.post(&format!("/accounts/{unknown}/deposit"), json!({"amount": 1}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(msg, format!("account {unknown} not found"));
    expect_error(
        api.post("/accounts/12345/withdraw", json!({"amount": 1})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // Wrong method: 405, still JSON.
    let r = api
        .http
        .delete(api.url("/accounts"))
        .header("x-client-id", "nf")
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED).await;
    server.stop().await.unwrap();
}

async fn conflicts_are_409(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "cf").await;
    let id = api.open("Con", json!(10)).await;
    let msg = expect_error(
        api.post(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 1, "expected_version": 7}),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(msg, "version conflict: expected version 7, current version 1");
    api.post(&format!("/accounts/{id}/withdraw"), json!({"amount": 10}))
        .await;
    let r = api
        .post(&format!("/accounts/{id}/close"), json!({"reason": "done"}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let msg = expect_error(
        api.post(&format!("/accounts/{id}/deposit"), json!({"amount": 1})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(msg, format!("account {id} is closed"));
    server.stop().await.unwrap();
}

async fn business_rules_are_422(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "bf").await;
    let id = api.open("Poor", json!(10)).await;
    let msg = expect_error(
        api.post(&format!("/accounts/{id}/withdraw"), json!({"amount": 10.01}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(msg, "insufficient funds: balance 10.00, requested 10.01");
    let msg = expect_error(
        api.post(&format!("/accounts/{id}/close"), json!({"reason": "x"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(msg, "account balance must be zero to close (balance 10.00)");
    server.stop().await.unwrap();
}

async fn bodies_over_64_kib_are_413(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "big").await;
    let huge = "x".repeat(70 * 1024);
    expect_error(
        api.post("/accounts", json!({"owner_name": huge, "initial_balance": 1}))
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    // Chunked, no Content-Length. The server answers 413 as soon as the
    // limit is passed and closes the connection with request bytes unread,
    // which resets it: the client can lose the answer while it still
    // writes. A lost answer (a transport error, never another status) is
    // retried; the 413 itself must come.
    let mut attempts = 0;
    let r = loop {
        attempts += 1;
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..80).map(|_| Ok(vec![b' '; 1024])).collect();
        match api
            .http
            .post(api.url("/accounts"))
            .header("x-client-id", "big")
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await
        {
            Ok(r) => break r,
            Err(e) if attempts < 10 && e.is_request() => continue,
            Err(e) => panic!("no answer after {attempts} attempts: {e}"),
        }
    };
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    server.stop().await.unwrap();
}

/// A store whose appends fail with a backend error carrying a secret.
struct BrokenStore(InMemoryEventStore);

#[async_trait]
impl EventStore for BrokenStore {
    async fn append(
        &self,
        _: &str,
        _: &StreamId,
        _: ExpectedVersion,
        _: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        Err(StoreError::backend(
            "append",
            "connection to db-secret-host:5432 refused",
        ))
    }
    async fn read_stream_batch(&self, id: &StreamId, from: u64, n: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_stream_batch(id, from, n).await
    }
    async fn read_all(&self, after: u64, n: usize, f: &EventFilter) -> Result<Vec<RecordedEvent>, StoreError> {
        self.0.read_all(after, n, f).await
    }
    async fn find_event(&self, id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.0.find_event(id).await
    }
    async fn stream_version(&self, id: &StreamId) -> Result<u64, StoreError> {
        self.0.stream_version(id).await
    }
    async fn head_position(&self) -> Result<u64, StoreError> {
        self.0.head_position().await
    }
    async fn wait_for_events(&self, after: u64, timeout: Duration) -> Result<(), StoreError> {
        self.0.wait_for_events(after, timeout).await
    }
}

#[tokio::test]
async fn internal_errors_are_500_without_details() {
    let config = common::config();
    let mut backends = Backends::in_memory(&config);
    backends.store = Arc::new(BrokenStore(InMemoryEventStore::new()));
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, "broken").await;
    let r = api
        .post("/accounts", json!({"owner_name": "A", "initial_balance": 1}))
        .await;
    let msg = expect_error(r, StatusCode::INTERNAL_SERVER_ERROR).await;
    assert_eq!(msg, "internal server error");
    server.stop().await.unwrap();
}

crate::on_every_backend!(
    validation_errors_are_400_with_all_messages,
    malformed_payloads_are_400,
    client_id_is_required_and_checked,
    unknown_accounts_and_bad_ids_are_404,
    conflicts_are_409,
    business_rules_are_422,
    bodies_over_64_kib_are_413,
);
