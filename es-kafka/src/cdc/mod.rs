//! The built-in CDC relay: PostgreSQL logical decoding over SQL, published
//! to Kafka in the same format as Debezium's outbox router produces with
//! the shipped `deploy/debezium-connector.json`.

mod decode;
mod relay;
mod slot;
mod turn;

use std::time::Duration;

use es_core::RetryPolicy;

pub use relay::{CdcRelay, ChangeBatch, RelayOutcome, RelayStatus};
pub use slot::{default_slot_name, default_slot_name_for, slot_status, OtherSlot, SlotStatus};

/// Settings of a [`CdcRelay`].
#[derive(Debug, Clone, PartialEq)]
pub struct CdcConfig {
    /// Schema of the es-postgres `events` table to capture.
    pub schema: String,
    /// Name of the logical replication slot (one relay per slot). Slots
    /// belong to the whole PostgreSQL cluster: two deployments on one
    /// server need two names ([`default_slot_name`] derives one from the
    /// database and the schema).
    pub slot: String,
    /// Changes decoded per round (checked only at transaction boundaries,
    /// so a big transaction is read whole).
    pub max_changes: i32,
    /// Wait between rounds when nothing was pending.
    pub poll_interval: Duration,
    /// Back-off after a failed round.
    pub backoff: RetryPolicy,
    /// Consecutive failed rounds after which [`CdcRelay::health`] reports
    /// unhealthy.
    pub unhealthy_after: u32,
    /// How long [`CdcRelay::run`] lets the round in progress finish after
    /// shutdown is requested; then it is dropped (the slot was not advanced
    /// past anything unacknowledged, so the next start publishes it).
    pub shutdown_grace: Duration,
    /// Other logical slots of the cluster holding back more WAL than this
    /// are reported at startup as possibly abandoned (with the command to
    /// drop them).
    pub abandoned_slot_bytes: i64,
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
                max_delay: Duration::from_secs(1),
                jitter: 0.5,
            },
            unhealthy_after: crate::health::DEFAULT_UNHEALTHY_AFTER,
            shutdown_grace: Duration::from_secs(5),
            abandoned_slot_bytes: 1 << 30,
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
