//! Concurrent writers never lose an update.

mod common;

use banking_example::Backends;
use common::{read, Api};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_depositing_to_one_account_lose_nothing() {
    let server = common::start().await;
    let owner = Api::new(&server, "owner").await;
    let id = owner.open("Hot", json!(0)).await;
    common::twenty_clients_deposit(&owner, &id, "client").await;
    server.stop().await.unwrap();
}

/// Two server instances on one store: their repositories really race, and
/// the retry policy absorbs the conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_store_lose_nothing() {
    let config = common::config();
    let a_backends = Backends::in_memory(&config);
    let mut b_backends = Backends::in_memory(&config);
    b_backends.store = a_backends.store.clone();
    // Separate caches would be stale; the repository verifies them anyway.
    let a = banking_example::start(config.clone(), a_backends).await.unwrap();
    let b = banking_example::start(config, b_backends).await.unwrap();
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
    let (_, history) = read(setup.on(&b).get(&format!("/accounts/{id}/events")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 101);
    // Instance a sees b's writes through its projection: eventually current.
    let check = setup.on(&a).as_client("check");
    let mut version = 0;
    for _ in 0..200 {
        let (_, account) = read(check.get(&format!("/accounts/{id}")).await).await;
        version = account["version"].as_u64().unwrap();
        if version == 101 {
            assert_eq!(account["balance"].to_string(), "200.00");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(version, 101, "the projection never caught up");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
