//! The whole life of an account over HTTP.

mod common;

use common::Backend;

use common::{expect_error, raw_number, read, Api};
use reqwest::StatusCode;
use serde_json::json;

async fn open_deposit_withdraw_close(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "happy-client").await;

    let r = api
        .post(
            "/accounts",
            json!({"owner_name": "Ada Lovelace", "initial_balance": 1000.00}),
        )
        .await;
    assert!(r.headers().get("x-request-id").is_some(), "request id is echoed");
    let (status, account) = read(r).await;
    assert_eq!(status, StatusCode::CREATED);
    let id = account["id"].as_str().unwrap().to_owned();
    assert_eq!(account["owner_name"], "Ada Lovelace");
    assert_eq!(account["version"], 1);
    assert_eq!(account["status"], "open");

    let (status, got) = read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, account);

    let (status, after) = read(
        api.post(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 500.00, "expected_version": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["version"], 2);

    let r = api
        .post(
            &format!("/accounts/{id}/withdraw"),
            json!({"amount": 200.00, "expected_version": 2}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert_eq!(raw_number(&text, "balance"), "1300.00");

    // Read-your-writes: the read model reflects the write at once.
    let text = api.get(&format!("/accounts/{id}")).await.text().await.unwrap();
    assert_eq!(raw_number(&text, "balance"), "1300.00");

    let r = api
        .post(&format!("/accounts/{id}/withdraw"), json!({"amount": 1300}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let (status, closed) = read(
        api.post(&format!("/accounts/{id}/close"), json!({"reason": "moving abroad"}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["version"], 5);

    let (status, history) = read(api.get(&format!("/accounts/{id}/events")).await).await;
    assert_eq!(status, StatusCode::OK);
    let events = history["events"].as_array().unwrap();
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "AccountCreated",
            "MoneyDeposited",
            "MoneyWithdrawn",
            "MoneyWithdrawn",
            "AccountClosed"
        ]
    );
    assert_eq!(events[0]["data"]["owner_name"], "Ada Lovelace");
    assert_eq!(events[4]["data"]["reason"], "moving abroad");
    assert_eq!(events[2]["version"], 3);
    assert!(events[0]["recorded_at"].is_string());

    server.stop().await.unwrap();
}

async fn amounts_are_exact_decimals(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "decimal-client").await;
    let id = api.open("Bob", json!(0.1)).await;
    let r = api
        .post(&format!("/accounts/{id}/deposit"), json!({"amount": 0.2}))
        .await;
    let text = r.text().await.unwrap();
    assert_eq!(raw_number(&text, "balance"), "0.30");
    let big = api.open("Rich", json!(999999.99)).await;
    let r = api
        .post(&format!("/accounts/{big}/deposit"), json!({"amount": 0.01}))
        .await;
    assert_eq!(raw_number(&r.text().await.unwrap(), "balance"), "1000000.00");
    server.stop().await.unwrap();
}

async fn metadata_carries_client_user_and_correlation(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "meta-client").await;
    // Identity comes from the token: an `x-user-id` header is ignored.
    let r = api
        .authed(api.http.post(api.url("/accounts")))
        .header("x-user-id", "user-7")
        .header("x-request-id", "trace-abc")
        .json(&json!({"owner_name": "Cy", "initial_balance": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc");
    let (_, account) = read(r).await;
    let id = account["id"].as_str().unwrap();
    let events = server
        .state
        .repo
        .store()
        .read_stream_batch(&id.into(), 1, 10)
        .await
        .unwrap();
    let meta = &events[0].metadata;
    let user_id = api.user_id().await;
    assert_eq!(meta.actor_id.as_deref(), Some(user_id.as_str()));
    assert_eq!(events[0].schema_version, 2);
    assert_eq!(events[0].payload["AccountCreated"]["owner_id"], user_id.as_str());
    assert_eq!(account["owner_id"], user_id.as_str());
    assert_eq!(meta.headers["client_id"], "meta-client");
    assert_eq!(meta.headers["request_id"], "trace-abc");
    assert!(meta.correlation_id.is_some());
    server.stop().await.unwrap();
}

async fn health_metrics_and_docs(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "ops").await;
    let (status, body) = read(api.http.get(api.url("/health")).send().await.unwrap()).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    api.open("Dee", json!(5)).await;
    // The public listener says ready or not, nothing more.
    let (status, ready) = read(api.http.get(api.url("/health/ready")).send().await.unwrap()).await;
    assert_eq!((status, &ready), (StatusCode::OK, &json!({"status": "ready"})));
    expect_error(
        api.http.get(api.url("/metrics")).send().await.unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    // The operations listener has the details and the metrics.
    let admin = server.admin_url();
    let (status, ready) = read(api.http.get(format!("{admin}/health/ready")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "ready");
    for c in ["event_store", "projection", "rate_limiter", "deduplicator"] {
        assert_eq!(ready["components"][c]["status"], "up", "{c}: {ready}");
    }
    let metrics = api.http.get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    assert!(metrics.text().await.unwrap().contains("http_requests_total"));
    // What the counters say: tests/metrics.rs.
    let docs = api.http.get(api.url("/docs")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
    server.stop().await.unwrap();
}

crate::on_every_backend!(
    open_deposit_withdraw_close,
    amounts_are_exact_decimals,
    metadata_carries_client_user_and_correlation,
    health_metrics_and_docs,
);
