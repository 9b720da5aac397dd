//! The in-memory store's head under racing appends.

use std::sync::Arc;

use es_core::{EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, StreamId};
use serde_json::json;

/// Appends that race publish their heads in any order; the head must
/// never fall behind an acknowledged append, nor end behind the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 16)]
async fn racing_appends_never_leave_the_head_behind() {
    let store = Arc::new(InMemoryEventStore::new());
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut behind = 0;
                for i in 0..2000 {
                    let stream = StreamId::from(format!("s-{t}-{i}"));
                    let new = vec![NewEvent::new("Happened", json!({}))];
                    let appended = store
                        .append("thing", &stream, ExpectedVersion::NoStream, new)
                        .await
                        .unwrap();
                    if store.head_position().await.unwrap() < appended.positions[0] {
                        behind += 1;
                    }
                }
                behind
            })
        })
        .collect();
    let mut behind = 0;
    for t in tasks {
        behind += t.await.unwrap();
    }
    assert_eq!(behind, 0, "the head fell behind an acknowledged append {behind} times");
    assert_eq!(
        store.head_position().await.unwrap(),
        32 * 2000,
        "the head ends at the log's end"
    );
}

/// `es_core::Error` is the store's error, under the name the docs use: a
/// version conflict is `Error::Conflict { stream_id, expected, actual }`.
#[tokio::test]
async fn a_conflict_is_error_conflict() {
    let store = InMemoryEventStore::new();
    let id = StreamId::from("s");
    store
        .append(
            "thing",
            &id,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Happened", json!({}))],
        )
        .await
        .unwrap();
    let err: es_core::Error = store
        .append(
            "thing",
            &id,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Happened", json!({}))],
        )
        .await
        .unwrap_err();
    match err {
        es_core::Error::Conflict {
            stream_id,
            expected,
            actual,
        } => assert_eq!((stream_id, expected, actual), (id, ExpectedVersion::NoStream, 1)),
        other => panic!("expected a conflict, got {other}"),
    }
}
