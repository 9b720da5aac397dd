//! A short, bounded load run against an in-process server on 127.0.0.1.
//!
//! `cargo run -p banking-example --example load -- [clients] [requests_per_client] [accounts]`
//!
//! Reports requests/s and latency of deposits, the projection lag seen by
//! the read model (from the `es_projection_lag_seconds` summary), and the
//! cross-instance visibility lag: a second instance on the same store
//! polled until it shows each write.
//!
//! With `DATABASE_URL` set, both instances run on PostgreSQL (schema
//! `DATABASE_SCHEMA`, default `bank_load`), each with its own connection
//! pool and append batcher: a real two-instance deployment.
//! Requests are authenticated as one admin user (tokens are verified on
//! both instances; they share the secret).

use std::time::{Duration, Instant};

use banking_example::rate_limit::RateLimitConfig;
use banking_example::{AppConfig, Backends};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let clients = args.first().copied().unwrap_or(32);
    let per_client = args.get(1).copied().unwrap_or(200);
    let accounts = args.get(2).copied().unwrap_or(8).max(1);
    let mut config = AppConfig {
        bind_addr: "127.0.0.1:0".parse()?,
        rate_limit: RateLimitConfig {
            requests_per_minute: 0,
            ..RateLimitConfig::default()
        },
        database_url: std::env::var("DATABASE_URL").ok(),
        database_schema: std::env::var("DATABASE_SCHEMA").unwrap_or_else(|_| "bank_load".into()),
        ..AppConfig::default()
    };
    config.auth.rate_limit_requests = 0;
    let (a_backends, b_backends) = if config.database_url.is_some() {
        (
            Backends::from_config(&config).await?,
            Backends::from_config(&config).await?,
        )
    } else {
        let a = Backends::in_memory(&config);
        let mut b = Backends::in_memory(&config);
        b.store = a.store.clone();
        (a, b)
    };
    println!("store: {}", a_backends.names.store);
    let a = banking_example::start(config.clone(), a_backends).await?;
    let b = banking_example::start(config, b_backends).await?;
    let http = reqwest::Client::new();
    let username = format!("load-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "load test passphrase";
    a.state
        .auth
        .create_user(&username, password, &[banking_example::auth::Role::Admin])
        .await?;
    let login: Value = http
        .post(format!("{}/auth/login", a.url()))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["access_token"].as_str().unwrap_or_default().to_owned();
    let t0 = Instant::now();
    for _ in 0..20 {
        http.post(format!("{}/auth/login", a.url()))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await?;
    }
    println!(
        "login (Argon2id default cost, sequential): {:.2?} per login",
        t0.elapsed() / 20
    );

    let mut ids = Vec::new();
    for i in 0..accounts {
        let r: Value = http
            .post(format!("{}/accounts", a.url()))
            .header("x-client-id", "load-setup")
            .bearer_auth(&token)
            .json(&json!({"owner_name": format!("load-{i}"), "initial_balance": 0}))
            .send()
            .await?
            .json()
            .await?;
        ids.push(r["id"].as_str().unwrap_or_default().to_owned());
    }

    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let http = http.clone();
            let url = a.url();
            let ids = ids.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                let mut errors = 0usize;
                for n in 0..per_client {
                    let id = &ids[(c + n) % ids.len()];
                    let t = Instant::now();
                    let ok = http
                        .post(format!("{url}/accounts/{id}/deposit"))
                        .header("x-client-id", format!("load-{c}"))
                        .bearer_auth(&token)
                        .json(&json!({"amount": 1.25}))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    latencies.push(t.elapsed());
                    errors += usize::from(!ok);
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "deposits: {} requests, {} clients, {} accounts, {} errors in {:.2?}: {:.0} req/s; latency p50 {:.2?} p99 {:.2?} max {:.2?}",
        latencies.len(),
        clients,
        accounts,
        errors,
        elapsed,
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        latencies[latencies.len() - 1]
    );

    let metrics = http.get(format!("{}/metrics", a.url())).send().await?.text().await?;
    for line in metrics.lines().filter(|l| l.starts_with("es_projection_lag_seconds")) {
        println!("  {line}");
    }

    // Cross-instance visibility: write on a, poll b's GET until it shows it.
    let mut lags = Vec::new();
    for i in 0..100 {
        let id = &ids[i % ids.len()];
        let written: Value = http
            .post(format!("{}/accounts/{id}/deposit", a.url()))
            .header("x-client-id", "lag-probe")
            .bearer_auth(&token)
            .json(&json!({"amount": 1}))
            .send()
            .await?
            .json()
            .await?;
        let version = written["version"].as_u64().unwrap_or(0);
        let t = Instant::now();
        loop {
            let seen: Value = http
                .get(format!("{}/accounts/{id}", b.url()))
                .header("x-client-id", "lag-probe")
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            if seen["version"].as_u64().unwrap_or(0) >= version || t.elapsed() > Duration::from_secs(5) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lags.push(t.elapsed());
    }
    lags.sort();
    println!(
        "cross-instance visibility lag over {} writes: p50 {:.2?} p99 {:.2?} max {:.2?}",
        lags.len(),
        lags[lags.len() / 2],
        lags[lags.len() * 99 / 100],
        lags[lags.len() - 1]
    );
    a.stop().await?;
    b.stop().await?;
    Ok(())
}
