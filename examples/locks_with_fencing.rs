//! Locks with fencing tokens: a lock holder that paused past its lease
//! (a GC pause, a stalled VM) cannot write over the newer holder's work,
//! because every command carries its lock's fencing token and the stream
//! refuses tokens older than one it already holds.
//!
//! In memory here; es-redis's `RedisLockManager` and `LockedRepository`
//! are the distributed equivalents.
//!
//! Run with `cargo run -p es-examples --example locks_with_fencing`.

use std::sync::Arc;
use std::time::Duration;

use es_core::{CommandContext, InMemoryEventStore, InMemoryLockManager, LockManager, Repository, RepositoryError};
use es_examples::shopping_cart::{Cart, CartCommand};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let locks = InMemoryLockManager::new();
    let carts = Repository::<Cart>::builder(Arc::new(InMemoryEventStore::new())).build();
    let add = |sku: &str| CartCommand::Add {
        sku: sku.into(),
        quantity: 1,
    };

    // Worker A takes the lock with a short lease... and then stalls.
    let a = locks.acquire("cart-1", Duration::from_millis(50)).await?;
    let a_token = a.fencing_token();
    tokio::time::sleep(Duration::from_millis(80)).await;

    // The lease expired: worker B takes the lock (a larger token) and writes.
    let b = locks.acquire("cart-1", Duration::from_secs(5)).await?;
    let b_token = b.fencing_token();
    println!("A holds token {a_token}, B holds token {b_token}");
    assert!(b_token > a_token);
    carts
        .execute_in(
            "cart-1",
            add("from-b"),
            CommandContext::default().with_fencing_token(b_token),
        )
        .await?;

    // A wakes up and tries to write with its old token: refused, nothing appended.
    let stale = carts
        .execute_in(
            "cart-1",
            add("from-a"),
            CommandContext::default().with_fencing_token(a_token),
        )
        .await;
    match stale {
        Err(RepositoryError::Fenced { token, newer, .. }) => {
            println!("A's write refused: token {token} is older than {newer}");
        }
        other => return Err(format!("expected the stale holder to be fenced, got {other:?}").into()),
    }
    let cart = carts.load("cart-1").await?;
    assert_eq!(cart.state.items.keys().collect::<Vec<_>>(), ["from-b"]);

    // A also cannot release B's lock.
    assert!(!a.release().await?);
    assert!(b.release().await?);
    Ok(())
}
