//! Transfers under load while the server process is killed with SIGKILL,
//! twice, and restarted on the same PostgreSQL schema; clients retry every
//! request whose answer they lost with the same `Idempotency-Key`. Every
//! transfer settles (completed, or failed with nothing moved), no account
//! step is recorded twice, and the money is all there: the balances add
//! up to what was opened and nothing is left in flight.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{pg_env, ServerProcess};
use common::{pg, read, Api};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::sync::Notify;

const ACCOUNTS: usize = 6;
const OPENING: u64 = 1_000;
const WORKERS: usize = 8;
/// Each kill comes once this many more transfers were accepted.
const KILL_EVERY: usize = 80;

#[derive(Debug, Clone)]
struct Request {
    key: String,
    from: String,
    to: String,
    amount: u64,
}

async fn send(api: &Api, r: &Request) -> Result<(StatusCode, Value), reqwest::Error> {
    let resp = api
        .authed(api.http.post(api.url("/transfers")))
        .header("idempotency-key", &r.key)
        .json(&json!({"from": r.from, "to": r.to, "amount": r.amount}))
        .send()
        .await?;
    let status = resp.status();
    let body = resp.json().await?;
    Ok((status, body))
}

/// What one worker got accepted, and the request in flight when the
/// server died (with its client), if any.
type Worked = (Vec<String>, Option<(Api, Request)>);

/// Transfer load until the server dies; returns the accepted ids and the request
/// in flight when the server died, if any.
fn load(
    owner: &Api,
    accounts: &[String],
    round: usize,
    accepted: Arc<AtomicUsize>,
    kill_now: Arc<Notify>,
    kill_at: usize,
) -> Vec<tokio::task::JoinHandle<Worked>> {
    (0..WORKERS)
        .map(|w| {
            let api = owner.as_client(&format!("tx-client-{w}"));
            let accounts = accounts.to_vec();
            let (accepted, kill_now) = (Arc::clone(&accepted), Arc::clone(&kill_now));
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..10_000usize {
                    let from = (w + i) % ACCOUNTS;
                    let to = (from + 1 + (i * 7 + w) % (ACCOUNTS - 1)) % ACCOUNTS;
                    let r = Request {
                        key: format!("tx-{round}-{w}-{i}"),
                        from: accounts[from].clone(),
                        to: accounts[to].clone(),
                        amount: 1 + (i % 50) as u64,
                    };
                    match send(&api, &r).await {
                        Ok((status, body)) => {
                            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
                            ids.push(body["id"].as_str().unwrap().to_owned());
                            if accepted.fetch_add(1, Ordering::SeqCst) + 1 == kill_at {
                                kill_now.notify_one();
                            }
                        }
                        Err(_) => return (ids, Some((api, r))),
                    }
                }
                (ids, None)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_settle_and_conserve_money_across_two_kills() {
    pg::ensure_database().await;
    let schema = pg::schema();
    let mut env = pg_env(&schema);
    env.push(("TRANSFER_TIMEOUT_SECS", "600".into()));
    let mut server = ServerProcess::start(&env).await;
    let owner = Api::register_at(&server.base, "tx-owner").await;
    let mut accounts = Vec::new();
    for i in 0..ACCOUNTS {
        accounts.push(owner.open(&format!("Tx {i}"), json!(OPENING)).await);
    }

    let accepted = Arc::new(AtomicUsize::new(0));
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut in_flight_at_kill = 0;
    for round in 0..2 {
        let kill_now = Arc::new(Notify::new());
        let kill_at = accepted.load(Ordering::SeqCst) + KILL_EVERY;
        let owner_here = owner.at_base(&server.base);
        let workers = load(
            &owner_here,
            &accounts,
            round,
            Arc::clone(&accepted),
            Arc::clone(&kill_now),
            kill_at,
        );
        tokio::time::timeout(Duration::from_secs(120), kill_now.notified())
            .await
            .expect("the transfers never got going");
        server.kill9();
        let mut unknown = Vec::new();
        for w in workers {
            let (got, lost) = w.await.unwrap();
            ids.extend(got);
            unknown.extend(lost);
        }
        in_flight_at_kill += unknown.len();
        server = ServerProcess::start(&env).await;
        // The clients whose answer was lost retry with the same key.
        for (api, r) in &unknown {
            let (status, body) = send(&api.at_base(&server.base), r).await.unwrap();
            assert_eq!(status, StatusCode::ACCEPTED, "retry of {r:?}: {body}");
            ids.insert(body["id"].as_str().unwrap().to_owned());
        }
    }
    assert!(in_flight_at_kill > 0, "no request was in flight at a kill");
    let owner = owner.at_base(&server.base);

    // Every transfer settles.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut completed, mut failed) = (0, 0);
    for id in &ids {
        loop {
            let (status, t) = read(owner.get(&format!("/transfers/{id}")).await).await;
            assert_eq!(status, StatusCode::OK, "{t}");
            match t["status"].as_str() {
                Some("completed") => completed += 1,
                Some("failed") => {
                    assert!(t["reason"].as_str().unwrap().contains("insufficient"), "{t}");
                    failed += 1;
                }
                _ => {
                    assert!(Instant::now() < deadline, "transfer never settled: {t}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
            break;
        }
    }
    eprintln!(
        "{} transfers ({completed} completed, {failed} failed), {in_flight_at_kill} in flight at the kills",
        ids.len()
    );

    // No account step twice, and the money all there.
    let mut db = sqlx::PgConnection::connect(&pg::database_url()).await.unwrap();
    for step in [
        "TransferDebited",
        "TransferCredited",
        "TransferSettled",
        "TransferRefunded",
    ] {
        let doubled: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM (SELECT payload->'{step}'->>'transfer' FROM {schema}.events \
             WHERE event_type = '{step}' GROUP BY 1 HAVING count(*) > 1) d"
        ))
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(doubled, 0, "{step} recorded twice for some transfer");
    }
    let settled: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.events WHERE event_type = 'TransferSettled'"
    ))
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!(settled, i64::from(completed));
    // One transfer per key: a retry that started a second transfer would
    // show here (and its id would not be among those answered).
    let requested: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT stream_id FROM {schema}.events WHERE event_type = 'TransferRequested'"
    ))
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        requested.into_iter().collect::<BTreeSet<_>>(),
        ids,
        "the transfers in the store are those answered, each once"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut total = 0.0;
        let mut flying = 0.0;
        for a in &accounts {
            let (_, v) = read(owner.get(&format!("/accounts/{a}")).await).await;
            total += v["balance"].as_f64().unwrap();
            flying += v["in_flight"].as_f64().unwrap();
        }
        if flying == 0.0 && (total - (ACCOUNTS as u64 * OPENING) as f64).abs() < 0.001 {
            break;
        }
        assert!(Instant::now() < deadline, "balances {total}, in flight {flying}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
