//! An append in the caller's transaction wakes waiting readers when the
//! transaction commits, not before.
mod common;

use std::sync::Arc;
use std::time::Duration;

use es_core::{EventFilter, EventStore, ExpectedVersion, NewEvent, StreamId};
use serde_json::json;

/// Longer than any test runs: a waiter only returns early when woken.
const FOREVER: Duration = Duration::from_secs(3600);
/// The generous bound on a wake-up that must come.
const BOUND: Duration = Duration::from_secs(60);

fn ev(n: u64) -> NewEvent {
    NewEvent::new("Happened", json!({ "n": n }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transactional_append_wakes_waiting_readers_at_commit() {
    let store = Arc::new(common::store().await);

    // Make sure the store listens: append until a waiter is woken.
    let head = store.head_position().await.unwrap();
    let warm = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.wait_for_events(head, FOREVER).await }
    });
    let deadline = std::time::Instant::now() + BOUND;
    let mut n = 0;
    while !warm.is_finished() {
        assert!(std::time::Instant::now() < deadline, "no reader was ever woken");
        store
            .append(
                "t",
                &StreamId::from(format!("warm{n}")),
                ExpectedVersion::NoStream,
                vec![ev(n)],
            )
            .await
            .unwrap();
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    warm.await.unwrap().unwrap();
    let head = common::settled_head(&store).await;

    // A reader waiting for events after `head`, each wait an hour long;
    // a wake-up with nothing new to read (allowed) makes it wait again.
    let waiter = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            loop {
                store.wait_for_events(head, FOREVER).await.unwrap();
                let seen = store.read_all(head, 10, &EventFilter::all()).await.unwrap();
                if !seen.is_empty() {
                    return seen;
                }
            }
        }
    });
    let mut tx = store.pool().begin().await.unwrap();
    let appended = store
        .append_in_transaction(
            &mut tx,
            "t",
            &StreamId::from("tx"),
            ExpectedVersion::NoStream,
            vec![ev(100)],
        )
        .await
        .unwrap();
    assert!(!waiter.is_finished(), "nothing is readable before the commit");
    tx.commit().await.unwrap();
    let seen = tokio::time::timeout(BOUND, waiter)
        .await
        .expect("the commit woke the waiting reader")
        .unwrap();
    let positions: Vec<u64> = seen.iter().map(|e| e.global_position).collect();
    assert_eq!(
        positions, appended.positions,
        "when woken, the committed event is readable"
    );
}
