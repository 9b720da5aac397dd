//! TLS to the backends: PostgreSQL reached with `sslmode=verify-full` and
//! the CA file (`sslrootcert`), and refused with the wrong CA; Redis over
//! `rediss://`, trusting the CA `SSL_CERT_FILE` names, and refused without
//! it. Each server is a private one on a spare port, with certificates of
//! a CA made for the test.

mod common;

use banking_example::{AppConfig, Backends};
use common::pg::OwnPostgres;
use common::redis::OwnRedis;
use common::tls::Certs;
use common::Api;
use serde_json::json;

fn tls_url(pg: &OwnPostgres, ca: &std::path::Path) -> String {
    format!("{}?sslmode=verify-full&sslrootcert={}", pg.url(), ca.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_verify_full_and_the_ca_file() {
    let certs = Certs::generate();
    let pg = OwnPostgres::start_tls(&certs.server_cert, &certs.server_key).await;
    let url = tls_url(&pg, &certs.ca);
    // The connection is encrypted, and plain TCP is refused (hostssl only).
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl);
    pool.close().await;
    let plain = sqlx::PgPool::connect(&format!("{}?sslmode=disable", pg.url())).await;
    assert!(plain.is_err(), "the test cluster takes TLS only");

    // The server runs on it.
    let config = AppConfig {
        database_url: Some(url),
        database_schema: "bank".into(),
        ..common::config()
    };
    let backends = Backends::from_config(&config).await.unwrap();
    assert_eq!(backends.names.store, "postgres");
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, "tls").await;
    let id = api.open("Encrypted", json!(5)).await;
    let (status, view) = common::read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{view}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_with_the_wrong_ca_is_refused() {
    let certs = Certs::generate();
    let pg = OwnPostgres::start_tls(&certs.server_cert, &certs.server_key).await;
    let url = tls_url(&pg, &certs.other_ca);
    let refused = sqlx::PgPool::connect(&url).await.unwrap_err();
    assert!(refused.to_string().to_lowercase().contains("certificate"), "{refused}");
    let config = AppConfig {
        database_url: Some(url),
        ..common::config()
    };
    let Err(err) = Backends::from_config(&config).await else {
        panic!("a server certificate of another CA is refused")
    };
    assert!(
        err.to_string().contains("postgres") || err.to_string().contains("certificate"),
        "{err}"
    );
}

/// Redis over TLS, trusting the CA through `SSL_CERT_FILE` (this test
/// binary's only user of that variable: the PostgreSQL tests name their
/// CA in the URL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_trusting_the_ca_file() {
    let certs = Certs::generate();
    let redis = OwnRedis::start_tls(&certs.server_cert, &certs.server_key).await;
    let config = AppConfig {
        redis_url: Some(redis.tls_url()),
        ..common::config()
    };
    std::env::set_var("SSL_CERT_FILE", &certs.other_ca);
    let Err(err) = Backends::from_config(&config).await else {
        panic!("an unknown CA is refused")
    };
    assert!(err.to_string().contains("redis"), "{err}");

    std::env::set_var("SSL_CERT_FILE", &certs.ca);
    let backends = Backends::from_config(&config).await.unwrap();
    assert_eq!(backends.names.dedup, "redis");
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, "tls").await;
    let id = api.open("Encrypted", json!(5)).await;
    let path = format!("/accounts/{id}/deposit");
    for _ in 0..2 {
        let (status, body) = common::read(api.post_keyed(&path, "once", json!({"amount": 1})).await).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(
            body["balance"].to_string(),
            "6.00",
            "de-duplicated through Redis over TLS"
        );
    }
    // The logout revocation lives in Redis (the blacklist) too.
    let r = common::post_json(&api.base, "/auth/logout", Some(&api.token), json!({})).await;
    assert_eq!(r.status(), reqwest::StatusCode::NO_CONTENT);
    assert_eq!(api.get("/auth/me").await.status(), reqwest::StatusCode::UNAUTHORIZED);
    server.stop().await.unwrap();
    std::env::remove_var("SSL_CERT_FILE");
}
