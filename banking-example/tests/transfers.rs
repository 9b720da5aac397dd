//! `POST /transfers` and `GET /transfers/{id}` on every backend: 202 with
//! `Location`, completed with the money moved; insufficient funds fails
//! at the debit with nothing moved; a closed or missing destination is
//! refunded, as is one that is a transfer's id; ownership and 404 rules
//! as for accounts; Idempotency-Key.

mod common;

use std::time::{Duration, Instant};

use banking_example::auth::Role;
use common::{expect_error, read, Api, Backend};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn make_role(server: &banking_example::RunningServer, api: &Api, role: Role) -> Api {
    let id = api.user_id().await.parse().unwrap();
    server.state.auth.stores().users.set_roles(id, &[role]).await.unwrap();
    Api::login(server, &api.client_id, &api.username).await
}

/// Polls the transfer until it is no longer pending.
async fn settled(api: &Api, location: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, t) = read(api.get(location).await).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        if t["status"] != "pending" {
            return t;
        }
        assert!(Instant::now() < deadline, "still pending: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The account once the read model shows `balance` and no money in flight.
async fn account_settles_at(api: &Api, id: &str, balance: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, a) = read(api.get(&format!("/accounts/{id}")).await).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let (shown, flying) = (a["balance"].to_string(), a["in_flight"].to_string());
        if shown == balance && flying == "0.00" {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "account {id} never settled at {balance}: {a}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_transfer(api: &Api, key: &str, from: &str, to: &str, amount: Value) -> (StatusCode, String, Value) {
    let r = api
        .post_keyed("/transfers", key, json!({"from": from, "to": to, "amount": amount}))
        .await;
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (status, body) = read(r).await;
    (status, location, body)
}

async fn a_transfer_completes_and_moves_the_money(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "alice-app").await;
    let bob = Api::new(&server, "bob-app").await;
    let from = alice.open("Alice", json!(100)).await;
    let to = bob.open("Bob", json!(5)).await;

    let (status, location, body) = post_transfer(&alice, "t-1", &from, &to, json!(30.25)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(body["amount"].to_string(), "30.25");
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/transfers/{id}"));

    let done = settled(&alice, &location).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done.get("reason").is_none(), "{done}");
    assert!(
        done["finished_at"].is_string() && done["requested_at"].is_string(),
        "{done}"
    );
    account_settles_at(&alice, &from, "69.75").await;
    account_settles_at(&bob, &to, "35.25").await;

    // The same key again: the first answer, no second transfer.
    let (status, again_location, again) = post_transfer(&alice, "t-1", &from, &to, json!(30.25)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(
        (again["id"].as_str(), again_location.as_str()),
        (Some(id), location.as_str())
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    account_settles_at(&alice, &from, "69.75").await;
    // The destination's owner does not see the transfer (it is not theirs).
    expect_error(bob.get(&location).await, StatusCode::NOT_FOUND).await;
}

async fn insufficient_funds_fail_at_the_debit_with_nothing_moved(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "alice-app").await;
    let from = alice.open("Alice", json!(10)).await;
    let to = alice.open("Alice savings", json!(0)).await;
    let (status, location, _) = post_transfer(&alice, "too-much", &from, &to, json!(10.01)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let failed = settled(&alice, &location).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("insufficient funds"),
        "{failed}"
    );
    account_settles_at(&alice, &from, "10.00").await;
    let (_, history) = read(alice.get(&format!("/accounts/{from}/events")).await).await;
    assert_eq!(
        history["events"].as_array().unwrap().len(),
        1,
        "nothing recorded: {history}"
    );
}

async fn a_closed_or_missing_destination_is_refunded(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "alice-app").await;
    let bob = Api::new(&server, "bob-app").await;
    let from = alice.open("Alice", json!(50)).await;
    let closed = bob.open("Bob", json!(0)).await;
    let (status, _) = read(
        bob.post(&format!("/accounts/{closed}/close"), json!({"reason": "moving"}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let (_, location, _) = post_transfer(&alice, "to-closed", &from, &closed, json!(20)).await;
    let failed = settled(&alice, &location).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["reason"].as_str().unwrap().contains("closed"), "{failed}");

    let missing = uuid::Uuid::now_v7().to_string();
    let (_, location, _) = post_transfer(&alice, "to-missing", &from, &missing, json!(20)).await;
    let failed = settled(&alice, &location).await;
    assert!(failed["reason"].as_str().unwrap().contains("not found"), "{failed}");

    // Created, then twice debited and refunded.
    let a = common::view_at_least(&alice, &from, 5).await;
    assert_eq!(
        (
            a["version"].as_u64(),
            a["balance"].to_string(),
            a["in_flight"].to_string()
        ),
        (Some(5), "50.00".into(), "0.00".into()),
        "{a}"
    );
    // The refunds are in the source's log.
    let (_, history) = read(alice.get(&format!("/accounts/{from}/events")).await).await;
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "TransferRefunded").count(),
        2,
        "{types:?}"
    );
}

/// Account and transfer ids share one namespace. A transfer whose
/// destination is a transfer (its id is in the `Location` of every
/// transfer) is refunded as "not found", and the transfers after it go
/// on; neither kind of id reads as the other.
async fn a_destination_that_is_not_an_account_is_refunded(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "alice-app").await;
    let from = alice.open("Alice", json!(50)).await;
    let savings = alice.open("Alice savings", json!(0)).await;
    let (_, first, _) = post_transfer(&alice, "first", &from, &savings, json!(5)).await;
    assert_eq!(settled(&alice, &first).await["status"], "completed");
    let transfer_id = first.trim_start_matches("/transfers/").to_owned();

    let (status, location, body) = post_transfer(&alice, "to-a-transfer", &from, &transfer_id, json!(20)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let failed = settled(&alice, &location).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["reason"].as_str().unwrap().contains("not found"), "{failed}");
    let (_, after, _) = post_transfer(&alice, "after", &from, &savings, json!(1)).await;
    assert_eq!(settled(&alice, &after).await["status"], "completed");
    account_settles_at(&alice, &from, "44.00").await;
    account_settles_at(&alice, &savings, "6.00").await;

    for path in [
        format!("/accounts/{transfer_id}"),
        format!("/accounts/{transfer_id}/events"),
        format!("/transfers/{from}"),
    ] {
        expect_error(alice.get(&path).await, StatusCode::NOT_FOUND).await;
    }
    expect_error(
        alice
            .post(&format!("/accounts/{transfer_id}/deposit"), json!({"amount": 1}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

async fn only_the_sources_owner_or_staff_may_transfer_and_see_it(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "alice-app").await;
    let bob = Api::new(&server, "bob-app").await;
    let from = alice.open("Alice", json!(100)).await;
    let to = bob.open("Bob", json!(0)).await;

    // Bob may not move Alice's money, nor learn that her account exists.
    let r = bob
        .post("/transfers", json!({"from": from, "to": to, "amount": 1}))
        .await;
    assert_eq!(
        expect_error(r, StatusCode::NOT_FOUND).await,
        format!("account {from} not found")
    );
    let (_, location, _) = post_transfer(&alice, "k", &from, &to, json!(1)).await;
    expect_error(bob.get(&location).await, StatusCode::NOT_FOUND).await;
    expect_error(alice.get("/transfers/not-a-uuid").await, StatusCode::NOT_FOUND).await;
    let unknown = format!("/transfers/{}", uuid::Uuid::now_v7());
    expect_error(alice.get(&unknown).await, StatusCode::NOT_FOUND).await;

    // A teller may transfer from any account and read every transfer.
    let teller = make_role(&server, &Api::new(&server, "teller-app").await, Role::Teller).await;
    assert_eq!(settled(&teller, &location).await["status"], "completed");
    let (status, location, body) = post_transfer(&teller, "by-teller", &from, &to, json!(2)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        settled(&alice, &location).await["status"],
        "completed",
        "the source's owner sees it"
    );
    account_settles_at(&bob, &to, "3.00").await;

    // Bad requests; one account on both sides is well-formed, refused by a rule.
    let message = expect_error(
        alice
            .post("/transfers", json!({"from": from, "to": from, "amount": 1}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(message.contains("different"), "{message}");
    for (body, why) in [
        (json!({"from": from, "to": to}), "required"),
        (json!({"from": from, "to": to, "amount": 0}), "greater than zero"),
        (json!({"from": from, "to": to, "amount": 1.001}), "decimal"),
        (
            json!({"from": from, "to": to, "amount": 1, "extra": 1}),
            "unknown field",
        ),
    ] {
        let message = expect_error(alice.post("/transfers", body.clone()).await, StatusCode::BAD_REQUEST).await;
        assert!(message.contains(why), "{body}: {message}");
    }
    let message = expect_error(
        alice
            .post(
                "/transfers",
                json!({"from": uuid::Uuid::now_v7(), "to": to, "amount": 1}),
            )
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(message.contains("not found"));
}

/// The same transfer requested again once its key's window has passed (a
/// one-second window here): the transfer as it stands, with the times it
/// was stored with, as `GET` shows them; nothing moves twice. The first
/// answer's times agree with `GET` too (to the microsecond, as stored).
async fn a_repeated_transfer_after_the_keys_window_shows_its_stored_times(backend: Backend) {
    let storage = backend.storage().await;
    let mut config = common::config();
    config.idempotency_ttl = Duration::from_secs(1);
    let server = storage.start(config).await;
    let alice = Api::new(&server, "alice-late").await;
    let from = alice.open("Alice", json!(100)).await;
    let to = alice.open("Alice 2", json!(0)).await;
    let (status, location, first) = post_transfer(&alice, "late", &from, &to, json!(10)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let done = settled(&alice, &location).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(first["requested_at"], done["requested_at"], "{first} {done}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, again_location, again) = post_transfer(&alice, "late", &from, &to, json!(10)).await;
    assert_eq!(
        (status, again_location),
        (StatusCode::ACCEPTED, location.clone()),
        "{again}"
    );
    assert_eq!(again, done, "the stored transfer, times and all");
    account_settles_at(&alice, &from, "90.00").await;
    account_settles_at(&alice, &to, "10.00").await;
}

crate::on_every_backend!(
    a_repeated_transfer_after_the_keys_window_shows_its_stored_times,
    a_transfer_completes_and_moves_the_money,
    insufficient_funds_fail_at_the_debit_with_nothing_moved,
    a_closed_or_missing_destination_is_refunded,
    a_destination_that_is_not_an_account_is_refunded,
    only_the_sources_owner_or_staff_may_transfer_and_see_it,
);
