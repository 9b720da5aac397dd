//! PostgreSQL quick start: the shopping cart on es-postgres — group-
//! committed appends, snapshots, and a durable read model (a serde view per
//! cart) committed together with its checkpoint.
//!
//! Needs a PostgreSQL server: `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). Everything goes in the
//! schema `quick_start`, created on first run.
//!
//! Run with `cargo run -p es-examples --example postgres_quick_start`.

use std::sync::Arc;

use es_core::{EventEnvelope, Repository, SnapshotPolicy, View};
use es_examples::shopping_cart::{Cart, CartCommand, CartEvent};
use es_postgres::{EventStoreConfig, PgProjectionUnit, PgTyped, PgViews, PostgresEventStore, PostgresSnapshotStore};
use serde::{Deserialize, Serialize};

/// The read model: one row per cart, as JSONB.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CartSummary {
    lines: u32,
    units: u32,
    checked_out: bool,
}

impl View for CartSummary {
    type Aggregate = Cart;
    fn apply(&mut self, e: &EventEnvelope<CartEvent>) {
        match &e.event {
            CartEvent::ItemAdded { quantity, .. } => {
                self.lines += 1;
                self.units += quantity;
            }
            CartEvent::ItemRemoved { quantity, .. } => self.units = self.units.saturating_sub(*quantity),
            CartEvent::CheckedOut => self.checked_out = true,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let store = PostgresEventStore::connect(&url, EventStoreConfig::with_schema("quick_start")).await?;
    store.migrate().await?;

    let carts = Repository::<Cart>::builder(Arc::new(store.clone()))
        .snapshots(
            Arc::new(PostgresSnapshotStore::new(&store)),
            SnapshotPolicy::EveryNEvents(100),
        )
        .build();
    // A new cart on every run.
    let cart = format!("cart-{}", uuid::Uuid::now_v7());
    carts
        .execute(
            &cart,
            CartCommand::Add {
                sku: "apple".into(),
                quantity: 3,
            },
        )
        .await?;
    carts
        .execute(
            &cart,
            CartCommand::Add {
                sku: "pear".into(),
                quantity: 1,
            },
        )
        .await?;
    let out = carts.execute(&cart, CartCommand::CheckOut).await?;
    println!("{cart} at version {}", out.version);

    // The read model: catch up (a server would `run` it to follow the log).
    let views = Arc::new(PgViews::<CartSummary>::new(&store, "cart_summaries")?);
    let runner = PgProjectionUnit::new(&store, Arc::new(PgTyped::new(views.clone()))).runner();
    let report = runner.catch_up().await?;
    let summary = views.get(&cart).await?.ok_or("the view is missing")?;
    println!(
        "applied {} events; {cart}: {:?} at version {}",
        report.applied, summary.state, summary.version
    );
    assert_eq!(
        (summary.state.units, summary.state.checked_out, summary.version),
        (4, true, 3)
    );

    store.shutdown().await;
    Ok(())
}
