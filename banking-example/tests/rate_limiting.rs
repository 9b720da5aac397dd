//! 429 with Retry-After, per user and per IP. The limiter tells time
//! by a manual clock: the limits and the refill are exact, whatever the
//! machine's load.

mod common;

use std::sync::Arc;

use banking_example::rate_limit::{InMemoryRateLimiter, ManualMonotonicClock, RateLimitConfig};
use banking_example::{Backends, RunningServer};
use common::{expect_error, Api};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

/// 60 a minute (one a second) with a burst of 3, on a stopped clock.
async fn start_limited() -> (RunningServer, ManualMonotonicClock) {
    let config = banking_example::AppConfig {
        rate_limit: RateLimitConfig {
            requests_per_minute: 60,
            burst_size: 3,
            ..RateLimitConfig::default()
        },
        ..common::config()
    };
    let clock = ManualMonotonicClock::new();
    let mut backends = Backends::in_memory(&config);
    backends.limiter = Arc::new(InMemoryRateLimiter::with_clock(
        config.rate_limit.clone(),
        Arc::new(clock.clone()),
    ));
    (banking_example::start(config, backends).await.unwrap(), clock)
}

#[tokio::test]
async fn users_are_limited_and_refill() {
    let (server, clock) = start_limited().await;
    // Registration and login count against the IP, not the client id.
    let a = Api::new(&server, "limited-a").await;
    let id = a.open("Lim", json!(1)).await;
    let account = format!("/accounts/{id}");
    let r = a.get(&account).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "1");
    assert_eq!(a.get(&account).await.status(), StatusCode::OK);
    let r = a.get(&account).await;
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        expect_error(r, StatusCode::TOO_MANY_REQUESTS).await,
        "Rate limit exceeded"
    );
    // The limit is the user's: another client id does not reset it.
    let b = a.as_client("limited-b");
    expect_error(b.get(&account).await, StatusCode::TOO_MANY_REQUESTS).await;
    // Still limited until a whole emission interval has passed.
    clock.advance(Duration::from_millis(999));
    expect_error(a.get(&account).await, StatusCode::TOO_MANY_REQUESTS).await;
    clock.advance(Duration::from_millis(1));
    assert_eq!(a.get(&account).await.status(), StatusCode::OK);
    expect_error(a.get(&account).await, StatusCode::TOO_MANY_REQUESTS).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn other_routes_are_limited_per_ip() {
    let (server, clock) = start_limited().await;
    let http = reqwest::Client::new();
    let url = format!("{}/health", server.url());
    let get = || async { http.get(&url).send().await.unwrap() };
    let statuses: Vec<u16> = futures::future::join_all((0..5).map(|_| async { get().await.status().as_u16() })).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
    clock.advance(Duration::from_secs(2));
    assert_eq!(get().await.status(), StatusCode::OK);
    assert_eq!(get().await.status(), StatusCode::OK);
    assert_eq!(get().await.status(), StatusCode::TOO_MANY_REQUESTS);
    server.stop().await.unwrap();
}
