//! How pending appends are kept in Redis: the body of an append (JSON)
//! and the entries of the pending lists.

use es_core::{NewEvent, RecordedEvent, StoreError, StreamId};
use serde::{Deserialize, Serialize};

/// One admitted append as stored in the stream's pending hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingBody {
    /// The stream's type.
    #[serde(rename = "t")]
    pub(crate) stream_type: String,
    /// The events, in order.
    #[serde(rename = "e")]
    pub(crate) events: Vec<NewEvent>,
}

/// The same, borrowed, for encoding an append without copying it.
#[derive(Serialize)]
pub(crate) struct PendingBodyRef<'a> {
    #[serde(rename = "t")]
    pub(crate) stream_type: &'a str,
    #[serde(rename = "e")]
    pub(crate) events: &'a [NewEvent],
}

impl PendingBodyRef<'_> {
    pub(crate) fn encode(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Backend {
            operation: "encode pending append",
            source: Box::new(e),
        })
    }
}

impl PendingBody {
    #[cfg(test)]
    pub(crate) fn encode(&self) -> Result<String, StoreError> {
        PendingBodyRef {
            stream_type: &self.stream_type,
            events: &self.events,
        }
        .encode()
    }

    pub(crate) fn decode(stream_id: &StreamId, first_version: u64, body: &str) -> Result<Self, StoreError> {
        serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
            stream_id: stream_id.clone(),
            version: first_version,
            reason: format!("pending append in redis does not decode: {e}"),
        })
    }

    /// The events as a reader sees them before they reach the global log
    /// (global position 0).
    pub(crate) fn recorded(self, stream_id: &StreamId, first_version: u64) -> impl Iterator<Item = RecordedEvent> + '_ {
        let stream_type = self.stream_type;
        self.events.into_iter().enumerate().map(move |(i, e)| RecordedEvent {
            global_position: 0,
            stream_id: stream_id.clone(),
            stream_type: stream_type.clone(),
            version: first_version + i as u64,
            event_id: e.event_id,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload,
            metadata: e.metadata,
            recorded_at: e.recorded_at,
        })
    }
}

/// An entry of a pending list: `<admitted ms>:<first version>:<stream>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// When the append was admitted (ms since the Unix epoch, the
    /// admitting process's clock).
    pub(crate) admitted_ms: i64,
    /// Version of its first event.
    pub(crate) first_version: u64,
    /// Its stream.
    pub(crate) stream_id: StreamId,
}

impl Entry {
    /// `None` for anything the admission script does not write, a first
    /// version of 0 or beyond a store's `i64::MAX` included (the flusher
    /// computes the version before it and the one after the append).
    pub(crate) fn parse(raw: &str) -> Option<Self> {
        let (admitted, rest) = raw.split_once(':')?;
        let (version, stream) = rest.split_once(':')?;
        let first_version: u64 = version.parse().ok()?;
        if first_version == 0 || i64::try_from(first_version).is_err() {
            return None;
        }
        Some(Self {
            admitted_ms: admitted.parse().ok()?,
            first_version,
            stream_id: StreamId::from(stream),
        })
    }
}

/// A `<version>:<stream>` value of the event id index.
pub(crate) fn parse_location(raw: &str) -> Option<(u64, StreamId)> {
    let (version, stream) = raw.split_once(':')?;
    Some((version.parse().ok()?, StreamId::from(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_without_a_version_before_or_after_them_are_malformed() {
        assert!(Entry::parse("1700000000000:0:a").is_none());
        assert!(Entry::parse(&format!("1700000000000:{}:a", u64::MAX)).is_none());
        assert!(Entry::parse(&format!("1700000000000:{}:a", i64::MAX as u64 + 1)).is_none());
        assert!(Entry::parse("1700000000000:-1:a").is_none());
        let last = Entry::parse(&format!("1:{}:a", i64::MAX)).map(|e| e.first_version);
        assert_eq!(last, Some(i64::MAX as u64));
    }

    #[test]
    fn entries_keep_streams_with_colons() {
        let e = Entry::parse("1700000000000:42:account:eu:7").expect("parses");
        assert_eq!(e.admitted_ms, 1_700_000_000_000);
        assert_eq!(e.first_version, 42);
        assert_eq!(e.stream_id.as_str(), "account:eu:7");
        assert_eq!(Entry::parse("garbage"), None);
        assert_eq!(
            parse_location("3:a:b").map(|(v, s)| (v, s.as_str().to_owned())),
            Some((3, "a:b".to_owned()))
        );
    }

    #[test]
    fn bodies_round_trip_and_read_as_pending_events() {
        let body = PendingBody {
            stream_type: "account".into(),
            events: vec![
                NewEvent::new("A", serde_json::json!({"n": 1})),
                NewEvent::new("B", serde_json::json!(2)),
            ],
        };
        let id = StreamId::from("s");
        let back = PendingBody::decode(&id, 5, &body.encode().expect("encodes")).expect("decodes");
        let read: Vec<_> = back.recorded(&id, 5).collect();
        assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), vec![5, 6]);
        assert!(read
            .iter()
            .all(|e| e.global_position == 0 && e.stream_type == "account"));
        assert_eq!(read[1].event_type, "B");
    }
}
