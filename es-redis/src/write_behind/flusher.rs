//! The flusher: moves admitted appends from Redis into the store with the
//! reliable-queue pattern, so that a flusher killed at any step loses
//! nothing and writes nothing twice.
//!
//! A round: [`take`](Flusher::take) (per shard whose lease this flusher
//! holds or can take: renew the lease, move a batch from the pending list
//! to the shard's processing list, or take the processing list left by a
//! dead flusher), [`write`](Flusher::write) (append through the store, by
//! event id, so a batch written before is acknowledged as a replay), then
//! [`acknowledge`](Flusher::acknowledge) (drop the processing list, only
//! while the lease is still this flusher's).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use es_core::{EventStore, ExpectedVersion, NewEvent, ShardId, StoreError, StreamId};
use redis::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::record::{Entry, PendingBody};
use super::redis_io::{eval, int, text, texts};
use super::scripts::scripts;
use super::WriteBehindConfig;
use crate::{telemetry, RedisBackend};

/// One append taken from a pending list.
#[derive(Debug, Clone)]
pub struct TakenAppend {
    /// Its shard.
    pub shard: ShardId,
    /// Its stream.
    pub stream_id: StreamId,
    /// Version of its first event.
    pub first_version: u64,
    /// When it was admitted (ms since the Unix epoch).
    pub admitted_ms: i64,
    /// Its stream type and events; `None` when Redis lost the body.
    body: Option<PendingBody>,
    /// Its entry in the shard's lists, as Redis holds it.
    entry: String,
}

impl TakenAppend {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.events.len())
    }

    /// Whether it carries no events (its body was lost).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one [`take`](Flusher::take) got: the shards held and their
/// appends, oldest first per shard.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// The shards whose lease this flusher holds (with or without appends).
    pub shards: Vec<ShardId>,
    /// The appends to write, in list order.
    pub appends: Vec<TakenAppend>,
    /// Appends taken over from a processing list another flusher left.
    pub recovered: usize,
    /// Appends still waiting in the held shards' pending lists.
    pub still_pending: u64,
    /// Admission time of the oldest append still waiting (ms), if any.
    pub oldest_pending_ms: Option<i64>,
}

/// What [`write`](Flusher::write) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Appends now in the store (written now or found there already).
    pub appends: usize,
    /// Their events.
    pub events: usize,
    /// Appends the store refused for good (diverged streams), moved to the
    /// dead list.
    pub diverged: usize,
}

/// Why a flush round did not complete; the round is repeated (it is
/// idempotent).
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Redis failed.
    #[error("write-behind flush could not reach redis: {0}")]
    Redis(#[source] StoreError),
    /// The store failed (transiently); nothing is lost, the appends stay in
    /// the processing list.
    #[error("write-behind flush could not write to the store: {0}")]
    Store(#[source] StoreError),
}

/// A flusher's health, for readiness checks.
#[derive(Debug, Clone, PartialEq)]
pub struct FlusherStatus {
    /// Pending appends seen in the shards this flusher holds.
    pub pending: u64,
    /// Age of the oldest of them.
    pub oldest_pending_age: Option<Duration>,
    /// Time since the last round that completed (None: none yet).
    pub since_last_flush: Option<Duration>,
    /// The last round's error, if it failed.
    pub last_error: Option<String>,
    /// Pending appends and no completed round for `stuck_after`.
    pub stuck: bool,
}

#[derive(Default)]
struct Health {
    last_flush_ms: AtomicI64,
    started_ms: AtomicI64,
    pending: AtomicU64,
    oldest_pending_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
}

/// Moves admitted appends into the store. Several flushers (in several
/// processes) may share one log: each pending list is held by one of them
/// at a time (an expiring lease), and taken over when its holder dies.
pub struct Flusher<S: EventStore + ?Sized> {
    inner: Arc<S>,
    backend: Arc<RedisBackend>,
    config: WriteBehindConfig,
    owner: String,
    health: Health,
}

impl<S: EventStore + ?Sized> std::fmt::Debug for Flusher<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl<S: EventStore + ?Sized> Flusher<S> {
    /// A flusher writing into `inner`, with a fresh owner id.
    pub fn new(inner: Arc<S>, backend: Arc<RedisBackend>, config: WriteBehindConfig) -> Self {
        let health = Health::default();
        health.started_ms.store(now_ms(), Ordering::Relaxed);
        Self {
            inner,
            backend,
            config,
            owner: uuid::Uuid::now_v7().to_string(),
            health,
        }
    }

    /// This flusher's owner id (recorded in the leases it holds).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Step 1: renews or takes the shard leases and takes a batch per held
    /// shard (the processing list left by a dead holder first).
    pub async fn take(&self) -> Result<Taken, FlushError> {
        let mut args = vec![
            self.config.key_prefix.clone().into_bytes(),
            self.owner.clone().into_bytes(),
            (self.config.flush_lease.as_millis().max(1) as u64)
                .to_string()
                .into_bytes(),
            self.config.max_flush_batch.clamp(1, 100_000).to_string().into_bytes(),
        ];
        args.extend((0..self.config.shards.max(1)).map(|s| s.to_string().into_bytes()));
        let reply = eval(&self.backend, "write-behind take", &scripts().take, args)
            .await
            .map_err(FlushError::Redis)?;
        let mut taken = Taken::default();
        let Value::Array(shards) = reply else {
            return Err(FlushError::Redis(bad_reply("take")));
        };
        for shard in shards {
            let Value::Array(f) = shard else {
                return Err(FlushError::Redis(bad_reply("take")));
            };
            let id = f
                .first()
                .and_then(int)
                .ok_or_else(|| FlushError::Redis(bad_reply("take")))? as ShardId;
            let recovered = f.get(1).and_then(int) == Some(1);
            let entries = f.get(2).map(texts).unwrap_or_default();
            let bodies = f.get(3).map(texts).unwrap_or_default();
            let waiting = f.get(4).and_then(int).unwrap_or(0);
            let oldest = f.get(5).and_then(text).and_then(|e| Entry::parse(&e));
            let pending = waiting + entries.len() as u64;
            metrics::gauge!(telemetry::WB_PENDING, "shard" => id.to_string()).set(pending as f64);
            let oldest_ms = oldest.map(|e| e.admitted_ms);
            taken.shards.push(id);
            taken.still_pending += waiting;
            taken.oldest_pending_ms = match (taken.oldest_pending_ms, oldest_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if recovered {
                taken.recovered += entries.len();
            }
            // The oldest append not yet in the store: the taken ones stay
            // in the processing list until acknowledged (while the store is
            // down, every append may be there and none in the pending list).
            let mut oldest_unwritten_ms = oldest_ms;
            for (raw, body) in entries
                .iter()
                .zip(bodies.iter().map(Some).chain(std::iter::repeat(None)))
            {
                let Some(entry) = Entry::parse(raw) else {
                    return Err(FlushError::Redis(bad_reply("take: malformed entry")));
                };
                let body = match body {
                    Some(b) if !b.is_empty() => {
                        Some(PendingBody::decode(&entry.stream_id, entry.first_version, b).map_err(FlushError::Redis)?)
                    }
                    _ => None,
                };
                oldest_unwritten_ms =
                    Some(oldest_unwritten_ms.map_or(entry.admitted_ms, |ms| ms.min(entry.admitted_ms)));
                taken.appends.push(TakenAppend {
                    shard: id,
                    stream_id: entry.stream_id,
                    first_version: entry.first_version,
                    admitted_ms: entry.admitted_ms,
                    body,
                    entry: raw.clone(),
                });
            }
            let age = oldest_unwritten_ms.map_or(0.0, |ms| now_ms().saturating_sub(ms).max(0) as f64 / 1000.0);
            metrics::gauge!(telemetry::WB_OLDEST_PENDING, "shard" => id.to_string()).set(age);
        }
        let oldest_taken = taken.appends.iter().map(|a| a.admitted_ms).min();
        self.health
            .pending
            .store(taken.still_pending + taken.appends.len() as u64, Ordering::Relaxed);
        self.health
            .oldest_pending_ms
            .store(oldest_taken.or(taken.oldest_pending_ms).unwrap_or(0), Ordering::Relaxed);
        Ok(taken)
    }

    /// Step 2: appends the taken appends to the store, each stream's in
    /// order (one append per stream when its appends follow each other;
    /// streams concurrently, so the store group-commits them), by event id:
    /// appends already stored are acknowledged as replays. Appends the
    /// store refuses for good go to the dead list and mark their stream
    /// diverged.
    pub async fn write(&self, taken: &Taken) -> Result<Written, FlushError> {
        let mut by_stream: HashMap<&StreamId, Vec<&TakenAppend>> = HashMap::new();
        let mut order = Vec::new();
        for a in &taken.appends {
            let list = by_stream.entry(&a.stream_id).or_default();
            if list.is_empty() {
                order.push(&a.stream_id);
            }
            list.push(a);
        }
        let results = futures::future::join_all(order.iter().map(|sid| self.write_stream(&by_stream[sid]))).await;
        let mut written = Written::default();
        let mut dead = Vec::new();
        let mut failure = None;
        for r in results {
            match r {
                Ok(StreamOutcome {
                    appends,
                    events,
                    diverged,
                }) => {
                    written.appends += appends;
                    written.events += events;
                    written.diverged += diverged.len();
                    dead.extend(diverged);
                }
                Err(e) => failure = Some(e),
            }
        }
        // Only a round that completes records its refused appends: a round
        // that fails is taken again whole, and would record them twice.
        if failure.is_none() && !dead.is_empty() {
            let mut args = vec![self.config.key_prefix.clone().into_bytes()];
            for (append, reason) in &dead {
                tracing::error!(stream = %append.stream_id, first_version = append.first_version, %reason,
                    "write-behind append refused by the store; stream marked diverged");
                metrics::counter!(telemetry::WB_DIVERGED).increment(1);
                let record = serde_json::json!({
                    "stream_id": append.stream_id.as_str(),
                    "first_version": append.first_version,
                    "admitted_ms": append.admitted_ms,
                    "reason": reason,
                    "body": append.body,
                });
                args.push(append.stream_id.as_str().as_bytes().to_vec());
                args.push(record.to_string().into_bytes());
            }
            eval(&self.backend, "write-behind dead letter", &scripts().dead, args)
                .await
                .map_err(FlushError::Redis)?;
        }
        match failure {
            Some(e) => Err(FlushError::Store(e)),
            None => Ok(written),
        }
    }

    /// Writes one stream's appends in order, in store appends of at most
    /// [`MAX_EVENTS_PER_STORE_APPEND`] events (a huge single append costs
    /// the store more than several moderate ones).
    async fn write_stream(&self, appends: &[&TakenAppend]) -> Result<StreamOutcome, StoreError> {
        let mut out = StreamOutcome::default();
        let mut start = 0;
        while start < appends.len() {
            let mut end = start;
            let mut events = 0;
            while end < appends.len() && (end == start || events + appends[end].len() <= MAX_EVENTS_PER_STORE_APPEND) {
                events += appends[end].len();
                end += 1;
            }
            let part = self.write_run(&appends[start..end], !out.diverged.is_empty()).await?;
            out.appends += part.appends;
            out.events += part.events;
            out.diverged.extend(part.diverged);
            start = end;
        }
        Ok(out)
    }

    /// Writes consecutive appends of one stream: as one store append when
    /// they follow each other, else (or when that fails for a reason an
    /// append-by-append pass can tell apart) one by one. `broken`: an
    /// earlier append of the stream was refused, so these go dead too.
    async fn write_run(&self, appends: &[&TakenAppend], broken: bool) -> Result<StreamOutcome, StoreError> {
        let mut out = StreamOutcome::default();
        if broken {
            for a in appends {
                out.diverged.push(((*a).clone(), "follows a refused append".to_owned()));
            }
            return Ok(out);
        }
        let contiguous = appends
            .windows(2)
            .all(|w| w[0].first_version + w[0].len() as u64 == w[1].first_version);
        // Several appends of one stream in a row: one store append.
        if appends.len() > 1 && contiguous && appends.iter().all(|a| a.body.is_some()) {
            let first = appends[0];
            let events: Vec<NewEvent> = appends
                .iter()
                .flat_map(|a| a.body.iter().flat_map(|b| b.events.iter().cloned()))
                .collect();
            let stream_type = first.body.as_ref().map(|b| b.stream_type.as_str()).unwrap_or_default();
            let n = events.len();
            match self
                .inner
                .append(
                    stream_type,
                    &first.stream_id,
                    ExpectedVersion::Exact(first.first_version - 1),
                    events,
                )
                .await
            {
                Ok(r) if r.first_version == first.first_version => {
                    out.appends = appends.len();
                    out.events = n;
                    return Ok(out);
                }
                // Part of it may be stored already (a round cut short):
                // go append by append.
                Ok(_) | Err(StoreError::Conflict { .. } | StoreError::DuplicateEventId { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut broken: Option<String> = None;
        for a in appends {
            if let Some(reason) = &broken {
                out.diverged
                    .push(((*a).clone(), format!("follows a refused append: {reason}")));
                continue;
            }
            let Some(body) = &a.body else {
                let reason = "its body is missing from redis".to_owned();
                out.diverged.push(((*a).clone(), reason.clone()));
                broken = Some(reason);
                continue;
            };
            let expected = ExpectedVersion::Exact(a.first_version - 1);
            match self
                .inner
                .append(&body.stream_type, &a.stream_id, expected, body.events.clone())
                .await
            {
                Ok(r) if r.first_version == a.first_version => {
                    out.appends += 1;
                    out.events += body.events.len();
                }
                Ok(r) => {
                    let reason = format!(
                        "stored at version {} instead of {} (the store moved on outside the write-behind log)",
                        r.first_version, a.first_version
                    );
                    out.diverged.push(((*a).clone(), reason.clone()));
                    broken = Some(reason);
                }
                Err(StoreError::Conflict { actual, .. }) => {
                    let reason = format!(
                        "the store is at version {actual}, the write-behind log expected {}",
                        a.first_version - 1
                    );
                    out.diverged.push(((*a).clone(), reason.clone()));
                    broken = Some(reason);
                }
                Err(
                    e @ (StoreError::DuplicateEventId { .. }
                    | StoreError::InvalidAppend { .. }
                    | StoreError::Corrupt { .. }),
                ) => {
                    let reason = e.to_string();
                    out.diverged.push(((*a).clone(), reason.clone()));
                    broken = Some(reason);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Step 3: drops the written appends from Redis (their processing lists
    /// and bodies), for the shards whose lease this flusher still holds;
    /// their event ids stay known for the grace period. Returns the shards
    /// acknowledged.
    pub async fn acknowledge(&self, taken: &Taken) -> Result<Vec<ShardId>, FlushError> {
        let mut args = vec![
            self.config.key_prefix.clone().into_bytes(),
            self.owner.clone().into_bytes(),
            (self.config.id_grace.as_millis().max(1) as u64)
                .to_string()
                .into_bytes(),
            taken.shards.len().to_string().into_bytes(),
        ];
        // Per shard the entries taken from it, as its list holds them:
        // only that list is acknowledged.
        for shard in &taken.shards {
            let entries: Vec<&TakenAppend> = taken.appends.iter().filter(|a| a.shard == *shard).collect();
            args.push(shard.to_string().into_bytes());
            args.push(entries.len().to_string().into_bytes());
            args.extend(entries.iter().map(|a| a.entry.as_bytes().to_vec()));
        }
        for a in &taken.appends {
            if let Some(b) = &a.body {
                args.extend(b.events.iter().map(|e| e.event_id.to_string().into_bytes()));
            }
        }
        let reply = eval(&self.backend, "write-behind ack", &scripts().ack, args)
            .await
            .map_err(FlushError::Redis)?;
        let Value::Array(flags) = reply else {
            return Err(FlushError::Redis(bad_reply("ack")));
        };
        Ok(taken
            .shards
            .iter()
            .zip(flags.iter().map(int))
            .filter(|(_, f)| *f == Some(1))
            .map(|(s, _)| *s)
            .collect())
    }

    /// One whole round: take, write, acknowledge. Records the metrics.
    pub async fn round(&self) -> Result<Written, FlushError> {
        let started = Instant::now();
        let taken = self.take().await?;
        if taken.appends.is_empty() {
            self.health.last_flush_ms.store(now_ms(), Ordering::Relaxed);
            return Ok(Written::default());
        }
        let written = self.write(&taken).await?;
        self.acknowledge(&taken).await?;
        let now = now_ms();
        for a in &taken.appends {
            metrics::histogram!(telemetry::WB_LAG).record((now - a.admitted_ms).max(0) as f64 / 1000.0);
        }
        metrics::histogram!(telemetry::WB_FLUSH_APPENDS).record(taken.appends.len() as f64);
        metrics::histogram!(telemetry::WB_FLUSH_EVENTS).record(written.events as f64);
        metrics::histogram!(telemetry::WB_FLUSH_DURATION).record(started.elapsed().as_secs_f64());
        self.health.last_flush_ms.store(now, Ordering::Relaxed);
        self.health.pending.store(taken.still_pending, Ordering::Relaxed);
        self.health
            .oldest_pending_ms
            .store(taken.oldest_pending_ms.unwrap_or(0), Ordering::Relaxed);
        Ok(written)
    }

    /// Reads what waits in the shards this flusher holds (taken or still
    /// pending) and sets the pending and oldest-pending gauges and the
    /// health from it. [`run`](Self::run) calls it every
    /// [`BACKLOG_REFRESH`] while a round is busy: a round stuck on the
    /// store would otherwise leave them as its take found them, however
    /// many appends are admitted since.
    pub async fn refresh_backlog(&self) -> Result<(), FlushError> {
        let mut args = vec![
            self.config.key_prefix.clone().into_bytes(),
            self.owner.clone().into_bytes(),
        ];
        args.extend((0..self.config.shards.max(1)).map(|s| s.to_string().into_bytes()));
        let reply = eval(&self.backend, "write-behind backlog", &scripts().backlog, args)
            .await
            .map_err(FlushError::Redis)?;
        let Value::Array(shards) = reply else {
            return Err(FlushError::Redis(bad_reply("backlog")));
        };
        let now = now_ms();
        let (mut pending, mut oldest_ms) = (0, None::<i64>);
        for shard in shards {
            let Value::Array(f) = shard else {
                return Err(FlushError::Redis(bad_reply("backlog")));
            };
            let id = f
                .first()
                .and_then(int)
                .ok_or_else(|| FlushError::Redis(bad_reply("backlog")))? as ShardId;
            let waiting = f.get(1).and_then(int).unwrap_or(0);
            let oldest = f
                .get(2)
                .and_then(text)
                .and_then(|e| Entry::parse(&e))
                .map(|e| e.admitted_ms);
            metrics::gauge!(telemetry::WB_PENDING, "shard" => id.to_string()).set(waiting as f64);
            let age = oldest.map_or(0.0, |ms| now.saturating_sub(ms).max(0) as f64 / 1000.0);
            metrics::gauge!(telemetry::WB_OLDEST_PENDING, "shard" => id.to_string()).set(age);
            pending += waiting;
            oldest_ms = match (oldest_ms, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.health.pending.store(pending, Ordering::Relaxed);
        self.health
            .oldest_pending_ms
            .store(oldest_ms.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    /// A round, with the backlog read every [`BACKLOG_REFRESH`] while it
    /// lasts.
    async fn watched_round(&self) -> Result<Written, FlushError> {
        let round = self.round();
        tokio::pin!(round);
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + BACKLOG_REFRESH, BACKLOG_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                written = &mut round => return written,
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh_backlog().await {
                        tracing::debug!(error = %e, "write-behind backlog not read");
                    }
                }
            }
        }
    }

    /// Gives up this flusher's leases (on shutdown) so another flusher
    /// takes its lists at once.
    pub async fn release(&self) -> Result<(), FlushError> {
        let mut args = vec![
            self.config.key_prefix.clone().into_bytes(),
            self.owner.clone().into_bytes(),
        ];
        args.extend((0..self.config.shards.max(1)).map(|s| s.to_string().into_bytes()));
        eval(&self.backend, "write-behind release", &scripts().release, args)
            .await
            .map_err(FlushError::Redis)?;
        Ok(())
    }

    /// The flusher's health.
    pub fn status(&self) -> FlusherStatus {
        let now = now_ms();
        let age = |ms: i64| (ms > 0).then(|| Duration::from_millis((now - ms).max(0) as u64));
        let pending = self.health.pending.load(Ordering::Relaxed);
        let since_last_flush = age(self.health.last_flush_ms.load(Ordering::Relaxed));
        let since_start = age(self.health.started_ms.load(Ordering::Relaxed)).unwrap_or_default();
        let stuck = pending > 0 && since_last_flush.unwrap_or(since_start) > self.config.stuck_after;
        FlusherStatus {
            pending,
            oldest_pending_age: age(self.health.oldest_pending_ms.load(Ordering::Relaxed)),
            since_last_flush,
            last_error: self
                .health
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            stuck,
        }
    }

    /// Runs rounds until `stop` turns true: at once after a full batch,
    /// after `idle_poll` otherwise, after `retry_backoff` when a round
    /// failed. On stop it
    /// drains what it holds (for up to `flush_lease`) and releases its
    /// leases.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let span = tracing::info_span!("es.write_behind.flusher", owner = %self.owner);
        async {
            loop {
                if *stop.borrow() {
                    break;
                }
                let pause = match self.watched_round().await {
                    Ok(w) => {
                        *self.health.last_error.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        // A full batch: more is waiting, go on at once.
                        // Otherwise let appends gather for a while, so that
                        // rounds (and their Redis writes) stay few and big.
                        if w.appends + w.diverged >= self.config.max_flush_batch {
                            continue;
                        }
                        self.config.idle_poll
                    }
                    Err(e) => {
                        metrics::counter!(telemetry::WB_FLUSH_ERRORS).increment(1);
                        tracing::warn!(error = %e, "write-behind flush round failed; retrying");
                        *self.health.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                        self.config.retry_backoff
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
            }
            let deadline = Instant::now() + self.config.flush_lease;
            while Instant::now() < deadline {
                match self.round().await {
                    Ok(w) if w.appends == 0 => break,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "write-behind flush on shutdown failed");
                        break;
                    }
                }
            }
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "write-behind flusher could not release its leases");
            }
        }
        .instrument(span)
        .await;
    }
}

impl<S: EventStore + ?Sized> Flusher<S> {
    /// Runs the flusher on the runtime until the handle is shut down.
    pub fn spawn(self: Arc<Self>) -> FlusherHandle {
        let (stop, rx) = watch::channel(false);
        let flusher = Arc::clone(&self);
        let task = tokio::spawn(async move { flusher.run(rx).await });
        FlusherHandle {
            stop,
            task: Mutex::new(Some(task)),
        }
    }
}

/// A running flusher: stop it with [`shutdown`](FlusherHandle::shutdown).
#[derive(Debug)]
pub struct FlusherHandle {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl FlusherHandle {
    /// Stops the flusher after it drained what it holds, and waits for it.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for FlusherHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Most events the flusher puts in one store append.
const MAX_EVENTS_PER_STORE_APPEND: usize = 256;

/// How often [`Flusher::run`] reads the backlog while a round is busy
/// (see [`Flusher::refresh_backlog`]).
pub const BACKLOG_REFRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
struct StreamOutcome {
    appends: usize,
    events: usize,
    diverged: Vec<(TakenAppend, String)>,
}

fn bad_reply(op: &str) -> StoreError {
    StoreError::Backend {
        operation: "write-behind flush",
        source: format!("unexpected reply to {op}").into(),
    }
}
