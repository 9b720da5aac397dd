//! Step 6: a request retried by the client applies once.

use std::time::Duration;

use es_core::{
    BoxError, CommandContext, CommandDeduplicator, CommandOutcome, DedupStatus, Repository, RepositoryError,
};
use serde_json::json;
use uuid::Uuid;

use super::step1_account::{Account, AccountCommand, AccountError};

// ANCHOR: command_id
/// Deposits under a command id: the event ids derive from it, so the store
/// itself recognises a retry, even after a crash between the commit and
/// the answer (`already_applied` is then true and nothing is appended).
pub async fn deposit_once(
    accounts: &Repository<Account>,
    id: &str,
    amount: i64,
    command_id: Uuid,
) -> Result<CommandOutcome<Account>, RepositoryError<AccountError>> {
    let ctx = CommandContext::default().with_command_id(command_id);
    accounts.execute_in(id, AccountCommand::Deposit { amount }, ctx).await
}
// ANCHOR_END: command_id

// ANCHOR: dedup
/// Namespace of the command ids derived from idempotency keys.
const IDEMPOTENCY_KEYS: Uuid = Uuid::from_u128(0x6d1f_0e2a_4b3c_4d5e_8f70_1a2b_3c4d_5e6f);

/// What an HTTP handler does with an `Idempotency-Key`: the first request
/// runs the command and stores its answer; a repeat gets the same answer.
pub async fn deposit_request(
    dedup: &dyn CommandDeduplicator,
    accounts: &Repository<Account>,
    id: &str,
    amount: i64,
    idempotency_key: &str,
) -> Result<serde_json::Value, BoxError> {
    let claim = match dedup.begin_or_wait(idempotency_key, Duration::from_secs(5)).await? {
        DedupStatus::Completed(first_answer) => return Ok(first_answer),
        DedupStatus::InProgress => return Err("a request with this key is still running".into()),
        DedupStatus::Started(claim) => claim,
    };
    let command_id = Uuid::new_v5(&IDEMPOTENCY_KEYS, idempotency_key.as_bytes());
    match deposit_once(accounts, id, amount, command_id).await {
        Ok(out) => {
            let answer = json!({ "balance": out.state.balance, "version": out.version });
            // The deposit is applied, so this is the answer even if it
            // cannot be kept for retries (the store is down, or this call
            // was so slow that a retry took the key: `ClaimLost`); the
            // command id still keeps any retry from applying it twice.
            let _kept = dedup.complete(idempotency_key, &claim, &answer).await;
            Ok(answer)
        }
        Err(e) => {
            dedup.abandon(idempotency_key, &claim).await?; // a retry may run it again
            Err(e.into())
        }
    }
}
// ANCHOR_END: dedup
