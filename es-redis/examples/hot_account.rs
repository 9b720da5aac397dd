//! The hot-account scenario of `docs/bench/WORKLOAD.md`: optimistic
//! retries vs the pessimistic per-stream Redis lock.
//!
//! ```text
//! cargo run --release -p es-redis --example hot_account -- \
//!     --mode optimistic|locked --instances 4 --concurrency 16 --ops 100 \
//!     [--store-latency-us 1000] [--cache none|redis|l2]
//! ```
//!
//! `--instances` simulates that many application processes: each has its
//! own `Repository` (own in-process command queue) over one shared store,
//! and workers are spread over them. The store is es-core's
//! `InMemoryEventStore` (the PostgreSQL backend is another crate), so the
//! figures compare the two concurrency modes, not storage engines. Prints
//! one JSON line, then verifies the stream; exits non-zero on a mismatch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use es_core::{
    Aggregate, AppendResult, DomainEvent, EventFilter, EventStore, ExpectedVersion, InMemoryEventStore, NewEvent,
    RecordedEvent, Repository, RepositoryError, RetryPolicy, StoreError, StreamId,
};
use es_redis::{
    CacheConfig, LockConfig, LockedError, LockedRepository, RedisConfig, RedisLockManager, RedisStateCache,
};
use serde::{Deserialize, Serialize};

const INITIAL: i64 = 100_000; // 1000.00 in cents

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Account {
    balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Opened(i64),
    Deposited(i64),
    Withdrawn(i64),
}

impl DomainEvent for Event {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Opened(_) => "Opened",
            Self::Deposited(_) => "Deposited",
            Self::Withdrawn(_) => "Withdrawn",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Command {
    Open(i64),
    Deposit(i64),
    Withdraw(i64),
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds")]
struct Insufficient;

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = Command;
    type Event = Event;
    type Error = Insufficient;
    fn handle(&self, c: &Command) -> Result<Vec<Event>, Insufficient> {
        match *c {
            Command::Open(n) => Ok(vec![Event::Opened(n)]),
            Command::Deposit(n) => Ok(vec![Event::Deposited(n)]),
            Command::Withdraw(n) if n > self.balance => Err(Insufficient),
            Command::Withdraw(n) => Ok(vec![Event::Withdrawn(n)]),
        }
    }
    fn apply(&mut self, e: &Event) {
        match e {
            Event::Opened(n) | Event::Deposited(n) => self.balance += n,
            Event::Withdrawn(n) => self.balance -= n,
        }
    }
}

/// Counts version conflicts of appends: each is one re-execution.
/// Optionally adds a fixed latency to appends and stream reads, to model a
/// networked store (tokio timers have millisecond granularity).
struct Counting {
    inner: InMemoryEventStore,
    conflicts: AtomicU64,
    latency: Duration,
}

impl Counting {
    async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }
}

#[async_trait]
impl EventStore for Counting {
    async fn append(
        &self,
        stream_type: &str,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.delay().await;
        let r = self.inner.append(stream_type, stream_id, expected, events).await;
        if matches!(r, Err(StoreError::Conflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
    async fn read_stream_batch(&self, id: &StreamId, from: u64, max: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.delay().await;
        self.inner.read_stream_batch(id, from, max).await
    }
    async fn read_all(&self, after: u64, max: usize, f: &EventFilter) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, max, f).await
    }
    async fn find_event(&self, id: uuid::Uuid) -> Result<Option<RecordedEvent>, StoreError> {
        self.inner.find_event(id).await
    }
    async fn stream_version(&self, id: &StreamId) -> Result<u64, StoreError> {
        self.inner.stream_version(id).await
    }
    async fn head_position(&self) -> Result<u64, StoreError> {
        self.inner.head_position().await
    }
}

struct Args {
    locked: bool,
    instances: usize,
    concurrency: usize,
    ops: usize,
    store_latency_us: u64,
    /// `none`, `redis` (L1+L2) or `l2` (Redis only).
    cache: String,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        locked: false,
        instances: 4,
        concurrency: 16,
        ops: 100,
        store_latency_us: 0,
        cache: "none".to_owned(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).ok_or_else(|| format!("{} needs a value", pair[0]))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{}: {e}", pair[0]));
        match pair[0].as_str() {
            "--mode" => a.locked = value == "locked",
            "--instances" => a.instances = num()?.max(1),
            "--concurrency" => a.concurrency = num()?.max(1),
            "--ops" => a.ops = num()?,
            "--store-latency-us" => a.store_latency_us = num()? as u64,
            "--cache" => a.cache.clone_from(value),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

enum Outcome {
    Accepted(i64),
    Rejected,
}

type Repo = Repository<Account, Counting>;

async fn run_one(repo: &Repo, locked: Option<&LockedRepository<Account, Counting>>, cmd: Command) -> Outcome {
    let delta = match cmd {
        Command::Deposit(n) => n,
        Command::Withdraw(n) => -n,
        Command::Open(n) => n,
    };
    loop {
        let result = match locked {
            Some(l) => l.execute("hot", cmd).await,
            None => repo.execute("hot", cmd).await.map_err(LockedError::Repository),
        };
        match result {
            Ok(_) => return Outcome::Accepted(delta),
            Err(LockedError::Repository(RepositoryError::Rejected(_))) => return Outcome::Rejected,
            // Retries exhausted or lock contended: re-issue (conflicts are
            // counted by the store wrapper).
            Err(LockedError::Repository(RepositoryError::Conflict { .. }) | LockedError::Lock { .. }) => {}
            Err(e) => panic!("unexpected failure: {e}"),
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let store = Arc::new(Counting {
        inner: InMemoryEventStore::new(),
        conflicts: AtomicU64::new(0),
        latency: Duration::from_micros(a.store_latency_us),
    });
    let retry = RetryPolicy {
        max_attempts: 10,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let prefix = format!("es-redis-hot:{}:", uuid::Uuid::new_v4().simple());
    let redis = RedisConfig {
        url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
        ..RedisConfig::default()
    };
    let mut repos: Vec<Repo> = Vec::new();
    for _ in 0..a.instances {
        let builder = Repository::builder(Arc::clone(&store)).retry(retry);
        let builder = match a.cache.as_str() {
            "none" => builder,
            mode => builder.cache(Arc::new(RedisStateCache::<Account>::new(CacheConfig {
                key_prefix: prefix.clone(),
                l1_enabled: mode != "l2",
                l2_ttl: Duration::from_secs(120),
                redis: redis.clone(),
                ..CacheConfig::default()
            })?)),
        };
        repos.push(builder.build());
    }
    repos[0].execute("hot", Command::Open(INITIAL)).await?;
    store.conflicts.store(0, Ordering::Relaxed);

    let locked: Vec<LockedRepository<Account, Counting>> = repos
        .iter()
        .map(|r| {
            let locks = RedisLockManager::new(LockConfig {
                lock_prefix: prefix.clone(),
                retry_attempts: 100_000,
                retry_delay: Duration::from_millis(1),
                redis: redis.clone(),
                ..LockConfig::default()
            })?;
            Ok(LockedRepository::new(
                r.clone(),
                Arc::new(locks),
                Duration::from_secs(5),
            ))
        })
        .collect::<Result<_, es_redis::RedisError>>()?;

    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..a.concurrency {
        let repo = repos[w % a.instances].clone();
        let lock = a.locked.then(|| locked[w % a.instances].clone());
        let ops = a.ops;
        workers.push(tokio::spawn(async move {
            let (mut acc, mut rej, mut net, mut lat) = (0u64, 0u64, 0i64, Vec::with_capacity(ops));
            for _ in 0..ops {
                let amount = fastrand::i64(100..=10_000);
                let cmd = if fastrand::bool() {
                    Command::Deposit(amount)
                } else {
                    Command::Withdraw(amount)
                };
                let t = Instant::now();
                match run_one(&repo, lock.as_ref(), cmd).await {
                    Outcome::Accepted(d) => {
                        acc += 1;
                        net += d;
                    }
                    Outcome::Rejected => rej += 1,
                }
                lat.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            (acc, rej, net, lat)
        }));
    }
    let (mut accepted, mut rejected, mut net, mut lat) = (0u64, 0u64, 0i64, Vec::new());
    for w in workers {
        let (a1, r1, n1, l1) = w.await?;
        accepted += a1;
        rejected += r1;
        net += n1;
        lat.extend(l1);
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let events = store.inner.len();
    let system = if a.locked {
        "es-rs+redis-lock"
    } else {
        "es-rs-optimistic"
    };
    println!(
        "{}",
        serde_json::json!({
            "system": system, "store": "in-memory", "store_latency_us": a.store_latency_us, "cache": a.cache, "instances": a.instances,
            "scenario": "hot", "mix": "mixed", "accounts": 1, "concurrency": a.concurrency,
            "ops": a.concurrency * a.ops, "accepted": accepted, "rejected": rejected,
            "secs": secs, "ops_per_sec": (a.concurrency * a.ops) as f64 / secs,
            "p50_us": pct(&lat, 50.0), "p90_us": pct(&lat, 90.0), "p99_us": pct(&lat, 99.0),
            "max_us": lat.last().copied().unwrap_or(0),
            "conflict_retries": store.conflicts.load(Ordering::Relaxed), "events_in_store": events,
        })
    );

    // The example's keys are unique to this run: drop the token counter
    // (cache entries expire by TTL).
    if let Ok(client) = redis::Client::open(redis.url.as_str()) {
        if let Ok(mut c) = client.get_multiplexed_async_connection().await {
            let _: Result<(), _> = redis::cmd("DEL")
                .arg(format!("{prefix}__fencing_token"))
                .query_async(&mut c)
                .await;
        }
    }

    // Verification: gapless versions, balance never negative, totals match.
    let history = repos[0].history("hot").await?;
    let mut state = Account::default();
    for (i, e) in history.iter().enumerate() {
        if e.version != i as u64 + 1 {
            return Err(format!("gap at version {}", e.version).into());
        }
        state.apply(&e.event);
        if state.balance < 0 {
            return Err(format!("negative balance at version {}", e.version).into());
        }
    }
    if state.balance != INITIAL + net {
        return Err(format!("balance {} != {}", state.balance, INITIAL + net).into());
    }
    if events as u64 != 1 + accepted {
        return Err(format!("{events} events != 1 + {accepted}").into());
    }
    Ok(())
}
