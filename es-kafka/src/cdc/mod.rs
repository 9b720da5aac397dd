//! The built-in CDC relay: PostgreSQL logical decoding over SQL, published
//! to Kafka in the same format as Debezium's outbox router produces with
//! the shipped `deploy/debezium-connector.json`.

mod decode;
mod relay;
mod slot;

use std::time::Duration;

use es_core::RetryPolicy;

pub use relay::{CdcRelay, ChangeBatch, RelayOutcome};
pub use slot::SlotStatus;

/// Settings of a [`CdcRelay`].
#[derive(Debug, Clone, PartialEq)]
pub struct CdcConfig {
    /// Schema of the es-postgres `events` table to capture.
    pub schema: String,
    /// Name of the logical replication slot (one relay per slot).
    pub slot: String,
    /// Changes decoded per round (checked only at transaction boundaries,
    /// so a big transaction is read whole).
    pub max_changes: i32,
    /// Wait between rounds when nothing was pending.
    pub poll_interval: Duration,
    /// Back-off after a failed round.
    pub backoff: RetryPolicy,
}

impl Default for CdcConfig {
    fn default() -> Self {
        Self {
            schema: "es".into(),
            slot: "es_kafka_relay".into(),
            max_changes: 2000,
            poll_interval: Duration::from_millis(20),
            backoff: RetryPolicy {
                max_attempts: u32::MAX,
                initial_delay: Duration::from_millis(50),
                multiplier: 2.0,
                max_delay: Duration::from_secs(5),
                jitter: 0.5,
            },
        }
    }
}

impl CdcConfig {
    /// The default configuration for a schema and a slot name.
    pub fn new(schema: impl Into<String>, slot: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            slot: slot.into(),
            ..Self::default()
        }
    }
}
