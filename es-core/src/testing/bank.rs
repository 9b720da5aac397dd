//! The standard bank workload, for benchmarking an event store through
//! the repository (feature `testing`).
//!
//! Every performance figure of this project is taken on this workload
//! (`docs/bench/WORKLOAD.md` in the repository), and each backend's bench
//! example drives it through this module, so the figures of two stores
//! come from the same loop:
//!
//! - [`BankAccount`]: the aggregate (balances in cents; a withdrawal over
//!   the balance is rejected).
//! - [`Workload`]: accounts, workers, commands per worker or a duration,
//!   the scenario (uniform or one hot account) and the mix.
//! - [`open_accounts`], then [`run`]: the timed phase; its [`Outcome`]
//!   holds every command's latency and what each account should hold.
//! - [`verify`]: replays every account from the store and lists what does
//!   not match (versions gapless, balances as acknowledged, never
//!   negative, events stored = accounts + accepted).
//! - [`append_only`] and [`seed_stream`] / [`time_loads`]: the raw append
//!   and the rehydration measures.
//! - [`Lags`]: how late events reach a projection following the log
//!   during the run.
//!
//! ```
//! use std::sync::Arc;
//! use es_core::testing::bank::{self, BankAccount, Workload};
//! use es_core::{EventStore, InMemoryEventStore, Repository};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
//! let repo = Repository::<BankAccount, dyn EventStore>::builder(Arc::clone(&store)).build();
//! let workload = Workload { accounts: 10, concurrency: 4, ops_per_worker: 25, ..Workload::default() };
//! bank::open_accounts(&repo, workload.account_count()).await?;
//! let outcome = bank::run(&repo, &workload).await?;
//! assert_eq!(outcome.ops(), 100);
//! let stored = 10 + outcome.accepted;
//! assert!(bank::verify(&*store, &outcome, stored).await?.is_empty());
//! # Ok(())
//! # }
//! ```

mod account;
mod lags;
mod latency;
mod measures;
mod verify;
mod workload;

pub use account::{BankAccount, BankCommand, BankError, BankEvent, INITIAL_BALANCE};
pub use lags::Lags;
pub use latency::{latency_cdf, percentile};
pub use measures::{append_only, seed_stream, time_loads, AppendOnly};
pub use verify::verify;
pub use workload::{account_id, open_accounts, run, Mix, Outcome, Scenario, Workload, WorkloadError};
