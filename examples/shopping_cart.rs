//! The quick-start example: a shopping cart on the in-memory backends.
//!
//! Run with `cargo run -p es-examples --example shopping_cart`.

use std::sync::Arc;
use std::time::Duration;

use es_core::{
    CommandContext, EventFilter, InMemoryCheckpointStore, InMemoryEventStore, InMemorySnapshotStore,
    InMemoryStateCache, Metadata, ProjectionRunner, Projector, ProjectorUnit, RecordedEvent, Repository,
    RepositoryError, SnapshotPolicy,
};
use es_examples::shopping_cart::{Cart, CartCommand, CartError};

/// A read model: how many carts were checked out.
#[derive(Default)]
struct CheckoutCounter(std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl Projector for CheckoutCounter {
    fn name(&self) -> &str {
        "checkouts"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::all().event_types(["CheckedOut"])
    }
    async fn apply(&self, _event: &RecordedEvent) -> Result<(), es_core::BoxError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let carts: Repository<Cart, InMemoryEventStore> = Repository::builder(Arc::clone(&store))
        .snapshots(
            Arc::new(InMemorySnapshotStore::new()),
            SnapshotPolicy::EveryNEvents(100),
        )
        .cache(Arc::new(InMemoryStateCache::new(10_000)))
        .build();

    let add = |sku: &str, quantity| CartCommand::Add {
        sku: sku.into(),
        quantity,
    };
    let ctx = CommandContext::default().with_metadata(Metadata::correlated(uuid::Uuid::now_v7()));
    carts.execute_in("cart-1", add("apple", 3), ctx.clone()).await?;
    carts.execute_in("cart-1", add("pear", 1), ctx.clone()).await?;
    let out = carts
        .execute(
            "cart-1",
            CartCommand::Remove {
                sku: "apple".into(),
                quantity: 1,
            },
        )
        .await?;
    println!("cart-1 at version {}: {:?}", out.version, out.state.items);

    match carts
        .execute(
            "cart-1",
            CartCommand::Remove {
                sku: "kiwi".into(),
                quantity: 1,
            },
        )
        .await
    {
        Err(RepositoryError::Rejected(CartError::NotEnough { sku, held })) => {
            println!("rejected as expected: only {held} of {sku}");
        }
        other => return Err(format!("expected a rejection, got {other:?}").into()),
    }

    carts.execute("cart-1", CartCommand::CheckOut).await?;
    carts.execute("cart-2", add("plum", 2)).await?;
    carts.execute("cart-2", CartCommand::CheckOut).await?;

    let counter = Arc::new(CheckoutCounter::default());
    let unit = ProjectorUnit::new(Arc::clone(&counter), Arc::new(InMemoryCheckpointStore::new()));
    let runner = ProjectionRunner::new(store.clone(), Arc::new(unit));
    let report = runner.catch_up().await?;
    println!(
        "projection applied {} events, checkpoint {}",
        report.applied, report.position
    );
    println!(
        "checked-out carts: {}",
        counter.0.load(std::sync::atomic::Ordering::SeqCst)
    );

    for e in carts.history("cart-1").await? {
        println!("  v{} {:?}", e.version, e.event);
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(())
}
