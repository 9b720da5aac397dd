//! The timed phase: workers issuing deposits and withdrawals through the
//! repository.

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::account::{BankAccount, BankCommand, BankError, INITIAL_BALANCE};
use super::latency::{latency_cdf, percentile};
use crate::{EventStore, Repository, RepositoryError, StreamId};

/// Which accounts the commands go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scenario {
    /// Each command picks one of the accounts at random.
    #[default]
    Uniform,
    /// Every command goes to one account (the contention case).
    Hot,
}

/// Which commands the workers issue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mix {
    /// Deposits and withdrawals with equal probability.
    #[default]
    Mixed,
    /// Deposits only.
    Deposit,
}

impl Scenario {
    /// `uniform` or `hot`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Uniform => "uniform",
            Self::Hot => "hot",
        }
    }
}

impl Mix {
    /// `mixed` or `deposit`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mixed => "mixed",
            Self::Deposit => "deposit",
        }
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Self::Uniform),
            "hot" => Ok(Self::Hot),
            _ => Err(format!("{s:?} is not a scenario (uniform or hot)")),
        }
    }
}

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mixed" => Ok(Self::Mixed),
            "deposit" => Ok(Self::Deposit),
            _ => Err(format!("{s:?} is not a mix (mixed or deposit)")),
        }
    }
}

/// The shape of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Accounts opened before the timed phase (one with [`Scenario::Hot`]).
    pub accounts: usize,
    /// Concurrent workers (tasks).
    pub concurrency: usize,
    /// Commands per worker, when `duration` is `None`.
    pub ops_per_worker: usize,
    /// Run every worker for this long instead of `ops_per_worker` commands.
    pub duration: Option<Duration>,
    /// Which accounts the commands go to.
    pub scenario: Scenario,
    /// Which commands.
    pub mix: Mix,
}

impl Default for Workload {
    /// The reference `c16`: 1,000 accounts, 16 workers, 500 commands each.
    fn default() -> Self {
        Self {
            accounts: 1000,
            concurrency: 16,
            ops_per_worker: 500,
            duration: None,
            scenario: Scenario::Uniform,
            mix: Mix::Mixed,
        }
    }
}

impl Workload {
    /// The accounts the run uses: one for [`Scenario::Hot`], else
    /// `accounts` (at least one).
    pub fn account_count(&self) -> usize {
        match self.scenario {
            Scenario::Hot => 1,
            Scenario::Uniform => self.accounts.max(1),
        }
    }
}

/// The stream id of account `i`: `acc-000042`.
pub fn account_id(i: usize) -> StreamId {
    StreamId::from(format!("acc-{i:06}"))
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A command failed for another reason than insufficient funds.
    #[error("command on {stream}: {reason}")]
    Command {
        /// The account.
        stream: StreamId,
        /// The repository's error.
        reason: String,
    },
    /// A worker task panicked or was cancelled.
    #[error("worker task: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// The store failed (an append, or reading it back).
    #[error("store: {0}")]
    Store(#[from] crate::StoreError),
    /// An event did not encode.
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// The store gave back something else than what was written.
    #[error("mismatch: {0}")]
    Mismatch(String),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every command's latency in microseconds (first attempt to final
    /// outcome, retries included), ascending.
    pub latencies_us: Vec<u64>,
    /// Commands that recorded their event.
    pub accepted: u64,
    /// Withdrawals refused for insufficient funds.
    pub rejected: u64,
    /// Decisions taken again after a version conflict.
    pub conflict_retries: u64,
    /// Wall time of the timed phase, in seconds.
    pub secs: f64,
    /// Per account (by index), the sum of its accepted commands' moves:
    /// its balance must be [`INITIAL_BALANCE`] plus this.
    pub net: Vec<i64>,
}

impl Outcome {
    /// Commands issued.
    pub fn ops(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    /// Commands per second of the timed phase.
    pub fn ops_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops() as f64 / self.secs
        } else {
            0.0
        }
    }

    /// The latency percentile `p` (0-100), in microseconds.
    pub fn percentile_us(&self, p: f64) -> u64 {
        percentile(&self.latencies_us, p)
    }

    /// The balance account `i` must have.
    pub fn expected_balance(&self, i: usize) -> i64 {
        INITIAL_BALANCE + self.net.get(i).copied().unwrap_or(0)
    }

    /// The workload's JSON line (`docs/bench/WORKLOAD.md`): the fields
    /// every store reports alike (the run's shape, counts, rate,
    /// percentiles and CDF points), with the fields of `extra` (an
    /// object: `system`, `events_in_store`, the store's settings) added.
    ///
    /// ```
    /// # use es_core::testing::bank::{Outcome, Workload};
    /// let outcome = Outcome { latencies_us: vec![900, 1100], accepted: 2, rejected: 0, conflict_retries: 0, secs: 0.5, net: vec![0; 3] };
    /// let line = outcome.json_line(&Workload::default(), serde_json::json!({"system": "mine", "events_in_store": 5}));
    /// assert_eq!((line["ops_per_sec"].as_f64(), line["p99_us"].as_u64()), (Some(4.0), Some(1100)));
    /// assert_eq!((line["system"].as_str(), line["accounts"].as_u64()), (Some("mine"), Some(3)));
    /// ```
    pub fn json_line(&self, workload: &Workload, extra: serde_json::Value) -> serde_json::Value {
        let mut line = serde_json::json!({
            "scenario": workload.scenario.name(),
            "mix": workload.mix.name(),
            "accounts": self.net.len(),
            "concurrency": workload.concurrency,
            "ops": self.ops(),
            "accepted": self.accepted,
            "rejected": self.rejected,
            "secs": (self.secs * 1000.0).round() / 1000.0,
            "ops_per_sec": self.ops_per_sec().round(),
            "p50_us": self.percentile_us(50.0),
            "p90_us": self.percentile_us(90.0),
            "p99_us": self.percentile_us(99.0),
            "max_us": self.latencies_us.last().copied().unwrap_or(0),
            "latency_cdf_us": latency_cdf(&self.latencies_us),
            "conflict_retries": self.conflict_retries,
        });
        if let (Some(fields), serde_json::Value::Object(extra)) = (line.as_object_mut(), extra) {
            fields.extend(extra);
        }
        line
    }
}

/// Opens accounts `0..n` through the repository, concurrently, each with
/// [`INITIAL_BALANCE`] (the set-up of a run, not timed; it also leaves
/// their states in the repository's cache, if it has one).
pub async fn open_accounts<S>(repo: &Repository<BankAccount, S>, n: usize) -> Result<(), WorkloadError>
where
    S: EventStore + ?Sized + 'static,
{
    let opened: Vec<_> = (0..n)
        .map(|i| {
            let repo = repo.clone();
            tokio::spawn(async move {
                repo.execute(account_id(i), BankCommand::Open(INITIAL_BALANCE))
                    .await
                    .map_err(|e| WorkloadError::Command {
                        stream: account_id(i),
                        reason: e.to_string(),
                    })
            })
        })
        .collect();
    for o in opened {
        o.await??;
    }
    Ok(())
}

/// The timed phase: `workload.concurrency` tasks, each issuing commands
/// (amounts uniform between 1.00 and 100.00) until it has issued
/// `ops_per_worker` or `duration` has passed, each through
/// [`Repository::execute`] and its conflict retries. The accounts must be
/// open ([`open_accounts`]).
pub async fn run<S>(repo: &Repository<BankAccount, S>, workload: &Workload) -> Result<Outcome, WorkloadError>
where
    S: EventStore + ?Sized + 'static,
{
    let accounts = workload.account_count();
    let net: Arc<Vec<AtomicI64>> = Arc::new((0..accounts).map(|_| AtomicI64::new(0)).collect());
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = workload.duration.map(|d| started + d);
    let workers: Vec<_> = (0..workload.concurrency)
        .map(|_| {
            let (repo, net, retries) = (repo.clone(), Arc::clone(&net), Arc::clone(&retries));
            let (ops, mix, hot) = (
                workload.ops_per_worker,
                workload.mix,
                workload.scenario == Scenario::Hot,
            );
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(if deadline.is_some() { 1 << 16 } else { ops });
                let (mut accepted, mut rejected) = (0u64, 0u64);
                loop {
                    let done = match deadline {
                        Some(deadline) => Instant::now() >= deadline,
                        None => latencies.len() >= ops,
                    };
                    if done {
                        break;
                    }
                    let i = if hot { 0 } else { fastrand::usize(..accounts) };
                    let amount = fastrand::i64(100..=10_000);
                    let cmd = if mix == Mix::Deposit || fastrand::bool() {
                        BankCommand::Deposit(amount)
                    } else {
                        BankCommand::Withdraw(amount)
                    };
                    let t = Instant::now();
                    let res = repo.execute(account_id(i), cmd).await;
                    latencies.push(t.elapsed().as_micros() as u64);
                    match res {
                        Ok(out) => {
                            accepted += 1;
                            retries.fetch_add(u64::from(out.conflict_retries), Ordering::Relaxed);
                            net[i].fetch_add(cmd.delta(), Ordering::Relaxed);
                        }
                        Err(RepositoryError::Rejected(BankError::InsufficientFunds)) => rejected += 1,
                        Err(e) => {
                            return Err(WorkloadError::Command {
                                stream: account_id(i),
                                reason: e.to_string(),
                            })
                        }
                    }
                }
                Ok((latencies, accepted, rejected))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    for w in workers {
        let (l, a, r) = w.await??;
        latencies.extend(l);
        accepted += a;
        rejected += r;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Outcome {
        latencies_us: latencies,
        accepted,
        rejected,
        conflict_retries: retries.load(Ordering::Relaxed),
        secs,
        net: net.iter().map(|n| n.load(Ordering::Relaxed)).collect(),
    })
}
