//! The in-memory de-duplicator's windows, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use es_core::{CommandDeduplicator, DedupStatus, InMemoryDeduplicator, ManualClock};
use serde_json::json;

#[tokio::test]
async fn in_flight_marks_expire_and_outcomes_last_one_window() {
    let clock = ManualClock::at("2026-01-01T00:00:00Z".parse().unwrap());
    let dedup = InMemoryDeduplicator::with_clock(
        Duration::from_secs(3600),
        Duration::from_secs(30),
        Arc::new(clock.clone()),
    );
    assert!(dedup.begin("k").await.unwrap().is_started());
    clock.advance(chrono::Duration::seconds(29));
    assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::InProgress);
    // The owner died: its mark expires, the next caller starts.
    clock.advance(chrono::Duration::seconds(1));
    let claim = dedup.begin("k").await.unwrap().into_claim().expect("started");
    dedup.complete("k", &claim, &json!(1)).await.unwrap();
    clock.advance(chrono::Duration::seconds(3599));
    assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::Completed(json!(1)));
    dedup.abandon("k", &claim).await.unwrap();
    assert_eq!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Completed(json!(1)),
        "abandon never drops an outcome"
    );
    clock.advance(chrono::Duration::seconds(1));
    assert!(dedup.begin("k").await.unwrap().is_started(), "the window ended");
}

/// The claims, on the system clock.
#[tokio::test]
async fn claims_conform() {
    let ttl = Duration::from_secs(1);
    es_core::conformance::deduplicator_claims(&InMemoryDeduplicator::new(Duration::from_secs(3600), ttl), ttl).await;
}
