//! Test support: every test gets its own schema in the test database
//! (`es_postgres::testing`).
#![allow(dead_code)]

pub(crate) mod proxy;

use es_postgres::{testing, EventStoreConfig, PostgresEventStore};

#[allow(unused_imports)]
pub(crate) use es_postgres::testing::{database_url, ensure_database};

/// A fresh schema name.
pub(crate) fn schema(prefix: &str) -> String {
    testing::fresh_schema(prefix)
}

/// A migrated store in a fresh schema.
pub(crate) async fn store_with(config: EventStoreConfig) -> PostgresEventStore {
    testing::store(config).await.expect("test store")
}

/// A migrated store in a fresh schema with test-sized pools.
pub(crate) async fn store() -> PostgresEventStore {
    store_with(EventStoreConfig {
        max_connections: 6,
        ..EventStoreConfig::with_schema(schema("t"))
    })
    .await
}

/// A plain pool on the test database (no `application_name`), for a test
/// to look at or lock things beside the store.
pub(crate) async fn observer() -> sqlx::PgPool {
    ensure_database().await.expect("test database");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(&database_url())
        .await
        .expect("observer pool")
}

/// Takes `LOCK TABLE {schema}.events IN EXCLUSIVE MODE` in a transaction
/// of `pool`: every append of the schema waits until it ends.
pub(crate) async fn lock_events(pool: &sqlx::PgPool, schema: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(&format!("LOCK TABLE {schema}.events IN EXCLUSIVE MODE"))
        .execute(&mut *tx)
        .await
        .expect("lock events");
    tx
}

/// The backends of connections named `application_name` that wait for a
/// lock, polled until there are `n` (a minute at most).
pub(crate) async fn wait_for_blocked(observer: &sqlx::PgPool, application_name: &str, n: usize) -> Vec<i32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
        )
        .bind(application_name)
        .fetch_all(observer)
        .await
        .expect("pg_stat_activity");
        if pids.len() >= n {
            return pids;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} blocked backends of {application_name} expected, {} seen",
            pids.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The head position once every append so far is visible (no gap open).
pub(crate) async fn settled_head(store: &PostgresEventStore) -> u64 {
    use es_core::EventStore;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let visible = store.head_position().await.expect("head");
        let committed: i64 = sqlx::query_scalar(&format!(
            "SELECT coalesce(max(global_position), 0) FROM {}.events",
            store.schema()
        ))
        .fetch_one(store.pool())
        .await
        .expect("max position");
        if visible == committed.max(0) as u64 {
            return visible;
        }
        assert!(std::time::Instant::now() < deadline, "a gap stayed open");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An append queued behind a busy writer, not answered yet.
pub(crate) type Queued<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<es_core::AppendResult, es_core::StoreError>> + Send + 'a>,
>;

/// Queues one append per id (a new stream of type `t`, with `events(i)`):
/// each is polled once, which puts it on the store's queue, and must then
/// be waiting for its answer (the writer is busy, see the tests' blockers).
pub(crate) async fn queue_appends<'a>(
    store: &'a PostgresEventStore,
    ids: &'a [es_core::StreamId],
    mut events: impl FnMut(usize) -> Vec<es_core::NewEvent>,
) -> Vec<Queued<'a>> {
    use es_core::EventStore;
    let mut queued = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let mut append: Queued<'a> = Box::pin(tokio::task::unconstrained(store.append(
            "t",
            id,
            es_core::ExpectedVersion::NoStream,
            events(i),
        )));
        assert!(futures::poll!(append.as_mut()).is_pending());
        queued.push(append);
    }
    queued
}
