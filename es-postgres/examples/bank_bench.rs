//! The standard bank workload (docs/bench/WORKLOAD.md) on PostgreSQL,
//! through es-core's repository: load, decide, append with optimistic
//! concurrency and conflict retries. Prints one JSON line, then verifies
//! every account by replaying it from the store (exit 1 on a mismatch).
//!
//! ```text
//! cargo run --release -p es-postgres --example bank_bench -- \
//!     --database-url postgres://postgres@127.0.0.1:5432/postgres \
//!     --accounts 1000 --concurrency 16 [--ops-per-worker 500 | --duration-secs 5] [--scenario uniform|hot] [--mix mixed|deposit] [--snapshots]
//! cargo run --release -p es-postgres --example bank_bench -- --mode append --concurrency 16 --ops-per-worker 2000
//! cargo run --release -p es-postgres --example bank_bench -- --mode rehydrate
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use es_core::testing::bank::{self, percentile, BankAccount, BankEvent, Mix, Scenario, Workload};
use es_core::{EventStore, InMemoryStateCache, Repository, RetryPolicy, SnapshotPolicy};
use es_postgres::{EventStoreConfig, PostgresEventStore, PostgresSnapshotStore};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Bank,
    Append,
    Rehydrate,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    #[arg(long, value_enum, default_value = "bank")]
    mode: Mode,
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 500)]
    ops_per_worker: usize,
    /// Bank mode: every worker runs commands for this many seconds instead
    /// of `--ops-per-worker` commands (to compare with a load run of the
    /// same length: a short run's rate is not a long run's).
    #[arg(long, value_parser = positive_seconds)]
    duration_secs: Option<Duration>,
    /// `uniform` (each command picks an account) or `hot` (one account).
    #[arg(long, default_value = "uniform")]
    scenario: Scenario,
    /// `mixed` (deposits and withdrawals) or `deposit` (deposits only).
    #[arg(long, default_value = "mixed")]
    mix: Mix,
    /// Snapshot every 100 events (PostgresSnapshotStore).
    #[arg(long)]
    snapshots: bool,
    /// Keep the benchmark schema afterwards.
    #[arg(long)]
    keep: bool,
    /// Also run a transactional projection following the log during the
    /// timed phase, and report its lag (event recorded -> projected).
    #[arg(long)]
    follow: bool,
    /// Tokio threads of the benchmark process. The default, 1, runs every
    /// task on one current-thread runtime: it leaves the other core of a
    /// 2-core machine to PostgreSQL and keeps the command path's task
    /// hand-offs on one thread (measured here: 2 multi-thread workers about
    /// 20% below 1, and 1 multi-thread worker 5-20% below the
    /// current-thread runtime). More than 1 uses the multi-thread runtime;
    /// raise it on bigger boxes.
    #[arg(long, default_value_t = 1)]
    runtime_threads: usize,
    /// Batch processors of the store (parallel group commits).
    #[arg(long, default_value_t = EventStoreConfig::default().batch_processor_count)]
    batch_processors: usize,
    /// Append through a `FencedStore` as a shard owner does: every append
    /// carries the fence of its stream's shard (16 shards, all raised to
    /// token 1 first), checked by the append statement.
    #[arg(long)]
    fenced: bool,
    /// Append through a write-behind store (es-redis): appends are admitted
    /// by Redis and flushed to PostgreSQL in the background. Needs
    /// `--redis-url`. The timed phase ends when every command is answered;
    /// the flush of what is still pending is timed on its own
    /// (`drain_ms`), before the verification replays every account from
    /// PostgreSQL.
    #[arg(long)]
    write_behind: bool,
    /// Redis for `--write-behind` (use one with `appendonly yes` and
    /// `appendfsync always` for durable acknowledgements).
    #[arg(long, env = "REDIS_URL")]
    redis_url: Option<String>,
    /// Write-behind admission script calls in flight.
    #[arg(long, default_value_t = es_redis::WriteBehindConfig::default().admission_pipelines)]
    wb_admission_pipelines: usize,
    /// Write-behind flusher pause after a round that did not fill a batch.
    #[arg(long, default_value_t = es_redis::WriteBehindConfig::default().idle_poll.as_millis() as u64)]
    wb_flush_interval_ms: u64,
    /// After the bank run, rebuild a balances read model (a transactional
    /// projection, one upsert per event) from the whole log once per page
    /// size given (comma-separated, events per transaction), and print one
    /// `"bench": "rebuild"` JSON line each.
    #[arg(long, value_delimiter = ',')]
    rebuild_pages: Vec<usize>,
    /// Events in the stream of `--mode rehydrate`.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
}

/// A projection that only measures how late each event reaches it.
#[derive(Default)]
struct LagProbe {
    lags: bank::Lags,
}

#[async_trait::async_trait]
impl es_postgres::TransactionalProjector for LagProbe {
    fn name(&self) -> &str {
        "lag_probe"
    }
    fn filter(&self) -> es_core::EventFilter {
        es_core::EventFilter::all().event_types(["MoneyDeposited", "MoneyWithdrawn"])
    }
    async fn apply(&self, _tx: &mut sqlx::PgConnection, e: &es_core::RecordedEvent) -> Result<(), es_core::BoxError> {
        self.lags.record(e.recorded_at);
        Ok(())
    }
    async fn reset(&self, _tx: &mut sqlx::PgConnection) -> Result<(), es_core::BoxError> {
        Ok(())
    }
}

/// A balances read model: one row per account, upserted per event.
struct Balances {
    table: String,
}

#[async_trait::async_trait]
impl es_postgres::TransactionalProjector for Balances {
    fn name(&self) -> &str {
        "bench_balances"
    }
    async fn setup(&self, tx: &mut sqlx::PgConnection) -> Result<(), es_core::BoxError> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (account TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
            self.table
        ))
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut sqlx::PgConnection, e: &es_core::RecordedEvent) -> Result<(), es_core::BoxError> {
        let delta = match serde_json::from_value::<BankEvent>(e.payload.clone())? {
            BankEvent::AccountCreated { initial_balance } => initial_balance,
            BankEvent::MoneyDeposited { amount } => amount,
            BankEvent::MoneyWithdrawn { amount } => -amount,
        };
        sqlx::query(&format!(
            "INSERT INTO {} AS b VALUES ($1, $2) ON CONFLICT (account) DO UPDATE SET balance = b.balance + $2",
            self.table
        ))
        .bind(e.stream_id.as_str())
        .bind(delta)
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut sqlx::PgConnection) -> Result<(), es_core::BoxError> {
        sqlx::query(&format!("TRUNCATE {}", self.table)).execute(tx).await?;
        Ok(())
    }
}

/// Full rebuilds of [`Balances`] with each page size; one JSON line each.
async fn rebuilds(args: &Args, store: &PostgresEventStore, events: u64) -> Result<(), Box<dyn std::error::Error>> {
    let projector = Arc::new(Balances {
        table: format!("{}.bench_balances", store.schema()),
    });
    for page in &args.rebuild_pages {
        let runner = es_postgres::PgProjectionUnit::new(store, projector.clone())
            .runner()
            .with_config(es_core::ProjectionConfig {
                batch_size: (*page).max(1),
                ..es_core::ProjectionConfig::default()
            });
        let started = Instant::now();
        let report = runner.replay(es_core::ReplayMode::Full).await?;
        let secs = started.elapsed().as_secs_f64();
        if report.applied != events {
            return Err(format!("rebuild applied {} of {events} events", report.applied).into());
        }
        println!(
            "{}",
            json!({
                "bench": "rebuild",
                "events": events,
                "rebuild_page": page,
                "rebuild_secs": (secs * 1000.0).round() / 1000.0,
                "rebuild_events_per_sec": (report.applied as f64 / secs).round(),
            })
        );
    }
    Ok(())
}

async fn open_store(args: &Args, schema: &str) -> Result<PostgresEventStore, Box<dyn std::error::Error>> {
    let config = EventStoreConfig {
        max_connections: 8 + args.batch_processors as u32,
        batch_processor_count: args.batch_processors,
        ..EventStoreConfig::with_schema(schema)
    };
    let store = PostgresEventStore::connect(&args.database_url, config).await?;
    store.migrate().await?;
    Ok(store)
}

/// The fence source of `--fenced`: this process owns every shard, at
/// token 1.
struct OwnsAllShards;

impl OwnsAllShards {
    const COUNT: u32 = 16;
}

impl es_core::FenceSource for OwnsAllShards {
    fn fence_for(&self, stream_id: &es_core::StreamId) -> Result<Option<es_core::ShardFence>, es_core::StoreError> {
        Ok(Some(es_core::ShardFence::new(
            es_core::shard_of(stream_id, Self::COUNT),
            1,
        )))
    }
}

/// A positive number of seconds up to a day (`--duration-secs`).
fn positive_seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>().map(Duration::try_from_secs_f64) {
        Ok(Ok(d)) if !d.is_zero() && d <= Duration::from_secs(86_400) => Ok(d),
        _ => Err(format!("{text:?} is not a number of seconds above 0 and at most 86400")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.runtime_threads <= 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(run(args));
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.runtime_threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let schema = format!("bench_{}_{}", std::process::id(), chrono::Utc::now().timestamp());
    let store = open_store(&args, &schema).await?;
    let result = match args.mode {
        Mode::Bank => bank(&args, &store).await,
        Mode::Append => append_only(&args, &store).await,
        Mode::Rehydrate => rehydrate(&args, &store).await,
    };
    if !args.keep {
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(store.pool())
            .await?;
    }
    store.shutdown().await;
    result
}

/// The workload the arguments describe.
fn workload(args: &Args) -> Workload {
    Workload {
        accounts: args.accounts,
        concurrency: args.concurrency,
        ops_per_worker: args.ops_per_worker,
        duration: args.duration_secs,
        scenario: args.scenario,
        mix: args.mix,
    }
}

async fn bank(args: &Args, store: &PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
    let workload = workload(args);
    let accounts = workload.account_count();
    let mut dyn_store: Arc<dyn EventStore> = Arc::new(store.clone());
    let mut write_behind = None;
    if args.write_behind {
        let url = args
            .redis_url
            .clone()
            .ok_or("--write-behind needs --redis-url (or REDIS_URL)")?;
        let wb = Arc::new(
            es_redis::WriteBehindStore::builder(Arc::new(store.clone()))
                .redis(es_redis::RedisConfig {
                    url,
                    pool_size: 4,
                    response_timeout: Duration::from_secs(2),
                    ..es_redis::RedisConfig::default()
                })
                .resilience(es_redis::ResilienceConfig {
                    max_in_flight: 4096,
                    ..es_redis::ResilienceConfig::default()
                })
                .config(es_redis::WriteBehindConfig {
                    key_prefix: format!("bank_bench:{}", store.schema()),
                    admission_pipelines: args.wb_admission_pipelines,
                    idle_poll: Duration::from_millis(args.wb_flush_interval_ms),
                    ..es_redis::WriteBehindConfig::default()
                })
                .build()
                .await?,
        );
        write_behind = Some(Arc::clone(&wb));
        dyn_store = wb;
    }
    if args.fenced {
        for shard in 0..OwnsAllShards::COUNT {
            store.raise_fence(es_core::ShardFence::new(shard, 1)).await?;
        }
        dyn_store = Arc::new(es_core::FencedStore::new(dyn_store, Arc::new(OwnsAllShards)));
    }
    let mut builder = Repository::<BankAccount, dyn EventStore>::builder(dyn_store)
        .cache(Arc::new(InMemoryStateCache::new(accounts as u64 + 16)))
        .retry(RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        });
    if args.snapshots {
        builder = builder.snapshots(
            Arc::new(PostgresSnapshotStore::new(store)),
            SnapshotPolicy::EveryNEvents(100),
        );
    }
    let repo = builder.build();
    // Setup (not timed): open every account through the repository, as the
    // service would (which also leaves their states in its cache).
    bank::open_accounts(&repo, accounts).await?;
    let probe = Arc::new(LagProbe::default());
    let (stop_follow, follow_task) = if args.follow {
        let runner = es_postgres::PgProjectionUnit::new(store, Arc::clone(&probe))
            .runner()
            .with_config(es_core::ProjectionConfig {
                poll_interval: Duration::from_millis(100),
                ..es_core::ProjectionConfig::default()
            });
        runner.catch_up().await?;
        probe.lags.clear();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            runner
                .run(async {
                    let _ = rx.await;
                })
                .await
        });
        (Some(tx), Some(task))
    } else {
        (None, None)
    };
    let outcome = bank::run(&repo, &workload).await?;
    let mut drain_ms = 0.0;
    if let Some(wb) = &write_behind {
        let t = Instant::now();
        wb.shutdown().await;
        drain_ms = t.elapsed().as_secs_f64() * 1000.0;
        let mut c = redis::Client::open(args.redis_url.clone().unwrap_or_default())?
            .get_multiplexed_async_connection()
            .await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", wb.config().key_prefix))
            .query_async(&mut c)
            .await?;
        for chunk in keys.chunks(1000) {
            redis::cmd("DEL").arg(chunk).query_async::<()>(&mut c).await?;
        }
    }
    let events = events_in_store(store).await?;
    let mut lags = Vec::new();
    if let (Some(stop), Some(task)) = (stop_follow, follow_task) {
        // Let the projection reach the end of the log, then stop it.
        probe
            .lags
            .wait_for(outcome.accepted as usize, Duration::from_secs(30))
            .await;
        let _ = stop.send(());
        task.await??;
        lags = probe.lags.sorted();
    }
    let line = outcome.json_line(
        &workload,
        json!({
            "system": "es-rs/es-postgres",
            "fenced": args.fenced,
            "write_behind": args.write_behind,
            "drain_ms": drain_ms.round(),
            "events_in_store": events,
            "snapshots": args.snapshots,
            "runtime_threads": args.runtime_threads,
            "batch_processors": args.batch_processors,
            "projection_lag_p50_us": percentile(&lags, 50.0),
            "projection_lag_p99_us": percentile(&lags, 99.0),
            "projection_lag_max_us": lags.last().copied().unwrap_or(0),
            "projected": lags.len(),
        }),
    );
    println!("{line}");
    // Verification: replay every account from the store.
    let failures = bank::verify(store, &outcome, events).await?;
    if failures.is_empty() {
        eprintln!("verified: {accounts} accounts replayed, versions gapless, balances match, never negative");
        rebuilds(args, store, events).await
    } else {
        for f in failures.iter().take(20) {
            eprintln!("VERIFY FAILED: {f}");
        }
        std::process::exit(1);
    }
}

/// Every event of the benchmark's schema.
async fn events_in_store(store: &PostgresEventStore) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.events", store.schema()))
        .fetch_one(store.pool())
        .await?;
    Ok(n.max(0) as u64)
}

async fn append_only(args: &Args, store: &PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
    let measured = bank::append_only(Arc::new(store.clone()), args.concurrency, args.ops_per_worker).await?;
    let events = events_in_store(store).await?;
    let total = (args.concurrency * args.ops_per_worker) as u64;
    println!(
        "{}",
        json!({
            "system": "es-rs/es-postgres",
            "mode": "append",
            "concurrency": args.concurrency,
            "events": total,
            "secs": (measured.secs * 1000.0).round() / 1000.0,
            "events_per_sec": (total as f64 / measured.secs).round(),
            "p50_us": percentile(&measured.latencies_us, 50.0),
            "p99_us": percentile(&measured.latencies_us, 99.0),
            "events_in_store": events,
        })
    );
    if events != total {
        eprintln!("VERIFY FAILED: {events} events stored, {total} appended");
        std::process::exit(1);
    }
    Ok(())
}

async fn rehydrate(args: &Args, store: &PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
    let expected = bank::seed_stream(store, args.events).await?;
    let dyn_store: Arc<dyn EventStore> = Arc::new(store.clone());
    let repo = Repository::<BankAccount, dyn EventStore>::builder(dyn_store).build();
    let times = match bank::time_loads(&repo, 10, args.events, expected).await {
        Ok(times) => times,
        Err(bank::WorkloadError::Mismatch(what)) => {
            eprintln!("VERIFY FAILED: {what}");
            std::process::exit(1);
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "{}",
        json!({
            "system": "es-rs/es-postgres",
            "mode": "rehydrate",
            "events": args.events,
            "runs": times.len(),
            "min_ms": times.first().copied().unwrap_or(0) as f64 / 1000.0,
            "p50_ms": percentile(&times, 50.0) as f64 / 1000.0,
            "max_ms": times.last().copied().unwrap_or(0) as f64 / 1000.0,
        })
    );
    Ok(())
}
