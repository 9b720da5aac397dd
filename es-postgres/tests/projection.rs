//! Snapshots, checkpoints, transactional projections and the outbox on
//! the real PostgreSQL.
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::conformance::settled_read_all;
use es_core::{
    Aggregate, BoxError, CheckpointStore, DomainEvent, EventFilter, EventStore, ExpectedVersion, NewEvent, OnFailure,
    ProjectionConfig, ProjectionError, RecordedEvent, ReplayMode, Repository, RetryPolicy, Snapshot, SnapshotPolicy,
    SnapshotStore, StreamId,
};
use es_postgres::{
    BackgroundSnapshotter, EventStoreConfig, PgProjectionUnit, PostgresCheckpointStore, PostgresEventStore,
    PostgresSnapshotStore, SnapshotterConfig, TransactionalProjector,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Tally {
    total: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyEvent {
    Added(i64),
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = i64;
    type Event = TallyEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, n: &i64) -> Result<Vec<TallyEvent>, Self::Error> {
        Ok(vec![TallyEvent::Added(*n)])
    }
    fn apply(&mut self, TallyEvent::Added(n): &TallyEvent) {
        self.total += n;
    }
}

fn repo(store: &PostgresEventStore) -> Repository<Tally, PostgresEventStore> {
    Repository::builder(Arc::new(store.clone())).build()
}

#[tokio::test]
async fn snapshot_store_keeps_the_newest_and_repository_uses_it() {
    let store = common::store().await;
    let snaps = PostgresSnapshotStore::new(&store);
    let r: Repository<Tally, PostgresEventStore> = Repository::builder(Arc::new(store.clone()))
        .snapshots(Arc::new(snaps.clone()), SnapshotPolicy::EveryNEvents(5))
        .build();
    for _ in 0..12 {
        r.execute("t1", 1).await.unwrap();
    }
    let mut snap = None;
    for _ in 0..200 {
        snap = snaps.load(&StreamId::from("t1")).await.unwrap();
        if snap.as_ref().is_some_and(|s| s.version == 10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snap = snap.expect("snapshot");
    assert_eq!((snap.version, snap.state.clone()), (10, json!({"total": 10})));
    // Never moves backwards.
    snaps
        .save(Snapshot {
            version: 3,
            state: json!({"total": -1}),
            ..snap.clone()
        })
        .await
        .unwrap();
    assert_eq!(snaps.load(&StreamId::from("t1")).await.unwrap().unwrap().version, 10);
    // Loading starts from the snapshot (proved by a planted state).
    snaps
        .save(Snapshot {
            version: 11,
            state: json!({"total": 500}),
            ..snap
        })
        .await
        .unwrap();
    let fresh: Repository<Tally, PostgresEventStore> = Repository::builder(Arc::new(store.clone()))
        .snapshots(Arc::new(snaps), SnapshotPolicy::Never)
        .build();
    assert_eq!(fresh.load("t1").await.unwrap().state.total, 501);
}

/// Runs `snapshotter` until a run takes snapshots (the log may be briefly
/// held back by other tests' writers); how many it took.
async fn first_snapshots(snapshotter: &mut BackgroundSnapshotter<Tally>) -> usize {
    for _ in 0..100 {
        let taken = snapshotter.run_once().await.unwrap();
        if taken > 0 {
            return taken;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    0
}

#[tokio::test]
async fn background_snapshotter_snapshots_due_streams_only() {
    let store = common::store().await;
    let r = repo(&store);
    for _ in 0..7 {
        r.execute("busy", 2).await.unwrap();
    }
    r.execute("quiet", 1).await.unwrap();
    let mut snapshotter = BackgroundSnapshotter::<Tally>::new(
        store.clone(),
        SnapshotterConfig {
            snapshot_interval_secs: 1,
            max_snapshots_per_run: 10,
            threshold: 5,
        },
    );
    let taken = first_snapshots(&mut snapshotter).await;
    assert_eq!(taken, 1);
    let snaps = PostgresSnapshotStore::new(&store);
    let busy = snaps.load(&StreamId::from("busy")).await.unwrap().unwrap();
    assert_eq!((busy.version, busy.state), (7, json!({"total": 14})));
    assert!(snaps.load(&StreamId::from("quiet")).await.unwrap().is_none());
    assert_eq!(snapshotter.run_once().await.unwrap(), 0, "nothing new is due");
}

/// The snapshotter decodes old events through the same upcasters as the
/// repository that will trust its snapshots.
#[tokio::test]
async fn background_snapshotter_reads_the_log_through_the_upcasters() {
    let store = common::store().await;
    let r = repo(&store);
    for _ in 0..5 {
        r.execute("old", 2).await.unwrap();
    }
    // Today's reading of those (version 1) events counts each twice.
    let upcasters = || {
        let mut registry = es_core::UpcasterRegistry::new();
        registry.register(es_core::FnUpcaster::new("Added", 1, |v| {
            Ok(json!({"Added": v["Added"].as_i64().unwrap_or(0) * 2}))
        }));
        registry
    };
    let mut snapshotter = BackgroundSnapshotter::<Tally>::new(
        store.clone(),
        SnapshotterConfig {
            snapshot_interval_secs: 1,
            max_snapshots_per_run: 10,
            threshold: 5,
        },
    )
    .with_upcasters(upcasters());
    let taken = first_snapshots(&mut snapshotter).await;
    assert_eq!(taken, 1);
    let snaps = PostgresSnapshotStore::new(&store);
    let old = snaps.load(&StreamId::from("old")).await.unwrap().unwrap();
    assert_eq!((old.version, old.state), (5, json!({"total": 20})));
    let upcasting: Repository<Tally, PostgresEventStore> = Repository::builder(Arc::new(store.clone()))
        .upcasters(upcasters())
        .build();
    assert_eq!(upcasting.load("old").await.unwrap().state.total, 20);
}

/// Counts events per stream in a table, in the runner's transaction.
struct CountsTable {
    schema: String,
    fail_on: Option<i64>,
    fail_always: bool,
    crash_after_apply: AtomicBool,
}

#[async_trait]
impl TransactionalProjector for CountsTable {
    fn name(&self) -> &str {
        "counts"
    }
    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.counts (stream_id TEXT PRIMARY KEY, n INT NOT NULL)",
            self.schema
        ))
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "INSERT INTO {}.counts (stream_id, n) VALUES ($1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = counts.n + 1",
            self.schema
        ))
        .bind(e.stream_id.as_str())
        .execute(&mut *tx)
        .await?;
        if self.fail_on == e.payload["n"].as_i64()
            && (self.fail_always || self.crash_after_apply.swap(false, Ordering::SeqCst))
        {
            return Err(format!("cannot project n={:?}", self.fail_on).into());
        }
        Ok(())
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("DELETE FROM {}.counts", self.schema))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

async fn counts(store: &PostgresEventStore) -> Vec<(String, i64)> {
    sqlx::query_as(&format!(
        "SELECT stream_id, n::bigint FROM {}.counts ORDER BY stream_id",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

async fn append_n(store: &PostgresEventStore, stream: &str, n: i64) {
    store
        .append(
            "tally",
            &StreamId::from(stream),
            ExpectedVersion::Any,
            vec![NewEvent::new("Added", json!({"n": n}))],
        )
        .await
        .unwrap();
}

fn config(on_failure: OnFailure) -> ProjectionConfig {
    ProjectionConfig {
        batch_size: 4,
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

async fn settle(store: &PostgresEventStore, n: usize) {
    settled_read_all(store, 0, 10_000, &EventFilter::all(), n).await;
}

#[tokio::test]
async fn transactional_projection_never_applies_twice_or_skips() {
    let store = common::store().await;
    for i in 0..10 {
        append_n(&store, if i % 2 == 0 { "a" } else { "b" }, i).await;
    }
    settle(&store, 10).await;
    // A failure in the middle of a batch (after the projector already wrote
    // its row) rolls back the whole batch, read model and checkpoint alike.
    let projector = Arc::new(CountsTable {
        schema: store.schema().to_owned(),
        fail_on: Some(5),
        fail_always: false,
        crash_after_apply: AtomicBool::new(true),
    });
    let runner = PgProjectionUnit::new(&store, projector)
        .runner()
        .with_config(config(OnFailure::Stop));
    assert_eq!(runner.catch_up().await.unwrap().applied, 10);
    assert_eq!(counts(&store).await, vec![("a".into(), 5), ("b".into(), 5)]);
    assert_eq!(runner.catch_up().await.unwrap().applied, 0);
    assert_eq!(
        counts(&store).await,
        vec![("a".into(), 5), ("b".into(), 5)],
        "nothing applied twice"
    );

    // Incremental replay from a position, and full rebuild.
    let all = settled_read_all(&store, 0, 100, &EventFilter::all(), 10).await;
    assert_eq!(
        runner
            .replay(ReplayMode::From(all[7].global_position))
            .await
            .unwrap()
            .applied,
        2
    );
    assert_eq!(counts(&store).await, vec![("a".into(), 6), ("b".into(), 6)]);
    assert_eq!(runner.replay(ReplayMode::Full).await.unwrap().applied, 10);
    assert_eq!(counts(&store).await, vec![("a".into(), 5), ("b".into(), 5)]);
    let n = runner
        .replay(ReplayMode::Selective {
            event_types: vec!["Added".into()],
            from: all[8].global_position,
        })
        .await
        .unwrap();
    assert_eq!((n.applied, n.dead_lettered), (1, 0));
    assert_eq!(runner.position().await.unwrap(), all[9].global_position);
}

#[tokio::test]
async fn poison_events_are_dead_lettered_with_the_checkpoint_past_them() {
    let store = common::store().await;
    for i in 0..6 {
        append_n(&store, "a", i).await;
    }
    settle(&store, 6).await;
    let poison = |on_failure| {
        PgProjectionUnit::new(
            &store,
            Arc::new(CountsTable {
                schema: store.schema().to_owned(),
                fail_on: Some(3),
                fail_always: true,
                crash_after_apply: AtomicBool::new(false),
            }),
        )
        .runner()
        .with_config(config(on_failure))
    };
    match poison(OnFailure::Stop).catch_up().await.unwrap_err() {
        ProjectionError::Stopped { error, .. } => assert!(error.contains("n=Some(3)")),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        counts(&store).await,
        vec![("a".into(), 3)],
        "events before the poison applied, once"
    );
    let runner = poison(OnFailure::DeadLetter);
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (2, 1));
    assert_eq!(
        counts(&store).await,
        vec![("a".into(), 5)],
        "poison skipped, the rest applied"
    );
    let dead = PostgresCheckpointStore::new(&store)
        .dead_letters("counts")
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].version, 4);
    // The checkpoint moved past the dead letter, to the last event.
    let all = settled_read_all(&store, 0, 100, &EventFilter::all(), 6).await;
    assert_eq!(dead[0].global_position, all[3].global_position);
    assert_eq!(runner.position().await.unwrap(), all[5].global_position);
    // A second catch-up (by a new runner too) applies nothing and does not
    // meet the poison again.
    assert_eq!(runner.catch_up().await.unwrap().applied, 0);
    assert_eq!(poison(OnFailure::Stop).catch_up().await.unwrap().applied, 0);
    assert_eq!(counts(&store).await, vec![("a".into(), 5)], "nothing applied twice");
    let dead = PostgresCheckpointStore::new(&store)
        .dead_letters("counts")
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "the poison was dead-lettered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_projection_follows_appends() {
    let store = common::store().await;
    let runner = Arc::new(
        PgProjectionUnit::new(
            &store,
            Arc::new(CountsTable {
                schema: store.schema().to_owned(),
                fail_on: None,
                fail_always: false,
                crash_after_apply: AtomicBool::new(false),
            }),
        )
        .runner()
        .with_config(config(OnFailure::Stop)),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let runner = Arc::clone(&runner);
        tokio::spawn(async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    for i in 0..20 {
        append_n(&store, "live", i).await;
    }
    let mut seen = Vec::new();
    for _ in 0..500 {
        seen = counts(&store).await;
        if seen == vec![("live".to_owned(), 20)] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, vec![("live".to_owned(), 20)]);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn checkpoint_store_round_trips() {
    let store = common::store().await;
    let cp = PostgresCheckpointStore::new(&store);
    assert_eq!(cp.load("p").await.unwrap(), 0);
    cp.save("p", 42).await.unwrap();
    cp.save("p", 43).await.unwrap();
    assert_eq!(cp.load("p").await.unwrap(), 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_rows_are_written_with_the_events_and_only_with_them() {
    let store = common::store_with(EventStoreConfig {
        outbox: true,
        max_connections: 4,
        ..EventStoreConfig::with_schema(common::schema("o"))
    })
    .await;
    let r = store
        .append(
            "tally",
            &StreamId::from("o1"),
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new("Added", json!({"n": 1})),
                NewEvent::new("Added", json!({"n": 2})),
            ],
        )
        .await
        .unwrap();
    // A conflicting append writes neither events nor outbox rows.
    let conflict = store
        .append(
            "tally",
            &StreamId::from("o1"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Added", json!({}))],
        )
        .await;
    assert!(conflict.is_err());
    // A rolled-back transactional append neither.
    let mut tx = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut tx,
            "tally",
            &StreamId::from("o2"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Added", json!({}))],
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(&format!(
        "SELECT global_position, stream_id, version FROM {}.outbox ORDER BY global_position",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            (r.positions[0] as i64, "o1".to_owned(), 1),
            (r.positions[1] as i64, "o1".to_owned(), 2)
        ]
    );
}

#[tokio::test]
async fn health_reports_pool_and_round_trip() {
    let store = common::store().await;
    let h = store.health().await;
    assert!(h.ok, "{h:?}");
    assert!(h.pool_size >= 1);
    assert!(h.error.is_none());
}

/// A projector that, while its page is open, appends through the store
/// (another connection, as a process manager's commands do) and looks
/// for that event in the global log.
struct Issuer {
    store: PostgresEventStore,
    seen_while_open: AtomicBool,
}

#[async_trait]
impl TransactionalProjector for Issuer {
    fn name(&self) -> &str {
        "issuer"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::all().stream_types(["trigger"])
    }
    async fn apply(&self, _tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        let issued = self
            .store
            .append(
                "issued",
                &StreamId::from(format!("issued-{}", e.stream_id)),
                ExpectedVersion::Any,
                vec![NewEvent::new("Issued", json!({}))],
            )
            .await?;
        let position = issued.positions.last().copied().ok_or("no position")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let visible = self.store.read_all(position - 1, 1, &EventFilter::all()).await?;
            if visible.first().is_some_and(|v| v.global_position == position) {
                self.seen_while_open.store(true, Ordering::SeqCst);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
    async fn reset(&self, _tx: &mut PgConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A unit's page in progress does not hold back the log's readers: an
/// event appended (and committed) by another connection during the page
/// is visible at once. A transaction with a transaction id would hide
/// every position past it until it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_page_in_progress_does_not_hide_what_others_commit() {
    let store = common::store().await;
    store
        .append(
            "trigger",
            &StreamId::from("t1"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Trigger", json!({}))],
        )
        .await
        .unwrap();
    settle(&store, 1).await;
    let issuer = Arc::new(Issuer {
        store: store.clone(),
        seen_while_open: AtomicBool::new(false),
    });
    // The first page creates the checkpoint row; the second runs on it.
    let runner = PgProjectionUnit::new(&store, Arc::clone(&issuer))
        .runner()
        .with_config(config(OnFailure::Stop));
    assert_eq!(runner.catch_up().await.unwrap().applied, 1);
    issuer.seen_while_open.store(false, Ordering::SeqCst);
    store
        .append(
            "trigger",
            &StreamId::from("t2"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Trigger", json!({}))],
        )
        .await
        .unwrap();
    settle(&store, 3).await;
    assert_eq!(runner.catch_up().await.unwrap().applied, 1);
    assert!(
        issuer.seen_while_open.load(Ordering::SeqCst),
        "the event committed during the page stayed hidden until the page committed"
    );
}
