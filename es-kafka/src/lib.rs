//! # es-kafka — publishing the event log to Kafka
//!
//! Every committed event reaches Kafka **at least once**, **in per-stream
//! order**, and nothing that was not committed ever does.
//!
//! - [`KafkaPublisher`]: idempotent producer (`enable.idempotence=true`,
//!   `acks=all`), key = stream id, value = the event envelope as JSON,
//!   headers with ids and versions ([`message`]), one topic per stream type
//!   by default ([`TopicNaming`]). A result is `Ok` only once Kafka acked.
//! - Two capture methods ([`DataCaptureMethod`], `DATA_CAPTURE_METHOD`):
//!   - `outbox_poller`: [`OutboxPoller`] publishes the outbox rows
//!     es-postgres writes in the append's own statement; several pollers
//!     share the work (`FOR UPDATE SKIP LOCKED` on each stream's oldest
//!     row), failing rows are retried with back-off and parked;
//!   - `cdc_debezium` (default): the write-ahead log, read either by
//!     Debezium (`deploy/`) or by the built-in [`CdcRelay`]
//!     ([`CdcRelayKind`], `CDC_RELAY`), which peeks a logical replication
//!     slot, publishes, waits for the acks and only then advances the slot.
//! - [`KafkaProjectionConsumer`]: a consumer-group member feeding an
//!   es-core `Projector`; commits only handled offsets, skips redelivered
//!   versions ([`DedupStore`]), dead-letters poison events.
//!
//! Publish lag (commit to Kafka ack) is the histogram
//! [`telemetry::PUBLISH_LAG`]. Kafka transactions are never used: the mock
//! cluster and tansu do not implement them faithfully, and nothing here
//! needs them.
//!
//! ```no_run
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use es_kafka::{CdcConfig, CdcRelay, KafkaPublisher, OutboxConfig, OutboxPoller, PublisherConfig};
//!
//! let publisher = Arc::new(KafkaPublisher::new(&PublisherConfig {
//!     bootstrap_servers: "kafka-1:9092,kafka-2:9092".into(),
//!     ..PublisherConfig::default()
//! })?);
//! // Either the outbox poller (store created with `outbox: true`) ...
//! let poller = OutboxPoller::new(pool.clone(), publisher.clone(), OutboxConfig::with_schema("bank"))?;
//! poller.migrate().await?;
//! tokio::spawn(async move { poller.run(std::future::pending()).await });
//! // ... or the built-in CDC relay (wal_level = logical).
//! let relay = CdcRelay::new(pool, publisher, CdcConfig::new("bank", "es_kafka_bank"))?;
//! tokio::spawn(async move { relay.run(std::future::pending()).await });
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod cdc;
mod config;
pub mod consumer;
mod error;
pub mod health;
mod ident;
pub mod message;
pub mod outbox;
mod publisher;
mod rounds;
pub mod telemetry;

pub use cdc::{CdcConfig, CdcRelay};
pub use config::{security_settings, CdcRelayKind, DataCaptureMethod, PublisherConfig, TopicNaming, SECURITY_SETTINGS};
pub use consumer::{ConsumerConfig, DedupStore, Handled, InMemoryDedup, KafkaProjectionConsumer};
pub use error::{CdcError, ConsumerError, OutboxError, PublishError, SetupError};
pub use health::{HealthSnapshot, PublishHealth};
pub use outbox::{OutboxConfig, OutboxPoller, OutboxStatus};
pub use publisher::{published_prefix, Delivered, KafkaPublisher};
