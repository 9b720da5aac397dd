//! `es-kafka-relay`: publishes the event log of one es-postgres schema to
//! Kafka, with the method chosen by the environment:
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `DATA_CAPTURE_METHOD` | `cdc_debezium` | `outbox_poller` or `cdc_debezium` |
//! | `CDC_RELAY` | `builtin` | with `cdc_debezium`: `builtin` (this process relays) or `debezium` (Kafka Connect does; this process exits) |
//! | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/postgres` | the store's database (TLS: `?sslmode=verify-full&sslrootcert=/path/ca.pem`) |
//! | `ES_SCHEMA` | `es` | the store's schema |
//! | `KAFKA_BOOTSTRAP_SERVERS` | `127.0.0.1:9092` | brokers |
//! | `KAFKA_TOPIC_TEMPLATE` | `banking.{stream_type}.events` | topic naming |
//! | `KAFKA_SECURITY_PROTOCOL`, `KAFKA_SSL_CA_LOCATION`, `KAFKA_SSL_CERTIFICATE_LOCATION`, `KAFKA_SSL_KEY_LOCATION`, `KAFKA_SSL_KEY_PASSWORD`, `KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM`, `KAFKA_SASL_MECHANISM`, `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD` | unset | TLS and SASL: librdkafka's `security.protocol`, `ssl.*`, `sasl.*` |
//! | `CDC_SLOT_NAME` (or `CDC_SLOT`) | `es_<database>_<schema>` | replication slot of the built-in relay; slots belong to the whole cluster, so the default includes the database |
//!
//! Stops cleanly on Ctrl-C / SIGTERM.

use std::sync::Arc;

use es_kafka::{
    CdcConfig, CdcRelay, CdcRelayKind, DataCaptureMethod, KafkaPublisher, OutboxConfig, OutboxPoller, PublisherConfig,
    TopicNaming,
};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

async fn shutdown() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
                .from_env_lossy(),
        )
        .init();
    let method: DataCaptureMethod = env_or("DATA_CAPTURE_METHOD", "cdc_debezium").parse()?;
    let relay_kind: CdcRelayKind = env_or("CDC_RELAY", "builtin").parse()?;
    if method == DataCaptureMethod::CdcDebezium && relay_kind == CdcRelayKind::Debezium {
        println!("CDC_RELAY=debezium: Kafka Connect publishes the events (es-kafka/deploy); nothing to do here");
        return Ok(());
    }
    let schema = env_or("ES_SCHEMA", "es");
    let pool = sqlx::PgPool::connect(&env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")).await?;
    let publisher = Arc::new(KafkaPublisher::new(&PublisherConfig {
        bootstrap_servers: env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        topics: TopicNaming::new(env_or("KAFKA_TOPIC_TEMPLATE", "banking.{stream_type}.events")),
        extra: es_kafka::security_settings(|k| std::env::var(k).ok()),
        ..PublisherConfig::default()
    })?);
    tracing::info!(%method, %relay_kind, %schema, "starting");
    match method {
        DataCaptureMethod::OutboxPoller => {
            let poller = OutboxPoller::new(pool, publisher, OutboxConfig::with_schema(schema))?;
            poller.migrate().await?;
            poller.run(shutdown()).await;
        }
        DataCaptureMethod::CdcDebezium => {
            let slot = match std::env::var("CDC_SLOT_NAME").or_else(|_| std::env::var("CDC_SLOT")) {
                Ok(name) if !name.is_empty() => name,
                _ => es_kafka::cdc::default_slot_name_for(&pool, &schema).await?,
            };
            let relay = CdcRelay::new(pool, publisher, CdcConfig::new(schema, slot))?;
            relay.run(shutdown()).await;
        }
    }
    Ok(())
}
