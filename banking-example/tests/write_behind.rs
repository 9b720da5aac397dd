//! The server in write-behind mode (`WRITE_BEHIND=1`) on PostgreSQL and
//! the shared Redis: commands are acknowledged once Redis holds them, an
//! account reads its own writes at once (even before the read model, which
//! follows PostgreSQL, has them), the events reach PostgreSQL in order,
//! and readiness reports the flusher.

mod common;

use std::time::Duration;

use banking_example::Backends;
use common::{read, Api};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_mode_reads_its_writes_and_reports_the_flusher() {
    if !common::redis::required().await {
        return;
    }
    let schema = common::pg::schema();
    let mut config = common::pg::config(&schema).await;
    config.redis_url = Some(common::redis::url());
    config.write_behind = true;
    let backends = Backends::from_config(&config).await.unwrap();
    assert_eq!(backends.names.store, "postgres+write-behind");
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, "wb-client").await;
    let id = api.open("Write behind", json!(10)).await;
    for i in 1..=20u64 {
        let (status, body) = read(
            api.post_keyed(
                &format!("/accounts/{id}/deposit"),
                &format!("wb-{i}"),
                json!({ "amount": 1 }),
            )
            .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["version"].as_u64(), Some(i + 1));
        // Read at once: the view answers with this write, whatever the
        // read model has seen so far.
        let (status, view) = read(api.get(&format!("/accounts/{id}")).await).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["version"].as_u64(), Some(i + 1), "{view}");
        assert_eq!(view["balance"].to_string(), format!("{}.00", 10 + i), "{view}");
    }
    // In PostgreSQL, in order, once flushed.
    let mut db = sqlx::PgConnection::connect(&common::pg::database_url()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let versions: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT version FROM {schema}.events WHERE stream_id = $1 ORDER BY global_position"
        ))
        .bind(&id)
        .fetch_all(&mut db)
        .await
        .unwrap();
        if versions.len() == 21 {
            assert_eq!(versions, (1..=21).collect::<Vec<_>>());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "flushed: {versions:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = server.admin_url();
    let (status, ready) = read(api.http.get(format!("{admin}/health/ready")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    let wb = &ready["components"]["write_behind"];
    assert_eq!(wb["status"], "up", "{ready}");
    assert_eq!(wb["details"]["stuck"], false, "{ready}");
    assert!(wb["details"]["durability"].is_string(), "{ready}");
}
