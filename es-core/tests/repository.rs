//! The repository: commands, metadata, expected versions, per-stream
//! batching, caches, retries, command ids, validators and handlers,
//! snapshots, upcasting, corrupt payloads, streams of another type, async
//! decisions.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::counting::CountingStore;
use common::{Wallet, WalletCommand, WalletError, WalletEvent};
use es_core::{
    BoxError, CommandContext, CommittedEvent, EventHandler, EventStore, ExpectedVersion, FnUpcaster,
    InMemoryEventStore, InMemorySnapshotStore, InMemoryStateCache, ManualClock, Metadata, NewEvent, Repository,
    RepositoryError, RetryPolicy, Snapshot, SnapshotPolicy, SnapshotStore, Snapshotter, StateCache, StreamId,
    UpcasterRegistry, Versioned,
};
use futures::TryStreamExt;
use serde_json::json;
use uuid::Uuid;

fn repo(store: &Arc<InMemoryEventStore>) -> Repository<Wallet, InMemoryEventStore> {
    Repository::builder(Arc::clone(store)).build()
}

#[tokio::test]
async fn executes_commands_and_reloads_state() {
    let store = Arc::new(InMemoryEventStore::new());
    let r = repo(&store);
    r.execute("w", WalletCommand::Credit(100)).await.unwrap();
    let out = r.execute("w", WalletCommand::Debit(30)).await.unwrap();
    assert_eq!((out.state.balance, out.version), (70, 2));
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.events[0].version, 2);
    assert_eq!(out.events[0].event, WalletEvent::Debited { amount: 30 });
    let loaded = r.load("w").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (70, 2));
    let err = r.execute("w", WalletCommand::Debit(1000)).await.unwrap_err();
    assert!(matches!(err, RepositoryError::Rejected(WalletError::InsufficientFunds)));
    assert_eq!(
        store.stream_version(&"w".into()).await.unwrap(),
        2,
        "a rejection appends nothing"
    );
    let noop = r.execute("w", WalletCommand::Nothing).await.unwrap();
    assert!(noop.events.is_empty());
    assert_eq!(noop.version, 2);
}

#[tokio::test]
async fn events_carry_metadata_and_clock_time() {
    let store = Arc::new(InMemoryEventStore::new());
    let clock = ManualClock::at("2030-01-02T03:04:05Z".parse().unwrap());
    let r: Repository<Wallet, InMemoryEventStore> = Repository::builder(Arc::clone(&store))
        .clock(Arc::new(clock.clone()))
        .build();
    let correlation = Uuid::now_v7();
    let ctx = CommandContext::default().with_metadata(Metadata::correlated(correlation).with_header("client", "c1"));
    r.execute_in("w", WalletCommand::Credit(5), ctx).await.unwrap();
    let out = r.execute("w", WalletCommand::Credit(6)).await.unwrap();
    let stored: Vec<_> = store.read_stream(&"w".into(), 1).try_collect().await.unwrap();
    // The outcome describes the events exactly as stored.
    assert_eq!(out.events[0].event_id, stored[1].event_id);
    assert_eq!(out.events[0].recorded_at, stored[1].recorded_at);
    assert_eq!(out.events[0].global_position, stored[1].global_position);
    assert_eq!(stored[0].metadata.correlation_id, Some(correlation));
    assert_eq!(stored[0].metadata.headers["client"], "c1");
    assert_eq!(stored[0].recorded_at, clock.now_for_test());
    assert_eq!(stored[0].stream_type, "wallet");
    assert_eq!(stored[0].event_type, "Credited");
}

trait NowForTest {
    fn now_for_test(&self) -> chrono::DateTime<chrono::Utc>;
}
impl NowForTest for ManualClock {
    fn now_for_test(&self) -> chrono::DateTime<chrono::Utc> {
        es_core::Clock::now(self)
    }
}

#[tokio::test]
async fn expected_version_mismatch_is_a_conflict_with_both_versions() {
    let store = Arc::new(InMemoryEventStore::new());
    let r = repo(&store);
    r.execute("w", WalletCommand::Credit(10)).await.unwrap();
    let err = r
        .execute_in(
            "w",
            WalletCommand::Credit(1),
            CommandContext::default().expect_version(5),
        )
        .await
        .unwrap_err();
    match err {
        RepositoryError::Conflict { expected, actual, .. } => assert_eq!((expected, actual), (5, 1)),
        other => panic!("{other:?}"),
    }
    let ok = r
        .execute_in(
            "w",
            WalletCommand::Credit(1),
            CommandContext::default().expect_version(1),
        )
        .await
        .unwrap();
    assert_eq!(ok.version, 2);
}

/// Hundreds of concurrent commands on one stream from one process: none is
/// lost, none conflicts, versions stay gapless, and rejections are exact.
/// The store counts what it was asked: not one append conflicted (no retry
/// hid a conflict) and commands shared appends (they were batched).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_stream_are_serialized_and_batched() {
    let store = CountingStore::new();
    let r: Repository<Wallet, CountingStore> = Repository::builder(Arc::clone(&store))
        .retry(RetryPolicy::never())
        .build();
    r.execute("hot", WalletCommand::Credit(99)).await.unwrap();
    // Hold the stream's worker inside a decision while 400 commands queue.
    let gate = Gate::new();
    let first = tokio::spawn({
        let (r, gate) = (r.clone(), Arc::clone(&gate));
        async move {
            r.execute_with("hot", GatedCredit(gate), CommandContext::default())
                .await
        }
    });
    gate.started.notified().await;
    let mut tasks = Vec::new();
    for i in 0..400 {
        let r = r.clone();
        let mut task = Box::pin(async move {
            let cmd = if i % 2 == 0 {
                WalletCommand::Credit(3)
            } else {
                WalletCommand::Debit(7)
            };
            (i, r.execute("hot", cmd).await)
        });
        // The first poll queues the command; its answer waits for the gate.
        assert!(futures::poll!(task.as_mut()).is_pending());
        tasks.push(task);
    }
    gate.open.notify_one();
    assert_eq!(first.await.unwrap().unwrap().version, 2);
    let (mut credits, mut debits, mut rejected) = (0, 0, 0);
    for (i, res) in futures::future::join_all(tasks).await {
        match res {
            Ok(out) => {
                assert_eq!(out.conflict_retries, 0);
                if i % 2 == 0 {
                    credits += 1;
                } else {
                    debits += 1;
                }
            }
            Err(RepositoryError::Rejected(WalletError::InsufficientFunds)) => rejected += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!(credits + debits + rejected, 400);
    assert_eq!(store.conflicts(), 0, "no append of the hot stream conflicted");
    // One append before the gate, one for the gated command, then the 400
    // queued commands in batches of at most 256.
    assert_eq!(
        store.appends(),
        4,
        "{} appends for {} accepted commands: commands were batched",
        store.appends(),
        2 + credits + debits
    );
    let state = r.load("hot").await.unwrap();
    assert_eq!(state.state.balance, 100 + 3 * credits - 7 * debits);
    assert_eq!(state.version, 2 + (credits + debits) as u64);
    assert!(state.state.balance >= 0);
    let versions: Vec<u64> = store
        .read_stream(&"hot".into(), 1)
        .map_ok(|e| e.version)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions, (1..=state.version).collect::<Vec<_>>());
    // Replaying never dips below zero.
    let mut balance = 0;
    for e in r.history("hot").await.unwrap() {
        match e.event {
            WalletEvent::Credited { amount } => balance += amount,
            WalletEvent::Debited { amount } => balance -= amount,
            WalletEvent::Closed => {}
        }
        assert!(balance >= 0);
    }
}

/// Signals between a test and a decision that waits in the middle of a
/// batch.
struct Gate {
    started: tokio::sync::Notify,
    open: tokio::sync::Notify,
}

impl Gate {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            started: tokio::sync::Notify::new(),
            open: tokio::sync::Notify::new(),
        })
    }
}

/// Credits 1, after saying it started and waiting for the gate to open.
struct GatedCredit(Arc<Gate>);

#[async_trait]
impl es_core::Decide<Wallet> for GatedCredit {
    async fn decide(&self, _: &Wallet) -> Result<Vec<WalletEvent>, WalletError> {
        self.0.started.notify_one();
        self.0.open.notified().await;
        Ok(vec![WalletEvent::Credited { amount: 1 }])
    }
}

/// Two repositories over one store act like two processes: their cached
/// states go stale, and the append's exact expected version catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_with_caches_never_lose_an_update() {
    let store = Arc::new(InMemoryEventStore::new());
    let make = || -> Repository<Wallet, InMemoryEventStore> {
        Repository::builder(Arc::clone(&store))
            .cache(Arc::new(InMemoryStateCache::<Wallet>::new(100)))
            .retry(RetryPolicy {
                max_attempts: 50,
                initial_delay: Duration::from_millis(1),
                ..RetryPolicy::default()
            })
            .build()
    };
    let (a, b) = (make(), make());
    a.execute("w", WalletCommand::Credit(1)).await.unwrap();
    b.execute("w", WalletCommand::Credit(1)).await.unwrap(); // b's cache now at v2, a's at v1
                                                             // a's cached state is stale (v1): the command still lands on v3.
    let out = a.execute("w", WalletCommand::Credit(1)).await.unwrap();
    assert_eq!((out.version, out.state.balance), (3, 3));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let r = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(
            async move { r.execute("w", WalletCommand::Credit(1)).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let state = a.load("w").await.unwrap();
    assert_eq!((state.state.balance, state.version), (203, 203));
}

/// A repeated command answered by a process whose cache is behind the
/// stream gets the state after the command, not the cached one.
#[tokio::test]
async fn a_repeat_is_answered_with_the_current_state_even_from_a_stale_cache() {
    let store = Arc::new(InMemoryEventStore::new());
    let make = || -> Repository<Wallet, InMemoryEventStore> {
        Repository::builder(Arc::clone(&store))
            .cache(Arc::new(InMemoryStateCache::<Wallet>::new(100)))
            .build()
    };
    let (a, b) = (make(), make());
    b.execute("w", WalletCommand::Credit(10)).await.unwrap(); // b caches v1
    let key = Uuid::new_v4();
    let first = a
        .execute_in(
            "w",
            WalletCommand::Credit(5),
            CommandContext::default().with_command_id(key),
        )
        .await
        .unwrap();
    assert_eq!((first.version, first.state.balance), (2, 15));
    // The retry reaches b, whose cache is still at v1.
    let again = b
        .execute_in(
            "w",
            WalletCommand::Credit(5),
            CommandContext::default().with_command_id(key),
        )
        .await
        .unwrap();
    assert!(again.already_applied);
    assert_eq!(
        (again.version, again.state.balance),
        (2, 15),
        "the state after the command"
    );
}

/// A rejection decided on a stale cached state is checked against the
/// store before it is answered.
#[tokio::test]
async fn stale_cache_never_causes_a_wrong_rejection() {
    let store = Arc::new(InMemoryEventStore::new());
    let cache = Arc::new(InMemoryStateCache::<Wallet>::new(100));
    let r: Repository<Wallet, InMemoryEventStore> =
        Repository::builder(Arc::clone(&store)).cache(cache.clone()).build();
    r.execute("w", WalletCommand::Credit(10)).await.unwrap();
    // Another process credits 100 behind this repository's back.
    let other = repo(&store);
    other.execute("w", WalletCommand::Credit(100)).await.unwrap();
    assert_eq!(cache.get(&"w".into()).await.unwrap().version, 1, "cache is stale");
    let out = r.execute("w", WalletCommand::Debit(50)).await.unwrap();
    assert_eq!((out.state.balance, out.version), (60, 3));
    // A stale (but once true) state in the cache leads to a rejection on
    // that state, which is then checked against the store and re-decided.
    cache.invalidate(&"w".into()).await;
    cache
        .put(
            &"w".into(),
            &Versioned {
                state: Wallet {
                    balance: 10,
                    closed: false,
                },
                version: 1,
            },
        )
        .await;
    let out = r.execute("w", WalletCommand::Debit(55)).await.unwrap();
    assert_eq!((out.state.balance, out.version), (5, 4));
}

#[tokio::test]
async fn conflicts_exhaust_retries_and_report_both_versions() {
    let store = Arc::new(InMemoryEventStore::new());
    repo(&store).execute("w", WalletCommand::Credit(1)).await.unwrap();
    // Another writer wins the race before every append.
    let racer = Racer {
        store: Arc::clone(&store),
    };
    let r: Repository<Wallet, Racer> = Repository::builder(Arc::new(racer))
        .retry(RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        })
        .build();
    let err = r.execute("w", WalletCommand::Credit(1)).await.unwrap_err();
    match err {
        RepositoryError::Conflict { expected, actual, .. } => assert_eq!((expected, actual), (3, 4)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.stream_version(&"w".into()).await.unwrap(),
        4,
        "only the racer's events landed"
    );
}

/// A store wrapper that sneaks in a competing event before every append.
struct Racer {
    store: Arc<InMemoryEventStore>,
}

#[async_trait]
impl EventStore for Racer {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<es_core::AppendResult, es_core::StoreError> {
        self.store
            .append(
                stream_type,
                stream_id,
                ExpectedVersion::Any,
                vec![NewEvent::new("Credited", json!({"Credited": {"amount": 1}}))],
            )
            .await?;
        self.store.append(stream_type, stream_id, expected, events).await
    }
    async fn read_stream_batch(
        &self,
        id: &StreamId,
        from: u64,
        n: usize,
    ) -> Result<Vec<es_core::RecordedEvent>, es_core::StoreError> {
        self.store.read_stream_batch(id, from, n).await
    }
    async fn read_all(
        &self,
        after: u64,
        n: usize,
        f: &es_core::EventFilter,
    ) -> Result<Vec<es_core::RecordedEvent>, es_core::StoreError> {
        self.store.read_all(after, n, f).await
    }
    async fn find_event(&self, id: Uuid) -> Result<Option<es_core::RecordedEvent>, es_core::StoreError> {
        self.store.find_event(id).await
    }
    async fn stream_version(&self, id: &StreamId) -> Result<u64, es_core::StoreError> {
        self.store.stream_version(id).await
    }
    async fn head_position(&self) -> Result<u64, es_core::StoreError> {
        self.store.head_position().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_ids_apply_once_even_when_sent_concurrently() {
    let store = Arc::new(InMemoryEventStore::new());
    let r = repo(&store);
    r.execute("w", WalletCommand::Credit(100)).await.unwrap();
    let key = Uuid::new_v4();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            r.execute_in(
                "w",
                WalletCommand::Debit(60),
                CommandContext::default().with_command_id(key),
            )
            .await
        }));
    }
    let mut applied = 0;
    for t in tasks {
        let out = t.await.unwrap().expect("a repeat is not an error");
        if !out.already_applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(r.load("w").await.unwrap().state.balance, 40);
    // A later repeat (say, after a crash before the reply) is recognised by
    // the store itself: a fresh repository has no memory of it.
    let fresh = repo(&store);
    let again = fresh
        .execute_in(
            "w",
            WalletCommand::Debit(60),
            CommandContext::default().with_command_id(key),
        )
        .await
        .unwrap();
    assert!(again.already_applied);
    assert_eq!(fresh.load("w").await.unwrap().state.balance, 40);
    // The same command id on another stream is another command.
    let other = fresh
        .execute_in(
            "w2",
            WalletCommand::Credit(5),
            CommandContext::default().with_command_id(key),
        )
        .await
        .unwrap();
    assert!(!other.already_applied);
    assert_eq!(other.state.balance, 5);
}

#[tokio::test]
async fn validators_reject_before_append_and_handlers_run_after() {
    struct Count(AtomicUsize);
    #[async_trait]
    impl EventHandler<Wallet> for Count {
        async fn on_committed(
            &self,
            _: &StreamId,
            _: &Wallet,
            e: &[CommittedEvent<WalletEvent>],
        ) -> Result<(), BoxError> {
            self.0.fetch_add(e.len(), Ordering::SeqCst);
            Err("handler failures do not fail the command".into())
        }
    }
    let store = Arc::new(InMemoryEventStore::new());
    let seen = Arc::new(Count(AtomicUsize::new(0)));
    let r: Repository<Wallet, InMemoryEventStore> = Repository::builder(Arc::clone(&store))
        .validator(|_: &Wallet, events: &[WalletEvent]| {
            if events
                .iter()
                .any(|e| matches!(e, WalletEvent::Credited { amount } if *amount > 1000))
            {
                Err("credit above limit".to_owned())
            } else {
                Ok(())
            }
        })
        .handler(seen.clone())
        .build();
    r.execute("w", WalletCommand::Credit(10)).await.unwrap();
    let err = r.execute("w", WalletCommand::Credit(5000)).await.unwrap_err();
    assert!(
        matches!(err, RepositoryError::Invalid(ref m) if m == "credit above limit"),
        "{err:?}"
    );
    assert_eq!(store.len(), 1);
    assert_eq!(seen.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn snapshots_are_taken_and_used_and_old_schemas_discarded() {
    let store = Arc::new(InMemoryEventStore::new());
    let snaps = Arc::new(InMemorySnapshotStore::new());
    let r: Repository<Wallet, InMemoryEventStore> = Repository::builder(Arc::clone(&store))
        .snapshots(snaps.clone(), SnapshotPolicy::EveryNEvents(10))
        .build();
    for _ in 0..25 {
        r.execute("w", WalletCommand::Credit(2)).await.unwrap();
    }
    // Snapshots are saved in the background.
    let mut snap = None;
    for _ in 0..100 {
        snap = snaps.load(&"w".into()).await.unwrap();
        if snap.as_ref().is_some_and(|s| s.version == 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let snap = snap.expect("a snapshot");
    assert_eq!(snap.version, 20);
    assert_eq!(snap.state, json!({"balance": 40, "closed": false}));
    // Loading starts from the snapshot: prove it by planting a snapshot
    // whose state differs from what the events say.
    snaps
        .save(Snapshot {
            state: json!({"balance": 1000, "closed": false}),
            version: 24,
            ..snap.clone()
        })
        .await
        .unwrap();
    let r2: Repository<Wallet, InMemoryEventStore> = Repository::builder(Arc::clone(&store))
        .snapshots(snaps.clone(), SnapshotPolicy::Never)
        .build();
    assert_eq!(
        r2.load("w").await.unwrap().state.balance,
        1002,
        "snapshot v24 + event 25"
    );
    // A snapshot of another schema version is ignored.
    snaps
        .save(Snapshot {
            state: json!({"balance": 999_999, "closed": false}),
            version: 25,
            schema_version: 99,
            ..snap
        })
        .await
        .unwrap();
    assert_eq!(r2.load("w").await.unwrap().state.balance, 50);
}

/// A `Snapshotter` hands the repository its snapshot store and policy as
/// one: snapshots are taken by the policy, into the store.
#[tokio::test]
async fn a_snapshotter_gives_the_repository_its_store_and_policy() {
    let store = Arc::new(InMemoryEventStore::new());
    let snaps = Arc::new(InMemorySnapshotStore::new());
    let snapshotter = Snapshotter::new(snaps.clone(), SnapshotPolicy::EveryNEvents(10));
    assert_eq!(snapshotter.policy(), SnapshotPolicy::EveryNEvents(10));
    let r: Repository<Wallet, InMemoryEventStore> =
        Repository::builder(Arc::clone(&store)).snapshotter(snapshotter).build();
    for _ in 0..15 {
        r.execute("w", WalletCommand::Credit(2)).await.unwrap();
    }
    // Snapshots are saved in the background.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let snap = loop {
        if let Some(snap) = snaps.load(&"w".into()).await.unwrap() {
            break snap;
        }
        assert!(std::time::Instant::now() < deadline, "no snapshot was saved");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        snap.version, 10,
        "taken when the version crossed 10, not before or after"
    );
    assert_eq!(snap.state, json!({"balance": 20, "closed": false}));
}

#[tokio::test]
async fn upcasters_chain_old_payloads_into_todays_events() {
    let store = Arc::new(InMemoryEventStore::new());
    // v1 stored cents as a string under another name; v2 renamed it; v3 is today.
    let mut old = NewEvent::new("Credited", json!({"Credited": {"cents": "250"}}));
    old.schema_version = 1;
    store
        .append("wallet", &"w".into(), ExpectedVersion::NoStream, vec![old])
        .await
        .unwrap();
    let mut registry = UpcasterRegistry::new();
    registry.register(FnUpcaster::new("Credited", 1, |v| {
        let cents = v["Credited"]["cents"].as_str().unwrap_or("0").to_owned();
        Ok(json!({"Credited": {"value": cents}}))
    }));
    registry.register(FnUpcaster::new("Credited", 2, |v| {
        let cents: i64 = v["Credited"]["value"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| es_core::UpcastError("value is not a number".into()))?;
        Ok(json!({"Credited": {"amount": cents}}))
    }));
    let r: Repository<Wallet, InMemoryEventStore> = Repository::builder(Arc::clone(&store)).upcasters(registry).build();
    assert_eq!(r.load("w").await.unwrap().state.balance, 250);
    // Without the upcasters the payload is an error naming stream and version.
    let plain = repo(&store);
    match plain.load("w").await.unwrap_err() {
        RepositoryError::Corrupt { stream_id, version, .. } => {
            assert_eq!((stream_id.as_str(), version), ("w", 1));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn corrupt_payloads_are_errors_not_panics() {
    let store = Arc::new(InMemoryEventStore::new());
    store
        .append(
            "wallet",
            &"w".into(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Credited", json!({"Nope": 1}))],
        )
        .await
        .unwrap();
    let r = repo(&store);
    let err = r.execute("w", WalletCommand::Credit(1)).await.unwrap_err();
    assert!(matches!(err, RepositoryError::Corrupt { version: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("stream w at version 1"), "{err}");
}

#[tokio::test]
async fn a_stream_of_another_type_is_not_loaded_as_this_one() {
    let store = Arc::new(InMemoryEventStore::new());
    // Events a wallet would decode: only the stream's type tells them apart.
    store
        .append(
            "purse",
            &"p".into(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Credited", json!({"Credited": {"amount": 5}}))],
        )
        .await
        .unwrap();
    let r = repo(&store);
    let wrong = |err: RepositoryError<WalletError>| match err {
        RepositoryError::WrongType {
            stream_id,
            expected,
            found,
        } => (stream_id.as_str().to_owned(), expected, found),
        other => panic!("{other:?}"),
    };
    let want = ("p".to_owned(), "wallet", "purse".to_owned());
    assert_eq!(wrong(r.load("p").await.unwrap_err()), want);
    assert_eq!(wrong(r.history("p").await.unwrap_err()), want);
    let err = r.execute("p", WalletCommand::Credit(1)).await.unwrap_err();
    assert_eq!(err.to_string(), "stream p is a purse stream, not a wallet stream");
    assert_eq!(wrong(err), want);
    assert_eq!(store.stream_version(&"p".into()).await.unwrap(), 1, "nothing appended");
}

#[tokio::test]
async fn async_decisions_may_use_services() {
    struct CheckLimit {
        limit_service: Arc<i64>,
        amount: i64,
    }
    #[async_trait]
    impl es_core::Decide<Wallet> for CheckLimit {
        async fn decide(&self, state: &Wallet) -> Result<Vec<WalletEvent>, WalletError> {
            tokio::task::yield_now().await; // stands in for a service call
            if self.amount > *self.limit_service {
                return Err(WalletError::NonPositive);
            }
            state.handle_credit(self.amount)
        }
    }
    trait HandleCredit {
        fn handle_credit(&self, amount: i64) -> Result<Vec<WalletEvent>, WalletError>;
    }
    impl HandleCredit for Wallet {
        fn handle_credit(&self, amount: i64) -> Result<Vec<WalletEvent>, WalletError> {
            es_core::Aggregate::handle(self, &WalletCommand::Credit(amount))
        }
    }
    let store = Arc::new(InMemoryEventStore::new());
    let r = repo(&store);
    let limit = Arc::new(100);
    let ok = r
        .execute_with(
            "w",
            CheckLimit {
                limit_service: limit.clone(),
                amount: 50,
            },
            CommandContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(ok.state.balance, 50);
    assert!(r
        .execute_with(
            "w",
            CheckLimit {
                limit_service: limit,
                amount: 500,
            },
            CommandContext::default()
        )
        .await
        .is_err());
}
