//! Two processes append to one stream at the same expected version at the
//! same moment: both statements wait behind a table lock and go at once.
//! When both see the stream at that version, the unique index refuses the
//! second writer's row and the store turns the unique violation into a
//! conflict; when the second sees the first's row, its version predicate
//! skips it. Either way exactly one process wins and the other is told
//! the real version.
//!
//! The test runs this test binary twice more as the two writers (selected
//! by an environment variable).
mod common;

use std::process::Stdio;
use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use futures::TryStreamExt;
use serde_json::json;

const SCHEMA_VAR: &str = "ES_PG_RACE_SCHEMA";
const STREAM_VAR: &str = "ES_PG_RACE_STREAM";
const TEST_NAME: &str = "two_processes_racing_for_one_version_one_wins";

/// The writer process: one append at version 1, outcome on stdout.
async fn writer(schema: String, stream: String) {
    let options: sqlx::postgres::PgConnectOptions = common::database_url().parse().unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect_with(options.application_name(&schema))
        .await
        .unwrap();
    let store = PostgresEventStore::with_pool(pool, EventStoreConfig::with_schema(schema)).unwrap();
    let pid = std::process::id();
    let result = store
        .append(
            "t",
            &StreamId::from(stream),
            ExpectedVersion::Exact(1),
            vec![NewEvent::new("Won", json!({ "pid": pid }))],
        )
        .await;
    match result {
        Ok(r) => println!("OUTCOME ok {pid} {}", r.new_version),
        Err(StoreError::Conflict { actual, .. }) => println!("OUTCOME conflict {pid} {actual}"),
        Err(e) => println!("OUTCOME error {pid} {e}"),
    }
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_racing_for_one_version_one_wins() {
    if let (Ok(schema), Ok(stream)) = (std::env::var(SCHEMA_VAR), std::env::var(STREAM_VAR)) {
        return writer(schema, stream).await;
    }
    let store = common::store().await;
    let schema = store.schema().to_owned();
    let observer = common::observer().await;
    for round in 0..3u64 {
        let id = StreamId::from(format!("race{round}"));
        store
            .append(
                "t",
                &id,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Opened", json!({}))],
            )
            .await
            .unwrap();
        // Both writers' statements wait behind this lock, then go at once.
        let blocker = common::lock_events(&observer, &schema).await;
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                tokio::process::Command::new(&exe)
                    .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
                    .env(SCHEMA_VAR, &schema)
                    .env(STREAM_VAR, id.as_str())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap()
            })
            .collect();
        common::wait_for_blocked(&observer, &schema, 2).await;
        blocker.rollback().await.unwrap();
        let mut outcomes = Vec::new();
        for child in children {
            let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
                .await
                .expect("writer process finished")
                .unwrap();
            assert!(out.status.success(), "writer process failed: {out:?}");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = stdout
                .lines()
                .find_map(|l| l.split_once("OUTCOME ").map(|(_, outcome)| outcome))
                .unwrap_or_else(|| panic!("no outcome in {stdout}"))
                .to_owned();
            outcomes.push(line);
        }
        let won: Vec<&String> = outcomes.iter().filter(|o| o.starts_with("ok ")).collect();
        let lost: Vec<&String> = outcomes.iter().filter(|o| o.starts_with("conflict ")).collect();
        assert_eq!((won.len(), lost.len()), (1, 1), "round {round}: {outcomes:?}");
        assert!(won[0].ends_with(" 2"), "the winner wrote version 2: {outcomes:?}");
        assert!(
            lost[0].ends_with(" 2"),
            "the loser was told the real version: {outcomes:?}"
        );

        let events: Vec<_> = store.read_stream(&id, 1).try_collect().await.unwrap();
        assert_eq!(events.len(), 2, "one event per version, the winner's");
        let winner_pid: u64 = won[0].split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(events[1].payload["pid"], winner_pid);
    }
}
