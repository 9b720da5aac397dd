//! A typed projection: a read model fed decoded `CartEvent`s (not JSON),
//! kept by es-core's one projection engine with its checkpoint.
//!
//! Run with `cargo run -p es-examples --example typed_projection`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use es_core::{
    BoxError, EventEnvelope, InMemoryCheckpointStore, InMemoryEventStore, ProjectionRunner, ProjectorUnit, Repository,
    Typed, TypedProjector,
};
use es_examples::shopping_cart::{Cart, CartCommand, CartEvent};

/// Units sold per SKU, counted when a cart is checked out.
#[derive(Default)]
struct SalesBySku {
    /// Items per open cart (a projection may keep any state it needs).
    open: Mutex<BTreeMap<String, BTreeMap<String, u32>>>,
    sold: Mutex<BTreeMap<String, u32>>,
}

#[es_core::async_trait]
impl TypedProjector for SalesBySku {
    type Aggregate = Cart;

    fn name(&self) -> &str {
        "sales_by_sku"
    }

    async fn apply(&self, e: &EventEnvelope<CartEvent>) -> Result<(), BoxError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let cart = open.entry(e.stream_id.to_string()).or_default();
        match &e.event {
            CartEvent::ItemAdded { sku, quantity } => *cart.entry(sku.clone()).or_default() += quantity,
            CartEvent::ItemRemoved { sku, quantity } => {
                let held = cart.entry(sku.clone()).or_default();
                *held = held.saturating_sub(*quantity);
            }
            CartEvent::CheckedOut => {
                let mut sold = self.sold.lock().unwrap_or_else(PoisonError::into_inner);
                for (sku, n) in std::mem::take(cart) {
                    *sold.entry(sku).or_default() += n;
                }
            }
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), BoxError> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.sold.lock().unwrap_or_else(PoisonError::into_inner).clear();
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let carts = Repository::<Cart>::builder(store.clone()).build();
    let add = |sku: &str, quantity| CartCommand::Add {
        sku: sku.into(),
        quantity,
    };
    carts.execute("cart-1", add("apple", 3)).await?;
    carts.execute("cart-1", CartCommand::CheckOut).await?;
    carts.execute("cart-2", add("apple", 1)).await?;
    carts.execute("cart-2", add("pear", 2)).await?;
    carts.execute("cart-2", CartCommand::CheckOut).await?;
    carts.execute("cart-3", add("plum", 9)).await?; // not checked out

    let sales = Arc::new(SalesBySku::default());
    let unit = ProjectorUnit::new(
        Arc::new(Typed::new(sales.clone())),
        Arc::new(InMemoryCheckpointStore::new()),
    );
    let runner = ProjectionRunner::new(store, Arc::new(unit));
    let report = runner.catch_up().await?;
    let sold = sales.sold.lock().unwrap_or_else(PoisonError::into_inner).clone();
    println!("applied {} events; sold: {sold:?}", report.applied);
    assert_eq!(report.applied, 6);
    assert_eq!(
        sold,
        BTreeMap::from([("apple".to_string(), 4), ("pear".to_string(), 2)])
    );
    Ok(())
}
