//! Dead letters: an event the projector cannot handle is set aside after
//! its retries, the projection goes on, and an operator retries it once
//! the cause is fixed.
//!
//! Run with `cargo run -p es-examples --example dead_letters`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use es_core::{
    BoxError, InMemoryCheckpointStore, InMemoryEventStore, OnFailure, ProjectionConfig, ProjectionRunner, Projector,
    ProjectorUnit, RecordedEvent, Repository, RetryPolicy,
};
use es_examples::shopping_cart::{Cart, CartCommand};

/// Counts items, but cannot handle the SKU "bad" until it is "fixed".
#[derive(Default)]
struct Fragile {
    counted: AtomicU64,
    fixed: AtomicBool,
}

#[es_core::async_trait]
impl Projector for Fragile {
    fn name(&self) -> &str {
        "fragile"
    }
    async fn apply(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.payload["ItemAdded"]["sku"] == "bad" && !self.fixed.load(Ordering::SeqCst) {
            return Err("cannot price SKU bad".into());
        }
        self.counted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let carts = Repository::<Cart>::builder(store.clone()).build();
    for sku in ["apple", "bad", "pear"] {
        carts
            .execute(
                "cart-1",
                CartCommand::Add {
                    sku: sku.into(),
                    quantity: 1,
                },
            )
            .await?;
    }

    let projector = Arc::new(Fragile::default());
    let unit = ProjectorUnit::new(projector.clone(), Arc::new(InMemoryCheckpointStore::new()));
    let runner = ProjectionRunner::new(store, Arc::new(unit)).with_config(ProjectionConfig {
        // Two quick retries, then dead-letter (the default is to stop).
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
        on_failure: OnFailure::DeadLetter,
        ..ProjectionConfig::default()
    });

    let report = runner.catch_up().await?;
    println!("applied {}, dead-lettered {}", report.applied, report.dead_lettered);
    assert_eq!((report.applied, report.dead_lettered), (2, 1));

    let letters = runner.dead_letters().await?;
    let letter = letters.first().ok_or("no dead letter")?;
    println!(
        "dead letter: {} v{} at {} after {} attempts: {}",
        letter.stream_id, letter.version, letter.global_position, letter.attempts, letter.error
    );

    // The cause is fixed (a deploy, a missing price added): retry it.
    projector.fixed.store(true, Ordering::SeqCst);
    assert!(runner.retry_dead_letter(letter.global_position).await?);
    assert!(runner.dead_letters().await?.is_empty());
    assert_eq!(projector.counted.load(Ordering::SeqCst), 3);
    println!("retried: every event counted once");
    Ok(())
}
