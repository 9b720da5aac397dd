//! The projection engine on PostgreSQL (`PgProjectionUnit` driven by
//! es-core's `ProjectionRunner`): a page is one transaction, a broken
//! projector is loud, dead letters are retried or skipped atomically, and
//! `projection_statuses` tells the lag.
mod common;
mod projection_kit;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{
    BoxError, OnFailure, ProjectionConfig, ProjectionError, ProjectionRunner, RecordedEvent, ReplayMode, RetryPolicy,
};
use es_postgres::{
    projection_statuses, PgProjectionUnit, PostgresEventStore, ProjectionStatus, TransactionalProjector,
};
use projection_kit::{append, checkpoint, table_counts};
use serde_json::json;
use sqlx::PgConnection;

fn config(batch_size: usize, on_failure: OnFailure) -> ProjectionConfig {
    ProjectionConfig {
        batch_size,
        poll_interval: Duration::from_millis(50),
        retry: RetryPolicy {
            max_attempts: 2,
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        on_failure,
        ..ProjectionConfig::default()
    }
}

/// Records the transaction id each event was applied in.
struct Txids {
    schema: String,
}

#[async_trait]
impl TransactionalProjector for Txids {
    fn name(&self) -> &str {
        "txids"
    }
    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.txids (global_position BIGINT NOT NULL, txid BIGINT NOT NULL)",
            self.schema
        ))
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "INSERT INTO {}.txids (global_position, txid) SELECT $1, txid_current()",
            self.schema
        ))
        .bind(e.global_position as i64)
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("DELETE FROM {}.txids", self.schema))
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Transaction id -> the positions applied in it, in order.
async fn pages_by_txid(store: &PostgresEventStore) -> BTreeMap<i64, Vec<i64>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT txid, global_position FROM {}.txids ORDER BY global_position",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut pages: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (txid, position) in rows {
        pages.entry(txid).or_default().push(position);
    }
    pages
}

/// Each page's positions are a run of consecutive log positions, `batch`
/// long except the last, and together they are `positions` once each.
fn assert_pages(pages: &BTreeMap<i64, Vec<i64>>, positions: &[i64], batch: usize) {
    let mut runs: Vec<&Vec<i64>> = pages.values().collect();
    runs.sort_by_key(|r| r[0]);
    let flat: Vec<i64> = runs.iter().flat_map(|r| r.iter().copied()).collect();
    assert_eq!(flat, positions, "every event applied once, in order");
    for (i, run) in runs.iter().enumerate() {
        let expected = if i + 1 == runs.len() {
            positions.len() - batch * i
        } else {
            batch
        };
        assert_eq!(run.len(), expected, "page {i}: {run:?}");
    }
}

#[tokio::test]
async fn a_page_is_one_transaction_in_catch_up_and_full_replay() {
    let store = common::store().await;
    const N: usize = 23;
    const B: usize = 5;
    let mut positions = Vec::new();
    for i in 0..N {
        positions.push(append(&store, &format!("s{}", i % 3), "Added", json!({ "n": i })).await as i64);
    }
    common::settled_head(&store).await;
    let runner = PgProjectionUnit::new(
        &store,
        Arc::new(Txids {
            schema: store.schema().to_owned(),
        }),
    )
    .runner()
    .with_config(config(B, OnFailure::Stop));

    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (N as u64, 0));
    assert_eq!(report.position, *positions.last().unwrap() as u64);
    let first = pages_by_txid(&store).await;
    assert_eq!(first.len(), N.div_ceil(B), "one transaction per page: {first:?}");
    assert_pages(&first, &positions, B);

    let report = runner.replay(ReplayMode::Full).await.unwrap();
    assert_eq!(report.applied, N as u64);
    let rebuilt = pages_by_txid(&store).await;
    assert_eq!(rebuilt.len(), N.div_ceil(B), "one transaction per page: {rebuilt:?}");
    assert_pages(&rebuilt, &positions, B);
    let newest_before = *first.keys().last().unwrap();
    assert!(
        rebuilt.keys().all(|t| *t > newest_before),
        "the rebuild ran in new transactions"
    );
    assert_eq!(checkpoint(&store, "txids").await, *positions.last().unwrap() as u64);
}

/// Counts events per stream (`n = n + 1`). With `typo` it writes to a
/// misspelled table; events with `"bad": true` write their count and then
/// fail while `fail_bad` is set (so only a rollback undoes the write).
struct Counts {
    schema: String,
    typo: AtomicBool,
    fail_bad: AtomicBool,
}

impl Counts {
    fn new(store: &PostgresEventStore) -> Arc<Self> {
        Arc::new(Self {
            schema: store.schema().to_owned(),
            typo: AtomicBool::new(false),
            fail_bad: AtomicBool::new(true),
        })
    }
}

#[async_trait]
impl TransactionalProjector for Counts {
    fn name(&self) -> &str {
        "counts"
    }
    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.counts (stream_id TEXT PRIMARY KEY, n BIGINT NOT NULL)",
            self.schema
        ))
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        let table = if self.typo.load(Ordering::SeqCst) {
            "cuonts"
        } else {
            "counts"
        };
        sqlx::query(&format!(
            "INSERT INTO {s}.{table} AS c (stream_id, n) VALUES ($1, 1) \
             ON CONFLICT (stream_id) DO UPDATE SET n = c.n + 1",
            s = self.schema
        ))
        .bind(e.stream_id.as_str())
        .execute(&mut *tx)
        .await?;
        if e.payload["bad"] == json!(true) && self.fail_bad.load(Ordering::SeqCst) {
            return Err(format!("event {} is bad", e.global_position).into());
        }
        Ok(())
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("DELETE FROM {}.counts", self.schema))
            .execute(tx)
            .await?;
        Ok(())
    }
}

async fn status(store: &PostgresEventStore, name: &str) -> ProjectionStatus {
    projection_statuses(store)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status of {name}"))
}

#[tokio::test]
async fn a_broken_projector_stops_the_runner_loudly_until_it_is_fixed() {
    let store = common::store().await;
    let mut positions = Vec::new();
    for i in 0..6 {
        positions.push(append(&store, if i % 2 == 0 { "a" } else { "b" }, "Added", json!({ "n": i })).await);
    }
    common::settled_head(&store).await;
    let counts = Counts::new(&store);
    counts.typo.store(true, Ordering::SeqCst);
    let runner = PgProjectionUnit::new(&store, Arc::clone(&counts))
        .runner()
        .with_config(config(4, OnFailure::default()));

    match runner.catch_up().await {
        Err(ProjectionError::Stopped {
            position,
            attempts,
            error,
            ..
        }) => {
            assert_eq!(position, positions[0]);
            assert_eq!(attempts, 2);
            assert!(error.contains("cuonts"), "{error}");
        }
        other => panic!("catch_up must fail loudly, got {other:?}"),
    }
    // `run` stops too instead of retrying forever.
    let run = tokio::time::timeout(Duration::from_secs(60), runner.run(std::future::pending())).await;
    assert!(matches!(run, Ok(Err(ProjectionError::Stopped { .. }))), "{run:?}");
    let failed = status(&store, "counts").await;
    assert_eq!(failed.state(), "failed", "{failed:?}");
    assert!(
        failed.last_error.as_deref().unwrap_or("").contains("cuonts"),
        "{failed:?}"
    );
    assert_eq!((failed.position, failed.lag_events), (0, 6));
    assert_eq!(checkpoint(&store, "counts").await, 0, "nothing moved");

    counts.typo.store(false, Ordering::SeqCst);
    let report = runner.catch_up().await.unwrap();
    assert_eq!(
        (report.applied, report.dead_lettered, report.position),
        (6, 0, positions[5])
    );
    let fixed = status(&store, "counts").await;
    assert_eq!(
        (fixed.state(), fixed.last_error.clone()),
        ("current", None),
        "{fixed:?}"
    );
    assert_eq!(
        table_counts(&store, "counts").await,
        vec![("a".into(), 3), ("b".into(), 3)]
    );
}

#[tokio::test]
async fn dead_letters_are_counted_apart_and_retried_or_skipped_atomically() {
    let store = common::store().await;
    let mut positions = Vec::new();
    for i in 0..6 {
        let bad = i == 2 || i == 4;
        positions.push(append(&store, "a", "Added", json!({ "n": i, "bad": bad })).await);
    }
    common::settled_head(&store).await;
    let counts = Counts::new(&store);
    let runner = PgProjectionUnit::new(&store, Arc::clone(&counts))
        .runner()
        .with_config(config(4, OnFailure::DeadLetter));

    let report = runner.catch_up().await.unwrap();
    assert_eq!(
        (report.applied, report.dead_lettered, report.position),
        (4, 2, positions[5])
    );
    assert_eq!(
        table_counts(&store, "counts").await,
        vec![("a".into(), 4)],
        "the bad events' writes were rolled back"
    );
    let letters = runner.dead_letters().await.unwrap();
    let at: Vec<(u64, u32)> = letters.iter().map(|l| (l.global_position, l.attempts)).collect();
    assert_eq!(at, vec![(positions[2], 2), (positions[4], 2)]);
    let s = status(&store, "counts").await;
    assert_eq!((s.state(), s.dead_letters, s.lag_events), ("dead-letters", 2, 0));

    // A retry that fails again changes nothing: the letter stays, the
    // count did not move.
    match runner.retry_dead_letter(positions[2]).await {
        Err(ProjectionError::Stopped { position, .. }) => assert_eq!(position, positions[2]),
        other => panic!("a failing retry must fail, got {other:?}"),
    }
    assert_eq!(runner.dead_letters().await.unwrap().len(), 2, "the letter stays");
    assert_eq!(table_counts(&store, "counts").await, vec![("a".into(), 4)]);

    // Fixed: the retry applies the event and removes its letter.
    counts.fail_bad.store(false, Ordering::SeqCst);
    assert!(runner.retry_dead_letter(positions[2]).await.unwrap());
    assert_eq!(table_counts(&store, "counts").await, vec![("a".into(), 5)]);
    assert!(
        !runner.retry_dead_letter(positions[2]).await.unwrap(),
        "no letter left to retry"
    );
    assert_eq!(
        table_counts(&store, "counts").await,
        vec![("a".into(), 5)],
        "a second retry applies nothing"
    );

    // Skipping removes the letter without applying the event.
    assert!(runner.skip_dead_letter(positions[4]).await.unwrap());
    assert!(!runner.skip_dead_letter(positions[4]).await.unwrap());
    assert_eq!(table_counts(&store, "counts").await, vec![("a".into(), 5)]);
    assert!(runner.dead_letters().await.unwrap().is_empty());
    assert_eq!(status(&store, "counts").await.state(), "current");
    assert_eq!(
        runner.position().await.unwrap(),
        positions[5],
        "the checkpoint did not move"
    );
}

#[tokio::test]
async fn statuses_show_lag_while_behind_and_none_when_caught_up() {
    let store = common::store().await;
    for i in 0..5 {
        append(&store, "a", "Added", json!({ "n": i })).await;
    }
    common::settled_head(&store).await;
    let runner: ProjectionRunner = PgProjectionUnit::new(&store, Counts::new(&store))
        .runner()
        .with_config(config(100, OnFailure::Stop));
    runner.catch_up().await.unwrap();
    let current = status(&store, "counts").await;
    assert_eq!((current.lag_events, current.lag_seconds), (0, 0.0), "{current:?}");
    assert_eq!(current.state(), "current");

    for i in 5..8 {
        append(&store, "b", "Added", json!({ "n": i })).await;
    }
    common::settled_head(&store).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let behind = status(&store, "counts").await;
    assert_eq!(behind.lag_events, 3, "{behind:?}");
    assert!(behind.lag_seconds > 0.0, "{behind:?}");
    assert_eq!(behind.state(), "catching-up");
    assert_eq!(behind.position, current.position);

    runner.catch_up().await.unwrap();
    let caught_up = status(&store, "counts").await;
    assert_eq!((caught_up.lag_events, caught_up.lag_seconds), (0, 0.0), "{caught_up:?}");
    assert!(caught_up.updated_at >= current.updated_at);
}
