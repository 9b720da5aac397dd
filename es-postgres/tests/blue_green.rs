//! Blue/green projections (`BlueGreen`) on the real PostgreSQL: version 2
//! of a projection, of another shape, is rebuilt from position 0 beside
//! version 1 while writers append and readers query the reader view; the
//! switch waits until version 2 has caught up, and readers never see a
//! half-built version or go back in time.
mod common;
mod projection_kit;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{BoxError, EventStore as _, ExpectedVersion, NewEvent, ProjectionConfig, RecordedEvent, StreamId};
use es_postgres::{
    BlueGreen, BlueGreenError, EventStoreConfig, PgProjectionUnit, PostgresEventStore, SwitchOutcome,
    TransactionalProjector,
};
use projection_kit::{checkpoint, eventually};
use serde_json::json;
use sqlx::PgConnection;

const STREAMS: usize = 10;

/// Balances per account. Version 1 keeps the total; version 2 also counts
/// the deposits (a new column).
struct Balances {
    name: String,
    table: String,
    version: u32,
}

impl Balances {
    fn new(bg: &BlueGreen, version: u32) -> Arc<Self> {
        Arc::new(Self {
            name: bg.projection_name(version),
            table: bg.table("balances", version),
            version,
        })
    }
}

#[async_trait]
impl TransactionalProjector for Balances {
    fn name(&self) -> &str {
        &self.name
    }
    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        let extra = if self.version >= 2 {
            ", deposits BIGINT NOT NULL"
        } else {
            ""
        };
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (stream_id TEXT PRIMARY KEY, total BIGINT NOT NULL{extra})",
            self.table
        ))
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        let amount = e.payload["amount"].as_i64().ok_or("no amount")?;
        let sql = if self.version >= 2 {
            format!(
                "INSERT INTO {} AS b (stream_id, total, deposits) VALUES ($1, $2, 1) \
                 ON CONFLICT (stream_id) DO UPDATE SET total = b.total + $2, deposits = b.deposits + 1",
                self.table
            )
        } else {
            format!(
                "INSERT INTO {} AS b (stream_id, total) VALUES ($1, $2) \
                 ON CONFLICT (stream_id) DO UPDATE SET total = b.total + $2",
                self.table
            )
        };
        sqlx::query(&sql)
            .bind(e.stream_id.as_str())
            .bind(amount)
            .execute(tx)
            .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("DELETE FROM {}", self.table)).execute(tx).await?;
        Ok(())
    }
}

/// What one reader statement saw: through the reader view, the sum and
/// number of balances; the active version and its checkpoint; and what
/// the log says up to that checkpoint — all in one snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
struct Read {
    view_total: i64,
    view_rows: i64,
    active: i32,
    position: i64,
    log_total: i64,
    log_streams: i64,
}

/// What the readers have seen so far, for the test to wait on.
#[derive(Default)]
struct Seen {
    /// Reads of each version.
    reads: [AtomicU64; 3],
    /// The highest checkpoint read through the active version 2.
    v2_position: AtomicI64,
}

/// Reads until `stop`, checking every read against the log and the one
/// before it; the reads.
async fn reader(store: PostgresEventStore, stop: Arc<AtomicBool>, seen: Arc<Seen>) -> Vec<Read> {
    let s = store.schema().to_owned();
    let sql = format!(
        "SELECT (SELECT coalesce(sum(total), 0)::bigint FROM {s}.balances) AS view_total, \
                (SELECT count(*) FROM {s}.balances) AS view_rows, \
                v.active, c.position, \
                (SELECT coalesce(sum((e.payload->>'amount')::bigint), 0)::bigint FROM {s}.events e \
                   WHERE e.global_position <= c.position) AS log_total, \
                (SELECT count(DISTINCT e.stream_id) FROM {s}.events e \
                   WHERE e.global_position <= c.position) AS log_streams \
         FROM {s}.projection_versions v \
         JOIN {s}.checkpoints c ON c.projection = 'balances_v' || v.active \
         WHERE v.name = 'balances'"
    );
    let mut reads: Vec<Read> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let read: Read = sqlx::query_as(&sql).fetch_one(store.pool()).await.unwrap();
        assert_eq!(
            (read.view_total, read.view_rows),
            (read.log_total, read.log_streams),
            "the reader view shows exactly the log up to its version's checkpoint: {read:?}"
        );
        if let Some(before) = reads.last() {
            assert!(
                read.active >= before.active
                    && read.position >= before.position
                    && read.view_total >= before.view_total,
                "a reader went back in time: {before:?} then {read:?}"
            );
        }
        seen.reads[read.active.clamp(0, 2) as usize].fetch_add(1, Ordering::SeqCst);
        if read.active == 2 {
            seen.v2_position.fetch_max(read.position, Ordering::SeqCst);
        }
        reads.push(read);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    reads
}

/// Appends deposits of 1..=100 to random accounts until `stop`.
async fn writer(store: PostgresEventStore, stop: Arc<AtomicBool>) -> usize {
    let mut written = 0;
    while !stop.load(Ordering::SeqCst) {
        let stream = StreamId::from(format!("acct{:02}", fastrand::usize(..STREAMS)));
        let amount = fastrand::i64(1..=100);
        store
            .append(
                "account",
                &stream,
                ExpectedVersion::Any,
                vec![NewEvent::new("Deposited", json!({ "amount": amount }))],
            )
            .await
            .unwrap();
        written += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    written
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), es_core::ProjectionError>>,
}

fn run(store: &PostgresEventStore, projector: Arc<Balances>, batch_size: usize) -> Running {
    let runner = PgProjectionUnit::new(store, projector)
        .runner()
        .with_config(ProjectionConfig {
            batch_size,
            poll_interval: Duration::from_millis(20),
            ..ProjectionConfig::default()
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn exists(store: &PostgresEventStore, relation: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{}.{relation}", store.schema()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn version_two_is_rebuilt_beside_version_one_and_readers_switch_atomically() {
    let store = common::store_with(EventStoreConfig {
        max_connections: 16,
        ..EventStoreConfig::with_schema(common::schema("bg"))
    })
    .await;
    let bg = BlueGreen::new(&store, "balances", &["balances"]).unwrap();
    assert!(matches!(
        BlueGreen::new(&store, "Balances; DROP", &["balances"]),
        Err(BlueGreenError::InvalidName(_))
    ));
    assert_eq!(bg.active().await.unwrap(), None);

    // A history to rebuild: version 2 takes many pages to catch up.
    for k in 0..40 {
        let events = (0..50)
            .map(|i| NewEvent::new("Deposited", json!({ "amount": 1 + (k * 50 + i) % 100 })))
            .collect();
        let stream = StreamId::from(format!("acct{:02}", k % STREAMS));
        store
            .append("account", &stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let history = 2000;

    let stop_writers = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(writer(store.clone(), Arc::clone(&stop_writers))))
        .collect();

    // Version 1 serves.
    let v1 = run(&store, Balances::new(&bg, 1), 20);
    assert!(eventually(60, || async { checkpoint(&store, "balances_v1").await > 0 }).await);
    assert_eq!(
        bg.switch(1).await.unwrap(),
        SwitchOutcome::Switched { from: None, to: 1 }
    );
    assert_eq!(bg.active().await.unwrap(), Some(1));

    let stop_readers = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let readers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(reader(store.clone(), Arc::clone(&stop_readers), Arc::clone(&seen))))
        .collect();
    assert!(
        eventually(60, || async { seen.reads[1].load(Ordering::SeqCst) >= 20 }).await,
        "readers read version 1"
    );

    // Version 2 has not started: the switch is refused.
    match bg.switch(2).await.unwrap() {
        SwitchOutcome::Behind { candidate, active } => assert!(candidate < active, "{candidate} < {active}"),
        other => panic!("version 2 is behind, got {other:?}"),
    }
    // Rebuilt from 0 while version 1 serves and writers append.
    let v2 = run(&store, Balances::new(&bg, 2), 10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match bg.switch(2).await.unwrap() {
            SwitchOutcome::Behind { candidate, active } => {
                assert!(candidate < active, "{candidate} < {active}");
            }
            SwitchOutcome::Switched { from, to } => {
                assert_eq!((from, to), (Some(1), 2));
                break;
            }
            SwitchOutcome::AlreadyActive => panic!("version 2 was not active"),
        }
        assert!(tokio::time::Instant::now() < deadline, "version 2 never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bg.active().await.unwrap(), Some(2));
    assert_eq!(bg.switch(2).await.unwrap(), SwitchOutcome::AlreadyActive);

    // Writers go on after the switch; version 2 keeps following.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_writers.store(true, Ordering::SeqCst);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    let head = common::settled_head(&store).await;
    assert!(
        eventually(120, || async { checkpoint(&store, "balances_v2").await == head }).await,
        "version 2 follows the log after the switch"
    );
    assert!(
        eventually(60, || async { seen.v2_position.load(Ordering::SeqCst) == head as i64 }).await,
        "readers saw version 2 reach the head"
    );
    stop_readers.store(true, Ordering::SeqCst);
    let mut reads = Vec::new();
    for r in readers {
        reads.extend(r.await.unwrap());
    }
    let on = |v: i32| reads.iter().filter(|r| r.active == v).count();
    assert!(
        on(1) > 0 && on(2) > 0,
        "readers saw both versions: {} / {}",
        on(1),
        on(2)
    );

    // Through the reader view, version 2's shape holds every event.
    let s = store.schema();
    let view: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT stream_id, total, deposits FROM {s}.balances ORDER BY stream_id"
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    let log: Vec<(String, i64, i64)> = sqlx::query_as(&format!(
        "SELECT stream_id, sum((payload->>'amount')::bigint)::bigint, count(*) FROM {s}.events \
         GROUP BY stream_id ORDER BY stream_id"
    ))
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(view, log);
    assert_eq!(
        view.iter().map(|r| r.2).sum::<i64>(),
        (history + written) as i64,
        "every appended deposit is in version 2"
    );

    // The active version cannot be dropped; the old one can, once stopped.
    v1.stop().await;
    match bg.drop_version(2).await {
        Err(BlueGreenError::DropActive { version, .. }) => assert_eq!(version, 2),
        other => panic!("dropping the active version must be refused, got {other:?}"),
    }
    assert!(exists(&store, "balances_v2").await);
    bg.drop_version(1).await.unwrap();
    assert!(!exists(&store, "balances_v1").await);
    let keys: Vec<String> = sqlx::query_scalar(&format!("SELECT projection FROM {s}.checkpoints ORDER BY projection"))
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(keys, vec!["balances_v2".to_owned()]);
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {s}.balances"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows as usize, view.len(), "readers still served by version 2");
    v2.stop().await;
}
