//! The one projection engine: pages per unit of work, loud failures,
//! typed projections, concurrent runners, read-your-writes, dead letters.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use es_core::testing::PausableUnit;
use es_core::{
    Advance, Aggregate, BoxError, DeadLetter, DomainEvent, EventCodec, EventEnvelope, EventFilter, EventStore,
    ExpectedVersion, InMemoryCheckpointStore, InMemoryEventStore, Metadata, NewEvent, OnFailure, ProjectionConfig,
    ProjectionError, ProjectionRunner, ProjectionUnit, Projector, ProjectorUnit, RecordedEvent, Repository,
    RetryPolicy, StoreError, StreamId, Typed, TypedProjector, UnitError, UpcasterRegistry,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Records positions; fails on payloads marked poison while `poisoned`.
struct Log {
    positions: Mutex<Vec<u64>>,
    poisoned: AtomicBool,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            positions: Mutex::default(),
            poisoned: AtomicBool::new(true),
        }
    }
}

#[async_trait]
impl Projector for Log {
    fn name(&self) -> &str {
        "log"
    }
    async fn apply(&self, e: &RecordedEvent) -> Result<(), BoxError> {
        if e.payload["poison"] == json!(true) && self.poisoned.load(Ordering::SeqCst) {
            return Err(format!("poison at {}", e.global_position).into());
        }
        tokio::task::yield_now().await;
        self.positions.lock().unwrap().push(e.global_position);
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.positions.lock().unwrap().clear();
        Ok(())
    }
}

/// Counts the unit's `apply` calls; with `fail_after_page` set, the next
/// non-empty page is applied and then reported failed after its last event
/// (`index` equal to the page's length), once.
struct Counting<U> {
    inner: U,
    calls: AtomicUsize,
    fail_after_page: AtomicBool,
}

impl<U> Counting<U> {
    fn new(inner: U) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
            fail_after_page: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl<U: ProjectionUnit> ProjectionUnit for Counting<U> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn filter(&self) -> EventFilter {
        self.inner.filter()
    }
    async fn position(&self) -> Result<u64, StoreError> {
        self.inner.position().await
    }
    async fn apply(&self, events: &[RecordedEvent], advance: Option<Advance>) -> Result<(), UnitError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.apply(events, advance).await?;
        if events.is_empty() || !self.fail_after_page.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        Err(UnitError::Apply {
            applied: events.len(),
            index: Some(events.len()),
            error: "failed after the page's last event".into(),
        })
    }
    async fn dead_letter(&self, letter: DeadLetter, advance: Option<Advance>) -> Result<(), UnitError> {
        self.inner.dead_letter(letter, advance).await
    }
    async fn reset(&self) -> Result<(), UnitError> {
        self.inner.reset().await
    }
    async fn seek(&self, position: u64) -> Result<(), StoreError> {
        self.inner.seek(position).await
    }
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters().await
    }
    async fn resolve_dead_letter(&self, position: u64, event: Option<&RecordedEvent>) -> Result<bool, UnitError> {
        self.inner.resolve_dead_letter(position, event).await
    }
}

async fn append(store: &InMemoryEventStore, payload: serde_json::Value) -> u64 {
    append_as(store, "Placed", payload).await
}

async fn append_as(store: &InMemoryEventStore, event_type: &str, payload: serde_json::Value) -> u64 {
    store
        .append(
            "order",
            &StreamId::from("o"),
            ExpectedVersion::Any,
            vec![NewEvent::new(event_type, payload)],
        )
        .await
        .unwrap()
        .positions[0]
}

fn fast(on_failure: OnFailure, batch_size: usize) -> ProjectionConfig {
    ProjectionConfig {
        batch_size,
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

fn unit(log: &Arc<Log>) -> Arc<ProjectorUnit<Log, InMemoryCheckpointStore>> {
    Arc::new(ProjectorUnit::new(
        log.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
    ))
}

#[tokio::test]
async fn a_failing_projector_stops_the_runner_by_default() {
    assert_eq!(ProjectionConfig::default().on_failure, OnFailure::Stop);
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, json!({})).await;
    append(&store, json!({"poison": true})).await;
    let log = Arc::new(Log::default());
    let config = ProjectionConfig {
        retry: RetryPolicy {
            initial_delay: Duration::from_millis(1),
            ..ProjectionConfig::default().retry
        },
        ..ProjectionConfig::default()
    };
    let runner = ProjectionRunner::new(store.clone(), unit(&log)).with_config(config);
    let err = runner.catch_up().await.unwrap_err();
    assert!(
        matches!(
            err,
            ProjectionError::Stopped {
                position: 2,
                attempts: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(runner.position().await.unwrap(), 1, "the good event before it is kept");
    assert!(runner.dead_letters().await.unwrap().is_empty());
    // `run` returns the same error instead of spinning.
    let err = runner.run(std::future::pending()).await.unwrap_err();
    assert!(matches!(err, ProjectionError::Stopped { .. }), "{err:?}");
}

#[tokio::test]
async fn each_page_is_one_unit_of_work_and_a_bad_event_costs_only_itself() {
    let store = Arc::new(InMemoryEventStore::new());
    for i in 1..=100 {
        append(&store, if i == 42 { json!({"poison": true}) } else { json!({}) }).await;
    }
    let log = Arc::new(Log::default());
    let counting = Arc::new(Counting::new(ProjectorUnit::new(
        log.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
    )));
    let runner = ProjectionRunner::new(store.clone(), counting.clone()).with_config(fast(OnFailure::DeadLetter, 25));
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered, report.position), (99, 1, 100));
    // 4 pages; page 2 fails at event 42 (its first 16 applied with it),
    // 42 is tried twice more alone, then the 8 after it in one call.
    assert_eq!(counting.calls.load(Ordering::SeqCst), 4 + 2 + 1);
    let positions = log.positions.lock().unwrap().clone();
    assert_eq!(positions, (1..=100).filter(|p| *p != 42).collect::<Vec<_>>());
}

/// Two runners of one unit: each applies a stretch alone while the other
/// is held (so both apply events, and each one's held page is then
/// refused as moved), then they race over 300 more; every event is
/// applied once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runners_of_one_projection_apply_each_event_once() {
    let store = Arc::new(InMemoryEventStore::new());
    let log = Arc::new(Log::default());
    let unit = unit(&log);
    let (unit_a, unit_b) = (PausableUnit::new(unit.clone()), PausableUnit::new(unit));
    let a = ProjectionRunner::new(store.clone(), unit_a.clone()).with_config(fast(OnFailure::Stop, 7));
    let b = ProjectionRunner::new(store.clone(), unit_b.clone()).with_config(fast(OnFailure::Stop, 5));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = |r: ProjectionRunner, mut stop: tokio::sync::watch::Receiver<bool>| {
        tokio::spawn(async move {
            r.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    // Turns: only `a` can apply events 1..=50, only `b` 51..=100.
    unit_b.pause(true);
    let ta = run(a.clone(), stop_rx.clone());
    let tb = run(b.clone(), stop_rx);
    let mut last = 0;
    for _ in 0..50 {
        last = append(&store, json!({})).await;
    }
    assert!(a.wait_for(last, Duration::from_secs(30)).await);
    unit_a.pause(true);
    unit_b.pause(false);
    for _ in 0..50 {
        last = append(&store, json!({})).await;
    }
    assert!(b.wait_for(last, Duration::from_secs(30)).await);
    unit_a.pause(false);
    // Both free: they race.
    for _ in 0..300 {
        last = append(&store, json!({})).await;
        if last % 17 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(last, 400);
    assert!(a.wait_for(last, Duration::from_secs(30)).await);
    assert!(b.wait_for(last, Duration::from_secs(30)).await);
    stop_tx.send(true).unwrap();
    ta.await.unwrap().unwrap();
    tb.await.unwrap().unwrap();
    let positions = log.positions.lock().unwrap().clone();
    assert_eq!(positions, (1..=400).collect::<Vec<_>>(), "every event once, in order");
    let by_runner = (unit_a.applied(), unit_b.applied());
    assert_eq!(
        by_runner.0 + by_runner.1,
        400,
        "each event counted for one runner: {by_runner:?}"
    );
    assert!(
        by_runner.0 >= 50 && by_runner.1 >= 50,
        "each runner applied its turn: {by_runner:?}"
    );
}

#[tokio::test]
async fn wait_for_reports_whether_the_projection_got_there() {
    let store = Arc::new(InMemoryEventStore::new());
    let log = Arc::new(Log::default());
    let runner = ProjectionRunner::new(store.clone(), unit(&log)).with_config(fast(OnFailure::Stop, 10));
    let follower = runner.clone();
    let task = tokio::spawn(async move { follower.run(std::future::pending()).await });
    let position = append(&store, json!({})).await;
    assert!(runner.wait_for(position, Duration::from_secs(10)).await);
    assert_eq!(log.positions.lock().unwrap().as_slice(), &[position]);
    assert!(!runner.wait_for(position + 1, Duration::from_millis(50)).await);
    task.abort();
}

/// With `linger`, a follower woken by the first of a burst of appends
/// reads the whole burst as one page.
#[tokio::test]
async fn a_lingering_follower_reads_a_burst_as_one_page() {
    let store = Arc::new(InMemoryEventStore::new());
    let log = Arc::new(Log::default());
    let counting = Arc::new(Counting::new(ProjectorUnit::new(
        log.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
    )));
    let config = ProjectionConfig {
        linger: Duration::from_millis(400),
        poll_interval: Duration::from_secs(30),
        ..fast(OnFailure::Stop, 100)
    };
    let runner = ProjectionRunner::new(store.clone(), counting.clone()).with_config(config);
    let follower = runner.clone();
    let task = tokio::spawn(async move { follower.run(std::future::pending()).await });
    // The follower is waiting (its first catch-up found nothing).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut last = 0;
    for _ in 0..5 {
        last = append(&store, json!({})).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(runner.wait_for(last, Duration::from_secs(10)).await);
    assert_eq!(log.positions.lock().unwrap().as_slice(), &[1, 2, 3, 4, 5]);
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1, "one page for the burst");
    task.abort();
}

/// A reader waiting for a position does not sit out the linger: the
/// follower reads at once, and lingers as before when nobody waits.
#[tokio::test]
async fn a_reader_waiting_for_a_position_cuts_the_linger_short() {
    let store = Arc::new(InMemoryEventStore::new());
    let log = Arc::new(Log::default());
    let config = ProjectionConfig {
        linger: Duration::from_secs(60),
        poll_interval: Duration::from_secs(60),
        ..fast(OnFailure::Stop, 100)
    };
    let runner = ProjectionRunner::new(store.clone(), unit(&log)).with_config(config);
    let follower = runner.clone();
    let task = tokio::spawn(async move { follower.run(std::future::pending()).await });
    // The follower is waiting (its first catch-up found nothing).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = append(&store, json!({})).await;
    // Nobody waits: the follower is woken and lingers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(log.positions.lock().unwrap().is_empty(), "lingering");
    let started = std::time::Instant::now();
    assert!(runner.wait_for(first, Duration::from_secs(10)).await);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(log.positions.lock().unwrap().as_slice(), &[first]);
    // The next wake-up lingers again until a clone of the runner waits.
    let second = append(&store, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runner.known_position(), first, "lingering again");
    assert!(runner.clone().wait_for(second, Duration::from_secs(10)).await);
    assert_eq!(log.positions.lock().unwrap().as_slice(), &[first, second]);
    task.abort();
}

/// Takes only `Wanted` events: a process manager among other traffic.
#[derive(Default)]
struct Picky {
    positions: Mutex<Vec<u64>>,
}

#[async_trait]
impl Projector for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    fn filter(&self) -> EventFilter {
        EventFilter::all().event_types(["Wanted"])
    }
    async fn apply(&self, e: &RecordedEvent) -> Result<(), BoxError> {
        self.positions.lock().unwrap().push(e.global_position);
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.positions.lock().unwrap().clear();
        Ok(())
    }
}

#[tokio::test]
async fn moves_past_filtered_out_events_are_written_with_the_next_page_or_once_old() {
    let store = Arc::new(InMemoryEventStore::new());
    let picky = Arc::new(Picky::default());
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let counting = Arc::new(Counting::new(ProjectorUnit::new(picky.clone(), checkpoints.clone())));
    let interval = Duration::from_millis(300);
    let runner = ProjectionRunner::new(store.clone(), counting.clone()).with_config(ProjectionConfig {
        skip_checkpoint_interval: interval,
        ..fast(OnFailure::Stop, 100)
    });
    let unit = counting.clone() as Arc<dyn ProjectionUnit>;

    // Pages with nothing the projection takes: no unit of work, the
    // stored checkpoint stays, the runner stands past them.
    let mut last = 0;
    for _ in 0..3 {
        last = append_as(&store, "Other", json!({})).await;
        assert_eq!(runner.catch_up().await.unwrap().position, last);
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0, "nothing written");
    assert_eq!(unit.position().await.unwrap(), 0);
    assert_eq!(runner.known_position(), last);
    assert_eq!(
        runner.position().await.unwrap(),
        0,
        "position() is the stored checkpoint"
    );
    assert_eq!(runner.known_position(), last, "and does not move the known one back");

    // The next page that applies something writes the whole move.
    let wanted = append_as(&store, "Wanted", json!({})).await;
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.position), (1, wanted));
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1, "one unit of work");
    assert_eq!(unit.position().await.unwrap(), wanted);

    // A move kept in memory is written once it is `interval` old, even
    // when nothing else comes.
    last = append_as(&store, "Other", json!({})).await;
    runner.catch_up().await.unwrap();
    assert_eq!(unit.position().await.unwrap(), wanted);
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    assert_eq!(runner.catch_up().await.unwrap().position, last);
    assert_eq!(unit.position().await.unwrap(), last, "written once old");
    assert_eq!(counting.calls.load(Ordering::SeqCst), 2);

    // Crash: a move kept in memory is lost with the runner; a new one
    // reads those events again and applies nothing twice.
    append_as(&store, "Other", json!({})).await;
    runner.catch_up().await.unwrap();
    let wanted2 = append_as(&store, "Wanted", json!({})).await;
    let fresh = ProjectionRunner::new(store.clone(), counting.clone()).with_config(runner.config().clone());
    assert_eq!(fresh.catch_up().await.unwrap().position, wanted2);
    assert_eq!(picky.positions.lock().unwrap().as_slice(), &[wanted, wanted2]);

    // Another runner moved the stored checkpoint: the first one's move in
    // memory (made from an older stored checkpoint) is dropped, and it
    // goes on from the stored one without applying anything again.
    assert_eq!(runner.catch_up().await.unwrap().position, wanted2);
    assert_eq!(
        picky.positions.lock().unwrap().as_slice(),
        &[wanted, wanted2],
        "each once"
    );

    // Shutting down a follower writes what it kept in memory.
    last = append_as(&store, "Other", json!({})).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = runner.clone();
    let task = tokio::spawn(async move {
        follower
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    assert!(runner.wait_for(last, Duration::from_secs(10)).await);
    assert_eq!(unit.position().await.unwrap(), wanted2, "kept in memory while running");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(unit.position().await.unwrap(), last, "written at shutdown");
    assert_eq!(picky.positions.lock().unwrap().as_slice(), &[wanted, wanted2]);

    // The stored checkpoint moved back (an operator's seek) while a move
    // is kept in memory: the seek wins, and what follows it is applied
    // again.
    let other = append_as(&store, "Other", json!({})).await;
    runner.catch_up().await.unwrap();
    assert_eq!(unit.position().await.unwrap(), last, "kept in memory");
    unit.seek(wanted).await.unwrap();
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.position), (1, other));
    assert_eq!(picky.positions.lock().unwrap().as_slice(), &[wanted, wanted2, wanted2]);
    assert_eq!(unit.position().await.unwrap(), other);
}

#[tokio::test]
async fn without_an_interval_every_move_is_written() {
    assert!(ProjectionConfig::default().skip_checkpoint_interval.is_zero());
    let store = Arc::new(InMemoryEventStore::new());
    let counting = Arc::new(Counting::new(ProjectorUnit::new(
        Arc::new(Picky::default()),
        Arc::new(InMemoryCheckpointStore::new()),
    )));
    let runner = ProjectionRunner::new(store.clone(), counting.clone()).with_config(fast(OnFailure::Stop, 100));
    let last = append_as(&store, "Other", json!({})).await;
    runner.catch_up().await.unwrap();
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
    assert_eq!(counting.position().await.unwrap(), last);
}

#[tokio::test]
async fn dead_letters_can_be_retried_or_skipped() {
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, json!({"poison": true})).await;
    append(&store, json!({"poison": true})).await;
    append(&store, json!({})).await;
    let log = Arc::new(Log::default());
    let runner = ProjectionRunner::new(store.clone(), unit(&log)).with_config(fast(OnFailure::DeadLetter, 10));
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (1, 2));
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(
        letters.iter().map(|l| l.global_position).collect::<Vec<_>>(),
        vec![1, 2]
    );

    // Still broken: the retry fails and the letter stays.
    assert!(runner.retry_dead_letter(1).await.is_err());
    assert_eq!(runner.dead_letters().await.unwrap().len(), 2);
    // Fixed: the retry applies it and removes the letter.
    log.poisoned.store(false, Ordering::SeqCst);
    assert!(runner.retry_dead_letter(1).await.unwrap());
    assert!(runner.skip_dead_letter(2).await.unwrap());
    assert!(!runner.skip_dead_letter(2).await.unwrap(), "already gone");
    assert!(runner.dead_letters().await.unwrap().is_empty());
    assert_eq!(*log.positions.lock().unwrap(), vec![3, 1], "2 skipped, never applied");
    assert!(matches!(
        runner.retry_dead_letter(99).await,
        Err(ProjectionError::NoSuchEvent { position: 99, .. })
    ));
}

#[tokio::test]
async fn a_replay_drops_the_dead_letters_it_meets_again_and_never_starts_past_the_checkpoint() {
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, json!({})).await;
    append(&store, json!({"poison": true})).await;
    append(&store, json!({})).await;
    let log = Arc::new(Log::default());
    let runner = ProjectionRunner::new(store.clone(), unit(&log)).with_config(fast(OnFailure::DeadLetter, 10));
    assert_eq!(runner.catch_up().await.unwrap().dead_lettered, 1);

    // The projector is fixed and the log replayed: event 2 is applied, so
    // its letter goes (retrying it later would apply it twice).
    log.poisoned.store(false, Ordering::SeqCst);
    let report = runner.replay(es_core::ReplayMode::Full).await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (3, 0));
    assert!(runner.dead_letters().await.unwrap().is_empty());

    // The same from a position: letters before it stay, later ones go.
    log.poisoned.store(true, Ordering::SeqCst);
    append(&store, json!({"poison": true})).await;
    let last = append(&store, json!({"poison": true})).await;
    assert_eq!(runner.catch_up().await.unwrap().dead_lettered, 2);
    log.poisoned.store(false, Ordering::SeqCst);
    runner.replay(es_core::ReplayMode::From(last - 1)).await.unwrap();
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!(
        letters.iter().map(|l| l.global_position).collect::<Vec<_>>(),
        vec![last - 1]
    );

    // Moving the checkpoint forward would pass over events never applied.
    let checkpoint = runner.position().await.unwrap();
    assert!(matches!(
        runner.replay(es_core::ReplayMode::From(checkpoint + 1)).await,
        Err(ProjectionError::PastCheckpoint { position, checkpoint: c, .. }) if position == checkpoint + 1 && c == checkpoint
    ));
}

// ---- typed projections --------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CartEvent {
    Added { sku: String, owner: String },
}

impl DomainEvent for CartEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
    fn schema_version(&self) -> u32 {
        2
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cart;

impl Aggregate for Cart {
    const TYPE: &'static str = "cart";
    type Command = String;
    type Event = CartEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, sku: &String) -> Result<Vec<CartEvent>, Self::Error> {
        Ok(vec![CartEvent::Added {
            sku: sku.clone(),
            owner: "ada".into(),
        }])
    }
    fn apply(&mut self, _: &CartEvent) {}
}

#[derive(Default)]
struct Skus(Mutex<Vec<(u64, String, String)>>);

#[async_trait]
impl TypedProjector for Skus {
    type Aggregate = Cart;
    fn name(&self) -> &str {
        "skus"
    }
    async fn apply(&self, e: &EventEnvelope<CartEvent>) -> Result<(), BoxError> {
        let CartEvent::Added { sku, owner } = &e.event;
        self.0.lock().unwrap().push((e.version, sku.clone(), owner.clone()));
        Ok(())
    }
}

#[tokio::test]
async fn typed_projections_get_decoded_upcast_events_and_undecodable_ones_are_not_retried() {
    struct OwnerFromHeader;
    impl es_core::Upcaster for OwnerFromHeader {
        fn event_type(&self) -> &str {
            "Added"
        }
        fn source_version(&self) -> u32 {
            1
        }
        fn upcast(&self, payload: serde_json::Value) -> Result<serde_json::Value, es_core::UpcastError> {
            self.upcast_event(payload, &Metadata::default())
        }
        fn upcast_event(
            &self,
            mut payload: serde_json::Value,
            metadata: &Metadata,
        ) -> Result<serde_json::Value, es_core::UpcastError> {
            let owner = metadata.headers.get("owner").cloned().unwrap_or_default();
            payload["Added"]["owner"] = json!(owner);
            Ok(payload)
        }
    }
    let mut upcasters = UpcasterRegistry::new();
    upcasters.register(OwnerFromHeader);
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Cart>::builder(store.clone())
        .upcasters(upcasters.clone())
        .build();
    // A v1 event kept its owner in a header; the upcaster moves it into the payload.
    let mut v1 = NewEvent::new("Added", json!({"Added": {"sku": "old"}}))
        .with_metadata(Metadata::default().with_header("owner", "grace"));
    v1.schema_version = 1;
    store
        .append("cart", &StreamId::from("c"), ExpectedVersion::Exact(0), vec![v1])
        .await
        .unwrap();
    repo.execute("c", "new".to_owned()).await.unwrap();
    store
        .append(
            "cart",
            &StreamId::from("c"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Added", json!({"Added": {"sku": 7}}))],
        )
        .await
        .unwrap();
    // Another aggregate's events are not this projection's business.
    store
        .append(
            "order",
            &StreamId::from("o"),
            ExpectedVersion::Any,
            vec![NewEvent::new("X", json!(1))],
        )
        .await
        .unwrap();

    let skus = Arc::new(Skus::default());
    let typed = Typed::new(skus.clone()).with_codec(EventCodec::new(upcasters));
    let projector_unit = ProjectorUnit::new(Arc::new(typed), Arc::new(InMemoryCheckpointStore::new()));
    let runner =
        ProjectionRunner::new(store.clone(), Arc::new(projector_unit)).with_config(fast(OnFailure::DeadLetter, 10));
    let report = runner.catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered, report.position), (2, 1, 4));
    assert_eq!(
        *skus.0.lock().unwrap(),
        vec![(1, "old".into(), "grace".into()), (2, "new".into(), "ada".into())]
    );
    let letters = runner.dead_letters().await.unwrap();
    assert_eq!((letters[0].global_position, letters[0].attempts), (3, 1), "not retried");
    assert!(letters[0].error.contains("does not decode"), "{}", letters[0].error);
}

#[tokio::test]
async fn a_unit_failing_after_its_last_event_neither_panics_the_runner_nor_applies_twice() {
    let store = Arc::new(InMemoryEventStore::new());
    let log = Arc::new(Log::default());
    let mut last = 0;
    for _ in 0..5 {
        last = append(&store, json!({})).await;
    }
    let unit = Arc::new(Counting::new(ProjectorUnit::new(
        log.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
    )));
    unit.fail_after_page.store(true, Ordering::SeqCst);
    let runner = ProjectionRunner::new(store.clone(), unit.clone()).with_config(fast(OnFailure::Stop, 10));
    runner.catch_up().await.unwrap();
    assert_eq!(unit.position().await.unwrap(), last);
    assert_eq!(
        log.positions.lock().unwrap().clone(),
        (1..=last).collect::<Vec<_>>(),
        "every event once"
    );
    // The same from a selective replay, which moves no checkpoint.
    unit.fail_after_page.store(true, Ordering::SeqCst);
    log.positions.lock().unwrap().clear();
    runner
        .replay(es_core::ReplayMode::Selective {
            event_types: vec!["Placed".to_owned()],
            from: 0,
        })
        .await
        .unwrap();
    assert_eq!(
        log.positions.lock().unwrap().clone(),
        (1..=last).collect::<Vec<_>>(),
        "every event once"
    );
}

#[tokio::test]
async fn a_failure_placed_after_the_page_is_not_taken_for_a_located_one() {
    let store = InMemoryEventStore::new();
    for _ in 0..3 {
        append(&store, json!({})).await;
    }
    let events = store.read_all(0, 10, &EventFilter::all()).await.unwrap();
    let calls = AtomicUsize::new(0);
    let result = es_core::backend::apply_keeping_prefix(&events, None, |page, _| {
        calls.fetch_add(1, Ordering::SeqCst);
        let len = page.len();
        async move {
            Err(UnitError::Apply {
                applied: 0,
                index: Some(len),
                error: "after the page".into(),
            })
        }
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no second attempt at the whole page");
    match result {
        Err(UnitError::Apply { applied, index, .. }) => assert_eq!((applied, index), (0, None)),
        other => panic!("expected an unlocated failure, got {other:?}"),
    }
}
