//! The two measures beside the timed bank run: raw appends, and loading
//! one long stream.

use std::sync::Arc;
use std::time::Instant;

use super::account::{BankAccount, BankEvent, INITIAL_BALANCE};
use super::workload::{account_id, WorkloadError};
use crate::{Aggregate, DomainEvent, EventStore, ExpectedVersion, NewEvent, Repository, StreamId};

/// What [`append_only`] measured.
#[derive(Debug, Clone)]
pub struct AppendOnly {
    /// Every append's latency in microseconds, ascending.
    pub latencies_us: Vec<u64>,
    /// Wall time, in seconds.
    pub secs: f64,
}

/// `concurrency` tasks, each appending `ops` single-event appends to a
/// stream of its own (`appender-<n>`) with exact expected versions: the
/// store's append path without the repository.
pub async fn append_only<S>(store: Arc<S>, concurrency: usize, ops: usize) -> Result<AppendOnly, WorkloadError>
where
    S: EventStore + ?Sized + 'static,
{
    let deposit = BankEvent::MoneyDeposited { amount: 1025 };
    let (event_type, payload) = (deposit.event_type(), serde_json::to_value(&deposit)?);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (store, payload) = (Arc::clone(&store), payload.clone());
            tokio::spawn(async move {
                let id = StreamId::from(format!("appender-{w}"));
                let mut latencies = Vec::with_capacity(ops);
                for v in 0..ops as u64 {
                    let t = Instant::now();
                    store
                        .append(
                            BankAccount::TYPE,
                            &id,
                            ExpectedVersion::Exact(v),
                            vec![NewEvent::new(event_type, payload.clone())],
                        )
                        .await?;
                    latencies.push(t.elapsed().as_micros() as u64);
                }
                Ok::<_, WorkloadError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(AppendOnly {
        latencies_us: latencies,
        secs,
    })
}

/// Writes account 0 as one stream of `events` events (at least one:
/// opened, then deposits of 1, 2, 3... cents) in appends of 1,000;
/// returns the balance it must load with.
pub async fn seed_stream<S>(store: &S, events: usize) -> Result<i64, WorkloadError>
where
    S: EventStore + ?Sized,
{
    let id = account_id(0);
    let event = |e: &BankEvent| serde_json::to_value(e).map(|payload| NewEvent::new(e.event_type(), payload));
    let mut batch = vec![event(&BankEvent::AccountCreated {
        initial_balance: INITIAL_BALANCE,
    })?];
    let mut version = 0u64;
    let mut expected = INITIAL_BALANCE;
    for i in 1..events.max(1) {
        expected += i as i64;
        batch.push(event(&BankEvent::MoneyDeposited { amount: i as i64 })?);
        if batch.len() == 1000 {
            version += flush(store, &id, version, &mut batch).await?;
        }
    }
    if !batch.is_empty() {
        flush(store, &id, version, &mut batch).await?;
    }
    Ok(expected)
}

async fn flush<S>(store: &S, id: &StreamId, version: u64, batch: &mut Vec<NewEvent>) -> Result<u64, WorkloadError>
where
    S: EventStore + ?Sized,
{
    let n = batch.len() as u64;
    store
        .append(
            BankAccount::TYPE,
            id,
            ExpectedVersion::Exact(version),
            std::mem::take(batch),
        )
        .await?;
    Ok(n)
}

/// Loads account 0 `runs` times through `repo` (built without a cache or
/// snapshots, every load replays the stream) and returns each load's time in
/// microseconds, ascending; [`WorkloadError::Mismatch`] for a load that
/// came back at another version or balance than `events` and `expected`.
pub async fn time_loads<S>(
    repo: &Repository<BankAccount, S>,
    runs: usize,
    events: usize,
    expected: i64,
) -> Result<Vec<u64>, WorkloadError>
where
    S: EventStore + ?Sized + 'static,
{
    let id = account_id(0);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let loaded = repo.load(id.clone()).await.map_err(|e| WorkloadError::Command {
            stream: id.clone(),
            reason: e.to_string(),
        })?;
        times.push(t.elapsed().as_micros() as u64);
        if loaded.version != events as u64 || loaded.state.balance != expected {
            return Err(WorkloadError::Mismatch(format!(
                "loaded v{} balance {}, expected v{events} balance {expected}",
                loaded.version, loaded.state.balance
            )));
        }
    }
    times.sort_unstable();
    Ok(times)
}
