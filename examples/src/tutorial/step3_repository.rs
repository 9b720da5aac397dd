//! Step 3: commands through a repository, on the in-memory backends.

use std::sync::Arc;

use es_core::{
    CommandContext, CommandOutcome, EventStore, InMemoryEventStore, InMemoryStateCache, Repository, RepositoryError,
};

use super::step1_account::{Account, AccountCommand, AccountError};

// ANCHOR: repository
/// Accounts on the in-memory event store, with up to 100,000 states cached.
pub fn in_memory_accounts() -> Repository<Account> {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    Repository::<Account>::builder(store)
        .cache(Arc::new(InMemoryStateCache::new(100_000)))
        .build()
}
// ANCHOR_END: repository

// ANCHOR: execute
/// Opens account `id` with 100.00 (10,000 cents) and deposits 10.25 into it, the deposit
/// only if the account is still at version 1 (what the caller saw).
pub async fn open_and_deposit(
    accounts: &Repository<Account>,
    id: &str,
) -> Result<CommandOutcome<Account>, RepositoryError<AccountError>> {
    let open = AccountCommand::Open {
        owner: "Ada".into(),
        initial_balance: 10_000,
    };
    accounts.execute(id, open).await?;
    let deposit = AccountCommand::Deposit { amount: 1_025 };
    // A stale `expect_version` answers RepositoryError::Conflict (an HTTP 409).
    accounts
        .execute_in(id, deposit, CommandContext::default().expect_version(1))
        .await
}
// ANCHOR_END: execute
