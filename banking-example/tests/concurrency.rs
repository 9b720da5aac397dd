//! Concurrent writers never lose an update.

mod common;

use common::Backend;

use common::{read, Api};
use reqwest::StatusCode;
use serde_json::json;

async fn twenty_clients_depositing_to_one_account_lose_nothing(backend: Backend) {
    let server = backend.start().await;
    let owner = Api::new(&server, "owner").await;
    let id = owner.open("Hot", json!(0)).await;
    common::twenty_clients_deposit(&owner, &id, "client").await;
    server.stop().await.unwrap();
}

/// Two server instances on one store: their repositories really race, and
/// the retry policy absorbs the conflicts.
async fn two_instances_on_one_store_lose_nothing(backend: Backend) {
    // One storage, two servers with their own caches (which would be
    // stale; the repository verifies them anyway).
    let storage = backend.storage().await;
    let a = storage.start(common::config()).await;
    let b = storage.start(common::config()).await;
    let setup = Api::new(&a, "setup").await;
    let id = setup.open("Multi", json!(0)).await;
    let tasks: Vec<_> = (0..20)
        .map(|c| {
            let api = setup.on(if c % 2 == 0 { &a } else { &b }).as_client(&format!("mc-{c}"));
            let path = format!("/accounts/{id}/deposit");
            tokio::spawn(async move {
                for _ in 0..5 {
                    let (status, body) = read(api.post(&path, json!({"amount": 2})).await).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Instance b may serve a lagging view; the events are the truth.
    let (_, history) = read(setup.on(&b).get(&format!("/accounts/{id}/events?limit=1000")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 101);
    // Instance a sees b's writes through its projection: eventually current.
    let check = setup.on(&a).as_client("check");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, account) = read(check.get(&format!("/accounts/{id}")).await).await;
        if account["version"] == 101 {
            assert_eq!(account["balance"].to_string(), "200.00");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the projection never caught up: {account}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

crate::on_every_backend!(
    twenty_clients_depositing_to_one_account_lose_nothing,
    two_instances_on_one_store_lose_nothing,
);
