//! Metric names (the `metrics` facade; install any recorder, e.g.
//! `metrics-exporter-prometheus`). Every publish metric carries a `method`
//! label: `outbox_poller` or `cdc_builtin`.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Counter: events acknowledged by Kafka and counted as published.
pub const PUBLISHED: &str = "es_kafka_published_total";
/// Counter: events whose publication failed (they are retried).
pub const PUBLISH_FAILURES: &str = "es_kafka_publish_failures_total";
/// Histogram, seconds: from the commit of the event in PostgreSQL to the
/// Kafka acknowledgement.
pub const PUBLISH_LAG: &str = "es_kafka_publish_lag_seconds";
/// Histogram, seconds: one claim-publish-mark round of the poller or one
/// peek-publish-advance round of the relay.
pub const BATCH_DURATION: &str = "es_kafka_batch_seconds";
/// Counter: outbox rows parked after too many failed attempts.
pub const OUTBOX_PARKED: &str = "es_kafka_outbox_parked_total";
/// Gauge: pending outbox rows (set by the status query).
pub const OUTBOX_PENDING: &str = "es_kafka_outbox_pending";
/// Gauge: parked outbox rows (set by the status query).
pub const OUTBOX_PARKED_ROWS: &str = "es_kafka_outbox_parked_rows";
/// Counter: producers replaced after librdkafka declared them fatally
/// failed.
pub const PRODUCER_RECREATED: &str = "es_kafka_producer_recreated_total";
/// Counter, label `method`: rounds of the poller or relay that failed (an
/// error, or a pending event not acknowledged, whether or not others were).
pub const FAILED_ROUNDS: &str = "es_kafka_failed_rounds_total";
/// Gauge, label `method`: seconds since the last acknowledged event, or
/// since the poller or relay was created while none has been (set when
/// health is read, e.g. on each scrape of the banking example).
pub const SECONDS_SINCE_PUBLISH: &str = "es_kafka_seconds_since_last_publish";
/// Gauge, seconds: age of the oldest pending outbox row (set by the status
/// query).
pub const OUTBOX_OLDEST_AGE: &str = "es_kafka_outbox_oldest_pending_seconds";
/// Gauge, bytes: WAL between the server's current position and the CDC
/// slot's confirmed position (what the relay still has to read).
pub const CDC_LAG_BYTES: &str = "es_kafka_cdc_lag_bytes";
/// Gauge, events: events committed after the last one the CDC relay
/// published (an estimate by global position; set with the lag bytes).
pub const CDC_LAG_EVENTS: &str = "es_kafka_cdc_lag_events";
/// Counter, label `projection`: events applied by a projection consumer.
pub const CONSUMER_APPLIED: &str = "es_kafka_consumer_applied_total";
/// Counter, label `projection`: redelivered events skipped.
pub const CONSUMER_DUPLICATES: &str = "es_kafka_consumer_duplicates_total";
/// Counter, label `projection`: events that arrived ahead of a missing
/// earlier version of their stream and were skipped (they come again).
pub const CONSUMER_EARLY: &str = "es_kafka_consumer_out_of_order_total";
/// Counter, label `projection`: failed `apply` attempts.
pub const CONSUMER_FAILURES: &str = "es_kafka_consumer_failures_total";
/// Counter, label `projection`: consumption errors librdkafka reported and recovers from (a
/// broker unreachable, a rebalance); the consumer keeps waiting.
pub const CONSUMER_ERRORS: &str = "es_kafka_consumer_errors_total";
/// Counter, label `projection`: events sent to the dead-letter topic.
pub const CONSUMER_DEAD_LETTERS: &str = "es_kafka_consumer_dead_letters_total";

/// Records one commit-to-ack lag sample and returns it.
pub(crate) fn record_lag(method: &'static str, committed_at: DateTime<Utc>, acked_at: DateTime<Utc>) -> Duration {
    let lag = (acked_at - committed_at).to_std().unwrap_or_default();
    ::metrics::histogram!(PUBLISH_LAG, "method" => method).record(lag.as_secs_f64());
    lag
}
