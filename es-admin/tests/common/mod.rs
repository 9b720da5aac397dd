//! Test support: a fresh event store schema per test, a small projection
//! of our own, and es-admin run through `Admin::run_with` with captured
//! output.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use es_core::{
    BoxError, EventFilter, EventStore, ExpectedVersion, NewEvent, OnFailure, ProjectionConfig, ProjectionRunner,
    RecordedEvent, RetryPolicy, StreamId,
};
use es_postgres::{EventStoreConfig, PgProjectionUnit, PostgresEventStore, TransactionalProjector};
use serde_json::{json, Value};
use sqlx::PgConnection;

/// Upper bound on any wait (a hang guard, not a speed assertion).
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// A migrated store in a fresh schema.
pub(crate) async fn store() -> PostgresEventStore {
    store_with(false).await
}

/// A migrated store in a fresh schema, writing the outbox or not.
pub(crate) async fn store_with(outbox: bool) -> PostgresEventStore {
    es_postgres::testing::store(EventStoreConfig {
        outbox,
        max_connections: 6,
        ..EventStoreConfig::with_schema(es_postgres::testing::fresh_schema("adm"))
    })
    .await
    .expect("test store")
}

/// Appends `events` (`(type, payload)`) to `stream` of type `counter` in
/// one append, and waits until readers of the log see them (other tests'
/// open transactions hold the gap-safe head back for a moment); their
/// positions.
pub(crate) async fn append(store: &PostgresEventStore, stream: &str, events: &[(&str, Value)]) -> Vec<u64> {
    let positions = store
        .append(
            "counter",
            &StreamId::from(stream),
            ExpectedVersion::Any,
            events.iter().map(|(t, p)| NewEvent::new(*t, p.clone())).collect(),
        )
        .await
        .expect("append")
        .positions;
    let last = positions.last().copied().unwrap_or(0);
    eventually("the appended events to be readable", || async {
        (store.head_position().await.expect("head") >= last).then_some(())
    })
    .await;
    positions
}

/// `n` `Added {"n": 1}` events to `stream`, in appends of at most 500.
pub(crate) async fn append_added(store: &PostgresEventStore, stream: &str, n: usize) -> Vec<u64> {
    let mut positions = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(500);
        let events: Vec<(&str, Value)> = (0..k).map(|_| ("Added", json!({"n": 1}))).collect();
        positions.extend(append(store, stream, &events).await);
        left -= k;
    }
    positions
}

/// The test projection `totals`: per stream, the sum of `Added` minus
/// `Removed` amounts, and how many events made it. A `Poison` event fails
/// until its position is "cured" ([`cure`]); then it adds its `n`.
pub(crate) struct Totals {
    schema: String,
}

#[async_trait]
impl TransactionalProjector for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event_types(["Added", "Removed", "Poison"])
    }

    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        let s = &self.schema;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.totals (stream_id TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {s}.cures (global_position BIGINT PRIMARY KEY)"
        ))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        let s = &self.schema;
        let n = e.payload["n"].as_i64().ok_or("no n")?;
        let delta = match e.event_type.as_str() {
            "Added" => n,
            "Removed" => -n,
            "Poison" => {
                let cured: bool = sqlx::query_scalar(&format!(
                    "SELECT EXISTS (SELECT 1 FROM {s}.cures WHERE global_position = $1)"
                ))
                .bind(e.global_position as i64)
                .fetch_one(&mut *tx)
                .await?;
                if !cured {
                    return Err(format!("poison at {}", e.global_position).into());
                }
                n
            }
            _ => return Ok(()),
        };
        sqlx::query(&format!(
            "INSERT INTO {s}.totals (stream_id, total, events) VALUES ($1, $2, 1) \
             ON CONFLICT (stream_id) DO UPDATE SET total = totals.total + $2, events = totals.events + 1"
        ))
        .bind(e.stream_id.as_str())
        .bind(delta)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("DELETE FROM {}.totals", self.schema))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// A second projection that never ran in most tests: `audit`, every event.
pub(crate) struct Audit {
    schema: String,
}

#[async_trait]
impl TransactionalProjector for Audit {
    fn name(&self) -> &str {
        "audit"
    }

    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.audit (global_position BIGINT PRIMARY KEY)",
            self.schema
        ))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query(&format!("INSERT INTO {}.audit VALUES ($1)", self.schema))
            .bind(e.global_position as i64)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("DELETE FROM {}.audit", self.schema))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// The registered projections, as an application would build them:
/// `totals` dead-letters what it keeps failing on (one attempt), `audit`
/// has the defaults.
pub(crate) fn runners(store: &PostgresEventStore) -> Vec<ProjectionRunner> {
    let schema = store.schema().to_owned();
    vec![
        PgProjectionUnit::new(store, Arc::new(Totals { schema: schema.clone() }))
            .runner()
            .with_config(ProjectionConfig {
                on_failure: OnFailure::DeadLetter,
                retry: RetryPolicy {
                    max_attempts: 1,
                    ..RetryPolicy::default()
                },
                ..ProjectionConfig::default()
            }),
        PgProjectionUnit::new(store, Arc::new(Audit { schema })).runner(),
    ]
}

/// The `totals` runner (what the application runs).
pub(crate) fn totals(store: &PostgresEventStore) -> ProjectionRunner {
    runners(store).remove(0)
}

/// The `totals` read model: `(stream, total, events)`.
pub(crate) async fn totals_table(store: &PostgresEventStore) -> Vec<(String, i64, i64)> {
    sqlx::query_as(&format!(
        "SELECT stream_id, total, events FROM {}.totals ORDER BY stream_id",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// Lets the `Poison` event at `position` apply from now on.
pub(crate) async fn cure(store: &PostgresEventStore, position: u64) {
    sqlx::query(&format!("INSERT INTO {}.cures VALUES ($1)", store.schema()))
        .bind(position as i64)
        .execute(store.pool())
        .await
        .unwrap();
}

/// An in-memory writer whose contents the test reads while es-admin runs.
#[derive(Clone, Default)]
pub(crate) struct Buf(Arc<Mutex<Vec<u8>>>);

impl Buf {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What one es-admin command did.
#[derive(Debug)]
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as the one JSON document it must be.
    pub(crate) fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts success; stdout.
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "{self:?}");
        &self.stdout
    }
}

/// The application's es-admin in the tests.
pub(crate) fn admin() -> es_admin::Admin {
    es_admin::Admin::new().projections(runners)
}

/// The command line: program name, database, schema, then `args`.
pub(crate) fn argv(store: &PostgresEventStore, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "es-admin".to_owned(),
        "--database-url".to_owned(),
        es_postgres::testing::database_url(),
        "--schema".to_owned(),
        store.schema().to_owned(),
    ];
    v.extend(args.iter().map(|a| (*a).to_owned()));
    v
}

/// Runs es-admin on `store` with `args`.
pub(crate) async fn run(store: &PostgresEventStore, args: &[&str]) -> Run {
    run_argv(argv(store, args)).await
}

/// Runs es-admin with exactly `argv`.
pub(crate) async fn run_argv(argv: Vec<String>) -> Run {
    let (out, err) = (Buf::default(), Buf::default());
    let code = tokio::time::timeout(PATIENCE, admin().run_with(argv, out.clone(), err.clone()))
        .await
        .expect("es-admin finished");
    Run {
        code,
        stdout: out.text(),
        stderr: err.text(),
    }
}

/// Polls `f` until it gives `Some`, for at most [`PATIENCE`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
