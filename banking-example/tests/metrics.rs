//! The metrics the docs list move by exactly what a request does.
//!
//! The recorder is process-wide, so this binary holds one test: nothing
//! else in the process moves a counter between its two readings.

mod common;

use std::sync::Arc;

use banking_example::rate_limit::{InMemoryRateLimiter, ManualMonotonicClock, RateLimitConfig};
use banking_example::Backends;
use common::metrics::{scrape, value};
use common::{expect_error, post_json, Api};
use reqwest::StatusCode;
use serde_json::json;

type Sample = (&'static str, &'static [(&'static str, &'static str)]);

const SAMPLES: &[Sample] = &[
    (
        "http_requests_total",
        &[("method", "GET"), ("route", "/accounts/{id}"), ("status", "200")],
    ),
    (
        "http_requests_total",
        &[("method", "GET"), ("route", "/accounts/{id}"), ("status", "404")],
    ),
    ("commands_total", &[("command", "open"), ("outcome", "ok")]),
    ("commands_total", &[("command", "deposit"), ("outcome", "ok")]),
    ("commands_total", &[("command", "withdraw"), ("outcome", "error")]),
    ("idempotent_replays_total", &[]),
    ("rate_limit_violations_total", &[]),
    ("auth_events_total", &[("event", "login_failure")]),
    ("authorization_denials_total", &[("reason", "not_owner")]),
];

fn read_all(text: &str) -> Vec<f64> {
    SAMPLES.iter().map(|(name, labels)| value(text, name, labels)).collect()
}

#[tokio::test]
async fn counters_move_by_what_the_requests_did() {
    let server = common::start().await;
    let base = server.url();
    let admin = server.admin_url();
    let before = read_all(&scrape(&admin).await);

    let alice = Api::new(&server, "m-alice").await;
    let bob = Api::new(&server, "m-bob").await;
    let id = alice.open("Metered", json!(10)).await;
    let account = format!("/accounts/{id}");
    for _ in 0..3 {
        assert_eq!(alice.get(&account).await.status(), StatusCode::OK);
    }
    // Bob may not see it: 404 and one denial.
    expect_error(bob.get(&account).await, StatusCode::NOT_FOUND).await;
    // A deposit, and its replay.
    let deposit = format!("{account}/deposit");
    for _ in 0..2 {
        let r = alice.post_keyed(&deposit, "m-dep", json!({"amount": 1})).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    // A refused withdrawal.
    let r = alice.post(&format!("{account}/withdraw"), json!({"amount": 100})).await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    // A failed login.
    let r = post_json(
        &base,
        "/auth/login",
        None,
        json!({"username": alice.username, "password": "not the password"}),
    )
    .await;
    expect_error(r, StatusCode::UNAUTHORIZED).await;

    // Two requests over the limit on a limited server (stopped clock).
    let config = banking_example::AppConfig {
        rate_limit: RateLimitConfig {
            requests_per_minute: 60,
            burst_size: 3,
            ..RateLimitConfig::default()
        },
        ..common::config()
    };
    let mut backends = Backends::in_memory(&config);
    backends.limiter = Arc::new(InMemoryRateLimiter::with_clock(
        config.rate_limit.clone(),
        Arc::new(ManualMonotonicClock::new()),
    ));
    let limited = banking_example::start(config, backends).await.unwrap();
    let carol = Api::new(&limited, "m-carol").await;
    let hers = carol.open("Limited", json!(1)).await;
    let hers = format!("/accounts/{hers}");
    assert_eq!(carol.get(&hers).await.status(), StatusCode::OK);
    assert_eq!(carol.get(&hers).await.status(), StatusCode::OK);
    for _ in 0..2 {
        expect_error(carol.get(&hers).await, StatusCode::TOO_MANY_REQUESTS).await;
    }

    let after = read_all(&scrape(&admin).await);
    let delta: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // GET /accounts/{id} 200: alice's 3 and carol's 2; opens: alice's
    // and carol's; deposits: the first and its replay (a replayed answer
    // counts as the command's outcome).
    let expected = [5.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 1.0, 1.0];
    for ((sample, got), want) in SAMPLES.iter().zip(&delta).zip(expected) {
        assert_eq!(*got, want, "{sample:?}: before {before:?}, after {after:?}");
    }
    limited.stop().await.unwrap();
    server.stop().await.unwrap();
}

#[test]
fn the_parser_reads_labels_with_braces_and_escapes() {
    let text =
        "# TYPE x counter\nx{route=\"/accounts/{id}\",status=\"200\"} 3\nx{status=\"200\",route=\"/a\\\"b\"} 4\ny 7\n";
    assert_eq!(value(text, "x", &[("status", "200"), ("route", "/accounts/{id}")]), 3.0);
    assert_eq!(value(text, "x", &[("route", "/a\"b"), ("status", "200")]), 4.0);
    assert_eq!(value(text, "x", &[("route", "/accounts/{id}")]), 0.0);
    assert_eq!(value(text, "y", &[]), 7.0);
    assert_eq!(value(text, "z", &[]), 0.0);
}
