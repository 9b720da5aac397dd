//! Replay: rebuild a read model from the log after its code changed,
//! fully or from a position.
//!
//! Run with `cargo run -p es-examples --example replay`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use es_core::{
    BoxError, EventFilter, InMemoryCheckpointStore, InMemoryEventStore, ProjectionRunner, Projector, ProjectorUnit,
    RecordedEvent, ReplayMode, Repository,
};
use es_examples::shopping_cart::{Cart, CartCommand};

/// Items added over all carts. Its `reset` clears it before a full replay.
#[derive(Default)]
struct ItemsAdded {
    total: AtomicU64,
}

#[es_core::async_trait]
impl Projector for ItemsAdded {
    fn name(&self) -> &str {
        "items_added"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::all().event_types(["ItemAdded"])
    }
    async fn apply(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let quantity = event.payload["ItemAdded"]["quantity"]
            .as_u64()
            .ok_or("ItemAdded without a quantity")?;
        self.total.fetch_add(quantity, Ordering::SeqCst);
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.total.store(0, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let carts = Repository::<Cart>::builder(store.clone()).build();
    for (cart, quantity) in [("cart-1", 2), ("cart-2", 5), ("cart-3", 1)] {
        carts
            .execute(
                cart,
                CartCommand::Add {
                    sku: "apple".into(),
                    quantity,
                },
            )
            .await?;
    }

    let items = Arc::new(ItemsAdded::default());
    let unit = ProjectorUnit::new(items.clone(), Arc::new(InMemoryCheckpointStore::new()));
    let runner = ProjectionRunner::new(store, Arc::new(unit));
    runner.catch_up().await?;
    assert_eq!(items.total.load(Ordering::SeqCst), 8);

    // Catching up again applies nothing: the checkpoint remembers.
    assert_eq!(runner.catch_up().await?.applied, 0);

    // A full replay resets the read model and applies the whole log again.
    let full = runner.replay(ReplayMode::Full).await?;
    println!("full replay applied {} events", full.applied);
    assert_eq!((full.applied, items.total.load(Ordering::SeqCst)), (3, 8));

    // A replay from a position applies only the events after it (here the
    // projector is not idempotent, so the total counts them again).
    let first = carts.history("cart-1").await?;
    let after_first = first[0].global_position;
    let partial = runner.replay(ReplayMode::From(after_first)).await?;
    println!("replay from position {after_first} applied {} events", partial.applied);
    assert_eq!((partial.applied, items.total.load(Ordering::SeqCst)), (2, 14));
    Ok(())
}
