//! [`KafkaProjectionConsumer`]: a consumer-group member feeding a Projector.

mod dead_letter;
mod dedup;
mod worker;

use std::collections::BTreeMap;
use std::time::Duration;

use es_core::RetryPolicy;

pub use dedup::{DedupStore, InMemoryDedup};
pub use worker::{Handled, KafkaProjectionConsumer};

/// Settings of a [`KafkaProjectionConsumer`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// Consumer group (several consumers in one group split the partitions).
    pub group_id: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Where poison events go.
    pub dead_letter_topic: String,
    /// Attempts of `apply` (with back-off) before an event is dead-lettered.
    pub retry: RetryPolicy,
    /// `auto.commit.interval.ms`: how often handled offsets are committed
    /// (only offsets of handled events are ever committed).
    pub commit_interval: Duration,
    /// How long [`commit`](KafkaProjectionConsumer::commit) (and the final
    /// commit of [`run`](KafkaProjectionConsumer::run)) waits for the
    /// broker. Past it, it returns an error without holding anything up;
    /// the offsets are committed later by librdkafka, or their messages
    /// handled again after a restart (at least once).
    pub commit_timeout: Duration,
    /// Any other librdkafka consumer settings.
    pub extra: BTreeMap<String, String>,
}

impl ConsumerConfig {
    /// Settings for a group reading `topics`, dead letters to
    /// `<group_id>.dead-letters`, 5 attempts, commits every 500 ms and
    /// waited for up to 10 s.
    pub fn new(bootstrap_servers: impl Into<String>, group_id: impl Into<String>, topics: Vec<String>) -> Self {
        let group_id = group_id.into();
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            dead_letter_topic: format!("{group_id}.dead-letters"),
            group_id,
            topics,
            retry: RetryPolicy {
                max_attempts: 5,
                initial_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            commit_interval: Duration::from_millis(500),
            commit_timeout: Duration::from_secs(10),
            extra: BTreeMap::new(),
        }
    }
}
