//! Errors of the publisher, the outbox poller, the CDC relay and the
//! projection consumer.

use es_core::BoxError;
use rdkafka::error::KafkaError;

/// A Kafka client could not be created or configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// librdkafka rejected the configuration.
    #[error("kafka client configuration: {0}")]
    Kafka(#[from] KafkaError),
    /// A setting has a value the library does not understand.
    #[error("invalid setting {name}={value:?}: expected {expected}")]
    InvalidSetting {
        /// Name of the setting (e.g. `DATA_CAPTURE_METHOD`).
        name: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A schema or slot name is not a plain lowercase identifier.
    #[error("invalid identifier {0:?}: use lowercase letters, digits and '_' (at most 48)")]
    InvalidIdentifier(String),
    /// Preparing the database (index, slot) failed.
    #[error("database setup: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why one event could not be published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The envelope could not be encoded.
    #[error("encoding event {event_id}: {source}")]
    Encode {
        /// The event.
        event_id: uuid::Uuid,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Kafka refused or did not acknowledge the message in time.
    #[error("delivery of event {event_id} to {topic}: {source}")]
    Delivery {
        /// The event.
        event_id: uuid::Uuid,
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// No acknowledgement came within the publisher's wait
    /// ([`PublisherConfig::message_timeout`](crate::PublisherConfig::message_timeout)):
    /// the broker is down or slow. The message stays queued in the
    /// producer and goes out, in order, when the broker answers; publishing
    /// it again later repeats it (at least once), never reorders it.
    #[error("event {event_id} not acknowledged within {waited:?} (still queued for the broker)")]
    Unacknowledged {
        /// The event.
        event_id: uuid::Uuid,
        /// How long the publisher waited.
        waited: std::time::Duration,
    },
    /// Not handed to the producer: messages of an earlier call were still
    /// waiting for the broker when this call's wait ran out (a later
    /// message is never queued behind a wait that could end in a gap, and
    /// an outage does not pile up copies of the same events).
    #[error("event {event_id} not sent: {waiting} earlier messages still wait for the broker")]
    Behind {
        /// The event.
        event_id: uuid::Uuid,
        /// Messages (and requests) the producer still held.
        waiting: i32,
    },
    /// The producer went away before reporting the delivery.
    #[error("delivery report of event {event_id} lost (producer closed)")]
    Canceled {
        /// The event.
        event_id: uuid::Uuid,
    },
    /// An earlier event of the same stream in the same batch failed, so
    /// this one was not sent (per-stream order).
    #[error("not sent: an earlier event of stream {stream_id} failed in this batch")]
    Blocked {
        /// The stream.
        stream_id: String,
    },
}

impl PublishError {
    /// Whether the failure is the message's own fault, so that publishing
    /// it again cannot succeed (it cannot be encoded, or the broker refuses
    /// it as too large or invalid). Everything else — brokers down or
    /// unreachable, timeouts, a producer that had to be recreated, a
    /// stream blocked behind an earlier failure, a topic the producer is
    /// not authorized for (an ACL is a setting of the broker, fixed there,
    /// not a fault of the rows) — is transient: the outbox poller retries
    /// it without counting an attempt, so an outage or a missing ACL never
    /// parks healthy rows.
    pub fn is_permanent(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        match self {
            Self::Encode { .. } => true,
            Self::Delivery { source, .. } => matches!(
                source.rdkafka_error_code(),
                Some(
                    C::MessageSizeTooLarge
                        | C::InvalidMessage
                        | C::InvalidMessageSize
                        | C::InvalidRecord
                        | C::MessageBatchTooLarge
                        | C::BadMessage
                        | C::InvalidTopic
                )
            ),
            Self::Unacknowledged { .. } | Self::Behind { .. } | Self::Canceled { .. } | Self::Blocked { .. } => false,
        }
    }
}

/// Errors of the outbox poller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// Reading, claiming or marking outbox rows failed.
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    /// The outbox's schema name is not a plain identifier.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// An outbox row could not be turned into an event.
    #[error("outbox row {position}: {reason}")]
    BadRow {
        /// Its global position.
        position: i64,
        /// What was wrong.
        reason: String,
    },
}

/// Errors of the built-in CDC relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CdcError {
    /// Talking to PostgreSQL (slot, peek, advance) failed.
    #[error("cdc database: {0}")]
    Database(#[from] sqlx::Error),
    /// The slot name is taken by a slot of another database of the cluster
    /// (or one with another output plugin): replication slots belong to
    /// the whole PostgreSQL cluster, not to a database.
    #[error(
        "replication slot {slot:?} already exists for database {database:?} (plugin {plugin:?}); \
         give this deployment its own slot name (CdcConfig::slot, CDC_SLOT_NAME in the banking example; \
         the default es_{{database}}_{{schema}} is unique per database), or, if that deployment is retired, \
         drop its slot: psql -d {database} -c \"SELECT pg_drop_replication_slot('{slot}')\""
    )]
    SlotConflict {
        /// The slot name.
        slot: String,
        /// The database the existing slot decodes.
        database: String,
        /// Its output plugin.
        plugin: String,
    },
    /// A change line from logical decoding could not be parsed.
    #[error("cdc decode at lsn {lsn}: {reason}")]
    Decode {
        /// LSN of the change.
        lsn: String,
        /// What was wrong.
        reason: String,
    },
    /// Some events of the batch were not acknowledged. The slot was
    /// advanced past the transactions Kafka acknowledged whole (their
    /// events are counted in `published` and not read again); the rest of
    /// the batch will be read and published again.
    #[error("cdc publish: {failed} of {total} events not acknowledged, first: {first}")]
    Publish {
        /// Events of the transactions acknowledged whole, which the slot
        /// was advanced past.
        published: usize,
        /// Events that failed.
        failed: usize,
        /// Events in the batch.
        total: usize,
        /// The first failure.
        first: PublishError,
    },
}

/// Errors that stop the projection consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The Kafka consumer failed (subscribe, receive, commit).
    #[error("kafka consumer: {0}")]
    Kafka(#[from] KafkaError),
    /// The de-duplication store failed.
    #[error("dedup store: {0}")]
    Dedup(#[source] BoxError),
    /// A poison event could not be written to the dead-letter topic (the
    /// offset is not committed; the event will be consumed again).
    #[error("dead-letter publish to {topic}: {source}")]
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
}

#[cfg(test)]
mod tests {
    use super::PublishError;
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode as C;

    fn delivery(code: C) -> PublishError {
        PublishError::Delivery {
            event_id: uuid::Uuid::nil(),
            topic: "t".into(),
            source: KafkaError::MessageProduction(code),
        }
    }

    #[test]
    fn only_the_messages_own_faults_are_permanent() {
        for own in [C::MessageSizeTooLarge, C::InvalidRecord, C::InvalidTopic] {
            assert!(delivery(own).is_permanent(), "{own:?}");
        }
        for passing in [C::TopicAuthorizationFailed, C::AllBrokersDown, C::MessageTimedOut] {
            assert!(!delivery(passing).is_permanent(), "{passing:?}");
        }
    }
}
