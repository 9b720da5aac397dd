//! The Redis token blacklist against a real Redis (see `common::redis`:
//! an unreachable Redis fails this test): a token revoked on one instance
//! is refused by another.

mod common;

use std::sync::Arc;
use std::time::Duration;

use banking_example::auth::blacklist::{RedisBlacklist, TokenBlacklist};
use banking_example::Backends;
use common::{post_json, redis, Api};
use reqwest::StatusCode;
use serde_json::json;

async fn connect(prefix: &str) -> RedisBlacklist {
    tokio::time::timeout(Duration::from_secs(10), RedisBlacklist::connect(&redis::url(), prefix))
        .await
        .expect("connecting to Redis timed out")
        .unwrap()
}

#[tokio::test]
async fn logout_on_one_instance_is_seen_by_another() {
    if !redis::required().await {
        return;
    }
    let blacklist = connect(&redis::prefix("jti")).await;
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
