//! The publisher on its own: topic per stream type, key, headers, envelope.

mod common;

use common::Kafka;
use es_core::{Metadata, RecordedEvent, StreamId};
use es_kafka::published_prefix;
use serde_json::json;

fn event(stream_type: &str, stream: &str, version: u64) -> RecordedEvent {
    RecordedEvent {
        global_position: version << 20,
        stream_id: StreamId::from(stream),
        stream_type: stream_type.into(),
        version,
        event_id: uuid::Uuid::now_v7(),
        event_type: "Happened".into(),
        schema_version: 1,
        payload: json!({"n": version}),
        metadata: Metadata {
            causation_id: Some(uuid::Uuid::now_v7()),
            ..Metadata::correlated(uuid::Uuid::now_v7())
        },
        recorded_at: chrono::Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_stream_type_keys_by_stream_and_acknowledges_every_event() {
    let kafka = Kafka::start();
    let accounts = kafka.topic("account", 2).await;
    let transfers = kafka.topic("transfer", 1).await;
    let publisher = kafka.publisher();
    let events = vec![
        event("account", "a", 1),
        event("transfer", "t", 1),
        event("account", "a", 2),
    ];
    let results = publisher.publish(&events).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(published_prefix(&events, &results), vec![0, 1, 2]);
    // Same stream, same partition, increasing offsets.
    let (a1, a2) = (results[0].as_ref().unwrap(), results[2].as_ref().unwrap());
    assert_eq!(a1.partition, a2.partition);
    assert!(a1.offset < a2.offset);

    let read = kafka.read_topic(&accounts).await;
    assert_eq!(
        read.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
        vec![events[0].clone(), events[2].clone()]
    );
    let read = kafka.read_topic(&transfers).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].key, "t");
    assert_eq!(read[0].event, events[1]);
}

/// The build has TLS and SASL: a publisher for a `SASL_SSL` listener with
/// SCRAM and a private CA is created (librdkafka built without OpenSSL
/// refuses `security.protocol` values other than `plaintext` and
/// `sasl_plaintext` when the client is created).
#[test]
fn tls_and_sasl_settings_are_accepted() {
    let dir = std::env::temp_dir().join(format!("es-kafka-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("the openssl command line tool");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let env = |k: &str| {
        Some(match k {
            "KAFKA_SECURITY_PROTOCOL" => "SASL_SSL".to_owned(),
            "KAFKA_SSL_CA_LOCATION" => ca.display().to_string(),
            "KAFKA_SASL_MECHANISM" => "SCRAM-SHA-512".to_owned(),
            "KAFKA_SASL_USERNAME" => "bank".to_owned(),
            "KAFKA_SASL_PASSWORD" => "secret".to_owned(),
            _ => return None,
        })
    };
    let config = es_kafka::PublisherConfig {
        extra: es_kafka::security_settings(env),
        ..es_kafka::PublisherConfig::default()
    };
    assert_eq!(config.extra.len(), 5);
    let created = es_kafka::KafkaPublisher::new(&config);
    std::fs::remove_dir_all(&dir).unwrap();
    created.expect("TLS and SASL are built in");
    let plain = es_kafka::PublisherConfig {
        extra: [("security.protocol".to_owned(), "ssl".to_owned())].into(),
        ..es_kafka::PublisherConfig::default()
    };
    es_kafka::KafkaPublisher::new(&plain).expect("TLS with the system's CAs");
}

/// A one-partition topic and a publisher (waiting 3 s for
/// acknowledgements) that has delivered event 1 of `stream`, so an outage
/// finds it connected; `None` without the mock cluster.
async fn connected(kafka: &Kafka, stream: &str) -> Option<(String, std::sync::Arc<es_kafka::KafkaPublisher>)> {
    if !kafka.is_mock() {
        eprintln!("skipped: needs the mock cluster to take the broker down");
        return None;
    }
    let topic = kafka.topic("account", 1).await;
    let publisher = kafka.publisher();
    let first = publisher.publish(&[event("account", stream, 1)]).await;
    assert!(first.iter().all(Result::is_ok), "{first:?}");
    Some((topic, publisher))
}

/// Per stream, the topic never shows an event whose predecessor is
/// missing, even when a broker outage ends while messages wait. librdkafka
/// fails a message that waited longer than its `message.timeout.ms` and
/// still sends the later messages of the partition: here event 2 is handed
/// over, event 3 two seconds later, the broker is down from before the
/// first until after event 2's wait ran out and back before event 3's. With
/// a librdkafka timeout, event 2 failed and event 3 went out (the topic
/// read 1, 3). The publisher gives librdkafka no timeout; its own wait ends
/// instead, and the message stays queued and goes out in order, ahead of
/// event 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_event_never_overtakes_one_that_waited_through_an_outage() {
    let kafka = Kafka::start();
    let (Some(mock), Some((topic, publisher))) = (kafka.mock.as_ref(), connected(&kafka, "k").await) else {
        return;
    };

    mock.broker_down(1).unwrap();
    let started = std::time::Instant::now();
    let second = tokio::spawn({
        let p = std::sync::Arc::clone(&publisher);
        async move { p.publish(&[event("account", "k", 2)]).await }
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let third = tokio::spawn({
        let p = std::sync::Arc::clone(&publisher);
        async move { p.publish(&[event("account", "k", 3)]).await }
    });
    let second = second.await.unwrap();
    assert!(second[0].is_err(), "acknowledged while the broker is down: {second:?}");
    // Event 2's wait is over (3 s); event 3's has about 1.5 s left.
    tokio::time::sleep(std::time::Duration::from_millis(3_500).saturating_sub(started.elapsed())).await;
    mock.broker_up(1).unwrap();
    let third = third.await.unwrap();
    publisher.flush(std::time::Duration::from_secs(30)).unwrap();

    let reads = kafka.read_topic(&topic).await;
    let versions: Vec<u64> = reads.iter().map(|r| r.event.version).collect();
    let mut high = 0;
    for v in &versions {
        assert!(
            *v <= high + 1,
            "version {v} after {high} on the topic: {versions:?} ({third:?})"
        );
        high = high.max(*v);
    }
    if third[0].is_ok() {
        assert_eq!(high, 3, "{versions:?}");
    }
}

/// After a wait that ended with its message still queued, the next call
/// queues nothing while the broker stays down (`Behind`), so an outage of
/// many rounds leaves one copy of the events queued, not one per round;
/// after the broker returns, the queued copy goes out, then the events
/// published again, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_wait_left_messages_queued_the_next_call_queues_nothing() {
    let kafka = Kafka::start();
    let (Some(mock), Some((topic, publisher))) = (kafka.mock.as_ref(), connected(&kafka, "warm").await) else {
        return;
    };
    let (e1, e2) = (event("account", "q", 1), event("account", "q", 2));

    mock.broker_down(1).unwrap();
    let first = publisher.publish(std::slice::from_ref(&e1)).await;
    assert!(
        matches!(first[0], Err(es_kafka::PublishError::Unacknowledged { .. })),
        "{first:?}"
    );
    for _ in 0..2 {
        let again = publisher.publish(&[e1.clone(), e2.clone()]).await;
        assert!(
            again
                .iter()
                .all(|r| matches!(r, Err(es_kafka::PublishError::Behind { waiting, .. }) if *waiting > 0)),
            "{again:?}"
        );
    }
    mock.broker_up(1).unwrap();
    // The first call normally gets through; one more is allowed for a
    // reconnection slower than the 3 s wait on a loaded machine.
    let mut attempts = 1;
    let mut after = publisher.publish(&[e1.clone(), e2.clone()]).await;
    while !after.iter().all(Result::is_ok) && attempts < 10 {
        attempts += 1;
        after = publisher.publish(&[e1.clone(), e2.clone()]).await;
    }
    assert!(after.iter().all(Result::is_ok), "{after:?}");

    let reads = kafka.read_topic(&topic).await;
    let versions: Vec<u64> = reads.iter().filter(|r| r.key == "q").map(|r| r.event.version).collect();
    if attempts == 1 {
        assert_eq!(versions, vec![1, 1, 2], "the queued copy, then the events again");
    }
    let mut high = 0;
    for v in &versions {
        assert!(*v <= high + 1, "version {v} after {high}: {versions:?}");
        high = high.max(*v);
    }
    assert_eq!(high, 2, "{versions:?}");
}
