//! 429 with Retry-After, per client id and per IP.

mod common;

use banking_example::rate_limit::RateLimitConfig;
use common::{expect_error, Api};
use reqwest::StatusCode;
use serde_json::json;

fn limited_config() -> banking_example::AppConfig {
    banking_example::AppConfig {
        rate_limit: RateLimitConfig {
            requests_per_minute: 60,
            burst_size: 3,
            ..RateLimitConfig::default()
        },
        ..common::config()
    }
}

#[tokio::test]
async fn clients_are_limited_separately() {
    let server = common::start_with(limited_config()).await;
    let a = Api::new(&server, "limited-a").await;
    let id = a.open("Lim", json!(1)).await;
    assert_eq!(a.get(&format!("/accounts/{id}")).await.status(), StatusCode::OK);
    assert_eq!(a.get(&format!("/accounts/{id}")).await.status(), StatusCode::OK);
    let r = a.get(&format!("/accounts/{id}")).await;
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(
        expect_error(r, StatusCode::TOO_MANY_REQUESTS).await,
        "Rate limit exceeded"
    );
    // Another client id is not affected.
    let b = a.as_client("limited-b");
    assert_eq!(b.get(&format!("/accounts/{id}")).await.status(), StatusCode::OK);
    // Violations are counted.
    let metrics = b
        .http
        .get(b.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rate_limit_violations_total"), "{metrics}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn other_routes_are_limited_per_ip() {
    let server = common::start_with(limited_config()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/health", server.url());
    let statuses: Vec<u16> =
        futures::future::join_all((0..5).map(|_| async { http.get(&url).send().await.unwrap().status().as_u16() }))
            .await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
    server.stop().await.unwrap();
}
