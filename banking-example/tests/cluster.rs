//! Three server processes in cluster mode (`CLUSTER_SHARDS=1`) on loopback,
//! sharing PostgreSQL (the test's own schema) and Redis (the test's own key
//! prefix), under deposit load spread over all three with Idempotency-Keys:
//! one is paused (SIGSTOP) past its lease and resumed, one is killed with
//! SIGKILL and started again. Its shards are owned again within the lease
//! TTL plus one interval, answers in the window are 503 at worst, the
//! cluster comes back to balance, and every acknowledged deposit is in the
//! log exactly once.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{pg_env, ServerProcess};
use common::{pg, read, Api};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TTL_MS: u64 = 2000;
const INTERVAL_MS: u64 = 500;
const ACCOUNTS: usize = 12;
const WORKERS: usize = 9;

/// The server binary with `env` and nothing else of this process's
/// environment but `PATH`, logging errors only.
fn server_command(env: &[(&'static str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_banking-example"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

fn cluster_env(schema: &str, prefix: &str) -> Vec<(&'static str, String)> {
    let mut env = pg_env(schema);
    env.extend([
        ("REDIS_URL", common::redis::url()),
        ("CLUSTER_SHARDS", "1".to_owned()),
        ("SHARD_KEY_PREFIX", prefix.to_owned()),
        ("SHARD_LEASE_TTL_MS", TTL_MS.to_string()),
        ("SHARD_REBALANCE_INTERVAL_MS", INTERVAL_MS.to_string()),
    ]);
    env
}

/// An admin's access token, created with the binary's `create-admin`.
async fn admin_token(env: &[(&'static str, String)], base: &str) -> String {
    let username = format!("admin-{}@example.com", uuid::Uuid::now_v7().simple());
    let status = Command::new(env!("CARGO_BIN_EXE_banking-example"))
        .args(["create-admin", "--username", &username])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ADMIN_PASSWORD", common::PASSWORD)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .unwrap();
    assert!(status.success());
    common::login(base, &username, common::PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn cluster_status(base: &str, token: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{base}/cluster"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, body) = read(r).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Shards per live owner, when every shard has a live owner.
fn owners(status: &Value) -> Option<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for s in status["shards"].as_array()? {
        if s["status"] != "Assigned" {
            return None;
        }
        *counts.entry(s["owner"].as_str()?.to_owned()).or_insert(0) += 1;
    }
    Some(counts)
}

/// Waits until every shard is owned by one of `instances` live instances,
/// within the rebalance threshold (0.2 of the fair share: at most 1 apart
/// for 16 shards over 3).
async fn wait_balanced(base: &str, token: &str, instances: usize) -> Duration {
    let started = Instant::now();
    loop {
        let status = cluster_status(base, token).await;
        if let Some(counts) = owners(&status) {
            let (max, min) = (counts.values().max().copied(), counts.values().min().copied());
            if counts.len() == instances && max.zip(min).is_some_and(|(max, min)| max - min <= 1) {
                return started.elapsed();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never balanced: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Acknowledged deposits: account -> amounts.
    acked: BTreeMap<String, Vec<u64>>,
    /// Answers by status code.
    statuses: BTreeMap<u16, usize>,
    /// Requests whose outcome was unknown (connection lost, timed out).
    unknown: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_survive_a_pause_and_a_kill_without_losing_or_doubling_a_deposit() {
    pg::ensure_database().await;
    let prefix = format!("bank:test:shards:{}:", uuid::Uuid::now_v7().simple());
    let env = cluster_env(&pg::schema(), &prefix);
    let mut servers = [
        ServerProcess::start(&env).await,
        ServerProcess::start(&env).await,
        ServerProcess::start(&env).await,
    ];
    let bases: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(servers.iter().map(|s| s.base.clone()).collect()));
    let admin = admin_token(&env, &servers[0].base).await;
    let took = wait_balanced(&servers[0].base, &admin, 3).await;
    eprintln!("balanced over 3 instances after {took:?}");
    let status = cluster_status(&servers[1].base, &admin).await;
    assert_eq!(status["shards"].as_array().unwrap().len(), 16, "every shard listed");
    assert_eq!(status["instances"].as_array().unwrap().len(), 3, "{status}");
    for s in status["shards"].as_array().unwrap() {
        assert!(
            s["token"].as_u64().unwrap() >= 1 && s["lease_expires_at"].is_string(),
            "{s}"
        );
    }
    // Every cluster metric is listed from the start, at zero until it
    // happens.
    let metrics = reqwest::get(format!("{}/metrics", servers[2].admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "es_shards_owned",
        "es_shard_acquisitions_total",
        "es_shard_rebalances_total",
        "es_shard_lease_losses_total",
        "cluster_forwarded_requests_total",
        "cluster_fenced_appends_total",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} not in /metrics:\n{metrics}"
        );
    }

    // Accounts opened through every instance, keyed and not.
    let owner = Api::register_at(&servers[0].base, "cluster-owner").await;
    let (status, body) = read(owner.get("/cluster").await).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "customers do not see the cluster: {body}"
    );
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        let api = owner.at_base(&servers[i % 3].base);
        let body = json!({"owner_name": format!("Cluster {i}"), "initial_balance": 0});
        let created = loop {
            let r = if i % 2 == 0 {
                api.post_keyed("/accounts", &format!("open-{i}"), body.clone()).await
            } else {
                api.post("/accounts", body.clone()).await
            };
            match read(r).await {
                (StatusCode::CREATED, created) => break created,
                // A shard changing hands: retry as told.
                (StatusCode::SERVICE_UNAVAILABLE, _) => tokio::time::sleep(Duration::from_millis(200)).await,
                (status, body) => panic!("{status} {body}"),
            }
        };
        accounts.push(created["id"].as_str().unwrap().to_owned());
    }

    // Deposit load over all three, each deposit retried with its key until
    // acknowledged (on 503 after Retry-After; on a lost connection through
    // another instance).
    let tally = Arc::new(Mutex::new(Tally::default()));
    let acks = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (tally, acks, stop, bases, http) =
                (tally.clone(), acks.clone(), stop.clone(), bases.clone(), http.clone());
            let account = accounts[w % ACCOUNTS].clone();
            let token = owner.token.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut target = w;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let amount = (w as u64 + 1) * 10_000 + n;
                    let key = format!("dep-{w}-{n}");
                    loop {
                        let base = {
                            let b = bases.lock().unwrap();
                            b[target % b.len()].clone()
                        };
                        let sent = http
                            .post(format!("{base}/accounts/{account}/deposit"))
                            .bearer_auth(&token)
                            .header("x-client-id", format!("cluster-client-{w}"))
                            .header("idempotency-key", &key)
                            .json(&json!({ "amount": amount }))
                            .send()
                            .await;
                        let r = if let Ok(r) = sent {
                            r
                        } else {
                            tally.lock().unwrap().unknown += 1;
                            target += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let status = r.status();
                        if [StatusCode::SERVICE_UNAVAILABLE, StatusCode::CONFLICT].contains(&status) {
                            // Both say when to come back.
                            assert!(r.headers().contains_key("retry-after"), "{status} without Retry-After");
                        }
                        let body = r.text().await.unwrap_or_default();
                        *tally.lock().unwrap().statuses.entry(status.as_u16()).or_insert(0) += 1;
                        match status {
                            StatusCode::OK => {
                                tally
                                    .lock()
                                    .unwrap()
                                    .acked
                                    .entry(account.clone())
                                    .or_default()
                                    .push(amount);
                                acks.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => {
                                // 409: the same key still in progress elsewhere.
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                target += 1;
                            }
                            other => panic!("deposit {key} answered {other}: {body}"),
                        }
                    }
                }
            })
        })
        .collect();
    let wait_acks = |at_least: usize| {
        let acks = acks.clone();
        async move {
            let started = Instant::now();
            while acks.load(Ordering::SeqCst) < at_least {
                assert!(started.elapsed() < Duration::from_secs(120), "deposits stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_acks(100).await;

    // Pause instance 1 past its lease, then let it go on.
    let paused = servers[1].pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &paused])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(TTL_MS + INTERVAL_MS + 500)).await;
    let during_pause = owners(&cluster_status(&servers[0].base, &admin).await);
    assert!(
        during_pause.is_some_and(|o| o.len() == 2),
        "the paused instance's shards were taken over"
    );
    assert!(Command::new("kill")
        .args(["-CONT", &paused])
        .status()
        .unwrap()
        .success());
    let took = wait_balanced(&servers[0].base, &admin, 3).await;
    eprintln!("balanced again {took:?} after the pause");
    let after_pause = acks.load(Ordering::SeqCst);
    wait_acks(after_pause + 100).await;

    // Kill instance 2; its shards are owned again within TTL + interval.
    let killed = servers[2].base.clone();
    servers[2].kill9();
    let killed_at = Instant::now();
    bases.lock().unwrap().retain(|b| *b != killed);
    let failover = loop {
        let status = cluster_status(&servers[0].base, &admin).await;
        if owners(&status).is_some_and(|o| o.len() == 2) {
            break killed_at.elapsed();
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "no failover: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("failover after {failover:?} (TTL {TTL_MS} ms + interval {INTERVAL_MS} ms)");
    // Scheduling slack of a loaded CI machine on top of the bound.
    assert!(
        failover <= Duration::from_millis(TTL_MS + INTERVAL_MS + 1500),
        "failover took {failover:?}"
    );
    let after_kill = acks.load(Ordering::SeqCst);
    wait_acks(after_kill + 100).await;

    // Restart it: the cluster comes back to balance.
    servers[2] = ServerProcess::start(&env).await;
    bases.lock().unwrap().push(servers[2].base.clone());
    let took = wait_balanced(&servers[0].base, &admin, 3).await;
    eprintln!("balanced over 3 again {took:?} after the restart");
    let after_restart = acks.load(Ordering::SeqCst);
    wait_acks(after_restart + 100).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!("statuses {:?}, unknown outcomes {}", tally.statuses, tally.unknown);
    assert!(
        tally.statuses.keys().all(|s| [200, 409, 503].contains(s)),
        "{:?}",
        tally.statuses
    );
    // Every acknowledged deposit exactly once in its account's log, and
    // nothing else (each account replayed from its events).
    let reader = owner.at_base(&servers[0].base);
    let mut total = 0;
    for account in &accounts {
        let mut logged: Vec<u64> = Vec::new();
        let mut after = 0;
        loop {
            let page = format!("/accounts/{account}/events?after={after}&limit=1000");
            let (status, history) = read(reader.get(&page).await).await;
            assert_eq!(status, StatusCode::OK, "{history}");
            logged.extend(
                history["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|e| e["type"] == "MoneyDeposited")
                    .map(|e| e["data"]["amount"].to_string().parse::<f64>().unwrap() as u64),
            );
            match history["next"].as_u64() {
                Some(next) => after = next,
                None => break,
            }
        }
        logged.sort_unstable();
        let mut want = tally.acked.get(account).cloned().unwrap_or_default();
        want.sort_unstable();
        assert_eq!(logged, want, "account {account}");
        total += want.len();
    }
    assert!(total >= 400, "{total} deposits");
}

/// A command forwarded to an owner that is paused (SIGSTOP: it still
/// accepts connections, and answers nothing) is answered within the
/// failover window (lease TTL + interval, the forwarding timeout) with
/// 503 + `Retry-After`, not held until the request timeout; the retry with
/// the same key reaches the new owner, and the deposit is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_forwarded_to_a_paused_owner_is_answered_within_the_failover_window() {
    pg::ensure_database().await;
    let prefix = format!("bank:test:shards:{}:", uuid::Uuid::now_v7().simple());
    let env = cluster_env(&pg::schema(), &prefix);
    let servers = [ServerProcess::start(&env).await, ServerProcess::start(&env).await];
    let admin = admin_token(&env, &servers[0].base).await;
    wait_balanced(&servers[0].base, &admin, 2).await;
    let owner = Api::register_at(&servers[0].base, "paused-owner").await;
    // Opened without a key through instance 0: an id of a shard it owns.
    let (status, created) = read(
        owner
            .post("/accounts", json!({"owner_name": "Paused", "initial_balance": 0}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let account = created["id"].as_str().unwrap().to_owned();

    let paused = servers[0].pid().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &paused])
        .status()
        .unwrap()
        .success());
    let resume = || {
        Command::new("kill")
            .args(["-CONT", &paused])
            .status()
            .map(|s| s.success())
    };
    // The client waits longer than the pause: only the server's own
    // timeout can answer early.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let deposit = || {
        http.post(format!("{}/accounts/{account}/deposit", servers[1].base))
            .bearer_auth(&owner.token)
            .header("x-client-id", "paused-owner")
            .header("idempotency-key", "deposit-while-paused")
            .json(&json!({"amount": 25}))
            .send()
    };
    let sent = Instant::now();
    let first = deposit().await;
    let answered_in = sent.elapsed();
    let first = first.map(|r| (r.status(), r.headers().contains_key("retry-after")));
    // The pause ends 12 s after it began, whatever was answered.
    let pause_left = Duration::from_secs(12).saturating_sub(sent.elapsed());
    tokio::time::sleep(pause_left).await;
    assert_eq!(resume().ok(), Some(true));
    eprintln!("first answer {first:?} after {answered_in:?}");
    let bound = Duration::from_millis(TTL_MS + INTERVAL_MS + 2500);
    assert!(
        answered_in <= bound,
        "a deposit forwarded to the paused owner was answered after {answered_in:?} (bound {bound:?})"
    );
    let (status, retry_after) = first.expect("an answer");
    assert!(
        status == StatusCode::OK || (status == StatusCode::SERVICE_UNAVAILABLE && retry_after),
        "{status}"
    );
    // The retry with the same key is applied once, by whoever owns it now.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = deposit().await.unwrap();
        match r.status() {
            StatusCode::OK => break,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => {
                assert!(Instant::now() < deadline, "never applied");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("{other}: {}", r.text().await.unwrap_or_default()),
        }
    }
    let (status, view) = read(
        owner
            .at_base(&servers[1].base)
            .get(&format!("/accounts/{account}"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["balance"].to_string().parse::<f64>().unwrap(), 25.0, "{view}");
}

/// Cluster mode bound to every interface (`0.0.0.0`) without
/// `CLUSTER_ADVERTISE_URL` refuses to start: the other instances would
/// forward to an address that is their own.
#[test]
fn cluster_mode_on_an_unspecified_address_needs_an_advertised_url() {
    let mut env = cluster_env(
        "unused_cluster",
        &format!("bank:test:unspecified:{}:", uuid::Uuid::now_v7().simple()),
    );
    env.push(("BIND_ADDR", "0.0.0.0:0".to_owned()));
    let mut child = server_command(&env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts anyway would serve until killed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("started on 0.0.0.0 without CLUSTER_ADVERTISE_URL");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("CLUSTER_ADVERTISE_URL"), "{log}");
}

/// Cluster mode without Redis (or without PostgreSQL) refuses to start,
/// saying why.
#[test]
fn cluster_mode_refuses_to_start_without_redis() {
    let mut env = pg_env("unused_cluster");
    env.push(("CLUSTER_SHARDS", "1".to_owned()));
    env.push(("BIND_ADDR", "127.0.0.1:0".to_owned()));
    let out = server_command(&env).output().unwrap();
    assert!(!out.status.success());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("CLUSTER_SHARDS") && log.contains("REDIS_URL"), "{log}");
}

/// Two servers on one machine, neither told where its operations listener
/// goes: the second finds the default port taken and starts without it,
/// saying so; an address set on purpose and taken stops the server.
#[tokio::test]
async fn a_second_server_on_the_machine_starts_without_the_default_operations_listener() {
    use banking_example::config::DEFAULT_ADMIN_BIND_ADDR;
    // The default port held, as a first server holds it (or already held
    // by some other process: either way taken).
    let _held = std::net::TcpListener::bind(DEFAULT_ADMIN_BIND_ADDR).ok();
    let dir = std::env::temp_dir().join(format!("es-rs-second-server-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = common::process::sqlite_env(&dir);
    env.push(("ADMIN_BIND_ADDR", String::new()));
    let server = ServerProcess::start(&env).await;
    let health = reqwest::get(format!("{}/health", server.base)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        server.log().contains("operations listener not started"),
        "{}",
        server.log()
    );
    drop(server);

    let out = server_command(&[
        ("BIND_ADDR", "127.0.0.1:0".to_owned()),
        ("ADMIN_BIND_ADDR", DEFAULT_ADMIN_BIND_ADDR.to_string()),
        ("STORE", "memory".to_owned()),
    ])
    .output()
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("ADMIN_BIND_ADDR"), "{log}");
}
