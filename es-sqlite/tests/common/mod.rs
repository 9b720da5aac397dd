//! Test support: stores on temporary files, a second connection that holds
//! the database's write lock, polling.
#![allow(dead_code)]

use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use es_sqlite::testing::TempDatabase;
use es_sqlite::{SqliteConfig, SqliteEventStore};
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};

/// An event of type `Happened` with payload `{"n": n}`.
pub(crate) fn ev(n: u64) -> NewEvent {
    NewEvent::new("Happened", json!({ "n": n }))
}

/// A store on `temp`'s file.
pub(crate) async fn open(temp: &TempDatabase, config: SqliteConfig) -> SqliteEventStore {
    SqliteEventStore::connect(&temp.url(), config)
        .await
        .expect("open store")
}

/// A connection of its own to `temp`'s file that has taken the write lock
/// (`BEGIN IMMEDIATE`): every writer of the file waits until
/// [`release`] (or fails after its busy timeout).
pub(crate) async fn hold_write_lock(temp: &TempDatabase) -> SqliteConnection {
    let mut conn = SqliteConnectOptions::new()
        .filename(temp.path())
        .connect()
        .await
        .expect("second connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("take the write lock");
    conn
}

/// Ends the transaction of [`hold_write_lock`].
pub(crate) async fn release(mut conn: SqliteConnection) {
    sqlx::query("ROLLBACK")
        .execute(&mut conn)
        .await
        .expect("release the lock");
}

/// Appends one event to `stream` at any version; its position.
pub(crate) async fn append(store: &SqliteEventStore, stream: &str, event: NewEvent) -> u64 {
    store
        .append("tally", &StreamId::from(stream), ExpectedVersion::Any, vec![event])
        .await
        .expect("append")
        .positions[0]
}

/// Polls `check` every 10 ms until it holds, for at most `secs` seconds;
/// whether it did.
pub(crate) async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
