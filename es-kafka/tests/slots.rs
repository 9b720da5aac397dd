//! Replication slots belong to the PostgreSQL cluster, not to a database:
//! two deployments (two databases, the same schema name) each publish
//! through their own slot, and a slot name taken in another database is
//! refused at startup with the way out, and reported by the health record.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{append_n, assert_complete_in_order, eventually, Kafka};
use es_kafka::cdc::default_slot_name_for;
use es_kafka::{CdcConfig, CdcError, CdcRelay, KafkaPublisher};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use futures::FutureExt;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::watch;

/// A pool on database `database` of the test server.
async fn pool(database: &str, connections: u32) -> sqlx::PgPool {
    let url = common::database_url();
    let (base, _) = url.rsplit_once('/').expect("database url");
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&format!("{base}/{database}"))
        .await
        .unwrap()
}

/// A fresh database named `name` with an es-postgres store in schema `bank`.
async fn deployment(name: &str) -> PostgresEventStore {
    common::ensure_database().await;
    let admin = pool("postgres", 1).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let pool = pool(name, 6).await;
    let store = PostgresEventStore::with_pool(pool, EventStoreConfig::with_schema("bank")).unwrap();
    store.migrate().await.unwrap();
    store
}

/// Drops the databases (their slots first: a database with a slot cannot
/// be dropped).
async fn retire(names: &[String]) {
    let admin = pool("postgres", 1).await;
    for name in names {
        sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE database = $1 AND NOT active",
        )
        .bind(name)
        .execute(&admin)
        .await
        .unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_deployments_on_one_cluster_each_publish_through_their_own_slot() {
    let kafka = Kafka::start();
    let topic = kafka.topic("account", 2).await;
    let names = [common::unique("es_dep_a"), common::unique("es_dep_b")];
    let body = async {
        let a = deployment(&names[0]).await;
        let b = deployment(&names[1]).await;
        let publisher: Arc<KafkaPublisher> = kafka.publisher();
        let slot_a = default_slot_name_for(a.pool(), "bank").await.unwrap();
        let slot_b = default_slot_name_for(b.pool(), "bank").await.unwrap();
        assert_ne!(slot_a, slot_b, "same schema, other database, other slot");
        let relay_a = CdcRelay::new(a.pool().clone(), publisher.clone(), CdcConfig::new("bank", &slot_a)).unwrap();
        let relay_b = CdcRelay::new(b.pool().clone(), publisher.clone(), CdcConfig::new("bank", &slot_b)).unwrap();
        assert!(relay_a.ensure_slot().await.unwrap());
        assert!(relay_b.ensure_slot().await.unwrap());

        // B misconfigured with A's slot name: refused, with the way out.
        let clash = CdcRelay::new(b.pool().clone(), publisher.clone(), CdcConfig::new("bank", &slot_a)).unwrap();
        match clash.ensure_slot().await {
            Err(CdcError::SlotConflict { slot, database, .. }) => {
                assert_eq!((slot.as_str(), database.as_str()), (slot_a.as_str(), names[0].as_str()));
            }
            other => panic!("expected a slot conflict, got {other:?}"),
        }
        let message = clash.check_slot().await.unwrap_err().to_string();
        assert!(
            message.contains("CDC_SLOT_NAME") && message.contains("pg_drop_replication_slot"),
            "{message}"
        );

        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for relay in [relay_a.clone(), relay_b.clone(), {
            let mut config = clash.config().clone();
            config.unhealthy_after = 2;
            CdcRelay::new(b.pool().clone(), publisher.clone(), config).unwrap()
        }] {
            let mut stopped = stopped.clone();
            let probe = relay.clone();
            tasks.push((
                probe,
                tokio::spawn(async move {
                    relay
                        .run(async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        })
                        .await;
                }),
            ));
        }
        append_n(&a, "account", "a1", 3).await;
        append_n(&b, "account", "b1", 2).await;
        eventually("both deployments published", || async {
            (relay_a.health().published_total == 3 && relay_b.health().published_total == 2).then_some(())
        })
        .await;
        let clash_health = eventually("the clashing relay reports unhealthy", || async {
            let h = tasks[2].0.health();
            (!h.healthy).then_some(h)
        })
        .await;
        assert!(
            clash_health
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("already exists for database"),
            "{clash_health:?}"
        );
        assert_eq!(clash_health.published_total, 0);
        stop.send(true).unwrap();
        for (_, task) in tasks {
            task.await.unwrap();
        }
        let reads = kafka.read_topic(&topic).await;
        assert_complete_in_order(&reads, &BTreeMap::from([("a1".into(), 3), ("b1".into(), 2)]));
        a.pool().close().await;
        b.pool().close().await;
    };
    let outcome = std::panic::AssertUnwindSafe(body).catch_unwind().await;
    retire(&names).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
