//! Upcasters of the account events.

use es_core::{Metadata, UpcastError, Upcaster, UpcasterRegistry};
use serde_json::Value;

/// Metadata header that held the owner's user id on version 1
/// `AccountCreated` events.
pub const OWNER_HEADER: &str = "owner_id";

/// `AccountCreated` v1 → v2: moves the owner's id from the `owner_id`
/// metadata header into the payload's `owner_id` field.
#[derive(Debug, Clone, Copy, Default)]
pub struct OwnerIdFromHeader;

impl Upcaster for OwnerIdFromHeader {
    fn event_type(&self) -> &str {
        "AccountCreated"
    }

    fn source_version(&self) -> u32 {
        1
    }

    fn upcast(&self, payload: Value) -> Result<Value, UpcastError> {
        Ok(payload)
    }

    fn upcast_event(&self, mut payload: Value, metadata: &Metadata) -> Result<Value, UpcastError> {
        let Some(owner) = metadata.headers.get(OWNER_HEADER) else {
            return Ok(payload);
        };
        let owner = uuid::Uuid::parse_str(owner)
            .map_err(|e| UpcastError(format!("owner_id header {owner:?} is not a UUID: {e}")))?;
        match payload.get_mut("AccountCreated").and_then(Value::as_object_mut) {
            Some(fields) => {
                fields.insert("owner_id".into(), Value::String(owner.to_string()));
                Ok(payload)
            }
            None => Err(UpcastError("payload is not {\"AccountCreated\": {...}}".into())),
        }
    }
}

/// Every upcaster of the account aggregate, for the repository and the
/// projections.
pub fn upcasters() -> UpcasterRegistry {
    let mut registry = UpcasterRegistry::new();
    registry.register(OwnerIdFromHeader);
    registry
}

#[cfg(test)]
mod tests {
    use es_core::{EventCodec, Metadata, RecordedEvent, StreamId};
    use serde_json::json;

    use super::*;
    use crate::domain::{AccountCreated, AccountEvent, Money};

    fn v1(metadata: Metadata) -> RecordedEvent {
        RecordedEvent {
            global_position: 1,
            stream_id: StreamId::from("a"),
            stream_type: "account".into(),
            version: 1,
            event_id: uuid::Uuid::nil(),
            event_type: "AccountCreated".into(),
            schema_version: 1,
            payload: json!({"AccountCreated": {"owner_name": "Ada", "initial_balance": 1.00}}),
            metadata,
            recorded_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn version_1_events_get_the_owner_from_their_header() {
        let codec = EventCodec::new(upcasters());
        let owner = uuid::Uuid::now_v7();
        let event: AccountEvent = codec
            .decode(&v1(Metadata::default().with_header(OWNER_HEADER, owner.to_string())))
            .unwrap();
        assert_eq!(
            event,
            AccountEvent::AccountCreated(AccountCreated {
                owner_name: "Ada".into(),
                initial_balance: "1.00".parse::<Money>().unwrap(),
                owner_id: Some(owner),
            })
        );
        let without: AccountEvent = codec.decode(&v1(Metadata::default())).unwrap();
        assert!(matches!(
            without,
            AccountEvent::AccountCreated(AccountCreated { owner_id: None, .. })
        ));
        let bad = codec.decode::<AccountEvent>(&v1(Metadata::default().with_header(OWNER_HEADER, "x")));
        assert!(bad.is_err());
    }
}
