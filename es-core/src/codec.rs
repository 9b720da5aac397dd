//! The event codec: typed events to stored payloads and back, with upcasting.

use serde_json::Value;

use crate::{DomainEvent, RecordedEvent, UpcasterRegistry};

/// Why an event could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// serde could not serialize the event.
    #[error("cannot encode {event_type}: {reason}")]
    Encode {
        /// The event type.
        event_type: String,
        /// serde's message.
        reason: String,
    },
    /// The payload does not deserialize into today's event type (unknown
    /// type, missing upcaster, corrupt payload).
    #[error("cannot decode {event_type} (schema v{schema_version}): {reason}")]
    Decode {
        /// The stored event type.
        event_type: String,
        /// The stored schema version.
        schema_version: u32,
        /// What went wrong.
        reason: String,
    },
}

/// Encodes events with serde_json and decodes them through an
/// [`UpcasterRegistry`].
///
/// The stored payload is exactly the serde form of the event value (for an
/// externally tagged enum, `{"Variant": {...}}`).
///
/// ```
/// use es_core::{DomainEvent, EventCodec};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum Ev { Added { n: u32 } }
/// impl DomainEvent for Ev { fn event_type(&self) -> &'static str { "Added" } }
///
/// let codec = EventCodec::default();
/// let payload = codec.encode(&Ev::Added { n: 2 }).unwrap();
/// let back: Ev = codec.decode_payload("Added", 1, payload).unwrap();
/// assert_eq!(back, Ev::Added { n: 2 });
/// ```
#[derive(Debug, Clone, Default)]
pub struct EventCodec {
    upcasters: UpcasterRegistry,
}

impl EventCodec {
    /// A codec that runs the given upcasters on read.
    pub fn new(upcasters: UpcasterRegistry) -> Self {
        Self { upcasters }
    }

    /// The registered upcasters.
    pub fn upcasters(&self) -> &UpcasterRegistry {
        &self.upcasters
    }

    /// Encodes an event into its stored payload.
    pub fn encode<E: DomainEvent>(&self, event: &E) -> Result<Value, CodecError> {
        serde_json::to_value(event).map_err(|e| CodecError::Encode {
            event_type: event.event_type().to_owned(),
            reason: e.to_string(),
        })
    }

    /// Decodes a stored payload, upcasting it first.
    pub fn decode_payload<E: DomainEvent>(
        &self,
        event_type: &str,
        schema_version: u32,
        payload: Value,
    ) -> Result<E, CodecError> {
        let decode_err = |reason: String| CodecError::Decode {
            event_type: event_type.to_owned(),
            schema_version,
            reason,
        };
        let (payload, _) = self
            .upcasters
            .upcast(event_type, schema_version, payload)
            .map_err(|e| decode_err(format!("upcasting failed: {e}")))?;
        serde_json::from_value(payload).map_err(|e| decode_err(e.to_string()))
    }

    /// Decodes a recorded event; its payload is cloned only if an upcaster
    /// must change it. Upcasters see the event's metadata
    /// ([`Upcaster::upcast_event`](crate::Upcaster::upcast_event)).
    pub fn decode<E: DomainEvent>(&self, event: &RecordedEvent) -> Result<E, CodecError> {
        if self.upcasters.applies_to(&event.event_type, event.schema_version) {
            let decode_err = |reason: String| CodecError::Decode {
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                reason,
            };
            let (payload, _) = self
                .upcasters
                .upcast_event(
                    &event.event_type,
                    event.schema_version,
                    event.payload.clone(),
                    &event.metadata,
                )
                .map_err(|e| decode_err(format!("upcasting failed: {e}")))?;
            return serde_json::from_value(payload).map_err(|e| decode_err(e.to_string()));
        }
        E::deserialize(&event.payload).map_err(|e| CodecError::Decode {
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            reason: e.to_string(),
        })
    }
}
