//! Snapshots: a long stream loads from its newest snapshot plus the
//! events after it, not from event 1.
//!
//! Run with `cargo run -p es-examples --example snapshots`.

use std::sync::Arc;

use es_core::{InMemoryEventStore, InMemorySnapshotStore, Repository, SnapshotPolicy, SnapshotStore, StreamId};
use es_examples::shopping_cart::{Cart, CartCommand};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let snapshots = Arc::new(InMemorySnapshotStore::new());
    // A snapshot after every 10th event of a stream (written after the
    // append, off the command's path).
    let carts = Repository::<Cart>::builder(store.clone())
        .snapshots(snapshots.clone(), SnapshotPolicy::EveryNEvents(10))
        .build();

    for i in 0..25 {
        let sku = format!("sku-{}", i % 4);
        carts.execute("cart-1", CartCommand::Add { sku, quantity: 1 }).await?;
    }

    // Snapshots are saved in the background: wait for the one at 20.
    let id = StreamId::from("cart-1");
    let mut snapshot = None;
    for _ in 0..200 {
        snapshot = snapshots.load(&id).await?;
        if snapshot.as_ref().is_some_and(|s| s.version == 20) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let snapshot = snapshot.ok_or("no snapshot was written")?;
    println!("newest snapshot of cart-1: version {}", snapshot.version);
    assert_eq!(snapshot.version, 20, "snapshots at versions 10 and 20");

    // A repository without a cache: loading reads the snapshot, then only
    // events 21..=25.
    let fresh = Repository::<Cart>::builder(store)
        .snapshots(snapshots, SnapshotPolicy::EveryNEvents(10))
        .build();
    let loaded = fresh.load("cart-1").await?;
    println!(
        "cart-1 at version {} holds {} items",
        loaded.version,
        loaded.state.item_count()
    );
    assert_eq!((loaded.version, loaded.state.item_count()), (25, 25));
    Ok(())
}
