//! The book's chapter on projections: a read model in SQL, its runner,
//! replays and dead letters.

use std::sync::Arc;

use es_core::{
    BoxError, EventEnvelope, OnFailure, ProjectionConfig, ProjectionError, ProjectionReport, ProjectionRunner,
    ReplayMode,
};
use es_postgres::sqlx::{self, PgConnection};
use es_postgres::{PgProjectionUnit, PgTyped, PgTypedProjector, PostgresEventStore};

use super::step1_account::{Account, AccountEvent};

// ANCHOR: projector
/// Balances per account in the table `<schema>.balances`, written in the
/// transaction that moves the projection's checkpoint. Each row keeps the
/// stream version it includes, so an event applied again (a replay from a
/// position) changes nothing.
pub struct Balances {
    table: String,
}

impl Balances {
    /// The projection in `pg`'s schema.
    pub fn new(pg: &PostgresEventStore) -> Self {
        Self {
            table: format!("{}.balances", pg.schema()),
        }
    }

    /// The balance of `id`, as the projection has it.
    pub async fn balance(&self, pg: &PostgresEventStore, id: &str) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(&format!("SELECT balance FROM {} WHERE id = $1", self.table))
            .bind(id)
            .fetch_optional(pg.pool())
            .await
    }
}

#[es_core::async_trait]
impl PgTypedProjector for Balances {
    type Aggregate = Account;

    fn name(&self) -> &str {
        "balances"
    }

    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} (id TEXT PRIMARY KEY, balance BIGINT NOT NULL, version BIGINT NOT NULL)",
            self.table
        );
        sqlx::query(&sql).execute(tx).await?;
        Ok(())
    }

    async fn apply(&self, tx: &mut PgConnection, e: &EventEnvelope<AccountEvent>) -> Result<(), BoxError> {
        let change = match &e.event {
            AccountEvent::Opened { initial_balance, .. } => *initial_balance,
            AccountEvent::Deposited { amount } => *amount,
            AccountEvent::Withdrawn { amount } => -amount,
            AccountEvent::Closed => 0,
        };
        let sql = format!(
            "INSERT INTO {t} AS b (id, balance, version) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET balance = b.balance + EXCLUDED.balance, version = EXCLUDED.version \
             WHERE b.version < EXCLUDED.version",
            t = self.table
        );
        let version = i64::try_from(e.version)?;
        sqlx::query(&sql)
            .bind(e.stream_id.as_str())
            .bind(change)
            .bind(version)
            .execute(tx)
            .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("TRUNCATE {}", self.table)).execute(tx).await?;
        Ok(())
    }
}
// ANCHOR_END: projector

// ANCHOR: runner
/// The runner of [`Balances`]: pages of 500 events; an event the projector
/// still fails on after its retries is set aside as a dead letter instead
/// of stopping the projection (the default is to stop, loudly).
pub fn balances_runner(pg: &PostgresEventStore, balances: Arc<Balances>) -> ProjectionRunner {
    let config = ProjectionConfig {
        batch_size: 500,
        on_failure: OnFailure::DeadLetter,
        ..ProjectionConfig::default()
    };
    PgProjectionUnit::new(pg, Arc::new(PgTyped::new(balances)))
        .runner()
        .with_config(config)
}
// ANCHOR_END: runner

// ANCHOR: replay
/// Rebuilds the read model from the whole log: `reset` and checkpoint 0
/// in one transaction, then every page again.
pub async fn rebuild(runner: &ProjectionRunner) -> Result<ProjectionReport, ProjectionError> {
    runner.replay(ReplayMode::Full).await
}

/// Applies everything after `position` again: harmless here, since each
/// row skips the versions it already includes.
pub async fn replay_from(runner: &ProjectionRunner, position: u64) -> Result<ProjectionReport, ProjectionError> {
    runner.replay(ReplayMode::From(position)).await
}
// ANCHOR_END: replay
