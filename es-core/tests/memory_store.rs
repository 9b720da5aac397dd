//! The in-memory store's head under racing appends.

use std::sync::Arc;

use es_core::{EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId};
use serde_json::json;

/// Appends that race publish their heads in any order; the head must
/// still end at the last position, never behind an acknowledged append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appends_never_leave_the_head_behind() {
    for round in 0..20 {
        let store = Arc::new(InMemoryEventStore::new());
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..200 {
                        let stream = StreamId::from(format!("s-{t}-{i}"));
                        let new = vec![NewEvent::new("Happened", json!({}))];
                        store
                            .append("thing", &stream, ExpectedVersion::NoStream, new)
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let head = store.head_position().await.unwrap();
        assert_eq!(head, 8 * 200, "round {round}: the head fell behind the log");
    }
}
