//! PostgreSQL going away under a running server: its own cluster (a
//! private copy on a spare port), stopped at once and started again.
//! While it is down every answer is a JSON error, 503 for what needs the
//! database, never a 500; once it is back the server serves again, and
//! retries of the refused keyed deposits apply each exactly once.

mod common;

use std::time::{Duration, Instant};

use banking_example::{AppConfig, Backends};
use common::pg::OwnPostgres;
use common::{read, Api};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Asserts a JSON error answer that is not a 500; returns the status.
fn refused(status: StatusCode, body: &Value, what: &str) -> StatusCode {
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{what}: {body}");
    assert!(body["error"].is_string(), "{what}: {status} {body}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_503_while_postgres_is_down_then_recovers() {
    let mut pg = OwnPostgres::start().await;
    let config = AppConfig {
        database_url: Some(pg.url()),
        database_schema: "bank".into(),
        ..common::config()
    };
    // The backends the server builds for itself, with their shipped pool
    // and retry settings: the refusals below come from those, within the
    // request timeout.
    let backends = Backends::from_config(&config).await.unwrap();
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, "outage").await;
    let id = api.open("Outage", json!(100)).await;
    let deposit = format!("/accounts/{id}/deposit");
    let (status, body) = read(api.post_keyed(&deposit, "before", json!({"amount": 1})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    pg.stop().await;
    let mut refused_keys = Vec::new();
    for i in 0..2 {
        let key = format!("during-{i}");
        let (status, body) = read(api.post_keyed(&deposit, &key, json!({"amount": 10})).await).await;
        assert_eq!(
            refused(status, &body, "keyed deposit"),
            StatusCode::SERVICE_UNAVAILABLE,
            "{body}"
        );
        refused_keys.push(key);
    }
    let (status, body) = read(api.post(&deposit, json!({"amount": 1000})).await).await;
    assert_eq!(refused(status, &body, "deposit"), StatusCode::SERVICE_UNAVAILABLE);
    let r = common::post_json(
        &server.url(),
        "/auth/register",
        None,
        json!({"username": common::username(), "password": common::PASSWORD}),
    )
    .await;
    let (status, body) = read(r).await;
    assert_eq!(refused(status, &body, "register"), StatusCode::SERVICE_UNAVAILABLE);
    let r = common::post_json(
        &server.url(),
        "/auth/login",
        None,
        json!({"username": api.username, "password": common::PASSWORD}),
    )
    .await;
    let (status, body) = read(r).await;
    assert_eq!(refused(status, &body, "login"), StatusCode::SERVICE_UNAVAILABLE);
    let (status, ready) = read(
        api.http
            .get(format!("{}/health/ready", server.admin_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    // Everything on the database says so: the store, the idempotency keys
    // in it, and transfers (which move money through the store).
    for name in ["event_store", "deduplicator", "transfers"] {
        assert_eq!(ready["components"][name]["status"], "down", "{name}: {ready}");
        assert!(
            ready["components"][name]["details"]["error"].is_string(),
            "{name}: {ready}"
        );
    }
    assert_eq!(ready["components"]["deduplicator"]["backend"], "postgres", "{ready}");
    // Reads answer from the read model's table or the log: refused cleanly.
    let (status, body) = read(api.get(&format!("/accounts/{id}")).await).await;
    if status != StatusCode::OK {
        refused(status, &body, "read");
    }

    pg.restart().await;
    // Recovery: poll until a deposit goes through (refusals meanwhile are
    // clean), then everything answers.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = read(api.post_keyed(&deposit, "after-0", json!({"amount": 2})).await).await;
        if status == StatusCode::OK {
            break;
        }
        refused(status, &body, "deposit during recovery");
        assert!(Instant::now() < deadline, "never recovered: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for key in &refused_keys {
        for _ in 0..2 {
            let (status, body) = read(api.post_keyed(&deposit, key, json!({"amount": 10})).await).await;
            assert_eq!(status, StatusCode::OK, "retry of {key}: {body}");
        }
    }
    let other = Api::new(&server, "after-outage").await;
    other.open("New", json!(1)).await;
    let (status, view) = read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(status, StatusCode::OK);
    // 100 + 1 + 2 × 10 + 2: each refused deposit applied once, on retry.
    assert_eq!(view["balance"].to_string(), "123.00", "{view}");
    let (_, history) = read(api.get(&format!("/accounts/{id}/events?limit=1000")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 5, "{history}");
    let (status, ready) = read(
        api.http
            .get(format!("{}/health/ready", server.admin_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    server.stop().await.unwrap();
}
