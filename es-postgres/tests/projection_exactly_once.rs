//! Three processes run the same non-idempotent transactional projection
//! (`n = n + 1` per event) through `PgProjectionUnit` and
//! `ProjectionRunner::run` while this process appends thousands of events:
//! every event is applied exactly once, by one of them, and the checkpoint
//! ends at the last position — also when one of them is killed midway.
//!
//! The test runs this test binary three more times as the workers
//! (selected by an environment variable).
mod common;
mod projection_kit;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{BoxError, EventStore as _, ExpectedVersion, NewEvent, ProjectionConfig, RecordedEvent, StreamId};
use es_postgres::{EventStoreConfig, PgProjectionUnit, PostgresEventStore, TransactionalProjector};
use projection_kit::{checkpoint, eventually, log_counts, table_counts};
use serde_json::json;
use sqlx::PgConnection;

const SCHEMA_VAR: &str = "ES_PG_PROJECTION_WORKER_SCHEMA";
const TEST_NAME: &str = "processes_running_one_projection_apply_every_event_exactly_once";
const WORKERS: usize = 3;
const WRITERS: usize = 4;
const EVENTS_PER_WRITER: usize = 750;
const STREAMS: usize = 20;

/// Counts events per stream, and notes which process applied each one.
struct Counts {
    schema: String,
    pid: i32,
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
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.applied (global_position BIGINT NOT NULL, pid INT NOT NULL)",
            self.schema
        ))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "INSERT INTO {}.counts AS c (stream_id, n) VALUES ($1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = c.n + 1",
            self.schema
        ))
        .bind(e.stream_id.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {}.applied (global_position, pid) VALUES ($1, $2)",
            self.schema
        ))
        .bind(e.global_position as i64)
        .bind(self.pid)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("TRUNCATE {s}.counts, {s}.applied", s = self.schema))
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// A worker process: sets the projection up (racing the others), then
/// runs it until the parent writes a row into `stop`.
async fn worker(schema: String) {
    let options: sqlx::postgres::PgConnectOptions = common::database_url().parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.application_name(&schema))
        .await
        .unwrap();
    let store = PostgresEventStore::with_pool(pool, EventStoreConfig::with_schema(schema.clone())).unwrap();
    let pid = std::process::id() as i32;
    let unit = PgProjectionUnit::new(
        &store,
        Arc::new(Counts {
            schema: schema.clone(),
            pid,
        }),
    );
    unit.setup().await.unwrap();
    let runner = unit.runner().with_config(ProjectionConfig {
        batch_size: 7,
        poll_interval: Duration::from_millis(20),
        ..ProjectionConfig::default()
    });
    sqlx::query(&format!("INSERT INTO {schema}.workers (pid) VALUES ($1)"))
        .bind(pid)
        .execute(store.pool())
        .await
        .unwrap();
    let stop = {
        let (pool, schema) = (store.pool().clone(), schema.clone());
        async move {
            loop {
                let stop: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {schema}.stop)"))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if stop {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    runner.run(stop).await.unwrap();
    println!("WORKER done {pid}");
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_running_one_projection_apply_every_event_exactly_once() {
    if let Ok(schema) = std::env::var(SCHEMA_VAR) {
        return worker(schema).await;
    }
    let store = common::store().await;
    let schema = store.schema().to_owned();
    for ddl in [
        "CREATE TABLE {s}.workers (pid INT NOT NULL)",
        "CREATE TABLE {s}.stop (at TIMESTAMPTZ)",
    ] {
        sqlx::query(&ddl.replace("{s}", &schema))
            .execute(store.pool())
            .await
            .unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..WORKERS)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(SCHEMA_VAR, &schema)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();
    let workers_up = eventually(120, || async {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.workers"))
            .fetch_one(store.pool())
            .await
            .unwrap();
        n == WORKERS as i64
    })
    .await;
    assert!(workers_up, "the worker processes did not start");

    // Writers append while the workers project.
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut written = 0;
                let mut k = 0usize;
                while written < EVENTS_PER_WRITER {
                    let n = (1 + k % 3).min(EVENTS_PER_WRITER - written);
                    let stream = StreamId::from(format!("s{:02}", (w * 7 + k * 13) % STREAMS));
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
    // One worker dies without warning in the middle of the work (its
    // open page transaction, if any, is rolled back by the server).
    let applied_some = eventually(120, || async {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.applied"))
            .fetch_one(store.pool())
            .await
            .unwrap();
        n >= 500
    })
    .await;
    assert!(applied_some, "the workers did not start projecting");
    // The one killed is one that has projected (not one that may never
    // have had a turn).
    let busy: Vec<i32> = sqlx::query_scalar(&format!("SELECT DISTINCT pid FROM {schema}.applied"))
        .fetch_all(store.pool())
        .await
        .unwrap();
    let at = children
        .iter()
        .position(|c| c.id().is_some_and(|id| busy.contains(&(id as i32))))
        .expect("a worker that projected");
    let mut killed = children.remove(at);
    let killed_pid = killed.id().unwrap() as i32;
    killed.kill().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    let head = common::settled_head(&store).await;
    let total = (WRITERS * EVENTS_PER_WRITER) as i64;
    let last: i64 = sqlx::query_scalar(&format!("SELECT max(global_position) FROM {schema}.events"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(head, last as u64);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while checkpoint(&store, "counts").await != head {
        for c in &mut children {
            if let Some(status) = c.try_wait().unwrap() {
                panic!("a worker exited early: {status}");
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projection did not reach {head}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sqlx::query(&format!("INSERT INTO {schema}.stop (at) VALUES (now())"))
        .execute(store.pool())
        .await
        .unwrap();
    let mut pids = vec![killed_pid];
    for child in children {
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("worker finished")
            .unwrap();
        assert!(out.status.success(), "worker failed: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let pid: i32 = stdout
            .lines()
            .find_map(|l| l.split_once("WORKER done ").map(|(_, pid)| pid))
            .unwrap_or_else(|| panic!("no outcome in {stdout}"))
            .trim()
            .parse()
            .unwrap();
        pids.push(pid);
    }

    assert_eq!(
        table_counts(&store, "counts").await,
        log_counts(&store).await,
        "every stream's count equals its number of events"
    );
    assert_eq!(checkpoint(&store, "counts").await, last as u64);
    let (rows, distinct, workers): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), count(DISTINCT global_position), count(DISTINCT pid) FROM {schema}.applied"
    ))
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((rows, distinct), (total, total), "each event applied once");
    let foreign: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.applied WHERE pid <> ALL($1)"))
        .bind(&pids)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(foreign, 0, "applied by the workers only");
    assert!(workers >= 2, "the workers shared the log ({workers} applied events)");
}
