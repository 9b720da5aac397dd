//! Several appends inside one caller's transaction (`append_in_transaction`
//! more than once before the commit): each gets its own global positions.

use es_core::{EventFilter, EventStore, ExpectedVersion, NewEvent, StreamId};
use es_postgres::{testing, EventStoreConfig};
use serde_json::json;

#[tokio::test]
async fn appends_in_one_transaction_get_distinct_increasing_positions() {
    for outbox in [false, true] {
        let store = testing::store(EventStoreConfig {
            outbox,
            ..EventStoreConfig::with_schema(testing::fresh_schema("txa"))
        })
        .await
        .unwrap();
        let mut tx = store.pool().begin().await.unwrap();
        let p = store
            .append_in_transaction(
                &mut tx,
                "account",
                &StreamId::from("p"),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Opened", json!({}))],
            )
            .await
            .unwrap();
        let q = store
            .append_in_transaction(
                &mut tx,
                "account",
                &StreamId::from("q"),
                ExpectedVersion::NoStream,
                (0..3).map(|i| NewEvent::new("Deposited", json!({ "i": i }))).collect(),
            )
            .await
            .unwrap();
        let again = store
            .append_in_transaction(
                &mut tx,
                "account",
                &StreamId::from("p"),
                ExpectedVersion::Exact(1),
                vec![NewEvent::new("Deposited", json!({}))],
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();

        // Readers see the events once no older transaction of the shared
        // server (another test's) is still open.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let all = loop {
            let all = store.read_all(0, 100, &EventFilter::default()).await.unwrap();
            if all.len() >= 5 || std::time::Instant::now() >= deadline {
                break all;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let positions: Vec<u64> = all.iter().map(|e| e.global_position).collect();
        assert_eq!(positions.len(), 5, "outbox {outbox}: {positions:?}");
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        let streams: Vec<(&str, u64)> = all.iter().map(|e| (e.stream_id.as_str(), e.version)).collect();
        assert_eq!(
            streams,
            vec![("p", 1), ("q", 1), ("q", 2), ("q", 3), ("p", 2)],
            "in append order"
        );
        assert_eq!((p.new_version, q.new_version, again.new_version), (1, 3, 2));
        let returned: Vec<u64> = [p.positions, q.positions, again.positions].concat();
        assert_eq!(returned, positions, "the positions returned are the stored ones");
        if outbox {
            let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.outbox", store.schema()))
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(rows, 5);
        }
    }
}

/// An `Any` append in a transaction that waits for another transaction's
/// append to the same stream goes after it once that one commits: `Any`
/// never conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_any_append_waiting_for_another_writer_goes_after_it() {
    let store = testing::store(EventStoreConfig::with_schema(testing::fresh_schema("txany")))
        .await
        .unwrap();
    let stream = StreamId::from("s");
    let mut first = store.pool().begin().await.unwrap();
    store
        .append_in_transaction(
            &mut first,
            "account",
            &stream,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Opened", json!({}))],
        )
        .await
        .unwrap();
    let second = {
        let (store, stream) = (store.clone(), stream.clone());
        tokio::spawn(async move {
            let mut tx = store.pool().begin().await.unwrap();
            let result = store
                .append_in_transaction(
                    &mut tx,
                    "account",
                    &stream,
                    ExpectedVersion::Any,
                    vec![NewEvent::new("Deposited", json!({}))],
                )
                .await;
            tx.commit().await.unwrap();
            result
        })
    };
    // The second writer is blocked on the first one's row before the first
    // commits (so its retry is what is tested).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let waiting = loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1",
        )
        .bind(format!("%{}.events%", store.schema()))
        .fetch_one(store.pool())
        .await
        .unwrap();
        if n > 0 || std::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(waiting, 1, "the second append waits for the first transaction");
    assert!(!second.is_finished());
    first.commit().await.unwrap();
    let result = second.await.unwrap().expect("an Any append does not conflict");
    assert_eq!((result.first_version, result.new_version), (2, 2));
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
}
