//! Redis restarted under a running server (its own `redis-server` on a
//! spare port, killed and started again empty): the server recovers, and
//! from then on answers without errors. While Redis is away, answers are
//! JSON errors, never a 500.

mod common;

use std::time::{Duration, Instant};

use banking_example::{AppConfig, Backends};
use common::redis::OwnRedis;
use common::{read, Api};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_recovers_after_a_redis_restart() {
    let mut redis = OwnRedis::start().await;
    let config = AppConfig {
        redis_url: Some(redis.url()),
        // A request stuck on Redis would show as 408 well within the test.
        request_timeout: Duration::from_secs(10),
        ..common::config()
    };
    let backends = Backends::from_config(&config).await.unwrap();
    assert_eq!(backends.names.dedup, "redis");
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, "redis-restart").await;
    let id = api.open("Restart", json!(0)).await;
    let deposit = format!("/accounts/{id}/deposit");
    let (status, body) = read(api.post_keyed(&deposit, "before", json!({"amount": 1})).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    redis.kill();
    // Readiness says so: keyed requests cannot be de-duplicated.
    let ready = |api: &Api| {
        let url = format!("{}/health/ready", server.admin_url());
        let http = api.http.clone();
        async move { read(http.get(url).send().await.unwrap()).await }
    };
    let (status, body) = ready(&api).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["components"]["deduplicator"]["status"], "down", "{body}");
    assert!(
        body["components"]["deduplicator"]["details"]["error"].is_string(),
        "{body}"
    );
    let (status, body) = read(api.post_keyed(&deposit, "while-down", json!({"amount": 1})).await).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "keyed requests fail closed: {body}"
    );
    // Whatever else is asked meanwhile gets an answer (Redis calls are
    // bounded), a JSON error or a success, never a 500 or a timeout.
    let mut moved_while_down = 0;
    for i in 0..3 {
        let (status, body) = read(api.post(&deposit, json!({"amount": 1})).await).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "unkeyed deposit {i} while Redis is down: {status} {body}"
        );
        moved_while_down += u32::from(status == StatusCode::OK);
        let (status, body) = read(api.get(&format!("/accounts/{id}")).await).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
            "read {i} while Redis is down: {status} {body}"
        );
    }
    redis.restart().await;

    // Poll until a keyed deposit goes through; refusals meanwhile are
    // clean JSON errors.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (status, body) = read(api.post_keyed(&deposit, "while-down", json!({"amount": 1})).await).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "attempt {attempt}: {body}");
        assert!(body["error"].is_string(), "{body}");
        assert!(Instant::now() < deadline, "never recovered: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, body) = ready(&api).await;
    assert_eq!(body["components"]["deduplicator"]["status"], "up", "{status} {body}");

    // Recovered: every kind of request answers without error.
    for i in 0..20 {
        let (status, body) = read(
            api.post_keyed(&deposit, &format!("after-{i}"), json!({"amount": 1}))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "after recovery, deposit {i}: {body}");
        let (status, body) = read(api.post(&deposit, json!({"amount": 1})).await).await;
        assert_eq!(status, StatusCode::OK, "after recovery, unkeyed deposit {i}: {body}");
        let (status, body) = read(api.get(&format!("/accounts/{id}")).await).await;
        assert_eq!(status, StatusCode::OK, "after recovery, read {i}: {body}");
    }
    // A replay comes from the restarted Redis.
    let r = api.post_keyed(&deposit, "after-0", json!({"amount": 1})).await;
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    // Logins and logout (the Redis blacklist) work again.
    let again = Api::login(&server, "redis-restart", &api.username).await;
    let r = common::post_json(&server.url(), "/auth/logout", Some(&again.token), json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(again.get("/accounts").await.status(), StatusCode::UNAUTHORIZED);
    let (_, view) = read(api.get(&format!("/accounts/{id}")).await).await;
    // 1 before, the refused one once on retry, 20 keyed and 20 unkeyed,
    // and the unkeyed deposits that went through while Redis was down.
    assert_eq!(
        view["balance"].to_string(),
        format!("{}.00", 42 + moved_while_down),
        "{view}"
    );
    server.stop().await.unwrap();
}
