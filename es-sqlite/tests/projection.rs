//! The projection engine on SQLite (`SqliteProjectionUnit` driven by
//! es-core's `ProjectionRunner`): a page and its checkpoint commit in one
//! transaction, two runners on one file apply every event exactly once, a
//! broken projector stops loudly, dead letters are retried or skipped
//! atomically, the checkpoint survives reopening the file, typed
//! projectors decode.
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::{append, eventually, open};
use es_core::testing::PausableUnit;
use es_core::{
    Aggregate, BoxError, DomainEvent, EventEnvelope, EventStore, ExpectedVersion, NewEvent, OnFailure,
    ProjectionConfig, ProjectionError, ProjectionRunner, RecordedEvent, ReplayMode, RetryPolicy, StreamId,
};
use es_sqlite::testing::TempDatabase;
use es_sqlite::{
    PageFailure, SqliteConfig, SqliteEventStore, SqliteProjectionUnit, SqliteProjector, SqliteTyped,
    SqliteTypedProjector,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::SqliteConnection;

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

/// The stored checkpoint of `projection`, read from the table.
async fn checkpoint(store: &SqliteEventStore, projection: &str) -> u64 {
    let p: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE projection = ?1")
        .bind(projection)
        .fetch_optional(store.pool())
        .await
        .unwrap();
    p.unwrap_or(0).max(0) as u64
}

/// `SELECT stream_id, n FROM <table> ORDER BY stream_id`.
async fn table_counts(store: &SqliteEventStore, table: &str) -> Vec<(String, i64)> {
    sqlx::query_as(&format!("SELECT stream_id, n FROM {table} ORDER BY stream_id"))
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// Events per stream in the log.
async fn log_counts(store: &SqliteEventStore) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT stream_id, count(*) FROM events GROUP BY stream_id ORDER BY stream_id")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// Notes, for every event, the checkpoint its transaction saw: inside a
/// page's transaction the checkpoint is still where the previous page
/// left it, so the events of one page share one value.
struct Pages;

#[async_trait]
impl SqliteProjector for Pages {
    fn name(&self) -> &str {
        "pages"
    }
    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS pages (global_position INTEGER NOT NULL, seen INTEGER NOT NULL)")
            .execute(tx)
            .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query(
            "INSERT INTO pages (global_position, seen) \
             SELECT ?1, position FROM checkpoints WHERE projection = 'pages'",
        )
        .bind(e.global_position as i64)
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM pages").execute(tx).await?;
        Ok(())
    }
}

/// Checkpoint seen -> the positions applied with it, in order.
async fn pages(store: &SqliteEventStore) -> BTreeMap<i64, Vec<i64>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT seen, global_position FROM pages ORDER BY global_position")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let mut pages: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (seen, position) in rows {
        pages.entry(seen).or_default().push(position);
    }
    pages
}

/// Each page is a run of `batch` consecutive positions (the last one
/// shorter) that saw the checkpoint at the end of the page before it.
fn assert_pages(pages: &BTreeMap<i64, Vec<i64>>, positions: &[i64], batch: usize) {
    let flat: Vec<i64> = pages.values().flat_map(|r| r.iter().copied()).collect();
    assert_eq!(flat, positions, "every event applied once, in order");
    let mut previous_end = 0;
    for (i, (seen, run)) in pages.iter().enumerate() {
        assert_eq!(*seen, previous_end, "page {i} saw the checkpoint of the page before it");
        let expected = if i + 1 == pages.len() {
            positions.len() - batch * i
        } else {
            batch
        };
        assert_eq!(run.len(), expected, "page {i}: {run:?}");
        previous_end = *run.last().unwrap();
    }
}

#[tokio::test]
async fn a_page_and_its_checkpoint_commit_together_in_catch_up_and_full_replay() {
    let store = es_sqlite::testing::temp_store(SqliteConfig::default()).await.unwrap();
    const N: usize = 23;
    const B: usize = 5;
    let mut positions = Vec::new();
    for i in 0..N {
        positions.push(
            append(
                &store,
                &format!("s{}", i % 3),
                NewEvent::new("Added", json!({ "n": i })),
            )
            .await as i64,
        );
    }
    let runner = SqliteProjectionUnit::new(&store, Arc::new(Pages))
        .runner()
        .with_config(config(B, OnFailure::Stop));

    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (N as u64, 0));
    assert_eq!(report.position, *positions.last().unwrap() as u64);
    let first = pages(&store).await;
    assert_eq!(first.len(), N.div_ceil(B), "one checkpoint move per page: {first:?}");
    assert_pages(&first, &positions, B);

    let report = runner.replay(ReplayMode::Full).await.unwrap();
    assert_eq!(report.applied, N as u64);
    let rebuilt = pages(&store).await;
    assert_pages(&rebuilt, &positions, B);
    assert_eq!(checkpoint(&store, "pages").await, *positions.last().unwrap() as u64);
}

/// Writes every event of a page, then fails the page as a whole while
/// `fail` is set: only a rollback of the whole transaction removes the
/// rows.
struct WholePage {
    fail: AtomicBool,
}

#[async_trait]
impl SqliteProjector for WholePage {
    fn name(&self) -> &str {
        "whole"
    }
    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS whole (global_position INTEGER NOT NULL)")
            .execute(tx)
            .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO whole VALUES (?1)")
            .bind(e.global_position as i64)
            .execute(tx)
            .await?;
        Ok(())
    }
    async fn apply_page(&self, tx: &mut SqliteConnection, events: &[RecordedEvent]) -> Result<(), PageFailure> {
        for e in events {
            self.apply(tx, e).await.map_err(PageFailure::whole)?;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(PageFailure::whole("the page failed after writing its rows"));
        }
        Ok(())
    }
    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM whole").execute(tx).await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_page_leaves_neither_rows_nor_a_checkpoint_move() {
    let store = es_sqlite::testing::temp_store(SqliteConfig::default()).await.unwrap();
    for i in 0..4 {
        append(&store, "s", NewEvent::new("Added", json!({ "n": i }))).await;
    }
    let projector = Arc::new(WholePage {
        fail: AtomicBool::new(true),
    });
    let runner = SqliteProjectionUnit::new(&store, Arc::clone(&projector))
        .runner()
        .with_config(config(10, OnFailure::Stop));
    assert!(matches!(runner.catch_up().await, Err(ProjectionError::Stopped { .. })));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM whole")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0, "the page's rows were rolled back");
    assert_eq!(checkpoint(&store, "whole").await, 0);
    projector.fail.store(false, Ordering::SeqCst);
    assert_eq!(runner.catch_up().await.unwrap().applied, 4);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM whole")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 4);
}

/// Counts events per stream (`n = n + 1`). With `typo` it writes to a
/// misspelled table; events with `"bad": true` write their count and then
/// fail while `fail_bad` is set (so only a rollback undoes the write).
struct Counts {
    typo: AtomicBool,
    fail_bad: AtomicBool,
}

impl Counts {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            typo: AtomicBool::new(false),
            fail_bad: AtomicBool::new(true),
        })
    }
}

#[async_trait]
impl SqliteProjector for Counts {
    fn name(&self) -> &str {
        "counts"
    }
    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS counts (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(tx)
            .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        let table = if self.typo.load(Ordering::SeqCst) {
            "cuonts"
        } else {
            "counts"
        };
        sqlx::query(&format!(
            "INSERT INTO {table} (stream_id, n) VALUES (?1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = n + 1"
        ))
        .bind(e.stream_id.as_str())
        .execute(&mut *tx)
        .await?;
        if e.payload["bad"] == json!(true) && self.fail_bad.load(Ordering::SeqCst) {
            return Err(format!("event {} is bad", e.global_position).into());
        }
        Ok(())
    }
    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM counts").execute(tx).await?;
        Ok(())
    }
}

/// The failure the runner recorded for operators.
async fn last_error(store: &SqliteEventStore, projection: &str) -> Option<String> {
    sqlx::query_scalar("SELECT last_error FROM checkpoints WHERE projection = ?1")
        .bind(projection)
        .fetch_optional(store.pool())
        .await
        .unwrap()
        .flatten()
}

#[tokio::test]
async fn a_broken_projector_stops_the_runner_loudly_until_it_is_fixed() {
    let store = es_sqlite::testing::temp_store(SqliteConfig::default()).await.unwrap();
    let mut positions = Vec::new();
    for i in 0..6 {
        let stream = if i % 2 == 0 { "a" } else { "b" };
        positions.push(append(&store, stream, NewEvent::new("Added", json!({ "n": i }))).await);
    }
    let counts = Counts::new();
    counts.typo.store(true, Ordering::SeqCst);
    let runner = SqliteProjectionUnit::new(&store, Arc::clone(&counts))
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
    let recorded = last_error(&store, "counts").await.unwrap_or_default();
    assert!(recorded.contains("cuonts"), "{recorded}");
    assert_eq!(checkpoint(&store, "counts").await, 0, "nothing moved");

    counts.typo.store(false, Ordering::SeqCst);
    let report = runner.catch_up().await.unwrap();
    assert_eq!(
        (report.applied, report.dead_lettered, report.position),
        (6, 0, positions[5])
    );
    assert_eq!(last_error(&store, "counts").await, None, "cleared by the next page");
    assert_eq!(
        table_counts(&store, "counts").await,
        vec![("a".into(), 3), ("b".into(), 3)]
    );
}

#[tokio::test]
async fn dead_letters_are_counted_apart_and_retried_or_skipped_atomically() {
    let store = es_sqlite::testing::temp_store(SqliteConfig::default()).await.unwrap();
    let mut positions = Vec::new();
    for i in 0..6 {
        let bad = i == 2 || i == 4;
        positions.push(append(&store, "a", NewEvent::new("Added", json!({ "n": i, "bad": bad }))).await);
    }
    let counts = Counts::new();
    let runner = SqliteProjectionUnit::new(&store, Arc::clone(&counts))
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

    // A retry that fails again changes nothing.
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
    assert!(!runner.retry_dead_letter(positions[2]).await.unwrap(), "no letter left");
    assert_eq!(table_counts(&store, "counts").await, vec![("a".into(), 5)]);

    // Skipping removes the letter without applying the event.
    assert!(runner.skip_dead_letter(positions[4]).await.unwrap());
    assert!(!runner.skip_dead_letter(positions[4]).await.unwrap());
    assert_eq!(table_counts(&store, "counts").await, vec![("a".into(), 5)]);
    assert!(runner.dead_letters().await.unwrap().is_empty());
    assert_eq!(
        runner.position().await.unwrap(),
        positions[5],
        "the checkpoint did not move"
    );
}

#[tokio::test]
async fn the_checkpoint_and_the_read_model_survive_reopening_the_file() {
    let temp = TempDatabase::new("proj-reopen");
    let store = open(&temp, SqliteConfig::default()).await;
    for i in 0..7 {
        append(
            &store,
            if i < 4 { "a" } else { "b" },
            NewEvent::new("Added", json!({ "n": i })),
        )
        .await;
    }
    let runner = SqliteProjectionUnit::new(&store, Counts::new())
        .runner()
        .with_config(config(3, OnFailure::Stop));
    let before = runner.catch_up().await.unwrap();
    assert_eq!(before.applied, 7);
    store.shutdown().await;
    store.pool().close().await;
    drop((store, runner));

    let store = open(&temp, SqliteConfig::default()).await;
    let runner = SqliteProjectionUnit::new(&store, Counts::new())
        .runner()
        .with_config(config(3, OnFailure::Stop));
    assert_eq!(runner.position().await.unwrap(), before.position);
    for _ in 0..2 {
        append(&store, "c", NewEvent::new("Added", json!({}))).await;
    }
    let after = runner.catch_up().await.unwrap();
    assert_eq!(after.applied, 2, "only the events after the checkpoint");
    assert_eq!(
        table_counts(&store, "counts").await,
        vec![("a".into(), 4), ("b".into(), 3), ("c".into(), 2)]
    );
}

/// Counts per stream and notes which runner applied each event.
struct Tagged {
    runner: i64,
}

#[async_trait]
impl SqliteProjector for Tagged {
    fn name(&self) -> &str {
        "tagged"
    }
    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS tagged (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS applied (global_position INTEGER NOT NULL, runner INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO tagged VALUES (?1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = n + 1")
            .bind(e.stream_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO applied VALUES (?1, ?2)")
            .bind(e.global_position as i64)
            .bind(self.runner)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM tagged").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM applied").execute(&mut *tx).await?;
        Ok(())
    }
}

/// Two stores open the same file, as two instances of a service would
/// (each its own writer and pool); each runs the same non-idempotent
/// projection while both append: every event is applied exactly once.
/// Each runner first applies a stretch alone while the other is held
/// (left free, one runner often applies everything), so both apply
/// events; then they race while four writers append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_on_one_file_apply_every_event_exactly_once() {
    const WRITERS: usize = 4;
    const EVENTS_PER_WRITER: usize = 300;
    const TURN: usize = 20;
    let temp = TempDatabase::new("twice");
    let stores = [
        open(&temp, SqliteConfig::default()).await,
        open(&temp, SqliteConfig::default()).await,
    ];
    let units: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            PausableUnit::new(Arc::new(SqliteProjectionUnit::new(
                store,
                Arc::new(Tagged { runner: i as i64 }),
            )))
        })
        .collect();
    let followers: Vec<_> = stores
        .iter()
        .zip(&units)
        .map(|(store, unit)| {
            ProjectionRunner::new(Arc::new(store.clone()), unit.clone()).with_config(ProjectionConfig {
                batch_size: 7,
                poll_interval: Duration::from_millis(20),
                ..ProjectionConfig::default()
            })
        })
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Turns: only runner 0 can apply the first TURN events, only runner 1
    // the next TURN.
    units[1].pause(true);
    let runners: Vec<_> = followers
        .iter()
        .map(|runner| {
            let runner = runner.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                runner
                    .run(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await
            })
        })
        .collect();
    for turn in 0..2 {
        let mut last = 0;
        for k in 0..TURN {
            let event = NewEvent::new("Added", json!({ "turn": turn, "k": k }));
            last = append(&stores[turn], &format!("s{:02}", k % 20), event).await;
        }
        assert!(
            followers[turn].wait_for(last, Duration::from_secs(60)).await,
            "runner {turn} applied its turn"
        );
        units[turn].pause(true);
        units[1 - turn].pause(false);
    }
    // Both free: they race while the writers append.
    units[1].pause(false);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = stores[w % 2].clone();
            tokio::spawn(async move {
                let mut written = 0;
                let mut k = 0usize;
                while written < EVENTS_PER_WRITER {
                    let n = (1 + k % 3).min(EVENTS_PER_WRITER - written);
                    let stream = StreamId::from(format!("s{:02}", (w * 7 + k * 13) % 20));
                    let events = (0..n).map(|i| NewEvent::new("Added", json!({ "w": w, "k": k, "i": i })));
                    store
                        .append("tally", &stream, ExpectedVersion::Any, events.collect())
                        .await
                        .unwrap();
                    written += n;
                    k += 1;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let head = stores[0].head_position().await.unwrap();
    let reached = eventually(120, || async { checkpoint(&stores[0], "tagged").await == head }).await;
    assert!(reached, "the projection did not reach {head}");
    stop.send(true).unwrap();
    for r in runners {
        r.await.unwrap().unwrap();
    }

    let total = (2 * TURN + WRITERS * EVENTS_PER_WRITER) as i64;
    assert_eq!(
        table_counts(&stores[0], "tagged").await,
        log_counts(&stores[0]).await,
        "every stream's count equals its number of events"
    );
    let (rows, distinct): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT global_position) FROM applied")
        .fetch_one(stores[0].pool())
        .await
        .unwrap();
    assert_eq!((rows, distinct), (total, total), "each event applied once");
    let by_runner: Vec<(i64, i64)> =
        sqlx::query_as("SELECT runner, count(*) FROM applied GROUP BY runner ORDER BY runner")
            .fetch_all(stores[0].pool())
            .await
            .unwrap();
    assert!(
        by_runner.len() == 2 && by_runner.iter().all(|(_, n)| *n >= TURN as i64),
        "both runners applied events (at least their turns): {by_runner:?}"
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added(i64),
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counter;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = i64;
    type Event = CounterEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, n: &i64) -> Result<Vec<CounterEvent>, Self::Error> {
        Ok(vec![CounterEvent::Added(*n)])
    }
    fn apply(&mut self, _: &CounterEvent) {}
}

/// Totals per counter from decoded events.
struct Totals;

#[async_trait]
impl SqliteTypedProjector for Totals {
    type Aggregate = Counter;
    fn name(&self) -> &str {
        "totals"
    }
    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS totals (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(tx)
            .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut SqliteConnection, e: &EventEnvelope<CounterEvent>) -> Result<(), BoxError> {
        let CounterEvent::Added(n) = e.event;
        sqlx::query("INSERT INTO totals VALUES (?1, ?2) ON CONFLICT (stream_id) DO UPDATE SET n = n + excluded.n")
            .bind(e.stream_id.as_str())
            .bind(n)
            .execute(tx)
            .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM totals").execute(tx).await?;
        Ok(())
    }
}

#[tokio::test]
async fn typed_projectors_read_their_aggregate_decoded_and_dead_letter_what_does_not_decode() {
    let store = es_sqlite::testing::memory_store(SqliteConfig::default()).await.unwrap();
    let add = |n: i64| NewEvent::new("Added", serde_json::to_value(CounterEvent::Added(n)).unwrap());
    for (stream, n) in [("c1", 5), ("c2", 7), ("c1", 3)] {
        store
            .append("counter", &StreamId::from(stream), ExpectedVersion::Any, vec![add(n)])
            .await
            .unwrap();
    }
    // Another aggregate's event is not read; a broken one is dead-lettered
    // at once (no retries: it will never decode).
    store
        .append("other", &StreamId::from("o"), ExpectedVersion::Any, vec![add(100)])
        .await
        .unwrap();
    let broken = store
        .append(
            "counter",
            &StreamId::from("c2"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Added", json!({ "Subtracted": 1 }))],
        )
        .await
        .unwrap();
    let runner = SqliteProjectionUnit::new(&store, Arc::new(SqliteTyped::new(Arc::new(Totals))))
        .runner()
        .with_config(config(100, OnFailure::DeadLetter));
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (3, 1));
    assert_eq!(
        table_counts(&store, "totals").await,
        vec![("c1".into(), 8), ("c2".into(), 7)]
    );
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].global_position, letters[0].attempts),
        (broken.positions[0], 1)
    );
}
