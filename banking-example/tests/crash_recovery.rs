//! The server process killed with SIGKILL between commit and reply: the
//! real binary on PostgreSQL (its own schema) and on its default store, the
//! SQLite file (its own data directory), restarted on the same database; clients retry every request whose outcome they do not know
//! with the same `Idempotency-Key`. Nothing is lost, nothing doubled.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::{pg_env, sqlite_env, ServerProcess};
use common::{pg, read, view_at_least, Api};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;
use tokio::sync::Notify;

const ACCOUNTS: usize = 4;
const WORKERS: usize = 8;
/// Most deposits one worker sends (bounds the test if the kill is late).
const PER_WORKER: usize = 200;
/// The kill comes once this many deposits of a round were acknowledged.
const KILL_AFTER: usize = 60;
/// Most kill rounds (each kills the server once) before giving up on a
/// kill between a commit and its answer.
const MAX_ROUNDS: usize = 10;

/// One deposit: its account, key and amount (unique, so the log shows
/// which request each event came from).
#[derive(Debug, Clone)]
struct Deposit {
    account: String,
    key: String,
    amount: u64,
}

async fn send(api: &Api, d: &Deposit) -> Result<(StatusCode, serde_json::Value), reqwest::Error> {
    let r = api
        .authed(api.http.post(api.url(&format!("/accounts/{}/deposit", d.account))))
        .header("idempotency-key", &d.key)
        .json(&json!({ "amount": d.amount }))
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    Ok((status, body))
}

/// One kill round: workers deposit (keys and amounts unique to the round)
/// until `KILL_AFTER` are acknowledged, then the server is killed. Returns
/// the acknowledged deposits and those in flight at the kill (with their
/// client), whose outcome is unknown.
async fn kill_round(
    server: &mut ServerProcess,
    owner: &Api,
    accounts: &[String],
    round: usize,
) -> (Vec<Deposit>, Vec<(Api, Deposit)>) {
    let acked = Arc::new(AtomicUsize::new(0));
    let kill_now = Arc::new(Notify::new());
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let api = owner.as_client(&format!("crash-client-{w}"));
            let account = accounts[w % ACCOUNTS].clone();
            let (acked, kill_now) = (Arc::clone(&acked), Arc::clone(&kill_now));
            tokio::spawn(async move {
                let mut answered = Vec::new();
                for i in 0..PER_WORKER {
                    let d = Deposit {
                        account: account.clone(),
                        key: format!("dep-{round}-{w}-{i}"),
                        amount: ((round * WORKERS + w) * PER_WORKER + i + 1) as u64,
                    };
                    match send(&api, &d).await {
                        Ok((status, body)) => {
                            assert_eq!(status, StatusCode::OK, "{body}");
                            answered.push(d);
                            if acked.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                                kill_now.notify_one();
                            }
                        }
                        // The server died: this one's outcome is unknown.
                        Err(_) => return (answered, Some((api, d))),
                    }
                }
                (answered, None)
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(120), kill_now.notified())
        .await
        .expect("the deposits never got going");
    server.kill9();
    let mut answered = Vec::new();
    let mut unknown = Vec::new();
    for w in workers {
        let (a, u) = w.await.unwrap();
        answered.extend(a);
        unknown.extend(u);
    }
    assert!(answered.len() >= KILL_AFTER);
    assert!(!unknown.is_empty(), "no request was in flight at the kill");
    (answered, unknown)
}

/// The deposit amounts in the account's log, from the events route.
async fn logged_deposits(api: &Api, account: &str) -> Vec<u64> {
    let (status, history) = read(api.get(&format!("/accounts/{account}/events?limit=1000")).await).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "MoneyDeposited")
        .map(|e| e["data"]["amount"].to_string().parse::<f64>().unwrap() as u64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_deposits_then_retry_unknown_outcomes() {
    pg::ensure_database().await;
    kill_during_deposits(pg_env(&pg::schema())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_deposits_on_the_sqlite_default_then_retry_unknown_outcomes() {
    let dir = std::env::temp_dir().join(format!("es-rs-crash-sqlite-{}", uuid::Uuid::new_v4().simple()));
    kill_during_deposits(sqlite_env(&dir)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same in write-behind mode: deposits are acknowledged once Redis
/// (its own, AOF with `appendfsync always`) holds them; the killed
/// process's flusher leaves its lists to the next process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_deposits_in_write_behind_mode_then_retry_unknown_outcomes() {
    pg::ensure_database().await;
    let redis = common::redis::OwnRedis::start_aof().await;
    let mut env = pg_env(&pg::schema());
    env.push(("REDIS_URL", redis.url()));
    env.push(("WRITE_BEHIND", "1".into()));
    kill_during_deposits(env).await;
}

async fn kill_during_deposits(env: Vec<(&'static str, String)>) {
    let mut server = ServerProcess::start(&env).await;
    let mut owner = Api::register_at(&server.base, "crash-owner").await;
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        accounts.push(owner.open(&format!("Crash {i}"), json!(0)).await);
    }
    // Kill rounds until one kill has landed between a commit and its
    // answer (else the retries below would all be first attempts, and
    // prove nothing about recognising a repeat).
    let mut answered = Vec::new();
    let mut committed_unanswered = 0;
    for round in 0..MAX_ROUNDS {
        let (acked, unknown) = kill_round(&mut server, &owner, &accounts, round).await;
        answered.extend(acked);
        // A new process on the same database; the clients retry.
        server = ServerProcess::start(&env).await;
        owner = owner.at_base(&server.base);
        let mut before_retry: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for account in &accounts {
            before_retry.insert(account, logged_deposits(&owner, account).await);
        }
        let committed = unknown
            .iter()
            .filter(|(_, d)| before_retry[d.account.as_str()].contains(&d.amount))
            .count();
        committed_unanswered += committed;
        eprintln!(
            "round {round}: {} answered, {} unknown at the kill ({committed} of them committed)",
            answered.len(),
            unknown.len()
        );
        for (api, d) in &unknown {
            // A key the killed process had claimed may still read as in
            // progress (409) until its claim runs out (Redis de-duplication):
            // the client retries it, as it would any 409 "in progress".
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let (status, body) = loop {
                let (status, body) = send(&api.at_base(&server.base), d).await.unwrap();
                let in_progress = status == StatusCode::CONFLICT && body.to_string().contains("in progress");
                if !in_progress || std::time::Instant::now() > deadline {
                    break (status, body);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            assert_eq!(status, StatusCode::OK, "retry of {d:?}: {body}");
            answered.push(d.clone());
        }
        if committed_unanswered > 0 {
            break;
        }
    }
    assert!(
        committed_unanswered > 0,
        "no kill in {MAX_ROUNDS} rounds landed between a commit and its answer"
    );

    // Every acknowledged deposit is in its account's log exactly once,
    // and nothing else is; the balance (rebuilt from the log by the new
    // process) is their sum.
    for account in &accounts {
        let mut want: Vec<u64> = answered
            .iter()
            .filter(|d| &d.account == account)
            .map(|d| d.amount)
            .collect();
        want.sort_unstable();
        let mut logged = logged_deposits(&owner, account).await;
        logged.sort_unstable();
        assert_eq!(logged, want, "account {account}");
        let version = want.len() as u64 + 1;
        let view = view_at_least(&owner, account, version).await;
        let sum: u64 = want.iter().sum();
        assert_eq!(view["balance"].to_string(), format!("{sum}.00"), "{view}");
        assert_eq!(view["version"].as_u64(), Some(version), "{view}");
    }

    // In PostgreSQL itself (write-behind: once flushed): every account's
    // events once, versions gapless.
    let schema = env
        .iter()
        .find(|(k, _)| *k == "DATABASE_SCHEMA")
        .map(|(_, v)| v.clone());
    if let Some(schema) = schema {
        let mut db = sqlx::PgConnection::connect(&pg::database_url()).await.unwrap();
        for account in &accounts {
            let want = answered.iter().filter(|d| &d.account == account).count() as i64 + 1;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let (count, distinct, max): (i64, i64, Option<i64>) = sqlx::query_as(&format!(
                    "SELECT count(*), count(DISTINCT version), max(version) FROM {schema}.events WHERE stream_id = $1"
                ))
                .bind(account)
                .fetch_one(&mut db)
                .await
                .unwrap();
                if count == want {
                    assert_eq!(
                        (distinct, max),
                        (want, Some(want)),
                        "account {account}: gapless in the store"
                    );
                    break;
                }
                assert!(
                    count < want,
                    "account {account}: {count} events in the store, {want} expected"
                );
                assert!(
                    std::time::Instant::now() < deadline,
                    "account {account}: {count} of {want} events reached the store"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Keyed account creation, the process restarted, the key retried: the
/// same account, not a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_account_creation_across_a_restart() {
    pg::ensure_database().await;
    let schema = pg::schema();
    let env = pg_env(&schema);
    let mut first = ServerProcess::start(&env).await;
    let api = Api::register_at(&first.base, "restart-creator").await;
    let body = json!({"owner_name": "Once", "initial_balance": 10});
    let (status, created) = read(api.post_keyed("/accounts", "open-once", body.clone()).await).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    first.kill9();

    let second = ServerProcess::start(&env).await;
    let api = api.at_base(&second.base);
    let (status, again) = read(api.post_keyed("/accounts", "open-once", body).await).await;
    assert!(status.is_success(), "{status} {again}");
    assert_eq!(again["id"], created["id"]);
    assert_eq!(again["balance"].to_string(), "10.00");
    let id = created["id"].as_str().unwrap();
    let (_, history) = read(api.get(&format!("/accounts/{id}/events?limit=1000")).await).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 1, "{history}");
    // One account in the whole log (this schema is the test's own).
    let mut db = sqlx::PgConnection::connect(&pg::database_url()).await.unwrap();
    let opened: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.events WHERE event_type = 'AccountCreated'"
    ))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(opened, 1);
    // The list (the rebuilt read model) shows that one account.
    view_at_least(&api, id, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, mine) = read(api.get("/accounts").await).await;
        if mine["total"] != 0 {
            assert_eq!(mine["total"], 1, "{mine}");
            assert_eq!(mine["accounts"][0]["id"], created["id"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the list never showed the account"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
