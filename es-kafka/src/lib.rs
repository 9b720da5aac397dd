//! es-kafka (work in progress)
#![deny(missing_docs)]

mod config;
mod error;
pub mod message;
mod publisher;
pub mod telemetry;

pub use config::{CdcRelayKind, DataCaptureMethod, PublisherConfig, TopicNaming};
pub use error::{CdcError, ConsumerError, OutboxError, PublishError, SetupError};
pub use publisher::{published_prefix, Delivered, KafkaPublisher};
mod ident;
pub mod outbox;
pub use outbox::{OutboxConfig, OutboxPoller, OutboxStatus};
pub mod cdc;
pub use cdc::{CdcConfig, CdcRelay};
pub mod consumer;
pub use consumer::{ConsumerConfig, DedupStore, Handled, InMemoryDedup, KafkaProjectionConsumer};
