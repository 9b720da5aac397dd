//! Publishing account events to Kafka (es-kafka), chosen by
//! `DATA_CAPTURE_METHOD` and `CDC_RELAY`.

use std::sync::Arc;

use es_kafka::{
    CdcConfig, CdcRelay, CdcRelayKind, DataCaptureMethod, KafkaPublisher, OutboxConfig, OutboxPoller, PublisherConfig,
    TopicNaming,
};
use es_postgres::PostgresEventStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppError;
use crate::config::AppConfig;

/// The running capture task (outbox poller or built-in CDC relay).
pub struct EventPublishing {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for EventPublishing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPublishing").finish_non_exhaustive()
    }
}

fn setup(e: impl std::fmt::Display) -> AppError {
    AppError::Connect {
        backend: "kafka",
        reason: e.to_string(),
    }
}

/// Whether the store must write outbox rows (publishing by outbox poller).
pub fn needs_outbox(config: &AppConfig) -> bool {
    config.kafka_brokers.is_some() && config.data_capture_method == DataCaptureMethod::OutboxPoller
}

impl EventPublishing {
    /// Starts publishing the events of `store` to `KAFKA_BROKERS`, or
    /// returns `None` when Kafka is not configured or Debezium (Kafka
    /// Connect) does the relaying.
    pub async fn start(config: &AppConfig, store: &PostgresEventStore) -> Result<Option<Self>, AppError> {
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
        let task = match method {
            DataCaptureMethod::OutboxPoller => {
                let poller = OutboxPoller::new(pool, publisher, OutboxConfig::with_schema(schema)).map_err(setup)?;
                poller.migrate().await.map_err(setup)?;
                tracing::info!(brokers, "publishing account events to Kafka with the outbox poller");
                tokio::spawn(async move { poller.run(shutdown).await })
            }
            DataCaptureMethod::CdcDebezium => {
                let slot = format!("banking_{schema}");
                let relay = CdcRelay::new(pool, publisher, CdcConfig::new(schema, slot)).map_err(setup)?;
                tracing::info!(
                    brokers,
                    "publishing account events to Kafka with the built-in CDC relay"
                );
                tokio::spawn(async move { relay.run(shutdown).await })
            }
        };
        Ok(Some(Self { stop, task }))
    }

    /// Stops publishing after the current batch.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "event publishing task ended abnormally");
        }
    }
}
