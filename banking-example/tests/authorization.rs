//! Ownership and roles: one customer can neither see nor move money in
//! another's account (404, nothing changes); tellers read and deposit;
//! admins do everything; `GET /accounts` lists what the caller may see;
//! admins set other users' roles over HTTP, which ends those users'
//! sessions.

mod common;

use common::Backend;

use banking_example::auth::Role;
use common::{expect_error, read, Api};
use reqwest::StatusCode;
use serde_json::json;

async fn make_role(server: &banking_example::RunningServer, api: &Api, role: Role) -> Api {
    let id = api.user_id().await.parse().unwrap();
    server.state.auth.stores().users.set_roles(id, &[role]).await.unwrap();
    // Roles are carried by the token: log in again.
    Api::login(server, &api.client_id, &api.username).await
}

async fn another_customers_account_is_404_and_unchanged(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "alice-app").await;
    let bob = Api::new(&server, "bob-app").await;
    let id = alice.open("Alice", json!(100)).await;
    let (_, before) = read(alice.get(&format!("/accounts/{id}")).await).await;

    let not_found = format!("account {id} not found");
    assert_eq!(
        expect_error(bob.get(&format!("/accounts/{id}")).await, StatusCode::NOT_FOUND).await,
        not_found
    );
    assert_eq!(
        expect_error(bob.get(&format!("/accounts/{id}/events")).await, StatusCode::NOT_FOUND).await,
        not_found
    );
    for (path, body) in [
        ("deposit", json!({"amount": 5})),
        ("withdraw", json!({"amount": 5})),
        ("close", json!({"reason": "mine now"})),
    ] {
        let r = bob.post(&format!("/accounts/{id}/{path}"), body.clone()).await;
        assert_eq!(expect_error(r, StatusCode::NOT_FOUND).await, not_found, "{path}");
        // Idempotency keys do not cross users either.
        let r = bob.post_keyed(&format!("/accounts/{id}/{path}"), "k-1", body).await;
        expect_error(r, StatusCode::NOT_FOUND).await;
    }
    // Indistinguishable from an account that does not exist.
    let unknown = uuid::Uuid::now_v7();
    let msg = expect_error(bob.get(&format!("/accounts/{unknown}")).await, StatusCode::NOT_FOUND).await;
    assert_eq!(msg, format!("account {unknown} not found"));

    let (_, after) = read(alice.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(after, before);
    assert_eq!(after["version"], 1);
    let (_, history) = read(alice.get(&format!("/accounts/{id}/events")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 1);
    server.stop().await.unwrap();
}

async fn list_shows_own_accounts_paginated(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "a").await;
    let bob = Api::new(&server, "b").await;
    let mine: Vec<String> = futures::future::join_all((0..3).map(|i| alice.open("A", json!(i)))).await;
    bob.open("B", json!(1)).await;
    let (status, page) = read(alice.get("/accounts?limit=2").await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!((page["total"].as_u64(), page["limit"].as_u64()), (Some(3), Some(2)));
    let (_, rest) = read(alice.get("/accounts?limit=2&offset=2").await).await;
    let mut seen: Vec<String> = page["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["accounts"].as_array().unwrap())
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    let mut mine = mine;
    mine.sort();
    assert_eq!(seen, mine);
    let (_, bobs) = read(bob.get("/accounts").await).await;
    assert_eq!(bobs["total"], 1);
    server.stop().await.unwrap();
}

async fn tellers_read_and_deposit_admins_do_everything(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "a").await;
    let id = alice.open("Alice", json!(10)).await;
    let teller = make_role(&server, &Api::new(&server, "t").await, Role::Teller).await;
    let admin = make_role(&server, &Api::new(&server, "adm").await, Role::Admin).await;

    assert_eq!(teller.get(&format!("/accounts/{id}")).await.status(), StatusCode::OK);
    let (status, after) = read(
        teller
            .post(&format!("/accounts/{id}/deposit"), json!({"amount": 5}))
            .await,
    )
    .await;
    assert_eq!((status, after["balance"].to_string()), (StatusCode::OK, "15.00".into()));
    let r = teller
        .post(&format!("/accounts/{id}/withdraw"), json!({"amount": 5}))
        .await;
    expect_error(r, StatusCode::FORBIDDEN).await;
    let r = teller
        .post(&format!("/accounts/{id}/close"), json!({"reason": "x"}))
        .await;
    expect_error(r, StatusCode::FORBIDDEN).await;
    let (_, all) = read(teller.get("/accounts").await).await;
    assert!(all["total"].as_u64().unwrap() >= 1);
    let r = teller.get_raw("/auth/users").await;
    expect_error(r, StatusCode::FORBIDDEN).await;

    let (status, _) = read(
        admin
            .post(&format!("/accounts/{id}/withdraw"), json!({"amount": 15}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, closed) = read(
        admin
            .post(&format!("/accounts/{id}/close"), json!({"reason": "admin"}))
            .await,
    )
    .await;
    assert_eq!((status, closed["status"].as_str()), (StatusCode::OK, Some("closed")));
    let (status, users) = read(admin.get_raw("/auth/users?limit=10").await).await;
    assert_eq!(status, StatusCode::OK, "{users}");
    assert_eq!(users["total"], 3);
    assert!(users["users"][0]["password_hash"].is_null(), "never exposed");
    server.stop().await.unwrap();
}

async fn admins_set_roles_and_the_old_tokens_stop_working(backend: Backend) {
    let server = backend.start().await;
    let alice = Api::new(&server, "a").await;
    let account = alice.open("Alice", json!(10)).await;
    let admin = make_role(&server, &Api::new(&server, "adm").await, Role::Admin).await;
    let admin_id = admin.user_id().await;
    let bob = Api::new(&server, "b").await;
    let bob_id = bob.user_id().await;
    let roles = |id: &str| format!("/auth/users/{id}/roles");

    // Refused, and nothing changes: not an admin, no role, an unknown
    // role, an unknown field, an unknown or malformed id, the admin's own.
    expect_error(
        bob.put(&roles(&bob_id), json!({"roles": ["teller"]})).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let no_role = expect_error(
        admin.put(&roles(&bob_id), json!({"roles": []})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(no_role.contains("at least one role"), "{no_role}");
    for body in [
        json!({"roles": ["banker"]}),
        json!({"roles": ["teller"], "x": 1}),
        json!({}),
    ] {
        expect_error(admin.put(&roles(&bob_id), body).await, StatusCode::BAD_REQUEST).await;
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    for id in [unknown.as_str(), "not-a-uuid"] {
        let r = admin.put(&roles(id), json!({"roles": ["teller"]})).await;
        expect_error(r, StatusCode::NOT_FOUND).await;
    }
    let own = expect_error(
        admin.put(&roles(&admin_id), json!({"roles": ["customer"]})).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(own.contains("own roles"), "{own}");
    let (_, me) = read(bob.get("/auth/me").await).await;
    assert_eq!(me["roles"], json!(["customer"]));
    expect_error(bob.get(&format!("/accounts/{account}")).await, StatusCode::NOT_FOUND).await;

    // Promoted: repeats count once; the customer token stops working at
    // once (it carries the old roles); the next login is a teller's.
    let (status, user) = read(admin.put(&roles(&bob_id), json!({"roles": ["teller", "teller"]})).await).await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(
        (user["user_id"].as_str(), &user["roles"]),
        (Some(bob_id.as_str()), &json!(["teller"]))
    );
    assert_eq!(user["username"].as_str(), Some(bob.username.as_str()));
    expect_error(bob.get("/auth/me").await, StatusCode::UNAUTHORIZED).await;
    let refreshed = bob
        .http
        .post(bob.url("/auth/refresh"))
        .json(&json!({"refresh_token": bob.refresh_token}))
        .send()
        .await
        .unwrap();
    expect_error(refreshed, StatusCode::UNAUTHORIZED).await;
    let teller = Api::login(&server, "b", &bob.username).await;
    let (_, me) = read(teller.get("/auth/me").await).await;
    assert_eq!(me["roles"], json!(["teller"]));
    let (status, view) = read(teller.get(&format!("/accounts/{account}")).await).await;
    assert_eq!((status, view["balance"].to_string()), (StatusCode::OK, "10.00".into()));
    let (_, users) = read(admin.get_raw("/auth/users?limit=10").await).await;
    let listed: Vec<_> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["user_id"] == bob_id.as_str())
        .collect();
    assert_eq!(listed[0]["roles"], json!(["teller"]));

    // Demoted: the teller's token stops working as well.
    let (status, user) = read(admin.put(&roles(&bob_id), json!({"roles": ["customer"]})).await).await;
    assert_eq!((status, &user["roles"]), (StatusCode::OK, &json!(["customer"])));
    expect_error(
        teller.get(&format!("/accounts/{account}")).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let customer = Api::login(&server, "b", &bob.username).await;
    expect_error(
        customer.get(&format!("/accounts/{account}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The admin's own session is untouched.
    assert_eq!(admin.get("/auth/me").await.status(), StatusCode::OK);
    server.stop().await.unwrap();
}

crate::on_every_backend!(
    another_customers_account_is_404_and_unchanged,
    list_shows_own_accounts_paginated,
    tellers_read_and_deposit_admins_do_everything,
    admins_set_roles_and_the_old_tokens_stop_working,
);
