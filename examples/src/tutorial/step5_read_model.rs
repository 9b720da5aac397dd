//! Step 5: a read model in PostgreSQL, kept by the projection engine.

use std::sync::Arc;
use std::time::Duration;

use es_core::{
    CommandOutcome, EventEnvelope, ProjectionRunner, Repository, RepositoryError, StoreError, StreamId, View,
};
use es_postgres::{PgProjectionUnit, PgTyped, PgViews, PostgresEventStore};
use serde::{Deserialize, Serialize};

use super::step1_account::{Account, AccountCommand, AccountError, AccountEvent};

// ANCHOR: view
/// What the account pages show: folded from the account's events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccountSummary {
    /// The owner.
    pub owner: String,
    /// The balance, in cents.
    pub balance: i64,
    /// Deposits and withdrawals so far.
    pub movements: u64,
    /// Whether the account is closed.
    pub closed: bool,
}

impl View for AccountSummary {
    type Aggregate = Account;

    fn apply(&mut self, e: &EventEnvelope<AccountEvent>) {
        match &e.event {
            AccountEvent::Opened { owner, initial_balance } => {
                self.owner.clone_from(owner);
                self.balance = *initial_balance;
            }
            AccountEvent::Deposited { amount } => {
                self.balance += amount;
                self.movements += 1;
            }
            AccountEvent::Withdrawn { amount } => {
                self.balance -= amount;
                self.movements += 1;
            }
            AccountEvent::Closed => self.closed = true,
        }
    }
}
// ANCHOR_END: view

// ANCHOR: runner
/// The summaries, kept as JSONB in `<schema>.account_summaries`, and the
/// runner that keeps them: each page of events and the checkpoint commit
/// in one transaction.
pub fn account_summaries(
    pg: &PostgresEventStore,
) -> Result<(Arc<PgViews<AccountSummary>>, ProjectionRunner), StoreError> {
    let views = Arc::new(PgViews::<AccountSummary>::new(pg, "account_summaries")?);
    let runner = PgProjectionUnit::new(pg, Arc::new(PgTyped::new(Arc::clone(&views)))).runner();
    Ok((views, runner))
}
// ANCHOR_END: runner

// ANCHOR: read_your_writes
/// Runs a command, then waits (up to five seconds) until the read model has
/// applied its events, so the caller reads its own write.
pub async fn execute_and_wait(
    accounts: &Repository<Account>,
    runner: &ProjectionRunner,
    id: &str,
    command: AccountCommand,
) -> Result<CommandOutcome<Account>, RepositoryError<AccountError>> {
    let outcome = accounts.execute(id, command).await?;
    if let Some(&position) = outcome.append.as_ref().and_then(|a| a.positions.last()) {
        // false after the timeout: the view may still be behind.
        runner.wait_for(position, Duration::from_secs(5)).await;
    }
    Ok(outcome)
}

/// The summary of account `id`, if the projection has seen it.
pub async fn summary(views: &PgViews<AccountSummary>, id: &str) -> Result<Option<AccountSummary>, StoreError> {
    Ok(views.get(&StreamId::from(id)).await?.map(|v| v.state))
}
// ANCHOR_END: read_your_writes
