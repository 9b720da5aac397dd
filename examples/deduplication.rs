//! De-duplication: a client retries a request whose answer it never got
//! (a timeout, a dropped connection). The command must apply once, and
//! the retry should get the first answer.
//!
//! Two layers, used together by the banking example's `Idempotency-Key`:
//! - a command id (`CommandContext::with_command_id`): the event ids derive
//!   from it, so the store itself recognises the retried append — even
//!   after a crash between commit and reply;
//! - a `CommandDeduplicator` keeps the first response for a window, so the
//!   retry is answered without running anything (in memory here;
//!   `RedisDeduplicator` or `PostgresDeduplicator` across processes).
//!
//! Run with `cargo run -p es-examples --example deduplication`.

use std::sync::Arc;
use std::time::Duration;

use es_core::{CommandContext, CommandDeduplicator, DedupStatus, InMemoryDeduplicator, InMemoryEventStore, Repository};
use es_examples::shopping_cart::{Cart, CartCommand};
use serde_json::{json, Value};
use uuid::Uuid;

/// What an HTTP handler does with an idempotency key.
async fn add_apples(
    carts: &Repository<Cart>,
    dedup: &dyn CommandDeduplicator,
    key: &str,
) -> Result<Value, Box<dyn std::error::Error>> {
    let claim = match dedup.begin_or_wait(key, Duration::from_secs(1)).await? {
        DedupStatus::Completed(answer) => return Ok(answer),
        DedupStatus::InProgress => return Err("still running".into()),
        DedupStatus::Started(claim) => claim,
    };
    // The command id comes from the key, so even without the deduplicator
    // (or after it forgot the key) the store would not append twice.
    let command_id = Uuid::new_v5(&Uuid::NAMESPACE_URL, key.as_bytes());
    let ctx = CommandContext::default().with_command_id(command_id);
    match carts
        .execute_in(
            "cart-1",
            CartCommand::Add {
                sku: "apple".into(),
                quantity: 2,
            },
            ctx,
        )
        .await
    {
        Ok(out) => {
            let answer = json!({ "version": out.version, "apples": out.state.items.get("apple") });
            // The command ran: this is the answer even if it cannot be kept
            // for retries (`ClaimLost`: this call was so slow that a retry
            // took the key; the command id keeps that retry from applying).
            if let Err(e) = dedup.complete(key, &claim, &answer).await {
                eprintln!("the answer was not kept for retries: {e}");
            }
            Ok(answer)
        }
        Err(e) => {
            dedup.abandon(key, &claim).await?; // a retry may run it again
            Err(e.into())
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let carts = Repository::<Cart>::builder(Arc::new(InMemoryEventStore::new())).build();
    let dedup = InMemoryDeduplicator::new(Duration::from_hours(24), Duration::from_secs(30));

    let first = add_apples(&carts, &dedup, "request-1").await?;
    let retry = add_apples(&carts, &dedup, "request-1").await?;
    println!("first answer {first}, retry answer {retry}");
    assert_eq!(first, retry);

    // Without the deduplicator, the command id alone still applies it once.
    let ctx = CommandContext::default().with_command_id(Uuid::new_v5(&Uuid::NAMESPACE_URL, b"request-1"));
    let again = carts
        .execute_in(
            "cart-1",
            CartCommand::Add {
                sku: "apple".into(),
                quantity: 2,
            },
            ctx,
        )
        .await?;
    println!("store-level retry: already applied = {}", again.already_applied);
    assert!(again.already_applied);

    let cart = carts.load("cart-1").await?;
    assert_eq!((cart.version, cart.state.items.get("apple")), (1, Some(&2)));
    Ok(())
}
