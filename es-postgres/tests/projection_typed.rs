//! Typed projections on PostgreSQL (`PgTypedProjector` through `PgTyped`):
//! handlers receive decoded, upcast events; an event that does not decode
//! is dead-lettered at once; a failure in the middle of a page commits the
//! events before it, once.
mod common;
mod projection_kit;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{
    Aggregate, BoxError, DomainEvent, EventCodec, EventEnvelope, Metadata, NewEvent, OnFailure, ProjectionConfig,
    ProjectionError, RetryPolicy, UpcastError, Upcaster, UpcasterRegistry,
};
use es_postgres::{PgProjectionUnit, PgTyped, PgTypedProjector, PostgresEventStore};
use projection_kit::{append_typed, checkpoint};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum ShelfEvent {
    Stocked { sku: String, qty: i64 },
    Sold { sku: String, qty: i64 },
}

impl DomainEvent for ShelfEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Stocked { .. } => "Stocked",
            Self::Sold { .. } => "Sold",
        }
    }
    fn schema_version(&self) -> u32 {
        2
    }
}

/// A shelf of goods (the aggregate only names the stream type and the
/// events here).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Shelf;

impl Aggregate for Shelf {
    const TYPE: &'static str = "shelf";
    type Command = ();
    type Event = ShelfEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, (): &()) -> Result<Vec<ShelfEvent>, Self::Error> {
        Ok(vec![])
    }
    fn apply(&mut self, _: &ShelfEvent) {}
}

/// `Stocked` v1 had no sku in its payload: it travelled in the `sku`
/// header. v2 carries it in the payload.
struct SkuFromHeader;

impl Upcaster for SkuFromHeader {
    fn event_type(&self) -> &str {
        "Stocked"
    }
    fn source_version(&self) -> u32 {
        1
    }
    fn upcast(&self, _: Value) -> Result<Value, UpcastError> {
        Err(UpcastError("the sku is in the metadata".into()))
    }
    fn upcast_event(&self, mut payload: Value, metadata: &Metadata) -> Result<Value, UpcastError> {
        let sku = metadata
            .headers
            .get("sku")
            .ok_or_else(|| UpcastError("no sku header".into()))?;
        payload["Stocked"]["sku"] = json!(sku);
        Ok(payload)
    }
}

fn codec() -> EventCodec {
    let mut upcasters = UpcasterRegistry::new();
    upcasters.register(SkuFromHeader);
    EventCodec::new(upcasters)
}

/// Keeps stock per sku and a row per event it was handed (committed with
/// the page, so rolled-back attempts leave no row).
struct Stock {
    schema: String,
    refuse_oversell: AtomicBool,
}

impl Stock {
    fn new(store: &PostgresEventStore) -> Arc<Self> {
        Arc::new(Self {
            schema: store.schema().to_owned(),
            refuse_oversell: AtomicBool::new(true),
        })
    }
}

#[async_trait]
impl PgTypedProjector for Stock {
    type Aggregate = Shelf;

    fn name(&self) -> &str {
        "stock"
    }

    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.stock (sku TEXT PRIMARY KEY, qty BIGINT NOT NULL)",
            self.schema
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {}.seen (global_position BIGINT NOT NULL, stream_id TEXT NOT NULL, \
             version BIGINT NOT NULL, event JSONB NOT NULL, actor TEXT, txid BIGINT NOT NULL DEFAULT txid_current())",
            self.schema
        ))
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut PgConnection, e: &EventEnvelope<ShelfEvent>) -> Result<(), BoxError> {
        let (sku, delta) = match &e.event {
            ShelfEvent::Stocked { sku, qty } => (sku, *qty),
            ShelfEvent::Sold { sku, qty } => (sku, -qty),
        };
        let held: Option<i64> = sqlx::query_scalar(&format!("SELECT qty FROM {}.stock WHERE sku = $1", self.schema))
            .bind(sku)
            .fetch_optional(&mut *tx)
            .await?;
        if held.unwrap_or(0) + delta < 0 && self.refuse_oversell.load(Ordering::SeqCst) {
            return Err(format!("oversold {sku} at position {}", e.global_position).into());
        }
        sqlx::query(&format!(
            "INSERT INTO {}.stock AS s (sku, qty) VALUES ($1, $2) ON CONFLICT (sku) DO UPDATE SET qty = s.qty + $2",
            self.schema
        ))
        .bind(sku)
        .bind(delta)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT INTO {}.seen (global_position, stream_id, version, event, actor) VALUES ($1, $2, $3, $4, $5)",
            self.schema
        ))
        .bind(e.global_position as i64)
        .bind(e.stream_id.as_str())
        .bind(e.version as i64)
        .bind(serde_json::to_value(&e.event)?)
        .bind(e.metadata.actor_id.as_deref())
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("TRUNCATE {s}.stock, {s}.seen", s = self.schema))
            .execute(tx)
            .await?;
        Ok(())
    }
}

fn config(on_failure: OnFailure) -> ProjectionConfig {
    ProjectionConfig {
        batch_size: 10,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        on_failure,
        ..ProjectionConfig::default()
    }
}

fn event(e: &ShelfEvent) -> NewEvent {
    let mut n = NewEvent::new(e.event_type(), serde_json::to_value(e).unwrap());
    n.schema_version = e.schema_version();
    n
}

fn stocked(sku: &str, qty: i64) -> NewEvent {
    event(&ShelfEvent::Stocked { sku: sku.into(), qty })
}

fn sold(sku: &str, qty: i64) -> NewEvent {
    event(&ShelfEvent::Sold { sku: sku.into(), qty })
}

/// A `Stocked` event as version 1 wrote it: the sku in a header.
fn stocked_v1(sku: Option<&str>, qty: i64) -> NewEvent {
    let mut n = NewEvent::new("Stocked", json!({ "Stocked": { "qty": qty } }));
    if let Some(sku) = sku {
        n.metadata = Metadata::default().with_header("sku", sku);
    }
    n
}

async fn stock(store: &PostgresEventStore) -> Vec<(String, i64)> {
    sqlx::query_as(&format!("SELECT sku, qty FROM {}.stock ORDER BY sku", store.schema()))
        .fetch_all(store.pool())
        .await
        .unwrap()
}

type SeenRow = (i64, String, i64, Value, Option<String>);

async fn seen(store: &PostgresEventStore) -> Vec<SeenRow> {
    sqlx::query_as(&format!(
        "SELECT global_position, stream_id, version, event, actor FROM {}.seen ORDER BY global_position",
        store.schema()
    ))
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn typed_projector_gets_decoded_upcast_events_and_undecodable_ones_are_dead_lettered_at_once() {
    let store = common::store().await;
    let mut by_alice = stocked("apple", 5);
    by_alice.metadata.actor_id = Some("alice".into());
    let p0 = append_typed(&store, "shelf", "s1", by_alice).await;
    let p1 = append_typed(&store, "shelf", "s1", stocked_v1(Some("pear"), 3)).await;
    // Another aggregate's event, which this projection must not see (it
    // would not decode).
    append_typed(&store, "crate", "x1", NewEvent::new("Stocked", json!({ "weight": 9 }))).await;
    let mut not_a_number = stocked("plum", 1);
    not_a_number.payload = json!({ "Stocked": { "sku": "plum", "qty": "many" } });
    let p3 = append_typed(&store, "shelf", "s2", not_a_number).await;
    let p4 = append_typed(&store, "shelf", "s2", sold("apple", 2)).await;
    let p5 = append_typed(&store, "shelf", "s1", stocked_v1(None, 1)).await;
    common::settled_head(&store).await;

    let runner = PgProjectionUnit::new(&store, Arc::new(PgTyped::new(Stock::new(&store)).with_codec(codec())))
        .runner()
        .with_config(config(OnFailure::DeadLetter));
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered, report.position), (3, 2, p5));

    assert_eq!(
        seen(&store).await,
        vec![
            (
                p0 as i64,
                "s1".into(),
                1,
                json!({ "Stocked": { "sku": "apple", "qty": 5 } }),
                Some("alice".into())
            ),
            (
                p1 as i64,
                "s1".into(),
                2,
                json!({ "Stocked": { "sku": "pear", "qty": 3 } }),
                None
            ),
            (
                p4 as i64,
                "s2".into(),
                2,
                json!({ "Sold": { "sku": "apple", "qty": 2 } }),
                None
            ),
        ],
        "decoded envelopes, the v1 event upcast with its header"
    );
    assert_eq!(stock(&store).await, vec![("apple".into(), 3), ("pear".into(), 3)]);
    let letters = runner.dead_letters().await.unwrap();
    let got: Vec<(u64, u32)> = letters.iter().map(|l| (l.global_position, l.attempts)).collect();
    assert_eq!(
        got,
        vec![(p3, 1), (p5, 1)],
        "undecodable events are not retried: {letters:?}"
    );
    assert!(letters[0].error.contains("does not decode"), "{}", letters[0].error);
    assert!(letters[1].error.contains("no sku header"), "{}", letters[1].error);

    // With the default (stop), an undecodable event stops at once too.
    let stopper = PgProjectionUnit::new(&store, Arc::new(PgTyped::new(Stock::new(&store)).with_codec(codec())));
    stopper.setup().await.unwrap();
    sqlx::query(&format!("TRUNCATE {s}.stock, {s}.seen", s = store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(&format!("DELETE FROM {}.checkpoints", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    match stopper.runner().with_config(config(OnFailure::Stop)).catch_up().await {
        Err(ProjectionError::Stopped { position, attempts, .. }) => assert_eq!((position, attempts), (p3, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        checkpoint(&store, "stock").await,
        p1,
        "stopped before the undecodable event"
    );
}

#[tokio::test]
async fn a_failure_mid_page_commits_the_events_before_it_once() {
    let store = common::store().await;
    let mut p = Vec::new();
    for (stream, e) in [
        ("s1", stocked("apple", 5)),
        ("s1", stocked("pear", 2)),
        ("s2", sold("apple", 1)),
        ("s2", sold("pear", 9)),
        ("s1", stocked("apple", 1)),
        ("s2", sold("apple", 1)),
    ] {
        p.push(append_typed(&store, "shelf", stream, e).await);
    }
    common::settled_head(&store).await;
    let projector = Stock::new(&store);
    let runner = PgProjectionUnit::new(&store, Arc::new(PgTyped::new(Arc::clone(&projector))))
        .runner()
        .with_config(config(OnFailure::Stop));

    match runner.catch_up().await {
        Err(ProjectionError::Stopped {
            position,
            attempts,
            error,
            ..
        }) => {
            assert_eq!((position, attempts), (p[3], 3));
            assert!(error.contains("oversold pear"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(checkpoint(&store, "stock").await, p[2], "the prefix committed");
    let positions = |rows: Vec<SeenRow>| rows.into_iter().map(|r| r.0 as u64).collect::<Vec<_>>();
    assert_eq!(
        positions(seen(&store).await),
        p[..3].to_vec(),
        "the prefix applied once"
    );
    assert_eq!(stock(&store).await, vec![("apple".into(), 4), ("pear".into(), 2)]);
    let txids: i64 = sqlx::query_scalar(&format!("SELECT count(DISTINCT txid) FROM {}.seen", store.schema()))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(txids, 1, "the prefix committed as one page, not event by event");

    projector.refuse_oversell.store(false, Ordering::SeqCst);
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.position), (3, p[5]));
    assert_eq!(positions(seen(&store).await), p, "every event applied once");
    assert_eq!(stock(&store).await, vec![("apple".into(), 4), ("pear".into(), -7)]);
}
