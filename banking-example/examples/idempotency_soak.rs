//! Memory under a stream of fresh idempotency keys: deposits, each with a
//! new `Idempotency-Key`, from many connections for a fixed time, while
//! the process's resident memory (RSS, from `/proc/self/status`) is
//! sampled. Prints one JSON object.
//!
//! `DATABASE_URL=postgres://… cargo run --release -p banking-example --example idempotency_soak -- [secs] [connections] [dedup]`
//!
//! Defaults: 180 s, 32 connections, `dedup` = the backend the server picks
//! (PostgreSQL with `DATABASE_URL`); `memory` forces the bounded in-memory
//! de-duplicator instead. The server runs in this process (schema
//! `bank_soak_<random>`, dropped at the end), so the RSS figures include
//! the load generator: an upper bound on the server's own.
//! Requires Linux (`/proc`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banking_example::rate_limit::RateLimitConfig;
use banking_example::{AppConfig, Backends};
use serde_json::{json, Value};

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(180);
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let force_memory = args.get(2).is_some_and(|a| a == "memory");
    let schema = format!("bank_soak_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut config = AppConfig {
        bind_addr: "127.0.0.1:0".parse()?,
        rate_limit: RateLimitConfig {
            requests_per_minute: 0,
            ..RateLimitConfig::default()
        },
        database_url: std::env::var("DATABASE_URL").ok(),
        database_schema: schema.clone(),
        ..AppConfig::default()
    };
    config.auth.rate_limit_requests = 0;
    let mut backends = match &config.database_url {
        Some(_) => Backends::from_config(&config).await?,
        None => Backends::in_memory(&config),
    };
    if force_memory {
        backends.dedup = Arc::new(es_core::InMemoryDeduplicator::new(
            config.idempotency_ttl,
            Duration::from_secs(30),
        ));
        backends.names.dedup = "memory".into();
    }
    let (store, dedup) = (backends.names.store.clone(), backends.names.dedup.clone());
    let server = banking_example::start(config.clone(), backends).await?;
    let http = reqwest::Client::new();
    let username = format!("soak-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "soak test passphrase";
    server
        .state
        .auth
        .create_user(&username, password, &[banking_example::auth::Role::Admin])
        .await?;
    let login: Value = http
        .post(format!("{}/auth/login", server.url()))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"].as_str().unwrap_or_default().to_owned();
    let mut ids = Vec::new();
    for i in 0..64 {
        let r: Value = http
            .post(format!("{}/accounts", server.url()))
            .header("x-client-id", "soak")
            .bearer_auth(&token)
            .json(&json!({"owner_name": format!("soak-{i}"), "initial_balance": 0}))
            .send()
            .await?
            .json()
            .await?;
        ids.push(r["id"].as_str().unwrap_or_default().to_owned());
    }

    let rss_start = rss_mib();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (http, url, ids, token) = (http.clone(), server.url(), ids.clone(), token.clone());
            let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
            tokio::spawn(async move {
                let mut n = c;
                while Instant::now() < deadline {
                    let id = &ids[n % ids.len()];
                    n += connections;
                    let ok = http
                        .post(format!("{url}/accounts/{id}/deposit"))
                        .header("x-client-id", format!("soak-{c}"))
                        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                        .bearer_auth(&token)
                        .json(&json!({"amount": 0.01}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    let counter = if ok { &done } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10).min(deadline.saturating_duration_since(Instant::now()))).await;
        samples.push(json!({
            "t_s": started.elapsed().as_secs(),
            "requests": done.load(Ordering::Relaxed),
            "rss_mib": (rss_mib() * 10.0).round() / 10.0,
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let requests = done.load(Ordering::Relaxed);
    let rss_max = samples
        .iter()
        .filter_map(|s| s["rss_mib"].as_f64())
        .fold(rss_start, f64::max);
    let report = json!({
        "bench": "idempotency_soak",
        "store": store,
        "dedup": dedup,
        "connections": connections,
        "seconds": (elapsed * 10.0).round() / 10.0,
        "requests": requests,
        "errors": failed.load(Ordering::Relaxed),
        "requests_per_s": (requests as f64 / elapsed).round(),
        "rss_start_mib": (rss_start * 10.0).round() / 10.0,
        "rss_end_mib": (rss_mib() * 10.0).round() / 10.0,
        "rss_max_mib": (rss_max * 10.0).round() / 10.0,
        "samples": samples,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    server.stop().await?;
    if let Some(url) = &config.database_url {
        let pool = sqlx::PgPool::connect(url).await?;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&pool)
            .await?;
    }
    Ok(())
}
