//! The durable account read model at scale: rebuild throughput of the
//! accounts projection and server start-up time, on PostgreSQL.
//!
//! ```text
//! cargo build --release -p banking-example --bins --examples
//! target/release/examples/read_model_bench --events 1000000
//! ```
//!
//! 1. Seeds `--events` account events into schema `--schema` (default
//!    `bench_read_model`) unless it holds them already: accounts of 10
//!    events each (opened, 9 deposits), appended concurrently.
//!    Then `ANALYZE`s the events table (as autovacuum would).
//! 2. Rebuilds the accounts projection from the whole log (full replay,
//!    pages of `--page` events, one transaction each) and checks the table
//!    against the log's totals.
//! 3. Starts the real server binary (next to this example) on that schema
//!    `--starts` times and measures the time from spawn until
//!    `/health/ready` answers 200.
//!
//! Prints one JSON line. `DATABASE_URL` defaults to the local PostgreSQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use banking_example::domain::{AccountCommand, Money};
use banking_example::read_model::{postgres_runner, ACCOUNTS, ACCOUNTS_VERSION};
use banking_example::{AppConfig, Backends};
use clap::Parser;
use es_core::{CommandContext, EventStore, ProjectionConfig, ReplayMode};
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Events to seed (10 per account).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Schema to work in.
    #[arg(long, default_value = "bench_read_model")]
    schema: String,
    /// Events per page (one transaction each) during the rebuild.
    #[arg(long, default_value_t = 1000)]
    page: usize,
    /// Concurrent writers while seeding.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Server starts to time.
    #[arg(long, default_value_t = 3)]
    starts: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut config = AppConfig {
        database_url: Some(url.clone()),
        database_schema: args.schema.clone(),
        ..AppConfig::default()
    };
    let random = || format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let (jwt, refresh) = (random(), random());
    config.auth.jwt_secret = jwt.as_bytes().to_vec();
    config.auth.refresh_token_secret = refresh.as_bytes().to_vec();
    let backends = Backends::from_config(&config).await?;
    let store = backends.postgres.clone().ok_or("no PostgreSQL store")?;
    let repo = es_core::Repository::<banking_example::domain::Account>::builder(Arc::clone(&backends.store))
        .upcasters(banking_example::domain::upcasters())
        .build();

    // 1. Seed.
    let have: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.events", store.schema()))
        .fetch_one(store.pool())
        .await?;
    let accounts = (args.events.saturating_sub(have.max(0) as u64)).div_ceil(10);
    let seed_started = Instant::now();
    if accounts > 0 {
        eprintln!("seeding {} accounts ({} events)", accounts, accounts * 10);
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..args.writers.max(1) {
            let (repo, next) = (repo.clone(), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                loop {
                    if next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= accounts {
                        return Ok::<(), String>(());
                    }
                    let id = uuid::Uuid::now_v7();
                    let open = AccountCommand::Open {
                        owner_name: "Bench".into(),
                        initial_balance: Money::from_cents(100),
                        owner_id: Some(uuid::Uuid::nil()),
                    };
                    repo.execute_in(id, open, CommandContext::default())
                        .await
                        .map_err(|e| e.to_string())?;
                    for _ in 0..9 {
                        let deposit = AccountCommand::Deposit {
                            amount: Money::from_cents(1),
                        };
                        repo.execute_in(id, deposit, CommandContext::default())
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
    }
    let seed_secs = seed_started.elapsed().as_secs_f64();
    // Statistics for the planner, as autovacuum would gather after a bulk
    // load (without them the log's range scan can be planned as a bitmap
    // scan plus sort of everything after the position: 3.5 s a page).
    sqlx::query(&format!("ANALYZE {}.events", store.schema()))
        .execute(store.pool())
        .await?;
    let events: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}.events", store.schema()))
        .fetch_one(store.pool())
        .await?;

    // 2. Rebuild (the server is not running: nothing else writes).
    let runner = postgres_runner(&store, ACCOUNTS_VERSION)?.with_config(ProjectionConfig {
        batch_size: args.page,
        ..banking_example::read_model::projection_config()
    });
    let started = Instant::now();
    let report = runner.replay(ReplayMode::Full).await?;
    let rebuild_secs = started.elapsed().as_secs_f64();
    let (rows, versions): (i64, Option<i64>) = sqlx::query_as(&format!(
        "SELECT count(*), sum(version)::bigint FROM {}.{ACCOUNTS}_v{ACCOUNTS_VERSION}",
        store.schema()
    ))
    .fetch_one(store.pool())
    .await?;
    let verified = versions == Some(events) && report.applied == events as u64 && report.dead_lettered == 0;
    let head = store.head_position().await?;
    if !verified || report.position < head {
        return Err(format!(
            "rebuild does not match the log: {report:?}, rows {rows}, versions {versions:?}, events {events}"
        )
        .into());
    }
    drop(backends);

    // 3. Start-up of the real server on the same schema.
    let exe = std::env::current_exe()?;
    let server = exe
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("banking-example"))
        .ok_or("cannot locate the server binary")?;
    let mut starts = Vec::new();
    let http = reqwest::Client::new();
    for _ in 0..args.starts {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let spawned = Instant::now();
        let mut child = std::process::Command::new(&server)
            .env("DATABASE_URL", &url)
            .env("DATABASE_SCHEMA", &args.schema)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", &jwt)
            .env("REFRESH_TOKEN_SECRET", &refresh)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "start {}: {e} (build it: cargo build --release -p banking-example --bins)",
                    server.display()
                )
            })?;
        let ready = loop {
            let answer = http
                .get(format!("http://127.0.0.1:{port}/health/ready"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if answer.is_ok_and(|r| r.status().is_success()) {
                break spawned.elapsed().as_secs_f64();
            }
            if let Some(exit) = child.try_wait()? {
                return Err(
                    format!("the server exited ({exit}); run it by hand with the same environment to see why").into(),
                );
            }
            if spawned.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                return Err("server not ready after 120 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        starts.push(ready);
    }
    starts.sort_by(f64::total_cmp);

    println!(
        "{}",
        json!({
            "bench": "read_model",
            "events": events,
            "accounts": rows,
            "seed_secs": (seed_secs * 10.0).round() / 10.0,
            "rebuild_page": args.page,
            "rebuild_secs": (rebuild_secs * 100.0).round() / 100.0,
            "rebuild_events_per_sec": (report.applied as f64 / rebuild_secs).round(),
            "verified": verified,
            "ready_secs": starts,
        })
    );
    Ok(())
}
