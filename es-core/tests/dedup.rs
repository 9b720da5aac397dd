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
    assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::Started);
    clock.advance(chrono::Duration::seconds(29));
    assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::InProgress);
    // The owner died: its mark expires, the next caller starts.
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::Started);
    dedup.complete("k", &json!(1)).await.unwrap();
    clock.advance(chrono::Duration::seconds(3599));
    assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::Completed(json!(1)));
    dedup.abandon("k").await.unwrap();
    assert_eq!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Completed(json!(1)),
        "abandon never drops an outcome"
    );
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Started,
        "the window ended"
    );
}
