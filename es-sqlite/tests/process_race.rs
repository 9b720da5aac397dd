//! Three processes open one database file, each with its own writer: they
//! append to the same streams at exact versions (conflicts across
//! processes: at least one per worker but one, forced by an opening
//! append to one stream at the version all read before any appended),
//! and each runs the same non-idempotent projection, while this process
//! follows the global log. Afterwards: every stream is gapless with one
//! winner per version, the follower saw every position of the final log
//! in order (it never skipped one), and the projection applied every
//! event exactly once, by the workers, at least two of them.
//!
//! The test runs this test binary three more times as the workers
//! (selected by an environment variable). Across processes, SQLite's
//! file lock orders the writers (no write gate is shared).
mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::eventually;
use es_core::{
    BoxError, EventFilter, EventStore, ExpectedVersion, NewEvent, ProjectionConfig, RecordedEvent, StoreError, StreamId,
};
use es_sqlite::testing::TempDatabase;
use es_sqlite::{SqliteConfig, SqliteEventStore, SqliteProjectionUnit, SqliteProjector};
use serde_json::json;
use sqlx::SqliteConnection;

const FILE_VAR: &str = "ES_SQLITE_RACE_FILE";
const TEST_NAME: &str = "processes_on_one_file_keep_streams_gapless_and_the_log_unskippable";
const WORKERS: usize = 3;
const APPENDS_PER_WORKER: usize = 150;
const STREAMS: usize = 5;

/// Counts events per stream and notes which process applied each.
struct Counts {
    pid: i64,
}

#[async_trait]
impl SqliteProjector for Counts {
    fn name(&self) -> &str {
        "counts"
    }
    async fn setup(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS counts (stream_id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS applied (global_position INTEGER NOT NULL, pid INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO counts VALUES (?1, 1) ON CONFLICT (stream_id) DO UPDATE SET n = n + 1")
            .bind(e.stream_id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO applied VALUES (?1, ?2)")
            .bind(e.global_position as i64)
            .bind(self.pid)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM counts").execute(&mut *tx).await?;
        sqlx::query("DELETE FROM applied").execute(&mut *tx).await?;
        Ok(())
    }
}

async fn exists(store: &SqliteEventStore, sql: &str) -> bool {
    sqlx::query_scalar::<_, bool>(sql)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// Appends `events` to `stream` at an exact version, starting at
/// `version` and reading it again after each conflict; the conflicts met.
async fn append_at_exact_version(
    store: &SqliteEventStore,
    stream: &StreamId,
    events: Vec<NewEvent>,
    mut version: u64,
) -> i64 {
    let mut conflicts = 0;
    loop {
        match store
            .append("tally", stream, ExpectedVersion::Exact(version), events.clone())
            .await
        {
            Ok(_) => return conflicts,
            Err(StoreError::Conflict { .. }) => conflicts += 1,
            Err(e) => panic!("append failed: {e}"),
        }
        version = store.stream_version(stream).await.unwrap();
    }
}

/// A worker process: runs the projection, appends at exact versions
/// (retrying conflicts), reports done, and stops when told.
async fn worker(file: String) {
    let store = SqliteEventStore::connect(&file, SqliteConfig::default()).await.unwrap();
    let pid = i64::from(std::process::id());
    let runner = SqliteProjectionUnit::new(&store, Arc::new(Counts { pid }))
        .runner()
        .with_config(ProjectionConfig {
            batch_size: 7,
            poll_interval: Duration::from_millis(20),
            ..ProjectionConfig::default()
        });
    let projection = tokio::spawn({
        let store = store.clone();
        async move {
            runner
                .run(async move {
                    while !exists(&store, "SELECT EXISTS (SELECT 1 FROM stop)").await {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await
        }
    });
    // Every worker reads the opening stream's version, then waits until
    // all have (nobody appends before): of their opening appends at that
    // version one wins and the others conflict with it, a conflict across
    // processes whatever the timing. The workers' appends start together.
    let opening = StreamId::from("s0");
    let opening_version = store.stream_version(&opening).await.unwrap();
    sqlx::query("INSERT INTO ready (pid) VALUES (?1)")
        .bind(pid)
        .execute(store.pool())
        .await
        .unwrap();
    while !exists(&store, &format!("SELECT (SELECT count(*) FROM ready) >= {WORKERS}")).await {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let opening_event = NewEvent::new("Added", json!({ "pid": pid, "opening": true }));
    let mut conflicts = append_at_exact_version(&store, &opening, vec![opening_event], opening_version).await;
    for k in 0..APPENDS_PER_WORKER {
        let stream = StreamId::from(format!("s{}", (k + pid as usize) % STREAMS));
        let events: Vec<NewEvent> = (0..=(k % 2))
            .map(|i| NewEvent::new("Added", json!({ "pid": pid, "k": k, "i": i })))
            .collect();
        let version = store.stream_version(&stream).await.unwrap();
        conflicts += append_at_exact_version(&store, &stream, events, version).await;
    }
    store.shutdown().await;
    sqlx::query("INSERT INTO done (pid, conflicts) VALUES (?1, ?2)")
        .bind(pid)
        .bind(conflicts)
        .execute(store.pool())
        .await
        .unwrap();
    projection.await.unwrap().unwrap();
    println!("WORKER done {pid} after {conflicts} conflicts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_on_one_file_keep_streams_gapless_and_the_log_unskippable() {
    if let Ok(file) = std::env::var(FILE_VAR) {
        return worker(file).await;
    }
    let temp = TempDatabase::new("race");
    let store = SqliteEventStore::connect(
        &temp.url(),
        SqliteConfig {
            poll_interval: Duration::from_millis(10),
            ..SqliteConfig::default()
        },
    )
    .await
    .unwrap();
    for ddl in [
        "CREATE TABLE done (pid INTEGER NOT NULL, conflicts INTEGER NOT NULL)",
        "CREATE TABLE stop (at INTEGER)",
        "CREATE TABLE ready (pid INTEGER NOT NULL)",
    ] {
        sqlx::query(ddl).execute(store.pool()).await.unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..WORKERS)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                .env(FILE_VAR, temp.url())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        })
        .collect();

    // Follow the log while the workers write: every page must start right
    // after the last position seen.
    let mut seen: Vec<u64> = Vec::new();
    let mut position = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let page = store.read_all(position, 50, &EventFilter::all()).await.unwrap();
        for e in &page {
            assert!(e.global_position > position, "the log went backwards");
            position = e.global_position;
            seen.push(position);
        }
        if page.is_empty() {
            let all_done: i64 = sqlx::query_scalar("SELECT count(*) FROM done")
                .fetch_one(store.pool())
                .await
                .unwrap();
            if all_done == WORKERS as i64 && store.head_position().await.unwrap() == position {
                break;
            }
            for c in &mut children {
                if let Some(status) = c.try_wait().unwrap() {
                    assert!(status.success(), "a worker failed: {status}");
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "the workers did not finish");
            store
                .wait_for_events(position, Duration::from_millis(100))
                .await
                .unwrap();
        }
    }

    let log: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT global_position, stream_id, version FROM events ORDER BY global_position")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let positions: Vec<u64> = log.iter().map(|(p, _, _)| *p as u64).collect();
    assert_eq!(seen, positions, "the follower saw every position, in order");
    let expected_events: usize = (1 + (0..APPENDS_PER_WORKER).map(|k| 1 + k % 2).sum::<usize>()) * WORKERS;
    assert_eq!(log.len(), expected_events, "every append stored once");
    for s in 0..STREAMS {
        let versions: Vec<i64> = log
            .iter()
            .filter(|(_, id, _)| *id == format!("s{s}"))
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(
            versions,
            (1..=versions.len() as i64).collect::<Vec<_>>(),
            "stream s{s}: gapless and in log order"
        );
    }
    let conflicts: i64 = sqlx::query_scalar("SELECT sum(conflicts) FROM done")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(
        conflicts >= WORKERS as i64 - 1,
        "the opening appends conflicted across processes ({conflicts} conflicts)"
    );

    let head = position;
    let projected = eventually(120, || async {
        let p: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE projection = 'counts'")
            .fetch_optional(store.pool())
            .await
            .unwrap();
        p == Some(head as i64)
    })
    .await;
    assert!(projected, "the projection did not reach {head}");
    sqlx::query("INSERT INTO stop (at) VALUES (1)")
        .execute(store.pool())
        .await
        .unwrap();
    for child in children {
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("worker finished")
            .unwrap();
        assert!(out.status.success(), "worker failed: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("WORKER done"), "{out:?}");
    }
    let counts: Vec<(String, i64)> = sqlx::query_as("SELECT stream_id, n FROM counts ORDER BY stream_id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let log_counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT stream_id, count(*) FROM events GROUP BY stream_id ORDER BY stream_id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(counts, log_counts, "every stream's count equals its number of events");
    let (rows, distinct): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT global_position) FROM applied")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        (rows, distinct),
        (log.len() as i64, log.len() as i64),
        "each event applied once"
    );
    let by_pid: Vec<(i64, i64)> = sqlx::query_as("SELECT pid, count(*) FROM applied GROUP BY pid ORDER BY pid")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let workers: Vec<i64> = sqlx::query_scalar("SELECT pid FROM done ORDER BY pid")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert!(
        by_pid.iter().all(|(pid, _)| workers.contains(pid)),
        "applied by the workers only: {by_pid:?}, workers {workers:?}"
    );
    assert!(by_pid.len() >= 2, "the workers shared the projection: {by_pid:?}");
}
