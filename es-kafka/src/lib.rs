#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

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

/// The rdkafka this crate is built with (its client config, messages and
/// mock cluster), so an application needs no version of its own.
pub use rdkafka;

pub use cdc::{CdcConfig, CdcRelay};
pub use config::{security_settings, CdcRelayKind, DataCaptureMethod, PublisherConfig, TopicNaming, SECURITY_SETTINGS};
pub use consumer::{ConsumerConfig, DedupStore, Handled, InMemoryDedup, KafkaProjectionConsumer};
pub use error::{CdcError, ConsumerError, OutboxError, PublishError, SetupError};
pub use health::{HealthSnapshot, PublishHealth};
pub use outbox::{OutboxConfig, OutboxPoller, OutboxStatus};
pub use publisher::{published_prefix, Delivered, KafkaPublisher};
