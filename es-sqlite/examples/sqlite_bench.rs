//! The standard bank workload (docs/bench/WORKLOAD.md) on SQLite, through
//! es-core's repository: load, decide, append with optimistic concurrency
//! and conflict retries. Prints one JSON line, then verifies every account
//! by replaying it from the store (exit 1 on a mismatch). The database is a
//! fresh file (removed afterwards unless `--keep`).
//!
//! ```text
//! cargo run --release -p es-sqlite --example sqlite_bench -- \
//!     --accounts 1000 --concurrency 16 --ops-per-worker 500 [--scenario uniform|hot] [--mix mixed|deposit] \
//!     [--synchronous full|normal|off] [--snapshots] [--follow] [--path bench.db --keep]
//! cargo run --release -p es-sqlite --example sqlite_bench -- --mode append --concurrency 16 --ops-per-worker 2000
//! cargo run --release -p es-sqlite --example sqlite_bench -- --mode rehydrate
//! ```

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use es_core::testing::bank::{self, percentile, BankAccount, Mix, Scenario, Workload};
use es_core::{EventStore, InMemoryStateCache, Repository, RetryPolicy, SnapshotPolicy};
use es_sqlite::{SqliteConfig, SqliteEventStore, SqliteSnapshotStore, Synchronous};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Bank,
    Append,
    Rehydrate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Sync {
    Full,
    Normal,
    Off,
}

#[derive(Parser, Debug)]
struct Args {
    /// The database file; a fresh one in the temporary directory by default.
    /// Must not exist.
    #[arg(long)]
    path: Option<std::path::PathBuf>,
    /// `PRAGMA synchronous` of the store (full: every commit synced).
    #[arg(long, value_enum, default_value = "full")]
    synchronous: Sync,
    #[arg(long, value_enum, default_value = "bank")]
    mode: Mode,
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[arg(long, default_value_t = 500)]
    ops_per_worker: usize,
    /// `uniform` (each command picks an account) or `hot` (one account).
    #[arg(long, default_value = "uniform")]
    scenario: Scenario,
    /// `mixed` (deposits and withdrawals) or `deposit` (deposits only).
    #[arg(long, default_value = "mixed")]
    mix: Mix,
    /// Snapshot every 100 events (SqliteSnapshotStore).
    #[arg(long)]
    snapshots: bool,
    /// Keep the database file afterwards.
    #[arg(long)]
    keep: bool,
    /// Also run a transactional projection following the log during the
    /// timed phase, and report its lag (event recorded -> projected).
    #[arg(long)]
    follow: bool,
    /// Tokio threads of the benchmark process. The default, 1, runs every
    /// task on one current-thread runtime (SQLite's statements run on the
    /// connections' own threads); more than 1 uses the multi-thread runtime.
    #[arg(long, default_value_t = 1)]
    runtime_threads: usize,
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
impl es_sqlite::SqliteProjector for LagProbe {
    fn name(&self) -> &str {
        "lag_probe"
    }
    fn filter(&self) -> es_core::EventFilter {
        es_core::EventFilter::all().event_types(["MoneyDeposited", "MoneyWithdrawn"])
    }
    async fn apply(
        &self,
        _tx: &mut sqlx::SqliteConnection,
        e: &es_core::RecordedEvent,
    ) -> Result<(), es_core::BoxError> {
        self.lags.record(e.recorded_at);
        Ok(())
    }
    async fn reset(&self, _tx: &mut sqlx::SqliteConnection) -> Result<(), es_core::BoxError> {
        Ok(())
    }
}

fn synchronous(s: Sync) -> Synchronous {
    match s {
        Sync::Full => Synchronous::Full,
        Sync::Normal => Synchronous::Normal,
        Sync::Off => Synchronous::Off,
    }
}

/// The database file and its WAL companions.
fn files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|suffix| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            name.into()
        })
        .collect()
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
    let path = args.path.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "es-sqlite-bench-{}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp()
        ))
    });
    if path.exists() {
        return Err(format!("{} exists: the benchmark needs a new file", path.display()).into());
    }
    let config = SqliteConfig {
        synchronous: synchronous(args.synchronous),
        ..SqliteConfig::default()
    };
    let store = SqliteEventStore::connect(&path.to_string_lossy(), config).await?;
    let result = match args.mode {
        Mode::Bank => bank(&args, &store).await,
        Mode::Append => append_only(&args, &store).await,
        Mode::Rehydrate => rehydrate(&args, &store).await,
    };
    store.shutdown().await;
    store.pool().close().await;
    if !args.keep {
        for f in files(&path) {
            let _ = std::fs::remove_file(f);
        }
    }
    result
}

async fn bank(args: &Args, store: &SqliteEventStore) -> Result<(), Box<dyn std::error::Error>> {
    let workload = Workload {
        accounts: args.accounts,
        concurrency: args.concurrency,
        ops_per_worker: args.ops_per_worker,
        duration: None,
        scenario: args.scenario,
        mix: args.mix,
    };
    let accounts = workload.account_count();
    let dyn_store: Arc<dyn EventStore> = Arc::new(store.clone());
    let mut builder = Repository::<BankAccount, dyn EventStore>::builder(dyn_store)
        .cache(Arc::new(InMemoryStateCache::new(accounts as u64 + 16)))
        .retry(RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        });
    if args.snapshots {
        builder = builder.snapshots(
            Arc::new(SqliteSnapshotStore::new(store)),
            SnapshotPolicy::EveryNEvents(100),
        );
    }
    let repo = builder.build();
    // Setup (not timed): open every account through the repository, as the
    // service would (which also leaves their states in its cache).
    bank::open_accounts(&repo, accounts).await?;
    let probe = Arc::new(LagProbe::default());
    let (stop_follow, follow_task) = if args.follow {
        let runner = es_sqlite::SqliteProjectionUnit::new(store, Arc::clone(&probe))
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
    let before = store.writer_stats();
    let outcome = bank::run(&repo, &workload).await?;
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
            "system": "es-rs/es-sqlite",
            "synchronous": format!("{:?}", args.synchronous).to_lowercase(),
            "events_in_store": events,
            "snapshots": args.snapshots,
            "runtime_threads": args.runtime_threads,
            // Write transactions of the timed phase (group commits).
            "transactions": store.writer_stats().transactions - before.transactions,
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
        Ok(())
    } else {
        for f in failures.iter().take(20) {
            eprintln!("VERIFY FAILED: {f}");
        }
        std::process::exit(1);
    }
}

/// Every event in the database.
async fn events_in_store(store: &SqliteEventStore) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(store.pool())
        .await?;
    Ok(n.max(0) as u64)
}

async fn append_only(args: &Args, store: &SqliteEventStore) -> Result<(), Box<dyn std::error::Error>> {
    let measured = bank::append_only(Arc::new(store.clone()), args.concurrency, args.ops_per_worker).await?;
    let events = events_in_store(store).await?;
    let total = (args.concurrency * args.ops_per_worker) as u64;
    println!(
        "{}",
        json!({
            "system": "es-rs/es-sqlite",
            "synchronous": format!("{:?}", args.synchronous).to_lowercase(),
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

async fn rehydrate(args: &Args, store: &SqliteEventStore) -> Result<(), Box<dyn std::error::Error>> {
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
            "system": "es-rs/es-sqlite",
            "synchronous": format!("{:?}", args.synchronous).to_lowercase(),
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
