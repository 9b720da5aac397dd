//! The Redis-backed limiter against a real Redis (see `common::redis`:
//! an unreachable Redis fails these tests). Limits refill once an hour,
//! so that no test depends on how fast the machine runs; time is Redis's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use banking_example::rate_limit::{RateLimitConfig, RateLimitDecision, RateLimiter, RedisRateLimiter};
use banking_example::{AppConfig, Backends};
use common::redis::{self, OwnRedis};
use common::{expect_error, read, Api};
use reqwest::StatusCode;
use serde_json::json;

/// A burst of 3, then one request an hour.
fn config() -> RateLimitConfig {
    RateLimitConfig {
        requests_per_minute: 1,
        burst_size: 3,
        window_size: Duration::from_secs(3600),
        ..RateLimitConfig::default()
    }
}

async fn connect(url: &str, prefix: &str) -> RedisRateLimiter {
    let limiter = tokio::time::timeout(
        Duration::from_secs(10),
        RedisRateLimiter::connect(url, prefix, config()),
    )
    .await
    .expect("connecting to Redis timed out")
    .unwrap();
    limiter.health().await.unwrap();
    limiter
}

#[tokio::test]
async fn instances_share_one_limit() {
    if !redis::required().await {
        return;
    }
    let prefix = redis::prefix("rl");
    let first = connect(&redis::url(), &prefix).await;
    let second = connect(&redis::url(), &prefix).await;
    assert_eq!(
        first.check("client:a").await,
        RateLimitDecision::Allowed { remaining: 2 }
    );
    assert_eq!(
        second.check("client:a").await,
        RateLimitDecision::Allowed { remaining: 1 }
    );
    assert_eq!(
        first.check("client:a").await,
        RateLimitDecision::Allowed { remaining: 0 }
    );
    match second.check("client:a").await {
        RateLimitDecision::Limited { retry_after } => {
            assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_secs(3600),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a limit, got {other:?}"),
    }
    assert_eq!(
        first.check("client:b").await,
        RateLimitDecision::Allowed { remaining: 2 }
    );
    // Another prefix is another limiter.
    let other = connect(&redis::url(), &redis::prefix("rl")).await;
    assert_eq!(
        other.check("client:a").await,
        RateLimitDecision::Allowed { remaining: 2 }
    );
}

/// `REDIS_URL` makes the server use the Redis limiter; two server
/// instances on it share each client's limit over HTTP.
#[tokio::test]
async fn servers_with_redis_share_the_limit() {
    if !redis::required().await {
        return;
    }
    let config = AppConfig {
        redis_url: Some(redis::url()),
        rate_limit: config(),
        ..common::config()
    };
    let chosen = Backends::from_config(&config).await.unwrap();
    assert_eq!(chosen.limiter.name(), "redis");
    // The same limiter as chosen, under a prefix of this test (the
    // server's own prefix is shared by every run, and the per-IP key of
    // /auth routes would carry over between runs for an hour).
    let prefix = redis::prefix("rl-http");
    let mut servers = Vec::new();
    let mut store = None;
    for _ in 0..2 {
        let mut backends = Backends::from_config(&config).await.unwrap();
        backends.limiter = Arc::new(connect(&redis::url(), &prefix).await);
        // One event store for both, as replicas on one database.
        backends.store = store.get_or_insert_with(|| backends.store.clone()).clone();
        servers.push(banking_example::start(config.clone(), backends).await.unwrap());
    }
    let on_a = Api::new(&servers[0], "redis-rl").await;
    let on_b = on_a.on(&servers[1]);
    let id = on_a.open("Red", json!(1)).await;
    let account = format!("/accounts/{id}");
    assert_eq!(on_b.get(&account).await.status(), StatusCode::OK);
    assert_eq!(on_a.get(&account).await.status(), StatusCode::OK);
    let r = on_b.get(&account).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        expect_error(r, StatusCode::TOO_MANY_REQUESTS).await,
        "Rate limit exceeded"
    );
    expect_error(on_a.get(&account).await, StatusCode::TOO_MANY_REQUESTS).await;
    // The limit is the user's: another client id shares it, on both.
    expect_error(
        on_b.as_client("redis-rl-2").get(&account).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    for s in servers {
        s.stop().await.unwrap();
    }
}

/// Documented: the Redis limiter fails open. With its Redis gone, requests
/// pass (never a 500), readiness reports the limiter down, and once Redis
/// is back the limit applies again.
#[tokio::test]
async fn limiter_fails_open_while_redis_is_down() {
    let mut own = OwnRedis::start().await;
    let config = common::config();
    let mut backends = Backends::in_memory(&config);
    backends.limiter = Arc::new(connect(&own.url(), &redis::prefix("rl-down")).await);
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, "rl-down").await;
    let id = api.open("Down", json!(5)).await;
    let account = format!("/accounts/{id}");
    assert_eq!(api.get(&account).await.status(), StatusCode::OK);
    assert_eq!(api.get(&account).await.status(), StatusCode::OK);
    expect_error(api.get(&account).await, StatusCode::TOO_MANY_REQUESTS).await;

    own.kill();
    for _ in 0..5 {
        let (status, body) = read(api.get(&account).await).await;
        assert_eq!(status, StatusCode::OK, "fails open: {body}");
        assert_eq!(body["balance"].to_string(), "5.00");
    }
    let (status, body) = read(api.post(&format!("{account}/deposit"), json!({"amount": 1})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, ready) = read(
        api.http
            .get(format!("{}/health/ready", server.admin_url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["components"]["rate_limiter"]["status"], "down", "{ready}");

    // Back (empty): the limiter reconnects and limits again.
    own.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = read(api.get(&account).await).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
            "{status} {body}"
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the limit never applied again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await.unwrap();
}
