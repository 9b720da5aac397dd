//! Transfers through the HTTP API on PostgreSQL: `--clients` closed-loop
//! clients each POST a transfer and poll `GET /transfers/{id}` until it
//! completes, then send the next. Prints one JSON line: completed
//! transfers/s, POST latency and POST-to-completed latency (p50, p99).
//! While it runs, a reader sums `balance + in_flight` over the accounts
//! read model in one statement every 5 ms: every sample must equal the
//! opening balances (`read_model_violations`). Then checks that every
//! transfer completed and the balances add up (exit 1 otherwise).
//!
//! `cargo run --release -p banking-example --example transfer_bench -- --clients 16 --transfers 200`
//!
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/es_test`);
//! a fresh schema per run.

use std::time::{Duration, Instant};

use banking_example::rate_limit::RateLimitConfig;
use banking_example::{AppConfig, Backends};
use serde_json::{json, Value};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Balances and money in flight over all accounts, in one statement.
async fn money(pool: &sqlx::PgPool, schema: &str) -> Result<(f64, f64), sqlx::Error> {
    let (sum, flying): (f64, f64) = sqlx::query_as(&format!(
        "SELECT coalesce(sum(balance), 0)::float8, coalesce(sum(in_flight), 0)::float8 FROM {schema}.accounts"
    ))
    .fetch_one(pool)
    .await?;
    Ok((sum, flying))
}

/// A random number below `n`.
fn rand(n: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % n.max(1) as u128) as usize
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clients = arg("--clients", 16);
    let per_client = arg("--transfers", 200);
    let accounts = arg("--accounts", 200).max(2);
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/es_test".into());
    let schema = format!("transfer_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut config = AppConfig {
        bind_addr: "127.0.0.1:0".parse()?,
        rate_limit: RateLimitConfig {
            requests_per_minute: 0,
            ..RateLimitConfig::default()
        },
        database_url: Some(url.clone()),
        database_schema: schema.clone(),
        ..AppConfig::default()
    };
    config.auth.rate_limit_requests = 0;
    let url_for_reader = url;
    let backends = Backends::from_config(&config).await?;
    let server = banking_example::start(config, backends).await?;
    let base = server.url();
    let http = reqwest::Client::new();
    let username = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "transfer bench passphrase";
    server
        .state
        .auth
        .create_user(&username, password, &[banking_example::auth::Role::Admin])
        .await?;
    let login: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"].as_str().unwrap_or_default().to_owned();
    let opening = 1_000_000u64;
    let mut ids = Vec::with_capacity(accounts);
    for i in 0..accounts {
        let v: Value = http
            .post(format!("{base}/accounts"))
            .bearer_auth(&token)
            .header("x-client-id", "bench")
            .json(&json!({"owner_name": format!("Bench {i}"), "initial_balance": opening}))
            .send()
            .await?
            .json()
            .await?;
        ids.push(v["id"].as_str().unwrap_or_default().to_owned());
    }

    // While the transfers run, a reader sums the accounts read model in
    // one statement (one snapshot) again and again: balance + in_flight
    // must always be what was opened.
    let pool = sqlx::PgPool::connect(&url_for_reader).await?;
    let expected = opening as f64 * accounts as f64;
    // The openings are acknowledged before the read model shows them:
    // sampling starts once it does.
    let opened_by = Instant::now() + Duration::from_secs(30);
    while money(&pool, &schema)
        .await
        .map_or(true, |(sum, _)| (sum - expected).abs() >= 0.001)
    {
        if Instant::now() > opened_by {
            return Err("the read model never showed the opened accounts".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (pool, schema, sampling) = (pool.clone(), schema.clone(), std::sync::Arc::clone(&sampling));
        async move {
            let (mut samples, mut violations) = (0u64, 0u64);
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok((sum, flying)) = money(&pool, &schema).await {
                    samples += 1;
                    if (sum + flying - expected).abs() >= 0.001 {
                        violations += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (samples, violations)
        }
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (http, base, token, ids) = (http.clone(), base.clone(), token.clone(), ids.clone());
            tokio::spawn(async move {
                let mut post_ms = Vec::with_capacity(per_client);
                let mut done_ms = Vec::with_capacity(per_client);
                let mut failures = 0usize;
                for i in 0..per_client {
                    let from = rand(ids.len());
                    let to = (from + 1 + rand(ids.len() - 1)) % ids.len();
                    let t0 = Instant::now();
                    let r = http
                        .post(format!("{base}/transfers"))
                        .bearer_auth(&token)
                        .header("x-client-id", format!("bench-{c}"))
                        .header("idempotency-key", format!("b-{c}-{i}"))
                        .json(&json!({"from": ids[from], "to": ids[to], "amount": 1 + rand(100) as u64}))
                        .send()
                        .await;
                    let Ok(r) = r else {
                        failures += 1;
                        continue;
                    };
                    let location = r
                        .headers()
                        .get("location")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if r.status().as_u16() != 202 {
                        failures += 1;
                        continue;
                    }
                    post_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                    loop {
                        let t: Value = match http
                            .get(format!("{base}{location}"))
                            .bearer_auth(&token)
                            .header("x-client-id", format!("bench-{c}"))
                            .send()
                            .await
                        {
                            Ok(r) => r.json().await.unwrap_or(Value::Null),
                            Err(_) => Value::Null,
                        };
                        match t["status"].as_str() {
                            Some("completed") => {
                                done_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
                                break;
                            }
                            Some("failed") => {
                                failures += 1;
                                break;
                            }
                            _ => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                }
                (post_ms, done_ms, failures)
            })
        })
        .collect();
    let (mut post_ms, mut done_ms, mut failures) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (p, d, f) = t.await?;
        post_ms.extend(p);
        done_ms.extend(d);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    post_ms.sort_by(f64::total_cmp);
    done_ms.sort_by(f64::total_cmp);

    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    let (samples, violations) = sampler.await?;
    // Once the read model caught up: the money all there, none in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (total, flying) = loop {
        let (sum, flying) = money(&pool, &schema).await?;
        if flying == 0.0 || Instant::now() > deadline {
            break (sum, flying);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let conserved = flying == 0.0 && (total - expected).abs() < 0.001 && violations == 0;
    println!(
        "{}",
        json!({
            "bench": "transfers",
            "store": "postgres",
            "clients": clients,
            "accounts": accounts,
            "completed": done_ms.len(),
            "failed": failures,
            "seconds": (elapsed * 1000.0).round() / 1000.0,
            "transfers_per_sec": (done_ms.len() as f64 / elapsed).round(),
            "post_ms": {"p50": percentile(&post_ms, 0.5), "p99": percentile(&post_ms, 0.99)},
            "post_to_completed_ms": {"p50": percentile(&done_ms, 0.5), "p99": percentile(&done_ms, 0.99)},
            "conserved": conserved,
            "read_model_samples": samples,
            "read_model_violations": violations,
        })
    );
    server.stop().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&pool)
        .await?;
    if !conserved || failures > 0 || done_ms.len() != clients * per_client {
        std::process::exit(1);
    }
    Ok(())
}
