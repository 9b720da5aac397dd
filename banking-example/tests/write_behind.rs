//! The server in write-behind mode (`WRITE_BEHIND=1`) on PostgreSQL and
//! the shared Redis: commands are acknowledged once Redis holds them, an
//! account reads its own writes at once (even before the read model, which
//! follows PostgreSQL, has them), the events reach PostgreSQL in order,
//! and readiness reports the flusher. Redis killed under load (its own,
//! with AOF) gives 503s, never a 500, and the server takes commands again
//! soon after Redis is back, each deposit applied once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Clients depositing with keys while Redis (its own, AOF with `appendfsync
/// always`) is killed and started again: every answer is a 200 or a 503
/// (never a 500), commands go through again within a few seconds of Redis
/// being back, and once flushed each balance moved by exactly the
/// acknowledged deposits (a 503 retried with its key is applied once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_is_503_then_recovers_with_every_deposit_once() {
    const CLIENTS: usize = 8;
    const ACCOUNTS: usize = 4;
    let mut redis = common::redis::OwnRedis::start_aof().await;
    let schema = common::pg::schema();
    let mut config = common::pg::config(&schema).await;
    config.redis_url = Some(redis.url());
    config.write_behind = true;
    config.request_timeout = Duration::from_secs(10);
    let backends = Backends::from_config(&config).await.unwrap();
    let server = banking_example::start(config, backends).await.unwrap();
    let api = Api::new(&server, "wb-outage").await;
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        accounts.push(api.open(&format!("Outage {i}"), json!(0)).await);
    }

    // Each client deposits 1 with a fresh key per deposit, retrying a 503
    // with the same key; it counts what was acknowledged and keeps any
    // other answer as a failure.
    let stop = Arc::new(AtomicBool::new(false));
    let back = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let api = api.as_client(&format!("wb-outage-{c}"));
        let path = format!("/accounts/{}/deposit", accounts[c % ACCOUNTS]);
        let (stop, back) = (stop.clone(), back.clone());
        clients.push(tokio::spawn(async move {
            let (mut acknowledged, mut unavailable) = (0u64, 0u64);
            let mut failures = Vec::new();
            // The first 200 after Redis came back, from its start.
            let mut recovered_after = None;
            loop {
                let key = format!("wb-outage-{c}-{acknowledged}");
                let (status, body) = read(api.post_keyed(&path, &key, json!({ "amount": 1 })).await).await;
                match status {
                    StatusCode::OK => {
                        acknowledged += 1;
                        let since = *back.lock().unwrap();
                        if let (None, Some(t)) = (recovered_after, since) {
                            recovered_after = Some(t.elapsed());
                        }
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    StatusCode::SERVICE_UNAVAILABLE => {
                        unavailable += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => {
                        failures.push(format!("{status} {body}"));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                if failures.len() > 20 {
                    break;
                }
            }
            (acknowledged, unavailable, failures, recovered_after)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await;
    *back.lock().unwrap() = Some(Instant::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);

    let mut per_account = [0u64; ACCOUNTS];
    let (mut unavailable, mut slowest) = (0, Duration::ZERO);
    for (c, client) in clients.into_iter().enumerate() {
        let (acknowledged, refused, failures, recovered_after) = tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .unwrap()
            .unwrap();
        assert!(
            failures.is_empty(),
            "client {c}: answers other than 200 and 503: {failures:?}"
        );
        per_account[c % ACCOUNTS] += acknowledged;
        unavailable += refused;
        let recovered_after = recovered_after.expect("a deposit went through after Redis was back");
        slowest = slowest.max(recovered_after);
    }
    assert!(unavailable > 0, "Redis was away for 2 s: some deposits were refused");
    // The breaker lets a probe through `open_for` after it opened (5 s by
    // default); that probe, and the commands after it, go through.
    let bound = es_redis::ResilienceConfig::default().open_for + Duration::from_secs(2);
    assert!(slowest < bound, "commands went through again only after {slowest:?}");

    // Once flushed, each balance is exactly what was acknowledged.
    for (i, id) in accounts.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, view) = read(api.get(&format!("/accounts/{id}")).await).await;
            assert_eq!(status, StatusCode::OK, "{view}");
            let mut db = sqlx::PgConnection::connect(&common::pg::database_url()).await.unwrap();
            let stored: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {schema}.events WHERE stream_id = $1 AND event_type = 'MoneyDeposited'"
            ))
            .bind(id)
            .fetch_one(&mut db)
            .await
            .unwrap();
            if stored as u64 == per_account[i] {
                assert_eq!(view["balance"].to_string(), format!("{}.00", per_account[i]), "{view}");
                break;
            }
            assert!(
                stored as u64 <= per_account[i],
                "account {i}: {stored} deposits stored, {} acknowledged",
                per_account[i]
            );
            assert!(
                Instant::now() < deadline,
                "account {i}: {stored} of {} flushed",
                per_account[i]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
