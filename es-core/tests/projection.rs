//! The projection engine on the in-memory backends: catch-up from a
//! checkpoint, live following, replays, dead letters, subscriptions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use es_core::{
    subscribe, BoxError, CheckpointStore, EventFilter, EventStore, ExpectedVersion, InMemoryCheckpointStore,
    InMemoryEventStore, NewEvent, OnFailure, ProjectionConfig, ProjectionError, ProjectionReport, ProjectionRunner,
    Projector, ProjectorUnit, RecordedEvent, ReplayMode, RetryPolicy, StreamId,
};
use futures::StreamExt;
use serde_json::json;

/// Counts events per stream and type; fails on payloads marked poison.
#[derive(Default)]
struct Counts {
    seen: Mutex<BTreeMap<(String, String), u64>>,
    applied: Mutex<Vec<u64>>,
}

#[async_trait]
impl Projector for Counts {
    fn name(&self) -> &str {
        "counts"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::all().stream_types(["order"])
    }
    async fn apply(&self, e: &RecordedEvent) -> Result<(), BoxError> {
        if e.payload["poison"] == json!(true) {
            return Err(format!("cannot project event {}", e.global_position).into());
        }
        *self
            .seen
            .lock()
            .unwrap()
            .entry((e.stream_id.to_string(), e.event_type.clone()))
            .or_default() += 1;
        self.applied.lock().unwrap().push(e.global_position);
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.seen.lock().unwrap().clear();
        self.applied.lock().unwrap().clear();
        Ok(())
    }
}

async fn append(store: &InMemoryEventStore, stream_type: &str, id: &str, kind: &str, payload: serde_json::Value) {
    store
        .append(
            stream_type,
            &StreamId::from(id),
            ExpectedVersion::Any,
            vec![NewEvent::new(kind, payload)],
        )
        .await
        .unwrap();
}

fn fast_config(on_failure: OnFailure) -> ProjectionConfig {
    ProjectionConfig {
        batch_size: 3,
        poll_interval: Duration::from_millis(20),
        retry: RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        },
        on_failure,
        ..ProjectionConfig::default()
    }
}

fn runner(
    store: &Arc<InMemoryEventStore>,
    projector: &Arc<Counts>,
    checkpoints: &Arc<InMemoryCheckpointStore>,
    config: ProjectionConfig,
) -> ProjectionRunner {
    let unit = ProjectorUnit::new(projector.clone(), checkpoints.clone());
    ProjectionRunner::new(store.clone(), Arc::new(unit)).with_config(config)
}

fn applied(r: ProjectionReport) -> u64 {
    assert_eq!(r.dead_lettered, 0, "{r:?}");
    r.applied
}

#[tokio::test]
async fn catches_up_from_checkpoint_and_filters() {
    let store = Arc::new(InMemoryEventStore::new());
    for i in 0..7 {
        append(&store, "order", &format!("o{}", i % 2), "Placed", json!({})).await;
        append(&store, "invoice", "i", "Issued", json!({})).await;
    }
    let projector = Arc::new(Counts::default());
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let runner = runner(&store, &projector, &checkpoints, fast_config(OnFailure::Stop));
    assert_eq!(applied(runner.catch_up().await.unwrap()), 7);
    assert_eq!(
        checkpoints.load("counts").await.unwrap(),
        14,
        "checkpoint moves past unmatched events"
    );
    assert_eq!(applied(runner.catch_up().await.unwrap()), 0, "nothing applied twice");
    append(&store, "order", "o0", "Shipped", json!({})).await;
    assert_eq!(applied(runner.catch_up().await.unwrap()), 1);
    let applied = projector.applied.lock().unwrap().clone();
    assert!(applied.windows(2).all(|w| w[0] < w[1]), "global order");
    assert_eq!(applied.len(), 8);
}

/// Events appended after the runner's first catch-up ended (it is idle,
/// waiting) are applied by its live following, not read as history.
#[tokio::test]
async fn follows_live_events_until_shutdown() {
    let store = Arc::new(InMemoryEventStore::new());
    // History: fewer events than a page, so the first catch-up reads one
    // short page and ends once it has published position 2.
    for _ in 0..2 {
        append(&store, "order", "o", "Placed", json!({})).await;
    }
    let projector = Arc::new(Counts::default());
    let runner = runner(&store, &projector, &Arc::default(), fast_config(OnFailure::Stop));
    let follower = runner.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        follower
            .run(async {
                let _ = stop_rx.await;
            })
            .await
    });
    assert!(runner.wait_for(2, Duration::from_secs(60)).await, "history applied");
    assert!(
        !runner.wait_for(3, Duration::from_millis(50)).await,
        "idle: nothing more to apply"
    );
    assert_eq!(projector.applied.lock().unwrap().as_slice(), &[1, 2]);
    for _ in 0..5 {
        append(&store, "order", "o", "Placed", json!({})).await;
    }
    assert!(
        runner.wait_for(7, Duration::from_secs(60)).await,
        "the live events were applied"
    );
    assert_eq!(projector.applied.lock().unwrap().as_slice(), &[1, 2, 3, 4, 5, 6, 7]);
    assert!(!task.is_finished(), "still following");
    stop_tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn full_incremental_and_selective_replay() {
    let store = Arc::new(InMemoryEventStore::new());
    for _ in 0..3 {
        append(&store, "order", "o", "Placed", json!({})).await;
        append(&store, "order", "o", "Paid", json!({})).await;
    }
    let projector = Arc::new(Counts::default());
    let runner = runner(&store, &projector, &Arc::default(), fast_config(OnFailure::Stop));
    runner.catch_up().await.unwrap();
    let key = |t: &str| ("o".to_owned(), t.to_owned());
    assert_eq!(projector.seen.lock().unwrap()[&key("Paid")], 3);

    assert_eq!(applied(runner.replay(ReplayMode::Full).await.unwrap()), 6);
    assert_eq!(projector.seen.lock().unwrap()[&key("Paid")], 3, "reset then rebuilt");

    assert_eq!(applied(runner.replay(ReplayMode::From(4)).await.unwrap()), 2);
    assert_eq!(
        projector.seen.lock().unwrap()[&key("Paid")],
        4,
        "events 5 and 6 applied again"
    );
    assert_eq!(runner.position().await.unwrap(), 6);

    let n = runner
        .replay(ReplayMode::Selective {
            event_types: vec!["Placed".into()],
            from: 0,
        })
        .await
        .unwrap();
    assert_eq!(applied(n), 3);
    assert_eq!(projector.seen.lock().unwrap()[&key("Placed")], 7);
    assert_eq!(projector.seen.lock().unwrap()[&key("Paid")], 4, "other types untouched");
    assert_eq!(
        runner.position().await.unwrap(),
        6,
        "selective replay keeps the checkpoint"
    );
}

#[tokio::test]
async fn failing_events_are_dead_lettered_or_stop_the_runner() {
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, "order", "o", "Placed", json!({})).await;
    append(&store, "order", "o", "Placed", json!({"poison": true})).await;
    append(&store, "order", "o", "Placed", json!({})).await;

    let stopper = runner(
        &store,
        &Arc::default(),
        &Arc::default(),
        ProjectionConfig {
            batch_size: 1,
            ..fast_config(OnFailure::Stop)
        },
    );
    match stopper.catch_up().await.unwrap_err() {
        ProjectionError::Stopped { position, attempts, .. } => assert_eq!((position, attempts), (2, 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        stopper.position().await.unwrap(),
        1,
        "checkpoint stays before the failing event"
    );

    let projector = Arc::new(Counts::default());
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let runner = runner(&store, &projector, &checkpoints, fast_config(OnFailure::DeadLetter));
    let report = runner.catch_up().await.unwrap();
    assert_eq!(
        (report.applied, report.dead_lettered, report.position),
        (2, 1, 3),
        "counted apart"
    );
    assert_eq!(*projector.applied.lock().unwrap(), vec![1, 3]);
    let dead = checkpoints.dead_letters("counts").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].global_position, dead[0].attempts), (2, 3));
    assert!(dead[0].error.contains("cannot project event 2"));
}

#[tokio::test]
async fn subscriptions_deliver_history_then_live_events_once_in_order() {
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, "order", "o", "A", json!(1)).await;
    append(&store, "invoice", "i", "B", json!(2)).await;
    let mut sub = subscribe(
        store.clone(),
        0,
        EventFilter::all().stream_types(["order"]),
        Duration::from_millis(10),
    );
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..20 {
                append(&store, if i % 2 == 0 { "order" } else { "invoice" }, "x", "C", json!(i)).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let mut positions = Vec::new();
    while positions.len() < 11 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(e.stream_type, "order");
        positions.push(e.global_position);
    }
    writer.await.unwrap();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(positions[0], 1);
}
