//! Shard fences on PostgreSQL: the fence check is atomic with the append.
//!
//! The race is made deterministic with a second connection that holds the
//! shard's lock the way an append in flight or a raise in flight does.
mod common;

use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, NewEvent, ShardFence, StoreError, StreamId};
use es_postgres::PostgresEventStore;
use serde_json::json;

fn event(n: u64) -> NewEvent {
    NewEvent::new("Fenced", json!({ "n": n }))
}

/// A transaction holding what an append in flight holds (`"append"`: the
/// fence lock, shared) or what a raise to token 5 in flight holds (the
/// lock, exclusively, and the raised row, not yet committed).
async fn shard_locked(store: &PostgresEventStore, shard: i32, how: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = store.pool().begin().await.unwrap();
    let key = format!("{}.shard_fences", store.schema());
    if how == "append" {
        sqlx::query(&format!("SELECT pg_advisory_xact_lock_shared(hashtext('{key}'), -1)"))
            .execute(&mut *tx)
            .await
            .unwrap();
    } else {
        sqlx::query(&format!("SELECT pg_advisory_xact_lock(hashtext('{key}'), -1)"))
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(&format!(
            "UPDATE {}.shard_fences SET token = 5 WHERE shard = $1",
            store.schema()
        ))
        .bind(shard)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx
}

/// A raise waits for the appends in flight under the old token, so none
/// of them is stored after the raise returns.
#[tokio::test]
async fn a_raise_waits_for_appends_in_flight() {
    let store = common::store().await;
    store.raise_fence(ShardFence::new(7, 1)).await.unwrap();
    let in_flight = shard_locked(&store, 7, "append").await;
    let raising = {
        let store = store.clone();
        tokio::spawn(async move { store.raise_fence(ShardFence::new(7, 2)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !raising.is_finished(),
        "the raise returned while an append under token 1 was in flight"
    );
    in_flight.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), raising)
        .await
        .expect("the raise finishes once the append is done")
        .unwrap()
        .unwrap();
}

/// An append that started while a raise was in flight is judged against
/// the raised token once the raise commits, not against what its snapshot
/// saw when it started.
#[tokio::test]
async fn an_append_racing_a_raise_sees_the_raised_token() {
    // One event (the one-row statement) and two (the many-row statement).
    for (shard, events) in [(9, 1u64), (10, 2)] {
        let store = common::store().await;
        store.raise_fence(ShardFence::new(shard, 4)).await.unwrap();
        let raise = shard_locked(&store, shard as i32, "raise").await;
        let id = StreamId::from(format!("racing-{}", uuid::Uuid::now_v7()));
        let appending = {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let batch = (1..=events).map(event).collect();
                store
                    .append_fenced("t", &id, ExpectedVersion::NoStream, batch, ShardFence::new(shard, 4))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !appending.is_finished(),
            "the append did not wait for the raise in flight"
        );
        raise.commit().await.unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), appending)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(result, Err(StoreError::Fenced { shard: s, token: 4, current: 5 }) if s == shard),
            "{result:?}"
        );
        assert_eq!(
            store.stream_version(&id).await.unwrap(),
            0,
            "nothing of the fenced writer is stored"
        );
    }
}

/// Unfenced and fenced appends in one batch: each is judged on its own.
#[tokio::test]
async fn mixed_batches_fence_only_the_stale_appends() {
    let store = common::store().await;
    store.raise_fence(ShardFence::new(1, 10)).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..48u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let id = StreamId::from(format!("mixed-{n}-{}", uuid::Uuid::now_v7()));
            let result = match n % 3 {
                0 => store.append("t", &id, ExpectedVersion::NoStream, vec![event(n)]).await,
                1 => {
                    store
                        .append_fenced(
                            "t",
                            &id,
                            ExpectedVersion::NoStream,
                            vec![event(n), event(n)],
                            ShardFence::new(1, 10),
                        )
                        .await
                }
                _ => {
                    store
                        .append_fenced(
                            "t",
                            &id,
                            ExpectedVersion::NoStream,
                            vec![event(n)],
                            ShardFence::new(1, 9),
                        )
                        .await
                }
            };
            (n, id, result)
        }));
    }
    for task in tasks {
        let (n, id, result) = task.await.unwrap();
        let version = store.stream_version(&id).await.unwrap();
        match n % 3 {
            0 => assert_eq!((result.unwrap().new_version, version), (1, 1)),
            1 => assert_eq!((result.unwrap().new_version, version), (2, 2)),
            _ => {
                assert!(
                    matches!(result, Err(StoreError::Fenced { current: 10, .. })),
                    "{result:?}"
                );
                assert_eq!(version, 0);
            }
        }
    }
}

/// A raiser that stalls between its upsert and its COMMIT (here: its
/// answers held back on the way, as for a paused process or a cut network)
/// holds the lock every fenced append waits for. The server ends its idle
/// transaction after `RAISE_IDLE_LIMIT_MS` (2 s): the raise is rolled
/// back, and the other instances' fenced appends go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_raiser_stalled_before_its_commit_does_not_stop_the_fenced_appends() {
    use std::str::FromStr;

    use common::proxy::Proxy;
    use es_postgres::EventStoreConfig;

    let observer = common::observer().await;
    let other = common::store().await;
    other.raise_fence(ShardFence::new(3, 1)).await.unwrap();
    let direct = sqlx::postgres::PgConnectOptions::from_str(&common::database_url()).unwrap();
    let proxy = Proxy::start(direct.get_host().to_owned(), direct.get_port()).await;
    let name = format!("{}_raiser", other.schema());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(direct.host("127.0.0.1").port(proxy.port).application_name(&name))
        .await
        .unwrap();
    let raiser = PostgresEventStore::with_pool(
        pool,
        EventStoreConfig {
            transient_retry: es_core::RetryPolicy::never(),
            ..EventStoreConfig::with_schema(other.schema().to_owned())
        },
    )
    .unwrap();

    // The fence's row is locked, so the raise, once it holds the lock,
    // waits in its upsert; its answers are held from then on.
    let mut row = observer.begin().await.unwrap();
    sqlx::query(&format!(
        "SELECT token FROM {}.shard_fences WHERE shard = 3 FOR UPDATE",
        other.schema()
    ))
    .execute(&mut *row)
    .await
    .unwrap();
    let raising = tokio::spawn(async move { raiser.raise_fence(ShardFence::new(3, 2)).await });
    common::wait_for_blocked(&observer, &name, 1).await;
    proxy.hold(true);
    row.commit().await.unwrap();

    // The upsert is done; the raiser never hears of it, so its COMMIT
    // never comes, and its transaction holds the lock while idle.
    let appended = tokio::time::timeout(
        Duration::from_secs(20),
        other.append_fenced(
            "t",
            &StreamId::from("after-a-stalled-raise"),
            ExpectedVersion::NoStream,
            vec![event(1)],
            ShardFence::new(3, 1),
        ),
    )
    .await
    .expect("a fenced append waited for a stalled raiser");
    assert!(
        appended.is_ok(),
        "the stalled raise was rolled back, token 1 still holds: {appended:?}"
    );
    let token: i64 = sqlx::query_scalar(&format!(
        "SELECT token FROM {}.shard_fences WHERE shard = 3",
        other.schema()
    ))
    .fetch_one(&observer)
    .await
    .unwrap();
    assert_eq!(token, 1, "the stalled raise did not commit");
    raising.abort();
    drop(proxy);
}
