//! Deposits through three server instances on one PostgreSQL and Redis,
//! sharded (cluster mode: each command handled by its shard's owner,
//! forwarded when it reaches another instance) or not (every instance
//! handles every command; optimistic concurrency sorts out the races).
//! Prints one JSON line.
//!
//! ```text
//! cargo run --release -p banking-example --example cluster_bench -- \
//!     --scenario hot --sharded --clients 16 --secs 10
//! ```
//!
//! The three instances run in this process (each with its own connection
//! pool, append batcher, repository and, sharded, shard manager), and the
//! clients spread their requests over them round-robin, as a load balancer
//! would. Idempotency keys on every deposit, rate limits off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banking_example::cluster::ClusterConfig;
use banking_example::rate_limit::RateLimitConfig;
use banking_example::{AppConfig, Backends, RunningServer};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Every client deposits to one account.
    Hot,
    /// Deposits spread over `--accounts` accounts.
    Uniform,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database_url: String,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, value_enum, default_value = "uniform")]
    scenario: Scenario,
    /// Cluster mode (shard ownership and routing); off: unsharded.
    #[arg(long)]
    sharded: bool,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 100)]
    accounts: usize,
    /// Length of the timed phase.
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

const INSTANCES: usize = 3;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let schema = format!("bank_cluster_bench_{}", &run[20..]);
    let mut config = AppConfig {
        bind_addr: "127.0.0.1:0".parse()?,
        database_url: Some(args.database_url.clone()),
        database_schema: schema.clone(),
        redis_url: Some(args.redis_url.clone()),
        rate_limit: RateLimitConfig {
            requests_per_minute: 0,
            ..RateLimitConfig::default()
        },
        ..AppConfig::default()
    };
    config.auth.rate_limit_requests = 0;
    if args.sharded {
        let vars = [
            ("CLUSTER_SHARDS", "1".to_owned()),
            ("SHARD_KEY_PREFIX", format!("bank:bench:{run}:")),
        ];
        config.cluster = ClusterConfig::from_lookup(
            |n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone()),
            config.redis_url.as_deref(),
            config.database_url.as_deref(),
        )?;
    }
    let mut servers: Vec<RunningServer> = Vec::new();
    for _ in 0..INSTANCES {
        let backends = Backends::from_config(&config).await?;
        servers.push(banking_example::start(config.clone(), backends).await?);
    }
    if args.sharded {
        // Until every shard has an owner and the cluster is balanced.
        let started = Instant::now();
        loop {
            let owned: Vec<usize> = servers
                .iter()
                .map(|s| s.state.cluster.as_ref().map_or(0, |c| c.manager.owned_shards().len()))
                .collect();
            let total: usize = owned.iter().sum();
            let (max, min) = (
                owned.iter().max().copied().unwrap_or(0),
                owned.iter().min().copied().unwrap_or(0),
            );
            if total == 16 && max - min <= 1 {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!("cluster never balanced: {owned:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let username = format!("bench-{}@example.com", &run[20..]);
    let password = "cluster bench passphrase";
    servers[0]
        .state
        .auth
        .create_user(&username, password, &[banking_example::auth::Role::Admin])
        .await?;
    let login: Value = http
        .post(format!("{}/auth/login", servers[0].url()))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"].as_str().unwrap_or_default().to_owned();
    let accounts = if args.scenario == Scenario::Hot {
        1
    } else {
        args.accounts.max(1)
    };
    let mut ids = Vec::new();
    for i in 0..accounts {
        loop {
            let r = http
                .post(format!("{}/accounts", servers[i % INSTANCES].url()))
                .header("x-client-id", "bench-setup")
                .bearer_auth(&token)
                .json(&json!({"owner_name": format!("bench-{i}"), "initial_balance": 0}))
                .send()
                .await?;
            if r.status().as_u16() == 201 {
                let v: Value = r.json().await?;
                ids.push(v["id"].as_str().unwrap_or_default().to_owned());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let before = banking_example::app::metrics_handle().render();
    let urls: Vec<String> = servers.iter().map(RunningServer::url).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            let (http, urls, ids, token, stop) = (http.clone(), urls.clone(), ids.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let id = &ids[(c * 31 + n as usize * 17) % ids.len()];
                    let url = &urls[(c + n as usize) % urls.len()];
                    let t = Instant::now();
                    let status = http
                        .post(format!("{url}/accounts/{id}/deposit"))
                        .header("x-client-id", format!("bench-{c}"))
                        .header("idempotency-key", format!("{c}-{n}"))
                        .bearer_auth(&token)
                        .json(&json!({"amount": 1}))
                        .send()
                        .await
                        .map_or(0, |r| r.status().as_u16());
                    latencies.push(t.elapsed().as_micros() as u64);
                    *statuses.entry(status).or_default() += 1;
                }
                (latencies, statuses)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    for t in tasks {
        let (l, s) = t.await?;
        latencies.extend(l);
        for (k, v) in s {
            *statuses.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let after = banking_example::app::metrics_handle().render();
    let delta = |name: &str| metric(&after, name) - metric(&before, name);
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let ok = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "{}",
        json!({
            "bench": "cluster",
            "scenario": if args.scenario == Scenario::Hot { "hot" } else { "uniform" },
            "sharded": args.sharded,
            "instances": INSTANCES,
            "clients": args.clients,
            "accounts": accounts,
            "secs": (secs * 100.0).round() / 100.0,
            "ops_per_sec": (ok as f64 / secs).round(),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "statuses": statuses,
            "conflict_retries": delta("es_postgres_append_conflicts_total"),
            "forwarded_share": (delta("cluster_forwarded_requests_total") / latencies.len().max(1) as f64 * 1000.0).round() / 1000.0,
        })
    );
    for s in servers {
        s.stop().await?;
    }
    let pool = sqlx::PgPool::connect(&args.database_url).await?;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await?;
    Ok(())
}
