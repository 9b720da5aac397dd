//! The Redis token blacklist against a real Redis (`BANKING_TEST_REDIS_URL`,
//! default `redis://127.0.0.1:6379`; skipped with a message when none
//! answers, a failure with `BANKING_REQUIRE_REDIS=1`): a token revoked on
//! one instance is refused by another.

mod common;

use std::sync::Arc;
use std::time::Duration;

use banking_example::auth::blacklist::{RedisBlacklist, TokenBlacklist};
use banking_example::Backends;
use common::{post_json, Api};
use reqwest::StatusCode;
use serde_json::json;

fn url() -> String {
    std::env::var("BANKING_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn connect(prefix: &str) -> Option<RedisBlacklist> {
    match tokio::time::timeout(Duration::from_secs(3), RedisBlacklist::connect(&url(), prefix)).await {
        Ok(Ok(b)) => Some(b),
        _ if std::env::var_os("BANKING_REQUIRE_REDIS").is_some() => panic!("Redis required at {}", url()),
        _ => {
            eprintln!("SKIPPED: no Redis at {}", url());
            None
        }
    }
}

#[tokio::test]
async fn logout_on_one_instance_is_seen_by_another() {
    let prefix = format!("banking-test:jti:{}:", uuid::Uuid::new_v4().simple());
    let Some(blacklist) = connect(&prefix).await else {
        return;
    };
    let now = chrono::Utc::now();
    assert!(!blacklist.is_revoked("x", now).await.unwrap());
    blacklist
        .revoke("x", now + chrono::Duration::seconds(30), now)
        .await
        .unwrap();
    assert!(blacklist.is_revoked("x", now).await.unwrap());

    let config = common::config();
    let mut a = Backends::in_memory(&config);
    let mut b = Backends::in_memory(&config);
    a.auth.blacklist = Arc::new(blacklist.clone());
    b.auth.blacklist = Arc::new(blacklist);
    b.store = a.store.clone();
    let a = banking_example::start(config.clone(), a).await.unwrap();
    let b = banking_example::start(config, b).await.unwrap();
    let api = Api::new(&a, "redis-bl").await;
    assert_eq!(api.on(&b).get("/accounts").await.status(), StatusCode::OK);
    let r = post_json(&a.url(), "/auth/logout", Some(&api.token), json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.on(&b).get("/accounts").await.status(), StatusCode::UNAUTHORIZED);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
