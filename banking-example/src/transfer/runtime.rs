//! [`Transfers`]: the transfer streams, their process driver and its
//! runner, on the application's backends.

use std::sync::Arc;
use std::time::Duration;

use es_core::{
    Clock, DeadlineStore, EventStore, InMemoryCheckpointStore, InMemoryDeadlines, ProcessConfig, ProcessDriver,
    ProcessUnit, ProjectionConfig, ProjectionRunner, Repository,
};
use es_postgres::{PgProcess, PostgresDeadlineStore, PostgresEventStore};
use es_sqlite::{SqliteCheckpointStore, SqliteDeadlineStore, SqliteEventStore};

use super::{Transfer, TransferManager};
use crate::domain::Account;

/// The transfers of the application: their repository, the driver that
/// moves them and the runner that wakes it (on PostgreSQL, es-postgres's
/// transactional unit, so one instance drives a page at a time; on SQLite
/// and in memory, es-core's `ProcessUnit` with the store's checkpoints).
#[derive(Clone)]
pub struct Transfers {
    /// The transfer streams.
    pub repo: Repository<Transfer>,
    /// The driver (also records passed deadlines).
    pub driver: Arc<ProcessDriver<TransferManager>>,
    /// The runner of the driver on the projection engine.
    pub runner: ProjectionRunner,
    /// How long a transfer may wait for its debit.
    pub timeout: Duration,
    /// The clock deadlines are set and checked by.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Transfers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfers")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Pages of 256 events, a 250 ms polling fallback, 20 ms of linger after
/// a wake-up, and stopping (not skipping) on a transfer that keeps
/// failing: money in flight waits for the cause to be fixed rather than
/// for an operator to find a dead letter.
///
/// Under deposits every append wakes this runner, which finds no transfer
/// event in most pages. Letting events gather for 20 ms makes that at most
/// 50 reads a second, for at most 20 ms more per transfer step; and a move
/// of the checkpoint past events it does not take is written with its next
/// transfer step, or within a second (`skip_checkpoint_interval`), rather
/// than as a transaction per wake-up.
pub fn runner_config() -> ProjectionConfig {
    ProjectionConfig {
        batch_size: 256,
        poll_interval: Duration::from_millis(250),
        linger: Duration::from_millis(20),
        skip_checkpoint_interval: Duration::from_secs(1),
        ..ProjectionConfig::default()
    }
}

/// Where transfers live: the event store, and which database it is (for
/// the checkpoint and the deadlines).
#[derive(Clone)]
pub struct TransferStores {
    /// The event store (the transfer streams).
    pub store: Arc<dyn EventStore>,
    /// Set when it is PostgreSQL.
    pub postgres: Option<PostgresEventStore>,
    /// Set when it is SQLite.
    pub sqlite: Option<SqliteEventStore>,
    /// The clock deadlines are set and checked by.
    pub clock: Arc<dyn Clock>,
}

impl Transfers {
    /// Transfers in `stores`, issuing account commands through `accounts`;
    /// a transfer not debited `timeout` after its request fails.
    pub fn new(stores: TransferStores, accounts: Repository<Account>, timeout: Duration) -> Self {
        let backends = &stores;
        let repo = Repository::<Transfer>::builder(Arc::clone(&backends.store)).build();
        let deadlines: Arc<dyn DeadlineStore> = match (&backends.postgres, &backends.sqlite) {
            (Some(pg), _) => Arc::new(PostgresDeadlineStore::new(pg)),
            (None, Some(sqlite)) => Arc::new(SqliteDeadlineStore::new(sqlite)),
            (None, None) => Arc::new(InMemoryDeadlines::new()),
        };
        let driver = Arc::new(
            ProcessDriver::new(Arc::new(TransferManager::new(accounts)), repo.clone())
                .with_deadlines(deadlines)
                .with_clock(Arc::clone(&backends.clock))
                .with_config(ProcessConfig::default()),
        );
        let runner = match (&backends.postgres, &backends.sqlite) {
            (Some(pg), _) => PgProcess::runner(pg, Arc::clone(&driver)),
            (None, Some(sqlite)) => {
                ProcessUnit::new(Arc::clone(&driver), Arc::new(SqliteCheckpointStore::new(sqlite))).runner()
            }
            (None, None) => ProcessUnit::new(Arc::clone(&driver), Arc::new(InMemoryCheckpointStore::new())).runner(),
        }
        .with_config(runner_config());
        Self {
            repo,
            driver,
            runner,
            timeout,
            clock: Arc::clone(&backends.clock),
        }
    }
}
