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
