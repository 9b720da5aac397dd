//! The account read model that `GET /accounts` and `GET /accounts/{id}`
//! are served from, kept by es-core's one projection runner.
//!
//! - With `DATABASE_URL`: the table `<schema>.accounts_v<N>` written by
//!   [`AccountsTable`] through es-postgres's transactional unit (rows and
//!   checkpoint in one transaction per page), read through the view
//!   `<schema>.accounts`, which [`BlueGreen`] points at the active version.
//!   A restart resumes from the stored checkpoint: start-up reads no log.
//!   A new version of the projection is built beside the serving one and
//!   readers switch when it has caught up.
//! - On the embedded SQLite store (the server's default): the table
//!   `accounts` in the same file, written by [`SqliteAccountsTable`]
//!   through es-sqlite's transactional unit; a restart resumes from the
//!   stored checkpoint too.
//! - In memory (`STORE=memory`): [`InMemoryAccounts`], rebuilt from the
//!   (in-memory) log.
//!
//! Read-your-writes, on the read side: a command answers from its own
//! outcome as soon as its events are committed, without waiting for the
//! projection. A `GET /accounts/{id}` right after, on any instance, still
//! returns at least that version: a row older than its stream is not
//! served, the account is folded from the log instead. `GET /accounts`
//! waits (bounded by `READ_YOUR_WRITES_WAIT_MS`) until the projection has
//! passed every committed event.

mod memory;
mod net;
mod postgres;
mod row;
mod sqlite;
mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{
    EventCodec, EventStore, InMemoryCheckpointStore, ProjectionConfig, ProjectionError, ProjectionRunner,
    ProjectorUnit, StoreError, Typed,
};
use es_postgres::{BlueGreen, BlueGreenError, PgProjectionUnit, PgTyped, PostgresEventStore, SwitchOutcome};
use es_sqlite::{SqliteEventStore, SqliteProjectionUnit, SqliteTyped};
use uuid::Uuid;

pub use memory::InMemoryAccounts;
pub use postgres::{AccountsTable, PgAccounts};
pub use row::{arrival, AccountRow};
pub use sqlite::{SqliteAccounts, SqliteAccountsTable, SQLITE_ACCOUNTS};
pub use view::{AccountView, AccountViewStatus};

use crate::domain::upcasters;

/// Name (and checkpoint key) of the in-memory projection.
pub const PROJECTION: &str = "account_view";
/// The blue/green projection and its reader view in PostgreSQL.
pub const ACCOUNTS: &str = "accounts";
/// The version of the PostgreSQL accounts projection this build writes.
/// Bump it when the table's shape or the fold changes: the new version is
/// rebuilt beside the old one and readers switch when it has caught up.
/// Version 2 added `in_flight` (transfers).
pub const ACCOUNTS_VERSION: u32 = 2;

/// Queries of the account read model.
#[async_trait]
pub trait AccountQueries: Send + Sync + 'static {
    /// The account, if it exists (and has been projected).
    async fn get(&self, id: Uuid) -> Result<Option<AccountView>, StoreError>;
    /// A page of the accounts owned by `owner` (all accounts for `None`),
    /// in id order (creation order for UUIDv7 ids), and how many there are.
    async fn list(
        &self,
        owner: Option<Uuid>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<AccountView>, usize), StoreError>;
}

/// Why the read side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// Catching up the projection failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// Reading or switching the active version failed.
    #[error(transparent)]
    BlueGreen(#[from] BlueGreenError),
}

/// The read side: queries and the runner that keeps them current.
#[derive(Clone)]
pub struct ReadSide {
    /// The account queries.
    pub queries: Arc<dyn AccountQueries>,
    /// The projection runner.
    pub runner: ProjectionRunner,
    /// `postgres`, `sqlite` or `memory`.
    pub backend: &'static str,
}

/// How the account projection runs: pages of 1,000 events, live wake-ups
/// with a 250 ms polling fallback, 10 ms of linger after a wake-up (under
/// load, pages of a hundred events instead of ten: fewer transactions for
/// the same rows; commands never wait for the projection, and a list that
/// must show them cuts the linger short, see [`crate::api`]'s
/// read-your-writes), and (the default) stopping on an event it cannot
/// apply rather than skipping it.
pub fn projection_config() -> ProjectionConfig {
    ProjectionConfig {
        batch_size: 1000,
        poll_interval: Duration::from_millis(250),
        linger: Duration::from_millis(10),
        ..ProjectionConfig::default()
    }
}

fn codec() -> EventCodec {
    EventCodec::new(upcasters())
}

fn blue_green(store: &PostgresEventStore) -> Result<BlueGreen, BlueGreenError> {
    BlueGreen::new(store, ACCOUNTS, &[ACCOUNTS])
}

/// The runner of version `version` of the PostgreSQL accounts projection.
pub fn postgres_runner(store: &PostgresEventStore, version: u32) -> Result<ProjectionRunner, BlueGreenError> {
    let bg = blue_green(store)?;
    let table = AccountsTable::new(bg.projection_name(version), bg.table(ACCOUNTS, version));
    let typed = PgTyped::new(Arc::new(table)).with_codec(codec());
    Ok(PgProjectionUnit::new(store, Arc::new(typed))
        .runner()
        .with_config(projection_config()))
}

/// The projections of this application over `store`, for operators
/// (`es-admin`): the accounts projection of this build's version.
pub fn projection_runners(store: &PostgresEventStore) -> Vec<ProjectionRunner> {
    match postgres_runner(store, ACCOUNTS_VERSION) {
        Ok(runner) => vec![runner],
        Err(e) => {
            tracing::error!(error = %e, "accounts projection unavailable");
            Vec::new()
        }
    }
}

/// The read side over PostgreSQL. On the very first start (no version
/// serves readers yet) the projection is built before this returns; when
/// an older version serves, this one is built in the background and
/// readers switch once it has caught up.
pub async fn postgres(store: &PostgresEventStore) -> Result<ReadSide, ReadModelError> {
    let bg = blue_green(store)?;
    let runner = postgres_runner(store, ACCOUNTS_VERSION)?;
    // Whether readers are switched to this build's version.
    let serving = Arc::new(AtomicBool::new(false));
    match bg.active().await? {
        None => {
            tracing::info!(version = ACCOUNTS_VERSION, "building the accounts read model");
            activate(&bg, &runner).await?;
            serving.store(true, Ordering::Release);
        }
        Some(v) if v == ACCOUNTS_VERSION => serving.store(true, Ordering::Release),
        Some(v) if v < ACCOUNTS_VERSION => {
            tracing::info!(
                serving = v,
                building = ACCOUNTS_VERSION,
                "rebuilding the accounts read model beside the serving version"
            );
            let (bg, runner, serving) = (bg.clone(), runner.clone(), Arc::clone(&serving));
            tokio::spawn(async move {
                // Until readers are switched: a failed rebuild (the
                // database restarting, say) is tried again, never left
                // with readers on the old version for good.
                let mut pause = REBUILD_RETRY_FIRST;
                while let Err(e) = activate(&bg, &runner).await {
                    tracing::error!(error = %e, retry_in = ?pause, "switching readers to the new accounts version failed");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(REBUILD_RETRY_MAX);
                }
                serving.store(true, Ordering::Release);
            });
        }
        Some(v) => {
            tracing::warn!(
                serving = v,
                ours = ACCOUNTS_VERSION,
                "a newer accounts version serves readers; this process keeps its own version current"
            );
        }
    }
    let queries = PgAccounts::new(store, format!("{}.{ACCOUNTS}", store.schema())).own_version(
        bg.table(ACCOUNTS, ACCOUNTS_VERSION),
        runner.clone(),
        serving,
    );
    Ok(ReadSide {
        queries: Arc::new(queries),
        runner,
        backend: "postgres",
    })
}

/// The first pause before a failed background rebuild is tried again.
const REBUILD_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest pause between tries of a failing background rebuild.
const REBUILD_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Catches `runner` up and switches readers to it, until it is not behind.
async fn activate(bg: &BlueGreen, runner: &ProjectionRunner) -> Result<(), ReadModelError> {
    loop {
        runner.catch_up().await?;
        match bg.switch(ACCOUNTS_VERSION).await? {
            SwitchOutcome::Behind { .. } => continue,
            SwitchOutcome::Switched { from, to } => {
                tracing::info!(?from, to, "readers see the new accounts read model");
                return Ok(());
            }
            SwitchOutcome::AlreadyActive => return Ok(()),
        }
    }
}

/// The read side in the SQLite file of `store`, caught up before it
/// returns (from the stored checkpoint: after a restart, only what is new).
pub async fn sqlite(store: &SqliteEventStore) -> Result<ReadSide, ReadModelError> {
    let typed = SqliteTyped::new(Arc::new(SqliteAccountsTable)).with_codec(codec());
    let runner = SqliteProjectionUnit::new(store, Arc::new(typed))
        .runner()
        .with_config(projection_config());
    runner.catch_up().await?;
    Ok(ReadSide {
        queries: Arc::new(SqliteAccounts::new(store)),
        runner,
        backend: "sqlite",
    })
}

/// The read side in memory, over `store`'s log, caught up before it
/// returns.
pub async fn in_memory(store: Arc<dyn EventStore>) -> Result<ReadSide, ReadModelError> {
    let model = Arc::new(InMemoryAccounts::new());
    let typed = Typed::new(Arc::clone(&model)).with_codec(codec());
    let unit = ProjectorUnit::new(Arc::new(typed), Arc::new(InMemoryCheckpointStore::new()));
    let runner = ProjectionRunner::new(store, Arc::new(unit)).with_config(projection_config());
    runner.catch_up().await?;
    Ok(ReadSide {
        queries: model,
        runner,
        backend: "memory",
    })
}
