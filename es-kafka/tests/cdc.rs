//! The built-in CDC relay reading a real logical replication slot on the
//! real PostgreSQL (wal_level=logical, see scripts/test.sh). Every test
//! drops its slot, also when it fails.

mod common;

use std::collections::BTreeMap;

use common::{append_n, assert_complete_in_order, relay, with_slot, Kafka};
use es_core::{EventStore, ExpectedVersion, NewEvent, StreamId};
use es_kafka::CdcRelay;
use serde_json::json;

async fn drain(r: &CdcRelay) -> usize {
    let mut published = 0;
    loop {
        let o = r.relay_once().await.unwrap();
        if o.transactions == 0 {
            return published;
        }
        published += o.published;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_committed_events_from_a_real_slot_in_order_and_never_rolled_back_ones() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 3).await;
    let store = common::store(false).await;
    append_n(&store, "account", "before", 1).await; // before the slot: not emitted
    let (store, kafka) = (&store, &kafka);
    with_slot(store, kafka, |slot| async move {
        append_n(store, "account", "c1", 4).await;
        append_n(store, "account", "c2", 2).await;
        let conflict = store
            .append(
                "account",
                &StreamId::from("c1"),
                ExpectedVersion::Exact(1),
                vec![NewEvent::new("X", json!({}))],
            )
            .await;
        assert!(conflict.is_err());
        let mut tx = store.pool().begin().await.unwrap();
        store
            .append_in_transaction(
                &mut tx,
                "account",
                &StreamId::from("ghost"),
                ExpectedVersion::NoStream,
                vec![NewEvent::new("X", json!({}))],
            )
            .await
            .unwrap();
        tx.rollback().await.unwrap();

        let r = relay(store, kafka.publisher(), &slot);
        assert_eq!(drain(&r).await, 6);
        let reads = kafka.read_topic(&topic).await;
        assert_eq!(reads.len(), 6);
        assert_complete_in_order(&reads, &BTreeMap::from([("c1".into(), 4), ("c2".into(), 2)]));
        // Same envelope as the store holds.
        let stored = store.find_event(reads[0].event.event_id).await.unwrap().unwrap();
        assert_eq!(reads[0].event, stored);
        // Nothing is decoded twice (the slot's movement is checked in
        // guarantees_cdc.rs).
        assert_eq!(r.relay_once().await.unwrap().published, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_after_the_acks_but_before_advancing_republishes_everything() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 2).await;
    let store = common::store(false).await;
    let (store, kafka) = (&store, &kafka);
    with_slot(store, kafka, |slot| async move {
        append_n(store, "account", "r1", 3).await;
        append_n(store, "account", "r2", 2).await;
        let publisher = kafka.publisher();
        let first = relay(store, publisher.clone(), &slot);
        let batch = first.read_batch().await.unwrap();
        assert_eq!(batch.events.len(), 5);
        let events: Vec<_> = batch.events.iter().map(|(e, _)| e.clone()).collect();
        assert!(publisher.publish(&events).await.iter().all(Result::is_ok));
        drop(first); // dies before pg_replication_slot_advance

        let second = relay(store, publisher.clone(), &slot);
        assert_eq!(drain(&second).await, 5, "republished, nothing skipped");
        let reads = kafka.read_topic(&topic).await;
        assert_eq!(reads.len(), 10);
        assert_complete_in_order(&reads, &BTreeMap::from([("r1".into(), 3), ("r2".into(), 2)]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_slot_does_not_advance_past_unacknowledged_events() {
    let kafka = Kafka::start();
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return;
    }
    let topic = kafka.topic("account", 2).await;
    let store = common::store(false).await;
    let (store, kafka) = (&store, &kafka);
    with_slot(store, kafka, |slot| async move {
        append_n(store, "account", "d1", 2).await;
        let r = relay(store, kafka.publisher(), &slot);
        // The commit of d1's first append (transactions of other tests'
        // schemas, without events, may come before it and may be passed).
        let peeked = r.read_batch().await.unwrap();
        let first_commit = peeked
            .transactions
            .iter()
            .find(|(_, n)| *n > 0)
            .map(|(lsn, _)| lsn.clone())
            .unwrap();
        let mock = kafka.mock.as_ref().unwrap();
        mock.broker_down(1).unwrap();
        let err = r.relay_once().await.unwrap_err();
        assert!(matches!(err, es_kafka::CdcError::Publish { failed: 2, .. }), "{err}");
        let after = r.slot_status().await.unwrap().confirmed_flush_lsn.unwrap();
        let held: bool = sqlx::query_scalar("SELECT $1::pg_lsn < $2::pg_lsn")
            .bind(&after)
            .bind(&first_commit)
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert!(held, "slot at {after}, must stay before d1's commit {first_commit}");
        mock.broker_up(1).unwrap();
        assert_eq!(drain(&r).await, 2);
        let reads = kafka.read_topic(&topic).await;
        assert_complete_in_order(&reads, &BTreeMap::from([("d1".into(), 2)]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_slot_status_is_read_without_a_relay_and_follows_the_relay() {
    let kafka = Kafka::start();
    let _topic = kafka.topic("account", 1).await;
    let store = common::store(false).await;
    let missing = es_kafka::cdc::slot_status(store.pool(), "es_kafka_no_such_slot")
        .await
        .unwrap();
    assert_eq!(
        missing,
        es_kafka::cdc::SlotStatus {
            exists: false,
            confirmed_flush_lsn: None,
            retained_bytes: None,
            lag_bytes: None,
        }
    );
    let (store, kafka) = (&store, &kafka);
    with_slot(store, kafka, |slot| async move {
        append_n(store, "account", "s1", 3).await;
        let behind = es_kafka::cdc::slot_status(store.pool(), &slot).await.unwrap();
        assert!(behind.exists);
        assert!(behind.lag_bytes.unwrap() > 0, "three appends not relayed: {behind:?}");
        let r = relay(store, kafka.publisher(), &slot);
        assert_eq!(r.relay_once().await.unwrap().published, 3);
        let relayed = es_kafka::cdc::slot_status(store.pool(), &slot).await.unwrap();
        assert_eq!(
            relayed.confirmed_flush_lsn,
            r.slot_status().await.unwrap().confirmed_flush_lsn
        );
        let moved: bool = sqlx::query_scalar("SELECT $1::pg_lsn > $2::pg_lsn")
            .bind(relayed.confirmed_flush_lsn.as_deref())
            .bind(behind.confirmed_flush_lsn.as_deref())
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert!(moved, "the relay advanced the slot: {behind:?} -> {relayed:?}");
    })
    .await;
}

/// Two relays on one slot, as two instances of a deployment run them: one
/// holds the slot's turn and publishes, the other stands by (healthy); each
/// event reaches the topic once; when the first stops, the second takes
/// over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_one_slot_take_turns_and_publish_each_event_once() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 2).await;
    let store = common::store(false).await;
    let (store, kafka, topic) = (&store, &kafka, &topic);
    with_slot(store, kafka, |slot| async move {
        let start = |r: CdcRelay| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                r.run(async {
                    let _ = stopped.await;
                })
                .await;
            });
            (stop, task)
        };
        let first = relay(store, kafka.publisher(), &slot);
        let (stop_first, first_task) = start(first.clone());
        common::eventually("the first relay's round", || async {
            first.health().last_round_at.map(|_| ())
        })
        .await;
        let second = relay(store, kafka.publisher(), &slot);
        let (stop_second, second_task) = start(second.clone());
        common::eventually("the second relay standing by", || async {
            second.health().standby.then_some(())
        })
        .await;

        append_n(store, "account", "t1", 20).await;
        append_n(store, "account", "t2", 10).await;
        common::eventually("30 events published", || async {
            (first.health().published_total >= 30).then_some(())
        })
        .await;
        let health = second.health();
        assert!(health.standby && health.healthy, "{health:?}");
        assert_eq!(health.published_total, 0);
        assert_eq!(health.failed_rounds_total, 0, "no round failed on the slot being busy");

        // The first stops: the second takes the turn and goes on.
        stop_first.send(()).unwrap();
        first_task.await.unwrap();
        append_n(store, "account", "t1", 5).await;
        common::eventually("the second relay publishing", || async {
            (second.health().published_total >= 5).then_some(())
        })
        .await;
        assert!(!second.health().standby);
        let reads = kafka.read_topic(topic).await;
        assert_eq!(reads.len(), 35, "each event once");
        assert_complete_in_order(&reads, &BTreeMap::from([("t1".into(), 25), ("t2".into(), 10)]));
        stop_second.send(()).unwrap();
        second_task.await.unwrap();
    })
    .await;
}
