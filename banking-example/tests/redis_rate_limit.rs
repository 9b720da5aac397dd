//! The Redis-backed limiter against a real Redis (`BANKING_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`). Skipped, with a message, when no
//! Redis answers; set `BANKING_REQUIRE_REDIS=1` to make that a failure.

mod common;

use std::time::Duration;

use banking_example::rate_limit::{RateLimitConfig, RateLimitDecision, RateLimiter, RedisRateLimiter};
use banking_example::{AppConfig, Backends};
use common::{expect_error, Api};
use reqwest::StatusCode;
use serde_json::json;

fn url() -> String {
    std::env::var("BANKING_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn config() -> RateLimitConfig {
    RateLimitConfig {
        requests_per_minute: 60,
        burst_size: 3,
        ..RateLimitConfig::default()
    }
}

async fn connect(prefix: &str) -> Option<RedisRateLimiter> {
    let attempt = tokio::time::timeout(
        Duration::from_secs(3),
        RedisRateLimiter::connect(&url(), prefix, config()),
    )
    .await;
    match attempt {
        Ok(Ok(l)) if l.health().await.is_ok() => Some(l),
        _ if std::env::var_os("BANKING_REQUIRE_REDIS").is_some() => panic!("Redis required at {}", url()),
        _ => {
            eprintln!("SKIPPED: no Redis at {}", url());
            None
        }
    }
}

#[tokio::test]
async fn instances_share_one_limit() {
    let prefix = format!("banking-test:{}:", uuid::Uuid::new_v4());
    let (Some(first), Some(second)) = (connect(&prefix).await, connect(&prefix).await) else {
        return;
    };
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
                retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1),
                "{retry_after:?}"
            );
        }
        other => panic!("expected a limit, got {other:?}"),
    }
    assert!(matches!(
        first.check("client:b").await,
        RateLimitDecision::Allowed { .. }
    ));
}

#[tokio::test]
async fn server_with_redis_url_uses_the_shared_limiter() {
    let prefix = format!("banking-test:{}:", uuid::Uuid::new_v4());
    if connect(&prefix).await.is_none() {
        return;
    }
    let config = AppConfig {
        redis_url: Some(url()),
        rate_limit: config(),
        ..common::config()
    };
    let backends = Backends::from_config(&config).await.unwrap();
    assert_eq!(backends.limiter.name(), "redis");
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, &format!("redis-{}", uuid::Uuid::new_v4())).await;
    let id = api.open("Red", json!(1)).await;
    api.get(&format!("/accounts/{id}")).await;
    api.get(&format!("/accounts/{id}")).await;
    let r = api.get(&format!("/accounts/{id}")).await;
    assert!(r.headers().contains_key("retry-after"));
    expect_error(r, StatusCode::TOO_MANY_REQUESTS).await;
    server.stop().await.unwrap();
}
