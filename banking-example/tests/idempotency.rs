//! Idempotency keys: a retry gets the first response and money moves once,
//! also across a restart that lost the de-duplicator's memory.

mod common;

use common::Backend;

use common::{expect_error, read, Api};
use reqwest::StatusCode;
use serde_json::json;

async fn same_key_twice_returns_the_same_response_and_moves_money_once(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "idem-client").await;
    let id = api.open("Ida", json!(100)).await;
    let path = format!("/accounts/{id}/deposit");
    let first = api.post_keyed(&path, "dep-1", json!({"amount": 25.50})).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let (s1, b1) = read(first).await;
    let second = api.post_keyed(&path, "dep-1", json!({"amount": 25.50})).await;
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let (s2, b2) = read(second).await;
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(b1["version"], 2);
    let (_, now) = read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(now["version"], 2);
    assert_eq!(now["balance"].to_string(), "125.50");

    // Errors are replayed too: a refused withdrawal stays refused.
    let w = format!("/accounts/{id}/withdraw");
    let e1 = expect_error(
        api.post_keyed(&w, "w-1", json!({"amount": 1000})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    api.post(&path, json!({"amount": 2000})).await;
    let e2 = expect_error(
        api.post_keyed(&w, "w-1", json!({"amount": 1000})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(e1, e2);
    server.stop().await.unwrap();
}

async fn keys_are_scoped_per_client_and_request(backend: Backend) {
    let server = backend.start().await;
    let a = Api::new(&server, "client-a").await;
    let b = a.as_client("client-b");
    let id = a.open("Shared", json!(0)).await;
    let path = format!("/accounts/{id}/deposit");
    assert_eq!(
        a.post_keyed(&path, "k", json!({"amount": 1})).await.status(),
        StatusCode::OK
    );
    // Another client's same key is another command.
    let (status, body) = read(b.post_keyed(&path, "k", json!({"amount": 1})).await).await;
    assert_eq!((status, body["version"].as_u64()), (StatusCode::OK, Some(3)));
    // The same key for a different body is refused.
    let msg = expect_error(
        a.post_keyed(&path, "k", json!({"amount": 2})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(msg, "Idempotency-Key was already used for a different request");
    let msg = expect_error(
        a.post_keyed("/accounts", "bad key", json!({"owner_name": "A", "initial_balance": 1}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("Idempotency-Key"), "{msg}");
    server.stop().await.unwrap();
}

async fn keyed_account_creation_is_idempotent(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "creator").await;
    let body = json!({"owner_name": "Once", "initial_balance": 10});
    let (s1, b1) = read(api.post_keyed("/accounts", "open-1", body.clone()).await).await;
    let (s2, b2) = read(api.post_keyed("/accounts", "open-1", body).await).await;
    assert_eq!(s1, StatusCode::CREATED);
    assert_eq!((s1, b1), (s2, b2));
    server.stop().await.unwrap();
}

async fn concurrent_retries_of_one_key_apply_once(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "racer").await;
    let id = api.open("Race", json!(0)).await;
    let path = format!("/accounts/{id}/deposit");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let api = api.clone();
            let path = path.clone();
            tokio::spawn(async move { read(api.post_keyed(&path, "same", json!({"amount": 5})).await).await })
        })
        .collect();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["version"], 2);
    }
    let (_, now) = read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(now["balance"].to_string(), "5.00");
    server.stop().await.unwrap();
}

/// The server applied the command and stopped before the client got the
/// answer; the client retries against a new server on the same storage,
/// whose de-duplicator has forgotten the key (in memory and on
/// PostgreSQL; with Redis the key is still there and replays). Either
/// way the answer is the same and the money moves once. (A SIGKILLed
/// process: `tests/crash_recovery.rs`.)
async fn retry_after_a_restart_moves_money_once(backend: Backend) {
    let storage = backend.storage().await;
    let first = storage.start(common::config()).await;
    let api = Api::new(&first, "crashy").await;
    let id = api.open("Crash", json!(50)).await;
    let path = format!("/accounts/{id}/withdraw");
    let (status, answered) = read(api.post_keyed(&path, "wd-1", json!({"amount": 20})).await).await;
    assert_eq!(status, StatusCode::OK);
    first.stop().await.unwrap();

    let second = storage.start(common::config()).await;
    let api = api.on(&second);
    let (status, retried) = read(api.post_keyed(&path, "wd-1", json!({"amount": 20})).await).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried, answered);
    let (_, history) = read(api.get(&format!("/accounts/{id}/events?limit=1000")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 2);
    let now = common::view_at_least(&api, &id, 2).await;
    assert_eq!(
        (now["version"].as_u64(), now["balance"].to_string()),
        (Some(2), "30.00".into())
    );
    second.stop().await.unwrap();
}

/// A key whose window has passed (a one-second window here), used again
/// with another body, is never answered with the first request's outcome:
/// a deposit is another command and moves its money; a transfer, whose id
/// the key names, is refused.
async fn a_forgotten_key_used_for_another_request_is_not_taken_for_the_first(backend: Backend) {
    let storage = backend.storage().await;
    let config = || {
        let mut c = common::config();
        c.idempotency_ttl = std::time::Duration::from_secs(1);
        c
    };
    let first = storage.start(config()).await;
    let api = Api::new(&first, "forgetful").await;
    let id = api.open("Forget", json!(50)).await;
    let source = api.open("Source", json!(50)).await;
    let target = api.open("Target", json!(0)).await;
    let deposit = format!("/accounts/{id}/deposit");
    let (status, body) = read(api.post_keyed(&deposit, "dep", json!({"amount": 20})).await).await;
    assert_eq!((status, body["version"].as_u64()), (StatusCode::OK, Some(2)), "{body}");
    let transfer = |amount: u32| json!({"from": source, "to": target, "amount": amount});
    let (status, body) = read(api.post_keyed("/transfers", "tr", transfer(5)).await).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    first.stop().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let second = storage.start(config()).await;
    let api = api.on(&second);
    let (status, body) = read(api.post_keyed(&deposit, "dep", json!({"amount": 30})).await).await;
    assert_eq!(
        (status, body["version"].as_u64(), body["balance"].to_string()),
        (StatusCode::OK, Some(3), "100.00".into()),
        "the second deposit is applied: {body}"
    );
    let (_, history) = read(api.get(&format!("/accounts/{id}/events?limit=1000")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 3, "{history}");
    let msg = expect_error(
        api.post_keyed("/transfers", "tr", transfer(7)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(msg, "Idempotency-Key was already used for a different request");
    second.stop().await.unwrap();
}

crate::on_every_backend!(
    a_forgotten_key_used_for_another_request_is_not_taken_for_the_first,
    same_key_twice_returns_the_same_response_and_moves_money_once,
    keys_are_scoped_per_client_and_request,
    keyed_account_creation_is_idempotent,
    concurrent_retries_of_one_key_apply_once,
    retry_after_a_restart_moves_money_once,
);
