//! The shard manager against the real Redis and PostgreSQL, with an
//! injected clock driving the leases (each test has its own key prefix
//! and schema).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use es_core::{EventStore, ExpectedVersion, FencedStore, ManualClock, NewEvent, StoreError, StreamId};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use es_redis::{InstanceInfo, Route, ShardConfig, ShardError, ShardManager, ShardStatus};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn config(prefix: &str) -> ShardConfig {
    let mut c = ShardConfig {
        key_prefix: prefix.to_owned(),
        ..ShardConfig::default()
    };
    c.redis.url = redis_url();
    c
}

fn prefix() -> String {
    format!("es:test:shards:{}:", uuid::Uuid::now_v7().simple())
}

async fn store() -> Arc<PostgresEventStore> {
    let schema = es_postgres::testing::fresh_schema("shards");
    Arc::new(
        es_postgres::testing::store(EventStoreConfig {
            max_connections: 4,
            ..EventStoreConfig::with_schema(schema)
        })
        .await
        .expect("test store"),
    )
}

fn clock() -> ManualClock {
    ManualClock::at(chrono::Utc::now())
}

/// An instance named `name` over `store` (the PostgreSQL store, or it
/// wrapped with faults).
async fn instance<S: EventStore>(
    name: &str,
    config: &ShardConfig,
    store: &Arc<S>,
    clock: &ManualClock,
) -> ShardManager {
    let me = InstanceInfo {
        id: format!("{name}-{}", uuid::Uuid::now_v7().simple()),
        address: format!("http://{name}.invalid"),
    };
    ShardManager::connect(config.clone(), me, store.clone(), Arc::new(clock.clone()))
        .await
        .expect("join the cluster")
}

fn advance(clock: &ManualClock, by: Duration) {
    clock.advance(chrono::Duration::from_std(by).unwrap());
}

/// A stream id of `shard`.
fn stream_in(manager: &ShardManager, shard: u32) -> StreamId {
    (0..100_000)
        .map(|i| StreamId::from(format!("acct-{i}")))
        .find(|id| manager.shard_of(id) == shard)
        .unwrap()
}

fn event(n: u64) -> NewEvent {
    NewEvent::new("Deposited", serde_json::json!({ "n": n }))
}

async fn fence_of(store: &PostgresEventStore, shard: u32) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT coalesce((SELECT token FROM {}.shard_fences WHERE shard = $1), 0)",
        store.schema()
    ))
    .bind(shard as i32)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_lone_instance_takes_every_shard_and_raises_each_fence_first() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let a = instance("a", &config, &store, &clock).await;
    a.tick().await.unwrap();
    let owned = a.owned_shards();
    assert_eq!(owned.len(), 16);
    for (shard, token) in owned {
        assert_eq!(fence_of(&store, shard).await, token as i64, "fence of shard {shard}");
    }
    let view = a.read_view().await.unwrap();
    assert!(view.shards.iter().all(|s| s.status == ShardStatus::Assigned));
    assert!(matches!(a.route(StreamId::from("x")), Route::Local(_)));
    a.shutdown().await;
    let view = a.read_view().await.unwrap();
    assert!(view
        .shards
        .iter()
        .all(|s| s.status == ShardStatus::Available && s.owner.is_none()));
    assert!(view.instances.is_empty(), "deregistered");
}

#[tokio::test]
async fn another_shard_count_is_refused() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let _a = instance("a", &config, &store, &clock).await;
    let other = ShardConfig {
        shard_count: 32,
        ..config.clone()
    };
    let me = InstanceInfo {
        id: "b".into(),
        address: "http://b.invalid".into(),
    };
    match ShardManager::connect(other, me, store.clone(), Arc::new(clock.clone())).await {
        Err(ShardError::ShardCountMismatch {
            configured: 32,
            cluster: 16,
            ..
        }) => {}
        other => panic!("expected a shard count mismatch, got {other:?}"),
    }
}

/// A dead instance's shards are owned again within the lease TTL plus one
/// rebalance interval, with tokens above the dead owner's.
#[tokio::test]
async fn a_dead_instance_loses_its_shards_within_ttl_plus_one_interval() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let a = instance("a", &config, &store, &clock).await;
    let b = instance("b", &config, &store, &clock).await;
    a.tick().await.unwrap();
    b.tick().await.unwrap();
    a.tick().await.unwrap();
    let (of_a, of_b) = (a.owned_shards(), b.owned_shards());
    assert_eq!(of_a.len() + of_b.len(), 16, "{of_a:?} {of_b:?}");
    assert!(of_a.keys().all(|s| !of_b.contains_key(s)), "a shard with two owners");
    // `a` dies: it stops ticking. `b` keeps ticking every interval.
    let mut waited = Duration::ZERO;
    while b.owned_shards().len() < 16 {
        advance(&clock, config.rebalance_interval);
        waited += config.rebalance_interval;
        b.tick().await.unwrap();
        assert!(
            waited <= config.lock_timeout + config.rebalance_interval,
            "not failed over after {waited:?}"
        );
    }
    for (shard, token) in b.owned_shards() {
        if let Some(old) = of_a.get(&shard) {
            assert!(token > *old, "shard {shard}: new token {token} not above {old}");
        }
        assert_eq!(fence_of(&store, shard).await, token as i64);
    }
}

/// Survivors whose rounds run at the same moment see the same free shards:
/// one that loses a shard to the other goes on to the next in the same
/// round, so the dead instance's shards are all owned again within the
/// lease TTL plus one interval, not a round later.
#[tokio::test]
async fn survivors_ticking_together_take_every_shard_of_the_dead_within_the_bound() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let a = instance("a", &config, &store, &clock).await;
    let b = instance("b", &config, &store, &clock).await;
    let c = instance("c", &config, &store, &clock).await;
    // Concurrent first rounds may leave a shard to a later round: tick
    // together until every shard has an owner (the bound under test is
    // the failover below, not the start).
    let owned = || a.owned_shards().len() + b.owned_shards().len() + c.owned_shards().len();
    for _ in 0..10 {
        let (ra, rb, rc) = tokio::join!(a.tick(), b.tick(), c.tick());
        ra.unwrap();
        rb.unwrap();
        rc.unwrap();
        if owned() == 16 {
            break;
        }
        advance(&clock, config.rebalance_interval);
    }
    let of_c = c.owned_shards();
    assert_eq!(owned(), 16, "settled within ten rounds");
    assert!(!of_c.is_empty(), "c owns some shards");
    // `c` dies: it stops ticking. `a` and `b` tick together every interval.
    let mut waited = Duration::ZERO;
    while a.owned_shards().len() + b.owned_shards().len() < 16 {
        advance(&clock, config.rebalance_interval);
        waited += config.rebalance_interval;
        let (ra, rb) = tokio::join!(a.tick(), b.tick());
        ra.unwrap();
        rb.unwrap();
        assert!(
            waited <= config.lock_timeout + config.rebalance_interval,
            "not failed over after {waited:?}: a {:?}, b {:?}, c had {:?}",
            a.owned_shards().keys().collect::<Vec<_>>(),
            b.owned_shards().keys().collect::<Vec<_>>(),
            of_c.keys().collect::<Vec<_>>()
        );
    }
    assert!(
        a.owned_shards().keys().all(|s| !b.owned_shards().contains_key(s)),
        "a shard with two owners"
    );
}

/// A killed instance never deregisters: its registration is pruned once
/// it has lapsed for `PRUNE_AFTER_LEASES` lock timeouts (and owns no
/// shard), not before.
#[tokio::test]
async fn a_dead_instances_registration_is_pruned_long_after_it_lapsed() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let a = instance("a", &config, &store, &clock).await;
    let b = instance("b", &config, &store, &clock).await;
    a.tick().await.unwrap();
    b.tick().await.unwrap();
    let dead = a.read_view().await.unwrap();
    let dead_id = dead.instances.keys().find(|id| id.starts_with("a-")).unwrap().clone();
    // `a` dies; `b` takes its shards and keeps ticking.
    let step = config.lock_timeout;
    let mut waited = Duration::ZERO;
    let prune_after = config.lock_timeout * u32::try_from(es_redis::PRUNE_AFTER_LEASES).unwrap();
    while waited < prune_after {
        advance(&clock, step);
        waited += step;
        b.tick().await.unwrap();
        let view = b.read_view().await.unwrap();
        if b.owned_shards().len() == 16 && waited + step < prune_after {
            assert!(view.instances.contains_key(&dead_id), "pruned after {waited:?}");
        }
    }
    advance(&clock, step * 2);
    b.tick().await.unwrap();
    let view = b.read_view().await.unwrap();
    assert_eq!(b.owned_shards().len(), 16);
    assert!(
        !view.instances.contains_key(&dead_id),
        "still registered: {:?}",
        view.instances.keys()
    );
    assert_eq!(view.instances.len(), 1, "the live instance stays");
    b.shutdown().await;
}

/// The owner pauses past its lease; another instance takes the shard and
/// writes; the paused one wakes and tries to write: the store refuses it
/// and nothing of it is stored.
#[tokio::test]
async fn a_paused_owner_is_fenced_off_by_the_store() {
    let (config, store) = (config(&prefix()), store().await);
    // `a`'s clock stands still while it is paused: on waking it still
    // believes its lease holds (the worst case), so only the store stops it.
    let clock_a = clock();
    let a = instance("a", &config, &store, &clock_a).await;
    a.tick().await.unwrap();
    let id = stream_in(&a, 5);
    let a_store = FencedStore::new(store.clone() as Arc<dyn EventStore>, Arc::new(a.clone()));
    a_store
        .append("account", &id, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("the owner writes");
    let Route::Local(permit) = a.route(&id) else {
        panic!("a owns the shard");
    };
    let stale = permit.fence();

    // Paused: a separate clock for b runs past the lease.
    let clock_b = ManualClock::at(clock_a.now_plus(config.lock_timeout + config.rebalance_interval));
    let b = instance("b", &config, &store, &clock_b).await;
    b.tick().await.unwrap();
    assert_eq!(b.owned_shards().len(), 16, "b took every lapsed shard");
    let b_store = FencedStore::new(store.clone() as Arc<dyn EventStore>, Arc::new(b.clone()));
    b_store
        .append("account", &id, ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .expect("the new owner writes");

    // a wakes, mid-command, with its old permit.
    let refused = a_store
        .append("account", &id, ExpectedVersion::Exact(2), vec![event(3)])
        .await;
    match refused {
        Err(StoreError::Fenced {
            shard: 5,
            token,
            current,
        }) => {
            assert_eq!(token, stale.token);
            assert!(current > token);
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    drop(permit);
    assert_eq!(
        store.stream_version(&id).await.unwrap(),
        2,
        "nothing of the paused owner is stored"
    );

    // Once a's clock moves on too, it refuses before reaching the store.
    advance(&clock_a, config.lock_timeout + config.rebalance_interval);
    assert!(matches!(
        a_store
            .append("account", &id, ExpectedVersion::Exact(2), vec![event(4)])
            .await,
        Err(StoreError::NotShardOwner { shard: 5 })
    ));
    a.tick().await.unwrap();
    assert!(a.owned_shards().is_empty(), "a learns it lost every lease");
    assert!(matches!(a.route(&id), Route::Remote { .. }), "and routes to b");
}

/// A new instance gets shards handed over until the cluster is within the
/// threshold; a handover waits for the commands in flight on the shard.
#[tokio::test]
async fn a_joining_instance_gets_its_share_and_handovers_wait_for_commands_in_flight() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let a = instance("a", &config, &store, &clock).await;
    a.tick().await.unwrap();
    assert_eq!(a.owned_shards().len(), 16);
    // A command in flight on every shard of a.
    let mut permits: Vec<_> = (0..16)
        .map(|s| match a.route_shard(s) {
            Route::Local(p) => p,
            other => panic!("{other:?}"),
        })
        .collect();
    let b = instance("b", &config, &store, &clock).await;
    b.tick().await.unwrap(); // registers, nothing free, marks moves
    a.tick().await.unwrap(); // sees the marks, starts draining
    tokio::time::sleep(Duration::from_millis(100)).await;
    let marked: Vec<u32> = a
        .read_view()
        .await
        .unwrap()
        .shards
        .iter()
        .filter(|s| s.status == ShardStatus::Rebalancing)
        .map(|s| s.shard)
        .collect();
    assert_eq!(marked.len(), 8, "half the shards move to b");
    for &s in &marked {
        assert!(
            matches!(a.route_shard(s), Route::Unavailable { .. }),
            "no new commands while draining"
        );
    }
    b.tick().await.unwrap();
    assert!(
        b.owned_shards().is_empty(),
        "nothing released while commands are in flight"
    );
    permits.clear();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..5 {
        advance(&clock, config.rebalance_interval);
        b.tick().await.unwrap();
        a.tick().await.unwrap();
    }
    let (of_a, of_b) = (a.owned_shards(), b.owned_shards());
    assert_eq!((of_a.len(), of_b.len()), (8, 8), "{of_a:?} {of_b:?}");
    assert!(of_b.keys().all(|s| marked.contains(s)));
    for s in marked {
        assert!(matches!(a.route_shard(s), Route::Remote { .. }));
    }
}

/// `shutdown` while a round is taking a shard: the shard taken after
/// `shutdown` read what to hand over is handed back too, so the others
/// need not wait for its lease to lapse.
#[tokio::test]
async fn a_shard_taken_while_shutting_down_is_handed_back() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let held = Arc::new(Wrapped::new(store.clone()));
    held.hold_first_raise.store(true, Ordering::SeqCst);
    let a = instance("a", &config, &held, &clock).await;
    let round = tokio::spawn({
        let a = a.clone();
        async move { a.tick().await }
    });
    // The round has its first token from Redis and waits in the store.
    held.entered.notified().await;
    a.shutdown().await;
    held.go.notify_one();
    round.await.unwrap().unwrap();

    assert!(a.owned_shards().is_empty(), "{:?}", a.owned_shards());
    let view = a.read_view().await.unwrap();
    let kept: Vec<_> = view.shards.iter().filter(|s| s.owner.is_some()).collect();
    assert!(kept.is_empty(), "shards left to lapse: {kept:?}");
    assert!(view.instances.is_empty(), "deregistered");
}

/// An instance whose store fails (it cannot raise fences, nor read) lets
/// its registration lapse, so another takes every shard instead of
/// stopping at its fair share; once its store answers again, it gets its
/// share back.
#[tokio::test]
async fn an_instance_whose_store_fails_leaves_its_share_to_the_others() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let failing = Arc::new(Wrapped::new(store.clone()));
    failing.down.store(true, Ordering::SeqCst);
    let a = instance("a", &config, &failing, &clock).await;
    let b = instance("b", &config, &store, &clock).await;
    for _ in 0..3 {
        a.tick().await.unwrap();
        b.tick().await.unwrap();
        advance(&clock, config.rebalance_interval);
    }
    assert!(a.owned_shards().is_empty());
    // Within a lease of a's last heartbeat, b has taken every shard.
    for _ in 0..(config.lock_timeout.as_millis() / config.rebalance_interval.as_millis() + 2) {
        a.tick().await.unwrap();
        b.tick().await.unwrap();
        advance(&clock, config.rebalance_interval);
    }
    assert_eq!(b.owned_shards().len(), 16, "b took a's share");
    let view = b.read_view().await.unwrap();
    assert!(view.shards.iter().all(|s| s.status == ShardStatus::Assigned));

    // The store answers again: a registers, and the cluster rebalances.
    failing.down.store(false, Ordering::SeqCst);
    for _ in 0..20 {
        a.tick().await.unwrap();
        b.tick().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        advance(&clock, config.rebalance_interval);
        if a.owned_shards().len() == 8 && b.owned_shards().len() == 8 {
            break;
        }
    }
    assert_eq!(
        (a.owned_shards().len(), b.owned_shards().len()),
        (8, 8),
        "a got its share back"
    );
}

/// `shutdown` while a round of an instance out of the cluster waits for
/// its store to answer: when the store answers, the round does not
/// register the instance again (others would hand shards to a ghost).
#[tokio::test]
async fn a_round_waiting_for_its_store_does_not_register_again_after_shutdown() {
    let (config, store, clock) = (config(&prefix()), store().await, clock());
    let failing = Arc::new(Wrapped::new(store.clone()));
    failing.down.store(true, Ordering::SeqCst);
    let a = instance("a", &config, &failing, &clock).await;
    a.tick().await.unwrap();
    assert!(a.owned_shards().is_empty(), "no fence could be raised");
    failing.hold_next_read.store(true, Ordering::SeqCst);
    let round = tokio::spawn({
        let a = a.clone();
        async move { a.tick().await }
    });
    // The round probes its store, which answers only after the shutdown.
    failing.entered.notified().await;
    a.shutdown().await;
    failing.down.store(false, Ordering::SeqCst);
    failing.go.notify_one();
    round.await.unwrap().unwrap();
    let view = a.read_view().await.unwrap();
    assert!(view.instances.is_empty(), "registered again: {:?}", view.instances);
    assert!(a.owned_shards().is_empty());
}

/// The PostgreSQL store with faults: its first `raise_fence` waiting until
/// told to go on (`hold_first_raise`), or fences and reads failing (`down`).
struct Wrapped {
    inner: Arc<PostgresEventStore>,
    entered: tokio::sync::Notify,
    go: tokio::sync::Notify,
    hold_first_raise: AtomicBool,
    /// The next `head_position` waits until told to go on.
    hold_next_read: AtomicBool,
    down: AtomicBool,
}

impl Wrapped {
    fn new(inner: Arc<PostgresEventStore>) -> Self {
        Self {
            inner,
            entered: tokio::sync::Notify::new(),
            go: tokio::sync::Notify::new(),
            hold_first_raise: AtomicBool::new(false),
            hold_next_read: AtomicBool::new(false),
            down: AtomicBool::new(false),
        }
    }

    fn check(&self, operation: &'static str) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::backend(operation, "the database is unreachable"));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl EventStore for Wrapped {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<es_core::AppendResult, StoreError> {
        self.inner.append(stream_type, stream_id, expected, events).await
    }
    async fn raise_fence(&self, fence: es_core::ShardFence) -> Result<(), StoreError> {
        self.check("raise fence")?;
        if self.hold_first_raise.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.go.notified().await;
        }
        self.inner.raise_fence(fence).await
    }
    async fn read_stream_batch(
        &self,
        id: &StreamId,
        from: u64,
        max: usize,
    ) -> Result<Vec<es_core::RecordedEvent>, StoreError> {
        self.inner.read_stream_batch(id, from, max).await
    }
    async fn read_all(
        &self,
        after: u64,
        max: usize,
        filter: &es_core::EventFilter,
    ) -> Result<Vec<es_core::RecordedEvent>, StoreError> {
        self.inner.read_all(after, max, filter).await
    }
    async fn find_event(&self, id: uuid::Uuid) -> Result<Option<es_core::RecordedEvent>, StoreError> {
        self.inner.find_event(id).await
    }
    async fn stream_version(&self, id: &StreamId) -> Result<u64, StoreError> {
        self.inner.stream_version(id).await
    }
    async fn head_position(&self) -> Result<u64, StoreError> {
        if self.hold_next_read.swap(false, Ordering::SeqCst) {
            self.entered.notify_one();
            self.go.notified().await;
        }
        self.check("head position")?;
        self.inner.head_position().await
    }
}

trait NowPlus {
    fn now_plus(&self, by: Duration) -> chrono::DateTime<chrono::Utc>;
}

impl NowPlus for ManualClock {
    fn now_plus(&self, by: Duration) -> chrono::DateTime<chrono::Utc> {
        es_core::Clock::now(self) + chrono::Duration::from_std(by).unwrap()
    }
}
