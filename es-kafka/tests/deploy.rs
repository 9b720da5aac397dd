//! The shipped Debezium configuration produces this crate's message format.

use es_kafka::message::headers;
use es_kafka::TopicNaming;

#[test]
fn debezium_connector_routes_keys_and_headers_like_the_builtin_relay() {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("../deploy/debezium-connector.json")).expect("valid JSON");
    let c = &json["config"];
    assert_eq!(c["transforms.outbox.type"], "io.debezium.transforms.outbox.EventRouter");
    assert_eq!(
        c["transforms.outbox.table.field.event.key"], "stream_id",
        "key = stream id"
    );
    let topic = c["transforms.outbox.route.topic.replacement"]
        .as_str()
        .unwrap()
        .replace("${routedByValue}", "account");
    assert_eq!(topic, TopicNaming::default().topic_for("account"));
    let placement = c["transforms.outbox.table.fields.additional.placement"]
        .as_str()
        .unwrap();
    for (column, header) in [
        ("event_id", headers::EVENT_ID),
        ("event_type", headers::EVENT_TYPE),
        ("schema_version", headers::SCHEMA_VERSION),
        ("version", headers::STREAM_VERSION),
        ("global_position", headers::GLOBAL_POSITION),
        ("stream_type", headers::STREAM_TYPE),
    ] {
        assert!(
            placement.contains(&format!("{column}:header:{header}")),
            "{column} -> {header}"
        );
    }
    for field in [
        "global_position",
        "stream_id",
        "stream_type",
        "version",
        "event_id",
        "event_type",
        "schema_version",
        "metadata",
        "recorded_at",
    ] {
        assert!(
            placement.contains(&format!("{field}:envelope:{field}")),
            "envelope field {field}"
        );
    }
}
