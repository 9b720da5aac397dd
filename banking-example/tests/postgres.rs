//! The server on the real PostgreSQL (es-postgres), for what only a
//! database shows: state across a restart on the same schema, and races
//! decided by its constraints. Each test works in its own schema. (The
//! API suites run on PostgreSQL too: `on_every_backend!`.)

mod common;

use banking_example::{Backends, RunningServer};
use common::{pg, read, Api};
use reqwest::StatusCode;
use serde_json::json;

async fn start_pg(schema: &str) -> RunningServer {
    let config = pg::config(schema).await;
    let backends = Backends::from_config(&config).await.unwrap();
    assert_eq!(backends.names.store, "postgres");
    banking_example::start(config, backends).await.unwrap()
}

#[tokio::test]
async fn happy_path_survives_a_restart() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let api = Api::new(&server, "pg-happy").await;
    let id = api.open("Ada", json!(100)).await;
    let (status, after) = read(
        api.post(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 50.25, "expected_version": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let (status, after) = read(
        api.post(&format!("/accounts/{id}/withdraw"), json!({"amount": 0.25}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["balance"].to_string(), "150.00");
    // Read-your-writes through the post-commit handler.
    let (_, view) = read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(
        (view["version"].as_u64(), view["balance"].to_string()),
        (Some(3), "150.00".into())
    );
    let (status, conflict) = read(
        api.post(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 1, "expected_version": 1}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    server.stop().await.unwrap();

    // A new process on the same schema rebuilds its read model from the
    // log (or, while an older transaction elsewhere in the cluster holds
    // the gap-safe log back, reads the account through from its stream).
    let server = start_pg(&schema).await;
    // Users persist too: the same user logs in again.
    let api = Api::login(&server, "pg-happy", &api.username).await;
    let view = common::view_at_least(&api, &id, 3).await;
    assert_eq!(view["balance"].to_string(), "150.00");
    let (_, history) = read(api.get(&format!("/accounts/{id}/events?limit=1000")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 3);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idempotent_retry_across_a_restart_moves_money_once() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let api = Api::new(&server, "pg-idem").await;
    let id = api.open("Ida", json!(10)).await;
    let path = format!("/accounts/{id}/deposit");
    let (status, first) = read(api.post_keyed(&path, "dep-restart", json!({"amount": 5})).await).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["version"], 2);
    server.stop().await.unwrap();

    // The de-duplicator's memory is gone; the store recognises the retry.
    let server = start_pg(&schema).await;
    let api = api.on(&server);
    let (status, retry) = read(api.post_keyed(&path, "dep-restart", json!({"amount": 5})).await).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(retry["version"], 2, "{retry}");
    assert_eq!(retry["balance"].to_string(), "15.00");
    let (_, history) = read(api.get(&format!("/accounts/{id}/events?limit=1000")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 2);
    server.stop().await.unwrap();
}

/// Users, refresh tokens, resets, lockouts and the mail outbox live in
/// PostgreSQL: they survive a restart and behave as in memory.
#[tokio::test]
async fn auth_state_lives_in_postgres() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let base = server.url();
    let api = Api::new(&server, "pg-auth").await;
    let id = api.open("Owned", json!(1)).await;
    let (status, rotated) = read(
        common::post_json(
            &base,
            "/auth/refresh",
            None,
            json!({"refresh_token": api.refresh_token}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    server.stop().await.unwrap();

    let server = start_pg(&schema).await;
    let base = server.url();
    // Reuse of the rotated token after the restart revokes the family.
    let r = common::post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": api.refresh_token}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = common::post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": rotated["refresh_token"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Ownership survives: another user cannot see the account.
    let other = Api::new(&server, "pg-other").await;
    assert_eq!(
        other.get(&format!("/accounts/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    let owner = Api::login(&server, "pg-auth", &api.username).await;
    assert_eq!(owner.get(&format!("/accounts/{id}")).await.status(), StatusCode::OK);
    // Lockout counts in PostgreSQL.
    for _ in 0..5 {
        let r = common::post_json(
            &base,
            "/auth/login",
            None,
            json!({"username": api.username, "password": "wrong password!"}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = common::post_json(
        &base,
        "/auth/login",
        None,
        json!({"username": api.username, "password": common::PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A reset through the PostgreSQL outbox clears the lockout.
    let r = common::post_json(&base, "/auth/reset-password", None, json!({"email": api.username})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mails = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    assert_eq!(mails.len(), 1);
    let confirm = json!({"token": mails[0].token, "new_password": "brand new passphrase"});
    let r = common::post_json(&base, "/auth/reset-password/confirm", None, confirm.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = common::post_json(&base, "/auth/reset-password/confirm", None, confirm).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "single use");
    common::login(&base, &api.username, "brand new passphrase").await;
    server.stop().await.unwrap();
}

/// Two registrations of one username at once, on two server instances
/// (no in-process lock to help): the database lets exactly one win, the
/// other is 409, and one user exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_username_one_wins() {
    let schema = pg::schema();
    let a = start_pg(&schema).await;
    let b = start_pg(&schema).await;
    let (url_a, url_b) = (a.url(), b.url());
    for round in 0..5 {
        let username = common::username();
        let body = json!({"username": username, "password": common::PASSWORD});
        // Different letter case: the same username.
        let upper = json!({"username": username.to_uppercase(), "password": common::PASSWORD});
        let (ra, rb) = tokio::join!(
            common::post_json(&url_a, "/auth/register", None, body),
            common::post_json(&url_b, "/auth/register", None, upper),
        );
        let (sa, ba) = read(ra).await;
        let (sb, bb) = read(rb).await;
        let mut statuses = [sa, sb];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "round {round}: {ba} {bb}"
        );
        let winner = if sa == StatusCode::CREATED { ba } else { bb };
        // The one user logs in on either instance and is the winner.
        for server in [&a, &b] {
            let api = Api::login(server, "reg", &username).await;
            assert_eq!(api.user_id().await, winner["user_id"].as_str().unwrap());
        }
    }
    let admin = Api::new(&a, "reg-admin").await;
    let id = admin.user_id().await.parse().unwrap();
    a.state
        .auth
        .stores()
        .users
        .set_roles(id, &[banking_example::auth::Role::Admin])
        .await
        .unwrap();
    let admin = Api::login(&a, "reg-admin", &admin.username).await;
    let (_, users) = read(admin.get_raw("/auth/users?limit=100").await).await;
    assert_eq!(users["total"], 6, "five winners and the admin: {users}");
    // The largest offset is an empty page, not a failed query; past it, 400.
    let (status, page) = read(admin.get_raw("/auth/users?offset=9223372036854775807").await).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (page["total"].as_u64(), page["users"].as_array().map(Vec::len)),
        (Some(6), Some(0)),
        "{page}"
    );
    let (status, body) = read(admin.get_raw("/auth/users?offset=18446744073709551615").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// A writing transaction left open anywhere in the cluster holds the log
/// back (the head and every lag stand still): the operations listener's
/// readiness and metrics say how many committed events wait and for how
/// long, and nothing once it ends.
#[tokio::test]
async fn readiness_reports_the_events_an_open_transaction_holds_back() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let api = Api::new(&server, "pg-held").await;
    let id = api.open("Ada", json!(100)).await;
    let pool = sqlx::PgPool::connect(&pg::database_url()).await.unwrap();
    let mut open = pool.begin().await.unwrap();
    // A transaction id: the transaction now counts as writing.
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    for _ in 0..2 {
        let r = api.post(&format!("/accounts/{id}/deposit"), json!({"amount": 1})).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let admin = server.admin_url();
    let details = |ready: &serde_json::Value| ready["components"]["event_store"]["details"].clone();
    let (_, ready) = read(api.http.get(format!("{admin}/health/ready")).send().await.unwrap()).await;
    let held = details(&ready);
    assert!(held["held_back_events"].as_u64().unwrap() >= 2, "{ready}");
    assert!(held["held_back_seconds"].as_f64().unwrap() >= 0.25, "{ready}");
    let metrics = api
        .http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("es_postgres_log_held_back_seconds"), "{metrics}");
    open.rollback().await.unwrap();
    // (Other tests' transactions may hold the log back for a moment.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, ready) = read(api.http.get(format!("{admin}/health/ready")).send().await.unwrap()).await;
        if details(&ready)["held_back_events"] == json!(0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still held back: {ready}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await.unwrap();
}
