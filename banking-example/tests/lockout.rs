//! Login lockout per username and source: a flood of failures from one
//! place locks that place out, not the owner (IPv6 sources grouped by
//! /64, `X-Forwarded-For` believed from trusted proxies only); each
//! failure from a source makes its next try wait longer; idle failure
//! counts are purged. On every backend.

mod common;

use banking_example::RunningServer;
use chrono::Duration;
use common::{expect_error, read, Api, Backend};
use es_core::ManualClock;
use reqwest::{Client, Response, StatusCode};
use serde_json::json;

/// A login as seen from `source` (the server trusts 127.0.0.1 as a proxy).
async fn login_from(base: &str, source: &str, username: &str, password: &str) -> Response {
    Client::new()
        .post(format!("{base}/auth/login"))
        .header("x-forwarded-for", source)
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap()
}

fn behind_proxy() -> banking_example::AppConfig {
    let mut config = common::config();
    config.trusted_proxies = "127.0.0.1".parse().unwrap();
    config.auth.max_login_attempts = 3;
    config
}

fn retry_after(r: &Response) -> u64 {
    r.headers()["retry-after"].to_str().unwrap().parse().unwrap()
}

async fn a_flood_from_one_source_does_not_lock_the_owner_out_elsewhere(backend: Backend) {
    let server = backend.start_with(behind_proxy()).await;
    let base = server.url();
    let api = Api::new(&server, "lockout").await;
    // The attacker rotates addresses inside one IPv6 /64: one source.
    for i in 1..=3 {
        let r = login_from(&base, &format!("2001:db8:1:2::{i}"), &api.username, "wrong password!").await;
        expect_error(r, StatusCode::UNAUTHORIZED).await;
    }
    let r = login_from(&base, "2001:db8:1:2::99", &api.username, common::PASSWORD).await;
    assert!(r.headers().contains_key("retry-after"));
    let msg = expect_error(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(msg, "too many failed login attempts; try again later");
    // The owner, from anywhere else, logs in.
    let (status, body) = read(login_from(&base, "203.0.113.7", &api.username, common::PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = read(login_from(&base, "2001:db8:1:3::1", &api.username, common::PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "the next /64 is another source: {body}");
    server.stop().await.unwrap();
}

/// With the auth rate limit on (20 a minute per address and per
/// username), floods of reset requests and of guesses from one source use
/// up that source's and the username's buckets, but not the owner's login
/// from elsewhere.
async fn a_flood_from_one_source_does_not_rate_limit_the_owner_elsewhere(backend: Backend) {
    let mut config = behind_proxy();
    config.auth.rate_limit_requests = 20;
    let server = backend.start_with(config).await;
    let base = server.url();
    let api = Api::new(&server, "lockout").await;
    let attacker = "198.51.100.1";
    let mut refused = 0;
    for _ in 0..25 {
        let r = Client::new()
            .post(format!("{base}/auth/reset-password"))
            .header("x-forwarded-for", attacker)
            .json(&json!({"email": api.username}))
            .send()
            .await
            .unwrap();
        refused += usize::from(r.status() == StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(refused >= 5, "the attacker's address is limited: {refused} refused");
    let guesser = "198.51.100.2";
    for _ in 0..25 {
        let r = login_from(&base, guesser, &api.username, "wrong password!").await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&r.status()),
            "{}",
            r.status()
        );
    }
    let (status, body) = read(login_from(&base, "203.0.113.7", &api.username, common::PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "the owner logs in from elsewhere: {body}");
    server.stop().await.unwrap();
}

/// Guesses sent all at once from one source are checked one after the
/// other: no more get an answer than the lockout allows.
async fn concurrent_guesses_from_one_source_get_no_more_tries_than_the_lockout_allows(backend: Backend) {
    let server = backend.start_with(behind_proxy()).await;
    let base = server.url();
    let api = Api::new(&server, "lockout").await;
    let guesses: Vec<_> = (0..20)
        .map(|_| {
            let (base, username) = (base.clone(), api.username.clone());
            tokio::spawn(async move {
                login_from(&base, "198.51.100.3", &username, "wrong password!")
                    .await
                    .status()
            })
        })
        .collect();
    let mut checked = 0;
    for g in guesses {
        let status = g.await.unwrap();
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
            "{status}"
        );
        checked += usize::from(status == StatusCode::UNAUTHORIZED);
    }
    assert_eq!(checked, 3, "MAX_LOGIN_ATTEMPTS passwords checked, the rest refused");
    server.stop().await.unwrap();
}

async fn each_failure_from_a_source_makes_its_next_try_wait_longer(backend: Backend) {
    const BACKOFF_MS: u64 = 300;
    let clock = ManualClock::at(chrono::Utc::now());
    let mut config = behind_proxy();
    config.auth.max_login_attempts = 5;
    config.auth.lockout_duration = std::time::Duration::from_secs(300);
    config.auth.login_backoff = std::time::Duration::from_millis(BACKOFF_MS);
    let server = backend.start_with_clock(config, clock.clone()).await;
    let base = server.url();
    let api = Api::new(&server, "lockout").await;
    let attacker = "198.51.100.1";
    // (status, how long the answer took)
    let timed = |password: &'static str| {
        let (base, username) = (base.clone(), api.username.clone());
        async move {
            let started = std::time::Instant::now();
            let r = login_from(&base, attacker, &username, password).await;
            (r.status(), started.elapsed().as_millis() as u64)
        }
    };
    let waited = |ms: u64, factor: u64| ms >= factor * BACKOFF_MS * 9 / 10;
    // The first two failures cost no wait; each one after them makes the
    // next try wait twice as long, and that try is still checked: a wrong
    // password answers 401, not a refusal.
    for _ in 0..2 {
        let (status, _) = timed("wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for factor in [1, 2] {
        let (status, ms) = timed("wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(waited(ms, factor), "waited {ms} ms, expected {factor} x {BACKOFF_MS}");
    }
    // Another source is not held back.
    let (status, _) = read(login_from(&base, "203.0.113.7", &api.username, common::PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK);
    // The right password waits too, then gets in, and clears the count:
    // the next failures cost no wait again.
    let (status, ms) = timed(common::PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert!(waited(ms, 4), "waited {ms} ms");
    // Five failures in a row (each answered 401 after its wait) lock the
    // source out: then even the right password is refused at once.
    for factor in [0, 0, 1, 2, 4] {
        let (status, ms) = timed("wrong password!").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            factor == 0 || waited(ms, factor),
            "waited {ms} ms, expected {factor} x {BACKOFF_MS}"
        );
    }
    let r = login_from(&base, attacker, &api.username, common::PASSWORD).await;
    assert!(retry_after(&r) > 200);
    expect_error(r, StatusCode::TOO_MANY_REQUESTS).await;
    // (The manual clock stands still while a try waits, so the waits are
    // counted from it and the lockout starts a few seconds after it.)
    clock.advance(Duration::seconds(310));
    let (status, _) = read(login_from(&base, attacker, &api.username, common::PASSWORD).await).await;
    assert_eq!(status, StatusCode::OK, "the lockout is over");
    server.stop().await.unwrap();
}

/// The stored failure counts as `(username, source)`; `None` in memory.
async fn stored_failures(server: &RunningServer) -> Option<Vec<(String, String)>> {
    let stores = server.state.auth.stores();
    if let Some(pg) = &stores.pg {
        let sql = format!(
            "SELECT username, source FROM {}.auth_login_failures ORDER BY source",
            pg.schema()
        );
        return Some(sqlx::query_as(&sql).fetch_all(pg.pool()).await.unwrap());
    }
    if let Some(sqlite) = &stores.sqlite {
        return Some(
            sqlx::query_as("SELECT username, source FROM auth_login_failures ORDER BY source")
                .fetch_all(sqlite.pool())
                .await
                .unwrap(),
        );
    }
    None
}

async fn idle_failure_counts_are_purged(backend: Backend) {
    let clock = ManualClock::at(chrono::Utc::now());
    let server = backend.start_with_clock(behind_proxy(), clock.clone()).await;
    let base = server.url();
    let r = login_from(&base, "198.51.100.1", "ghost@test.example", "wrong password!").await;
    expect_error(r, StatusCode::UNAUTHORIZED).await;
    let r = login_from(&base, "198.51.100.2", "ghost@test.example", "wrong password!").await;
    expect_error(r, StatusCode::UNAUTHORIZED).await;
    if let Some(rows) = stored_failures(&server).await {
        assert_eq!(rows.len(), 2, "{rows:?}");
    }
    clock.advance(Duration::minutes(61));
    let r = login_from(&base, "198.51.100.3", "ghost@test.example", "wrong password!").await;
    expect_error(r, StatusCode::UNAUTHORIZED).await;
    if let Some(rows) = stored_failures(&server).await {
        assert_eq!(
            rows,
            [("ghost@test.example".to_owned(), "ip:198.51.100.3".to_owned())],
            "counts idle for an hour are gone"
        );
    }
    server.stop().await.unwrap();
}

crate::on_every_backend!(
    a_flood_from_one_source_does_not_lock_the_owner_out_elsewhere,
    a_flood_from_one_source_does_not_rate_limit_the_owner_elsewhere,
    concurrent_guesses_from_one_source_get_no_more_tries_than_the_lockout_allows,
    each_failure_from_a_source_makes_its_next_try_wait_longer,
    idle_failure_counts_are_purged,
);
