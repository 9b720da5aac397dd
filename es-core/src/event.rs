//! The event envelope: what is appended ([`NewEvent`]) and what is read back
//! ([`RecordedEvent`]), with the [`StreamId`] and [`Metadata`] they carry.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Identifier of one event stream (one aggregate instance).
///
/// Cheap to clone (shared string). Any string works; UUIDs convert directly.
///
/// Every method you call with a stream id ([`Repository::execute`],
/// [`Repository::load`], views, shard routing, …) takes
/// `impl Into<StreamId>`: pass a `&str`, a `String`, a `&String`, a
/// [`Uuid`], or a `StreamId` (or a reference to one). Only the traits a
/// backend implements ([`EventStore`], [`SnapshotStore`], [`StateCache`])
/// take `&StreamId`, so that they stay usable as trait objects.
///
/// ```
/// use es_core::StreamId;
/// let id = StreamId::from("cart-42");
/// assert_eq!(id.as_str(), "cart-42");
/// let owned = String::from("cart-42");
/// assert_eq!(StreamId::from(&owned), id);
/// let from_uuid = StreamId::from(uuid::Uuid::nil());
/// assert_eq!(from_uuid.as_str(), "00000000-0000-0000-0000-000000000000");
/// ```
///
/// [`Repository::execute`]: crate::Repository::execute
/// [`Repository::load`]: crate::Repository::load
/// [`EventStore`]: crate::EventStore
/// [`SnapshotStore`]: crate::SnapshotStore
/// [`StateCache`]: crate::StateCache
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(Arc<str>);

impl StreamId {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl From<&str> for StreamId {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl From<String> for StreamId {
    fn from(s: String) -> Self {
        Self(Arc::from(s))
    }
}

impl From<Uuid> for StreamId {
    fn from(id: Uuid) -> Self {
        Self(Arc::from(id.hyphenated().to_string()))
    }
}

impl From<&String> for StreamId {
    fn from(s: &String) -> Self {
        Self(Arc::from(s.as_str()))
    }
}

impl From<&Uuid> for StreamId {
    fn from(id: &Uuid) -> Self {
        Self::from(*id)
    }
}

impl From<Arc<str>> for StreamId {
    fn from(s: Arc<str>) -> Self {
        Self(s)
    }
}

impl From<&StreamId> for StreamId {
    fn from(id: &StreamId) -> Self {
        id.clone()
    }
}

/// Context stored beside every event: who caused it and why.
///
/// `correlation_id` ties together everything one request caused;
/// `causation_id` names the message (command or event) that directly caused
/// this event; `actor_id` is the user or client on whose behalf it happened;
/// `headers` carry anything else (idempotency keys, fencing tokens, tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Id shared by everything one request or workflow caused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// Id of the command or event that caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The user or client on whose behalf the event was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// Free-form string headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl Metadata {
    /// Metadata with only a correlation id.
    pub fn correlated(correlation_id: Uuid) -> Self {
        Self {
            correlation_id: Some(correlation_id),
            ..Self::default()
        }
    }

    /// Returns `self` with one more header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }
}

/// An event ready to be appended: payload already encoded, id already chosen.
///
/// The event id makes appends idempotent: re-sending the same ids to the same
/// place in the same stream is acknowledged without storing anything twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique id of the event (UUIDv7 by default, so ids sort by time).
    pub event_id: Uuid,
    /// Name of the event type, e.g. `MoneyDeposited`.
    pub event_type: String,
    /// Version of the payload's schema, for upcasting.
    pub schema_version: u32,
    /// The encoded payload.
    pub payload: Value,
    /// Context of the event.
    pub metadata: Metadata,
    /// When the event happened, taken from the repository's clock.
    pub recorded_at: DateTime<Utc>,
}

impl NewEvent {
    /// A new event with a fresh UUIDv7, schema version 1, empty metadata and
    /// the current system time.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
            recorded_at: Utc::now(),
        }
    }

    /// Returns `self` with the given metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// Returns `self` with the given event id.
    #[must_use]
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }
}

/// An event as stored: the envelope plus the position the store gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global position in the store's log: strictly increasing in the order
    /// readers of the global log see events, not necessarily consecutive
    /// (PostgreSQL derives it from the writing transaction's id, so
    /// positions have gaps; in-memory and SQLite count 1, 2, 3...). 0 for
    /// an event not yet in the global log (a pending write-behind event).
    pub global_position: u64,
    /// Stream the event belongs to.
    pub stream_id: StreamId,
    /// Type of the stream (the aggregate type), e.g. `account`.
    pub stream_type: String,
    /// Version of the stream after this event (1-based, gapless).
    pub version: u64,
    /// Unique id of the event.
    pub event_id: Uuid,
    /// Name of the event type.
    pub event_type: String,
    /// Schema version of the payload as stored.
    pub schema_version: u32,
    /// The stored payload.
    pub payload: Value,
    /// Context of the event.
    pub metadata: Metadata,
    /// When the event was recorded.
    pub recorded_at: DateTime<Utc>,
}
