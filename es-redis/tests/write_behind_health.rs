//! Write-behind health: a flusher that cannot write reports itself stuck,
//! and its backlog (pending appends, the oldest one's age, their gauges)
//! stays true while a round fails or hangs on the store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, StreamId};
use es_postgres::testing;
use es_redis::{WriteBehindConfig, WriteBehindStore};

use common::write_behind::{config, event, pg, redis, write_behind};
use common::{prefix, redis_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flusher_that_cannot_write_reports_itself_stuck() {
    let schema = testing::fresh_schema("wbstuck");
    let inner = pg(&schema).await;
    let store = write_behind(
        Arc::clone(&inner),
        &redis_url(),
        WriteBehindConfig {
            stuck_after: Duration::from_millis(800),
            retry_backoff: Duration::from_millis(50),
            ..config(&prefix())
        },
    )
    .await;
    let id = StreamId::from("acct");
    store
        .append("account", &id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("admitted");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while inner.head_position().await.expect("head") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "first append flushed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!store.flusher_status().stuck);
    // The store's tables vanish: every flush round fails from now on.
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&testing::database_url())
        .await
        .expect("connect");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut db)
        .await
        .expect("drop");
    store
        .append("account", &id, ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .expect("admitted all the same: Redis has it");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = store.flusher_status();
        if status.stuck {
            assert_eq!(status.pending, 1);
            assert!(status.last_error.is_some(), "{status:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "reported stuck: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// While the store is down, the appends a flusher took wait in its
/// processing list, the pending list empty: the oldest-pending gauge
/// reports their age, not 0. (A current-thread runtime: the flusher runs
/// on the test's thread, so it records into the test's recorder.)
#[tokio::test]
async fn the_oldest_pending_gauge_counts_appends_taken_but_not_yet_written() {
    use es_core::testing::{Crash, CrashingStore};
    let gauges = es_core::testing::GaugeRecorder::default();
    let _recorder = metrics::set_default_local_recorder(&gauges);
    let prefix = prefix();
    let pg: Arc<dyn EventStore> = pg(&testing::fresh_schema("wbage")).await;
    // The store is down for the round: its first append fails.
    let inner = Arc::new(CrashingStore::new(pg, [(1, Crash::Before)].into_iter().collect()));
    let store = WriteBehindStore::builder(Arc::clone(&inner))
        .redis(redis(&redis_url()))
        .config(WriteBehindConfig {
            spawn_flusher: false,
            shards: 1,
            ..config(&prefix)
        })
        .build()
        .await
        .expect("write-behind store");
    store
        .append(
            "account",
            &StreamId::from("acct"),
            ExpectedVersion::NoStream,
            vec![event(1)],
        )
        .await
        .expect("admitted");
    let flusher = store.flusher();
    let round = flusher.take().await.expect("take");
    assert_eq!(round.appends.len(), 1);
    assert_eq!(
        round.still_pending, 0,
        "the pending list is empty: its append was taken"
    );
    assert!(flusher.write(&round).await.is_err(), "the store is down");
    // Time passes while the store stays down; the round is taken again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = flusher.take().await.expect("take again");
    assert_eq!(again.appends.len(), 1, "the same append, still not in the store");
    assert_eq!(again.still_pending, 0);
    let age = gauges
        .get("es_write_behind_oldest_pending_seconds", &[("shard", "0")])
        .expect("the gauge is recorded");
    assert!(
        age >= 0.3,
        "the taken append waited 300 ms at least, the gauge says {age} s"
    );
    store.shutdown().await;
}

/// A flusher whose round hangs on the store (a lock held on its table)
/// still reports what waits: the pending count and its gauge follow the
/// appends admitted since the round took its batch, read every
/// `BACKLOG_REFRESH`. (A current-thread runtime: the flusher runs on the
/// test's thread and records into the test's recorder.)
#[tokio::test]
async fn a_hung_round_still_reports_the_appends_waiting_behind_it() {
    let gauges = es_core::testing::GaugeRecorder::default();
    let _recorder = metrics::set_default_local_recorder(&gauges);
    let schema = testing::fresh_schema("wbhung");
    let inner = pg(&schema).await;
    let store = write_behind(
        Arc::clone(&inner),
        &redis_url(),
        WriteBehindConfig {
            shards: 1,
            ..config(&prefix())
        },
    )
    .await;
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(&testing::database_url())
        .await
        .expect("connect");
    sqlx::query("BEGIN").execute(&mut db).await.expect("begin");
    sqlx::query(&format!("LOCK TABLE {schema}.events IN EXCLUSIVE MODE"))
        .execute(&mut db)
        .await
        .expect("lock the events table");
    const ADMITTED: u64 = 12;
    let admit = |i: u64| {
        let store = &store;
        async move {
            store
                .append(
                    "account",
                    &StreamId::from(format!("hung{i}")),
                    ExpectedVersion::NoStream,
                    vec![event(i)],
                )
                .await
                .expect("admitted: Redis has it");
        }
    };
    // The first append is taken by a round, which then hangs on the lock.
    admit(0).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.flusher_status().pending != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the first append was taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..ADMITTED {
        admit(i).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let pending = store.flusher_status().pending;
        let gauge = gauges.get("es_write_behind_pending_appends", &[("shard", "0")]);
        if pending == ADMITTED && gauge == Some(ADMITTED as f64) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ADMITTED} appends wait; the flusher reports {pending}, the gauge {gauge:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let oldest = store.flusher_status().oldest_pending_age.expect("an oldest append");
    assert!(oldest > Duration::ZERO, "{oldest:?}");
    sqlx::query("ROLLBACK").execute(&mut db).await.expect("release");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while inner.head_position().await.expect("head") < ADMITTED {
        assert!(tokio::time::Instant::now() < deadline, "flushed once the lock went");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.shutdown().await;
}
