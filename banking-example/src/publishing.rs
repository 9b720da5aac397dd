//! Publishing account events to Kafka (es-kafka), chosen by
//! `DATA_CAPTURE_METHOD` and `CDC_RELAY`.

use std::collections::BTreeMap;
use std::sync::Arc;

use es_kafka::{
    CdcConfig, CdcRelay, CdcRelayKind, DataCaptureMethod, HealthSnapshot, KafkaPublisher, OutboxConfig, OutboxPoller,
    PublisherConfig, TopicNaming,
};
use es_postgres::PostgresEventStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::AppConfig;

/// Why publishing could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("kafka publishing: {0}")]
pub struct PublishingError(String);

/// The running capture task (outbox poller or built-in CDC relay).
pub struct EventPublishing {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    probe: PublishingProbe,
}

impl std::fmt::Debug for EventPublishing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublishing").finish_non_exhaustive()
    }
}

/// Reads the health and the backlog of the running publisher, for
/// `/health/ready` and `/metrics`.
#[derive(Clone, Debug)]
pub enum PublishingProbe {
    /// The outbox poller.
    Outbox(OutboxPoller),
    /// The built-in CDC relay.
    Cdc(CdcRelay),
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishingReport {
    /// Whether publishing makes progress (false after
    /// `PUBLISH_UNHEALTHY_AFTER_ROUNDS` failed rounds in a row, or when the
    /// backlog cannot be read).
    pub up: bool,
    /// `outbox_poller` or `cdc_builtin`.
    pub method: &'static str,
    /// Facts for the readiness details.
    pub details: BTreeMap<String, serde_json::Value>,
}

impl PublishingProbe {
    /// `outbox_poller` or `cdc_builtin`.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Outbox(p) => p.health().method,
            Self::Cdc(r) => r.health().method,
        }
    }

    /// Health of the loop plus its backlog (the outbox's pending rows and
    /// their age, or the slot's lag in bytes and events). Sets the es-kafka
    /// gauges as a side effect, so a scrape of `/metrics` after it is
    /// current.
    pub async fn report(&self) -> PublishingReport {
        let (health, backlog) = match self {
            Self::Outbox(p) => (p.health(), outbox_backlog(p).await),
            Self::Cdc(r) => (r.health(), cdc_backlog(r).await),
        };
        let mut details = health_details(&health);
        let backlog_ok = backlog.is_ok();
        match backlog {
            Ok(b) => details.extend(b),
            Err(e) => {
                details.insert("backlog_error".into(), e.into());
            }
        }
        PublishingReport {
            up: health.healthy && backlog_ok,
            method: health.method,
            details,
        }
    }
}

fn health_details(h: &HealthSnapshot) -> BTreeMap<String, serde_json::Value> {
    let now = chrono::Utc::now();
    let mut d = BTreeMap::new();
    d.insert("method".into(), h.method.into());
    d.insert("consecutive_failed_rounds".into(), h.consecutive_failed_rounds.into());
    d.insert("failed_rounds_total".into(), h.failed_rounds_total.into());
    d.insert("published_total".into(), h.published_total.into());
    if h.standby {
        // Another instance's relay holds the slot's turn.
        d.insert("standby".into(), true.into());
    }
    if let Some(e) = &h.last_error {
        d.insert("last_error".into(), e.clone().into());
    }
    if let Some(age) = h.since_last_publish(now) {
        d.insert("seconds_since_last_publish".into(), age.as_secs_f64().into());
    }
    d
}

async fn outbox_backlog(p: &OutboxPoller) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let s = p.status().await.map_err(|e| e.to_string())?;
    let mut d = BTreeMap::new();
    d.insert("backlog_events".into(), s.pending.into());
    d.insert("parked_events".into(), s.parked.into());
    d.insert("held_events".into(), s.held.into());
    d.insert(
        "oldest_pending_seconds".into(),
        s.oldest_pending_age.map_or(0.0, |a| a.as_secs_f64()).into(),
    );
    Ok(d)
}

async fn cdc_backlog(r: &CdcRelay) -> Result<BTreeMap<String, serde_json::Value>, String> {
    let s = r.status().await.map_err(|e| e.to_string())?;
    let mut d = BTreeMap::new();
    d.insert("slot".into(), r.config().slot.clone().into());
    d.insert("slot_exists".into(), s.slot.exists.into());
    if let Some(b) = s.slot.lag_bytes {
        d.insert("lag_bytes".into(), b.into());
    }
    if let Some(b) = s.slot.retained_bytes {
        d.insert("retained_wal_bytes".into(), b.into());
    }
    if let Some(n) = s.lag_events {
        d.insert("lag_events".into(), n.into());
    }
    Ok(d)
}

fn setup(e: impl std::fmt::Display) -> PublishingError {
    PublishingError(e.to_string())
}

/// Whether the store must write outbox rows (publishing by outbox poller).
pub fn needs_outbox(config: &AppConfig) -> bool {
    config.kafka_brokers.is_some() && config.data_capture_method == DataCaptureMethod::OutboxPoller
}

impl EventPublishing {
    /// Starts publishing the events of `store` to `KAFKA_BROKERS`, or
    /// returns `None` when Kafka is not configured or Debezium (Kafka
    /// Connect) does the relaying.
    pub async fn start(config: &AppConfig, store: &PostgresEventStore) -> Result<Option<Self>, PublishingError> {
        let Some(brokers) = &config.kafka_brokers else {
            return Ok(None);
        };
        let method = config.data_capture_method;
        if method == DataCaptureMethod::CdcDebezium && config.cdc_relay == CdcRelayKind::Debezium {
            tracing::info!("CDC_RELAY=debezium: Kafka Connect publishes the events (see es-kafka/deploy)");
            return Ok(None);
        }
        let publisher = Arc::new(
            KafkaPublisher::new(&PublisherConfig {
                bootstrap_servers: brokers.clone(),
                topics: TopicNaming::new("banking.{stream_type}.events"),
                message_timeout: config.kafka_message_timeout,
                extra: config.kafka_security.0.clone(),
                ..PublisherConfig::default()
            })
            .map_err(setup)?,
        );
        let (stop, mut stopped) = watch::channel(false);
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let pool = store.pool().clone();
        let schema = store.schema().to_owned();
        let (task, probe) = match method {
            DataCaptureMethod::OutboxPoller => {
                let poller = OutboxPoller::new(
                    pool,
                    publisher,
                    OutboxConfig {
                        unhealthy_after: config.publish_unhealthy_after,
                        shutdown_grace: config.shutdown_grace,
                        ..OutboxConfig::with_schema(schema)
                    },
                )
                .map_err(setup)?;
                poller.migrate().await.map_err(setup)?;
                tracing::info!(brokers, "publishing account events to Kafka with the outbox poller");
                let running = poller.clone();
                (
                    tokio::spawn(async move { running.run(shutdown).await }),
                    PublishingProbe::Outbox(poller),
                )
            }
            DataCaptureMethod::CdcDebezium => {
                let slot = match &config.cdc_slot_name {
                    Some(name) => name.clone(),
                    None => es_kafka::cdc::default_slot_name_for(&pool, &schema)
                        .await
                        .map_err(setup)?,
                };
                let relay = CdcRelay::new(
                    pool,
                    publisher,
                    CdcConfig {
                        unhealthy_after: config.publish_unhealthy_after,
                        shutdown_grace: config.shutdown_grace,
                        ..CdcConfig::new(schema, slot.clone())
                    },
                )
                .map_err(setup)?;
                // The slot exists before the server takes its first
                // command: the relay decodes only what commits after the
                // slot's creation, so an event committed earlier would never
                // be published. Creating it waits for the write
                // transactions running on the cluster. Without it (a taken
                // slot name, a cluster without logical decoding) the
                // server does not start: it would take commands it can
                // never publish.
                if relay.ensure_slot().await.map_err(setup)? {
                    tracing::info!(slot, "created the CDC relay's replication slot");
                }
                tracing::info!(
                    brokers,
                    slot,
                    "publishing account events to Kafka with the built-in CDC relay"
                );
                let running = relay.clone();
                (
                    tokio::spawn(async move { running.run(shutdown).await }),
                    PublishingProbe::Cdc(relay),
                )
            }
        };
        Ok(Some(Self { stop, task, probe }))
    }

    /// The health probe of the running publisher.
    pub fn probe(&self) -> PublishingProbe {
        self.probe.clone()
    }

    /// Stops publishing: the round in progress gets the configured grace
    /// period to finish, then is dropped (what is unpublished stays for the
    /// next start).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "event publishing task ended abnormally");
        }
    }
}
