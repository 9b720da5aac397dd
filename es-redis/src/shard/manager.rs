//! [`ShardManager`]: one instance's side of the shard protocol.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use es_core::{shard_of, Clock, EventStore, FenceSource, ShardFence, ShardId, StoreError, StreamId};
use redis::aio::ConnectionManager;
use tokio::sync::{Notify, OwnedRwLockReadGuard};

use super::plan::acquisition_candidates;
use super::scripts::scripts;
use super::{ClusterView, InstanceRecord, ShardConfig, ShardError, ShardRecord, ShardStatus};
use crate::backend::{Idempotency, RedisBackend};
use crate::config::LockConfig;
use crate::lock::RedisLockManager;
use crate::telemetry;
pub use registrations::PRUNE_AFTER_LEASES;

/// Who this instance is, as other instances see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Unique per process start (a restarted process is a new instance).
    pub id: String,
    /// Where other instances reach it, for example `http://10.0.0.5:8080`.
    pub address: String,
}

/// Where a command for a stream goes.
#[derive(Debug)]
pub enum Route {
    /// This instance owns the shard: handle the command while holding the
    /// permit (a handover waits for it).
    Local(ShardPermit),
    /// Another live instance owns it.
    Remote {
        /// The shard.
        shard: ShardId,
        /// The owner's id.
        owner: String,
        /// The owner's address.
        address: String,
    },
    /// Nobody can take the command now: the shard has no live owner (an
    /// owner died and its lease has not run out yet, or a handover is under
    /// way). Retry shortly.
    Unavailable {
        /// The shard.
        shard: ShardId,
    },
}

/// Permission to handle commands of one shard on this instance; a handover
/// of the shard waits until every permit is dropped.
#[derive(Debug)]
pub struct ShardPermit {
    fence: ShardFence,
    _guard: OwnedRwLockReadGuard<()>,
}

impl ShardPermit {
    /// The shard and the token its appends are fenced with.
    pub fn fence(&self) -> ShardFence {
        self.fence
    }
}

/// A shard this instance owns.
struct Owned {
    token: u64,
    /// End of the lease as last renewed (caller's clock, ms).
    lease_until_ms: i64,
    /// Commands hold it shared; a handover takes it exclusively.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Being handed over: no new commands.
    draining: bool,
}

/// One instance's side of the shard protocol: registers the instance with
/// a heartbeat lease, takes and renews shard leases, hands shards over when
/// the cluster rebalances, routes streams to their owners, and fences its
/// appends (it is the [`FenceSource`] of a
/// [`FencedStore`](es_core::FencedStore)).
///
/// Every `rebalance_interval` ([`ShardManager::spawn`], or
/// [`ShardManager::tick`] driven by hand):
/// 1. heartbeat: the instance's registration lives `lock_timeout` longer
///    (not while it owns no shard and its store fails both the fence it
///    last raised and a read: its registration then lapses, and the
///    others take its share of the shards until the store answers again);
/// 2. renew the leases of its shards (a lease found taken or changed is
///    lost at once; one that could not be renewed lapses at its end);
///    shards marked for handover are drained and released in the
///    background;
/// 3. read the cluster; release shards Redis says it owns but it does not
///    know (a reply lost in transit);
/// 4. take unowned shards up to its fair share: bump the token in Redis,
///    **raise the store's fence to it**, then accept commands;
/// 5. one instance at a time (under a [`RedisLockManager`] lock), mark
///    shards to move when the imbalance passes the threshold.
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn es_core::EventStore>) -> Result<(), es_redis::ShardError> {
/// use std::sync::Arc;
/// use es_core::{FencedStore, StreamId, SystemClock};
/// use es_redis::{InstanceInfo, Route, ShardConfig, ShardManager};
///
/// let me = InstanceInfo { id: "node-a-1".into(), address: "http://10.0.0.5:8080".into() };
/// let shards = ShardManager::connect(ShardConfig::default(), me, store.clone(), Arc::new(SystemClock)).await?;
/// shards.spawn();
/// // Appends through this store carry the owner's fence.
/// let fenced = Arc::new(FencedStore::new(store, Arc::new(shards.clone())));
/// match shards.route(&StreamId::from("account-7")) {
///     Route::Local(permit) => { /* handle the command, then drop the permit */ drop(permit) }
///     Route::Remote { address, .. } => { /* forward to `address` */ }
///     Route::Unavailable { .. } => { /* answer "retry shortly" */ }
/// }
/// shards.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ShardManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: ShardConfig,
    me: InstanceInfo,
    backend: Arc<RedisBackend>,
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    locks: RedisLockManager,
    owned: RwLock<HashMap<ShardId, Owned>>,
    view: RwLock<ClusterView>,
    stop: Notify,
    stopped: std::sync::atomic::AtomicBool,
    /// The store failed the last fence this instance tried to raise (for
    /// a reason other than a higher fence).
    store_failing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ShardManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardManager")
            .field("instance", &self.inner.me.id)
            .field("owned", &self.owned_shards())
            .finish_non_exhaustive()
    }
}

mod rebalance;
mod registrations;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl ShardManager {
    /// Joins the cluster under `config.key_prefix`: checks the shard count
    /// (the first instance records it) and registers this instance. Takes
    /// no shard yet: call [`tick`](Self::tick) or [`spawn`](Self::spawn).
    pub async fn connect(
        config: ShardConfig,
        me: InstanceInfo,
        store: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ShardError> {
        config
            .validate()
            .map_err(|e| ShardError::Config { reason: e.to_string() })?;
        let backend = Arc::new(
            RedisBackend::new("shard", &config.redis, &config.resilience).map_err(|source| ShardError::Redis {
                operation: "connect",
                source,
            })?,
        );
        let locks = RedisLockManager::with_backend(
            LockConfig {
                lock_timeout: config.rebalance_interval * 3,
                retry_attempts: 1,
                lock_prefix: format!("{}lock:", config.key_prefix),
                redis: config.redis.clone(),
                resilience: config.resilience,
                ..LockConfig::default()
            },
            Arc::clone(&backend),
        );
        let manager = Self {
            inner: Arc::new(Inner {
                config,
                me,
                backend,
                store,
                clock,
                locks,
                owned: RwLock::new(HashMap::new()),
                view: RwLock::new(ClusterView::default()),
                stop: Notify::new(),
                stopped: std::sync::atomic::AtomicBool::new(false),
                store_failing: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        manager.check_shard_count().await?;
        manager.heartbeat(manager.now_ms()).await?;
        Ok(manager)
    }

    /// The settings.
    pub fn config(&self) -> &ShardConfig {
        &self.inner.config
    }

    /// This instance.
    pub fn instance(&self) -> &InstanceInfo {
        &self.inner.me
    }

    /// The shard of a stream.
    pub fn shard_of(&self, stream_id: impl Into<StreamId>) -> ShardId {
        shard_of(stream_id, self.inner.config.shard_count)
    }

    /// Where a command for `stream_id` goes now.
    pub fn route(&self, stream_id: impl Into<StreamId>) -> Route {
        self.route_shard(self.shard_of(stream_id))
    }

    /// Where a command for a stream of `shard` goes now.
    pub fn route_shard(&self, shard: ShardId) -> Route {
        let now = self.now_ms();
        {
            let owned = read(&self.inner.owned);
            if let Some(o) = owned.get(&shard) {
                if !o.draining && o.lease_until_ms > now {
                    if let Ok(guard) = Arc::clone(&o.gate).try_read_owned() {
                        return Route::Local(ShardPermit {
                            fence: ShardFence::new(shard, o.token),
                            _guard: guard,
                        });
                    }
                }
                return Route::Unavailable { shard };
            }
        }
        let view = read(&self.inner.view);
        let owner = view
            .shards
            .get(shard as usize)
            .and_then(|s| s.live_owner(now))
            .filter(|o| *o != self.inner.me.id)
            .and_then(|o| view.instances.get(o));
        match owner {
            Some(i) => Route::Remote {
                shard,
                owner: i.id.clone(),
                address: i.address.clone(),
            },
            None => Route::Unavailable { shard },
        }
    }

    /// The shards this instance accepts commands for now, with their
    /// tokens.
    pub fn owned_shards(&self) -> BTreeMap<ShardId, u64> {
        let now = self.now_ms();
        read(&self.inner.owned)
            .iter()
            .filter(|(_, o)| !o.draining && o.lease_until_ms > now)
            .map(|(s, o)| (*s, o.token))
            .collect()
    }

    /// The cluster as last read (at most one interval old).
    pub fn view(&self) -> ClusterView {
        read(&self.inner.view).clone()
    }

    /// Reads the cluster from Redis and makes it the view [`route`](Self::route)
    /// uses (a router that found no owner in a view up to one interval old
    /// looks again before giving up).
    pub async fn refresh_view(&self) -> Result<(), ShardError> {
        let view = self.read_view().await?;
        *write(&self.inner.view) = view;
        Ok(())
    }

    /// Reads the cluster from Redis now.
    pub async fn read_view(&self) -> Result<ClusterView, ShardError> {
        let now = self.now_ms();
        let config = &self.inner.config;
        let instances_key = self.key("instances");
        let shard_keys: Vec<String> = (0..config.shard_count).map(|s| self.shard_key(s)).collect();
        type Reply = (
            HashMap<String, String>,
            Vec<(
                Option<String>,
                Option<String>,
                Option<u64>,
                Option<i64>,
                Option<String>,
                Option<i64>,
            )>,
        );
        let (instances, shards): Reply = self
            .call(
                "read cluster",
                Idempotency::Idempotent,
                move |mut c: ConnectionManager| {
                    let mut pipe = redis::pipe();
                    pipe.hgetall(&instances_key);
                    let mut each = redis::pipe();
                    for key in &shard_keys {
                        each.cmd("HMGET")
                            .arg(key)
                            .arg(&["status", "owner", "token", "lease", "target", "released"]);
                    }
                    async move {
                        let (instances,): (HashMap<String, String>,) = pipe.query_async(&mut c).await?;
                        let shards = each.query_async(&mut c).await?;
                        Ok((instances, shards))
                    }
                },
            )
            .await?;
        let instances = instances
            .into_iter()
            .filter_map(|(id, json)| serde_json::from_str::<InstanceRecord>(&json).ok().map(|r| (id, r)))
            .collect();
        let shards = shards
            .into_iter()
            .enumerate()
            .map(|(n, (status, owner, token, lease, target, released))| ShardRecord {
                shard: n as ShardId,
                status: ShardStatus::parse(status.as_deref().unwrap_or("Available")),
                owner: owner.filter(|o| !o.is_empty()),
                token: token.unwrap_or(0),
                lease_expires_at_ms: lease.unwrap_or(0),
                target: target.filter(|t| !t.is_empty()),
                released_at_ms: released.unwrap_or(0),
            })
            .collect();
        Ok(ClusterView {
            now_ms: now,
            instances,
            shards,
        })
    }

    /// Runs [`tick`](Self::tick) every `rebalance_interval` until
    /// [`shutdown`](Self::shutdown).
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.tick().await {
                    tracing::warn!(error = %e, "shard round failed; retrying next interval");
                }
                tokio::select! {
                    () = this.inner.stop.notified() => return,
                    () = tokio::time::sleep(this.inner.config.rebalance_interval) => {}
                }
                if this.is_stopped() {
                    return;
                }
            }
        })
    }

    /// One round of the protocol (see the type's docs).
    #[tracing::instrument(level = "debug", name = "es.redis.shard.tick", skip(self), fields(instance = %self.inner.me.id))]
    pub async fn tick(&self) -> Result<(), ShardError> {
        if self.is_stopped() {
            return Ok(());
        }
        let now = self.now_ms();
        let registered = self.heartbeat_while_serving(now).await?;
        self.renew(now).await;
        self.drop_lapsed();
        let view = self.read_view().await?;
        *write(&self.inner.view) = view.clone();
        self.prune_registrations(&view).await;
        self.release_orphans(&view).await;
        // Out of the cluster while its store fails: it leaves the shards to
        // the others rather than holding each for a failing attempt.
        if !registered || self.is_stopped() {
            metrics::gauge!(telemetry::SHARDS_OWNED).set(self.owned_shards().len() as f64);
            return Ok(());
        }
        let (mut want, candidates) = acquisition_candidates(&view, &self.inner.config, &self.inner.me.id);
        for shard in candidates {
            if want == 0 || self.is_stopped() {
                break;
            }
            match self.acquire(shard).await {
                Ok(true) => want -= 1,
                // Another instance took it first: try the next one.
                Ok(false) => {}
                Err(e) => tracing::warn!(shard, error = %e, "could not take shard"),
            }
        }
        if !self.is_stopped() {
            self.rebalance().await;
        }
        metrics::gauge!(telemetry::SHARDS_OWNED).set(self.owned_shards().len() as f64);
        Ok(())
    }

    /// Hands every shard back (draining each) and deregisters; the other
    /// instances take the shards on their next round.
    pub async fn shutdown(&self) {
        self.inner.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.stop.notify_waiters();
        let shards: Vec<ShardId> = read(&self.inner.owned).keys().copied().collect();
        for shard in shards {
            self.hand_over(shard).await;
        }
        let key = self.key("instances");
        let id = self.inner.me.id.clone();
        let _ = self
            .call(
                "deregister",
                Idempotency::Idempotent,
                move |mut c: ConnectionManager| {
                    let (key, id) = (key.clone(), id.clone());
                    async move { redis::cmd("HDEL").arg(key).arg(id).query_async::<i64>(&mut c).await }
                },
            )
            .await;
    }

    fn is_stopped(&self) -> bool {
        self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now().timestamp_millis()
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.inner.config.key_prefix)
    }

    fn shard_key(&self, shard: ShardId) -> String {
        self.key(&format!("shard:{shard}"))
    }

    /// A Redis call of the protocol, attempted up to `max_retries` times.
    async fn call<T, F, Fut>(&self, operation: &'static str, idempotency: Idempotency, f: F) -> Result<T, ShardError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let attempts = match idempotency {
            Idempotency::Idempotent => self.inner.config.max_retries.max(1),
            Idempotency::Once => 1,
        };
        let mut attempt = 1;
        loop {
            match self.inner.backend.run(operation, Idempotency::Once, &f).await {
                Ok(v) => return Ok(v),
                Err(source) if attempt >= attempts => return Err(ShardError::Redis { operation, source }),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(self.inner.config.lock_retry_interval).await;
                }
            }
        }
    }

    async fn check_shard_count(&self) -> Result<(), ShardError> {
        let key = self.key("config:shard_count");
        let count = self.inner.config.shard_count;
        let stored = self
            .call(
                "check shard count",
                Idempotency::Idempotent,
                move |mut c: ConnectionManager| {
                    let key = key.clone();
                    async move { crate::shared_setting::record_once(&mut c, &key, count).await }
                },
            )
            .await?
            .unwrap_or(count);
        if stored != count {
            return Err(ShardError::ShardCountMismatch {
                configured: count,
                cluster: stored,
                prefix: self.inner.config.key_prefix.clone(),
            });
        }
        Ok(())
    }

    /// Renews every owned lease; loses the ones Redis says are gone, and
    /// starts the handover of the ones marked for it.
    async fn renew(&self, now: i64) {
        let held: Vec<(ShardId, u64)> = read(&self.inner.owned)
            .iter()
            .filter(|(_, o)| !o.draining)
            .map(|(s, o)| (*s, o.token))
            .collect();
        if held.is_empty() {
            return;
        }
        let keys: Vec<String> = held.iter().map(|(s, _)| self.shard_key(*s)).collect();
        let me = self.inner.me.id.clone();
        let ttl = millis(self.inner.config.lock_timeout);
        let tokens: Vec<u64> = held.iter().map(|(_, t)| *t).collect();
        let result: Result<Vec<i64>, _> = self
            .call(
                "renew leases",
                Idempotency::Idempotent,
                move |mut c: ConnectionManager| {
                    let mut inv = scripts().renew.prepare_invoke();
                    for k in &keys {
                        inv.key(k);
                    }
                    inv.arg(&me).arg(now).arg(ttl);
                    for t in &tokens {
                        inv.arg(*t);
                    }
                    async move { inv.invoke_async(&mut c).await }
                },
            )
            .await;
        let answers = match result {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "could not renew shard leases; they lapse at their end unless renewed");
                return;
            }
        };
        let mut hand_over = Vec::new();
        {
            let mut owned = write(&self.inner.owned);
            for ((shard, token), answer) in held.into_iter().zip(answers) {
                match answer {
                    0 => {
                        if owned.get(&shard).is_some_and(|o| o.token == token) {
                            owned.remove(&shard);
                            metrics::counter!(telemetry::SHARD_LEASE_LOSSES).increment(1);
                            tracing::warn!(shard, token, "lost shard lease");
                        }
                    }
                    n => {
                        if let Some(o) = owned.get_mut(&shard) {
                            o.lease_until_ms = now + ttl;
                            if n == 2 {
                                o.draining = true;
                                hand_over.push(shard);
                            }
                        }
                    }
                }
            }
        }
        for shard in hand_over {
            let this = self.clone();
            tokio::spawn(async move { this.hand_over(shard).await });
        }
    }

    /// Forgets shards whose lease ran out without renewal.
    fn drop_lapsed(&self) {
        let now = self.now_ms();
        let mut owned = write(&self.inner.owned);
        let before = owned.len();
        owned.retain(|shard, o| {
            let live = o.draining || o.lease_until_ms > now;
            if !live {
                tracing::warn!(shard, token = o.token, "shard lease lapsed without renewal");
            }
            live
        });
        let lost = before - owned.len();
        if lost > 0 {
            metrics::counter!(telemetry::SHARD_LEASE_LOSSES).increment(lost as u64);
        }
    }

    /// Releases shards Redis says this instance owns but it does not hold
    /// (an acquisition whose reply was lost).
    async fn release_orphans(&self, view: &ClusterView) {
        let orphans: Vec<(ShardId, u64)> = {
            let owned = read(&self.inner.owned);
            view.shards
                .iter()
                .filter(|s| s.owner.as_deref() == Some(self.inner.me.id.as_str()) && !owned.contains_key(&s.shard))
                .map(|s| (s.shard, s.token))
                .collect()
        };
        for (shard, token) in orphans {
            let _ = self.release(shard, token).await;
        }
    }

    /// Takes a shard: a new token in Redis, then the store's fence raised
    /// to it, then commands are accepted.
    /// Takes `shard` if it is free; whether this instance took it.
    async fn acquire(&self, shard: ShardId) -> Result<bool, ShardError> {
        if self.is_stopped() {
            return Ok(false);
        }
        let key = self.shard_key(shard);
        let me = self.inner.me.id.clone();
        let now = self.now_ms();
        let ttl = millis(self.inner.config.lock_timeout);
        let token: u64 = self
            .call("acquire shard", Idempotency::Once, move |mut c: ConnectionManager| {
                let mut inv = scripts().acquire.prepare_invoke();
                inv.key(&key).arg(&me).arg(now).arg(ttl);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        if token == 0 {
            return Ok(false);
        }
        match self.inner.store.raise_fence(ShardFence::new(shard, token)).await {
            Ok(()) => self
                .inner
                .store_failing
                .store(false, std::sync::atomic::Ordering::SeqCst),
            Err(source) => {
                if !matches!(source, StoreError::Fenced { .. }) {
                    self.inner
                        .store_failing
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                }
                if let StoreError::Fenced { current, .. } = &source {
                    // The store saw a higher token than Redis holds (Redis
                    // lost data): move the counter past it for next time.
                    let key = self.shard_key(shard);
                    let at_least = *current;
                    let _ = self
                        .call(
                            "raise token counter",
                            Idempotency::Idempotent,
                            move |mut c: ConnectionManager| {
                                let mut inv = scripts().raise_token.prepare_invoke();
                                inv.key(&key).arg(at_least);
                                async move { inv.invoke_async::<i64>(&mut c).await }
                            },
                        )
                        .await;
                }
                let _ = self.release(shard, token).await;
                return Err(ShardError::Fence { shard, source });
            }
        }
        write(&self.inner.owned).insert(
            shard,
            Owned {
                token,
                lease_until_ms: now + ttl,
                gate: Arc::new(tokio::sync::RwLock::new(())),
                draining: false,
            },
        );
        metrics::counter!(telemetry::SHARD_ACQUISITIONS).increment(1);
        tracing::info!(shard, token, "took shard");
        // `shutdown` may have read the shards to hand over while this round
        // was taking one: hand it back here. (Either this sees `stopped`, or
        // `shutdown`, which sets it before reading, sees the shard.)
        if self.is_stopped() {
            self.hand_over(shard).await;
        }
        Ok(true)
    }

    async fn release(&self, shard: ShardId, token: u64) -> Result<bool, ShardError> {
        let key = self.shard_key(shard);
        let me = self.inner.me.id.clone();
        let now = self.now_ms();
        let released: i64 = self
            .call(
                "release shard",
                Idempotency::Idempotent,
                move |mut c: ConnectionManager| {
                    let mut inv = scripts().release.prepare_invoke();
                    inv.key(&key).arg(&me).arg(token).arg(now);
                    async move { inv.invoke_async(&mut c).await }
                },
            )
            .await?;
        Ok(released == 1)
    }

    /// Stops new commands for `shard`, waits (up to `drain_timeout`) for the
    /// ones in flight, releases it.
    async fn hand_over(&self, shard: ShardId) {
        let Some((gate, token)) = ({
            let mut owned = write(&self.inner.owned);
            owned.get_mut(&shard).map(|o| {
                o.draining = true;
                (Arc::clone(&o.gate), o.token)
            })
        }) else {
            return;
        };
        let drained = tokio::time::timeout(self.inner.config.drain_timeout, gate.write_owned()).await;
        if drained.is_err() {
            tracing::warn!(
                shard,
                "commands still in flight at the end of the drain; releasing anyway (the fence refuses them)"
            );
        }
        {
            let mut owned = write(&self.inner.owned);
            if owned.get(&shard).is_none_or(|o| o.token != token) {
                // Another hand-over of it (a round taking it during
                // `shutdown`) got here first.
                return;
            }
            owned.remove(&shard);
        }
        match self.release(shard, token).await {
            Ok(true) => {
                metrics::counter!(telemetry::SHARD_REBALANCES).increment(1);
                tracing::info!(shard, token, "handed shard over");
            }
            Ok(false) => {
                metrics::counter!(telemetry::SHARD_LEASE_LOSSES).increment(1);
                tracing::warn!(
                    shard,
                    token,
                    "shard lease lapsed during the drain; another instance may own it now"
                );
            }
            Err(e) => tracing::warn!(shard, error = %e, "could not release shard; its lease lapses instead"),
        }
    }
}

impl FenceSource for ShardManager {
    fn fence_for(&self, stream_id: &StreamId) -> Result<Option<ShardFence>, StoreError> {
        let shard = self.shard_of(stream_id);
        let now = self.now_ms();
        match read(&self.inner.owned).get(&shard) {
            Some(o) if o.lease_until_ms > now => Ok(Some(ShardFence::new(shard, o.token))),
            _ => Err(StoreError::NotShardOwner { shard }),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
