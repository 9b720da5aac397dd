//! The wire format: one Kafka message per event.
//!
//! - key: the stream id (so one stream stays in one partition, in order);
//! - value: the event envelope as JSON, the serde form of
//!   [`RecordedEvent`] (`global_position`, `stream_id`, `stream_type`,
//!   `version`, `event_id`, `event_type`, `schema_version`, `payload`,
//!   `metadata`, `recorded_at`);
//! - headers ([`headers`]): event id, event type, schema version, stream
//!   version, global position, stream type, and correlation / causation ids
//!   when the event has them, all as UTF-8 strings.
//!
//! The outbox poller, the built-in CDC relay and the shipped Debezium
//! configuration all produce this format. Debezium's outbox router encodes
//! the `metadata` column as a JSON *string*; [`decode_envelope`] accepts
//! both forms.

use es_core::{Metadata, RecordedEvent, StreamId};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::Deserialize;
use serde_json::Value;

/// Header names. Debezium's `table.fields.additional.placement` in
/// `deploy/debezium-connector.json` uses the same names.
pub mod headers {
    /// Event id (UUID).
    pub const EVENT_ID: &str = "es-event-id";
    /// Event type name.
    pub const EVENT_TYPE: &str = "es-event-type";
    /// Schema version of the payload.
    pub const SCHEMA_VERSION: &str = "es-schema-version";
    /// Version of the stream after the event.
    pub const STREAM_VERSION: &str = "es-stream-version";
    /// Global position in the store's log.
    pub const GLOBAL_POSITION: &str = "es-global-position";
    /// Stream type (aggregate type).
    pub const STREAM_TYPE: &str = "es-stream-type";
    /// Correlation id, when the event has one.
    pub const CORRELATION_ID: &str = "es-correlation-id";
    /// Causation id, when the event has one.
    pub const CAUSATION_ID: &str = "es-causation-id";
    /// On dead letters: the last error of the projector.
    pub const ERROR: &str = "es-error";
    /// On dead letters: how many attempts were made.
    pub const ATTEMPTS: &str = "es-attempts";
    /// On dead letters: `topic/partition/offset` of the original message.
    pub const ORIGIN: &str = "es-origin";
}

/// The envelope of `event` as JSON bytes.
pub fn encode_envelope(event: &RecordedEvent) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(event)
}

/// The headers of `event` (see the [module docs](self)).
pub fn event_headers(event: &RecordedEvent) -> OwnedHeaders {
    let mut pairs: Vec<(&str, String)> = vec![
        (headers::EVENT_ID, event.event_id.to_string()),
        (headers::EVENT_TYPE, event.event_type.clone()),
        (headers::SCHEMA_VERSION, event.schema_version.to_string()),
        (headers::STREAM_VERSION, event.version.to_string()),
        (headers::GLOBAL_POSITION, event.global_position.to_string()),
        (headers::STREAM_TYPE, event.stream_type.clone()),
    ];
    if let Some(id) = event.metadata.correlation_id {
        pairs.push((headers::CORRELATION_ID, id.to_string()));
    }
    if let Some(id) = event.metadata.causation_id {
        pairs.push((headers::CAUSATION_ID, id.to_string()));
    }
    pairs
        .into_iter()
        .fold(OwnedHeaders::new_with_capacity(8), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        })
}

/// The value of header `name` as a string, if present and UTF-8.
pub fn header_str<H: Headers>(headers: &H, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// The envelope as Debezium may send it: `metadata` either an object or a
/// JSON string holding one.
#[derive(Deserialize)]
struct WireEnvelope {
    global_position: u64,
    stream_id: StreamId,
    stream_type: String,
    version: u64,
    event_id: uuid::Uuid,
    event_type: String,
    schema_version: u32,
    payload: Value,
    #[serde(default)]
    metadata: Value,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Decodes a message value into the event it carries.
pub fn decode_envelope(bytes: &[u8]) -> Result<RecordedEvent, serde_json::Error> {
    let w: WireEnvelope = serde_json::from_slice(bytes)?;
    let metadata: Metadata = match w.metadata {
        Value::Null => Metadata::default(),
        Value::String(s) => serde_json::from_str(&s)?,
        other => serde_json::from_value(other)?,
    };
    let payload = match w.payload {
        // Debezium without `table.expand.json.payload` sends jsonb as a string.
        Value::String(s) if s.starts_with('{') || s.starts_with('[') => {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        other => other,
    };
    Ok(RecordedEvent {
        global_position: w.global_position,
        stream_id: w.stream_id,
        stream_type: w.stream_type,
        version: w.version,
        event_id: w.event_id,
        event_type: w.event_type,
        schema_version: w.schema_version,
        payload,
        metadata,
        recorded_at: w.recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> RecordedEvent {
        RecordedEvent {
            global_position: 7 << 20,
            stream_id: StreamId::from("acc-1"),
            stream_type: "account".into(),
            version: 3,
            event_id: uuid::Uuid::now_v7(),
            event_type: "MoneyDeposited".into(),
            schema_version: 2,
            payload: json!({"amount": "10.00"}),
            metadata: Metadata::correlated(uuid::Uuid::now_v7()).with_header("tenant", "t1"),
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn envelope_round_trips() {
        let e = event();
        assert_eq!(decode_envelope(&encode_envelope(&e).unwrap()).unwrap(), e);
    }

    #[test]
    fn debezium_style_string_metadata_and_payload_decode() {
        let e = event();
        let mut v = serde_json::to_value(&e).unwrap();
        v["metadata"] = Value::String(serde_json::to_string(&e.metadata).unwrap());
        v["payload"] = Value::String(e.payload.to_string());
        assert_eq!(decode_envelope(&serde_json::to_vec(&v).unwrap()).unwrap(), e);
    }

    #[test]
    fn headers_carry_ids_and_versions() {
        let e = event();
        let h = event_headers(&e);
        assert_eq!(header_str(&h, headers::EVENT_ID), Some(e.event_id.to_string()));
        assert_eq!(header_str(&h, headers::STREAM_VERSION).as_deref(), Some("3"));
        assert_eq!(header_str(&h, headers::SCHEMA_VERSION).as_deref(), Some("2"));
        assert_eq!(header_str(&h, headers::GLOBAL_POSITION), Some((7u64 << 20).to_string()));
        assert_eq!(
            header_str(&h, headers::CORRELATION_ID),
            e.metadata.correlation_id.map(|c| c.to_string())
        );
        assert_eq!(header_str(&h, headers::CAUSATION_ID), None);
        assert_eq!(header_str(&h, headers::EVENT_TYPE).as_deref(), Some("MoneyDeposited"));
    }
}
