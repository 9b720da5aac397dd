//! The check after a run: every account replayed from the store.

use futures::TryStreamExt;

use super::account::{BankAccount, BankEvent};
use super::workload::{account_id, Outcome, WorkloadError};
use crate::{Aggregate, EventStore};

/// Replays every account of `outcome` from `store` and returns what does
/// not match (empty when all does): versions 1..n without gaps, the
/// balance never negative along the replay, the final balance as the
/// acknowledged commands make it, and `events_in_store` (the store's count
/// of all its events) equal to the accounts plus the accepted commands.
/// A payload that does not decode is listed too; an error means the store
/// could not be read.
pub async fn verify<S>(store: &S, outcome: &Outcome, events_in_store: u64) -> Result<Vec<String>, WorkloadError>
where
    S: EventStore + ?Sized,
{
    let accounts = outcome.net.len() as u64;
    let mut failures = Vec::new();
    if events_in_store != accounts + outcome.accepted {
        failures.push(format!(
            "events in store {events_in_store} != accounts {accounts} + accepted {}",
            outcome.accepted
        ));
    }
    for i in 0..outcome.net.len() {
        let id = account_id(i);
        let records: Vec<_> = store.read_stream(&id, 1).try_collect().await?;
        let mut state = BankAccount::default();
        for (k, r) in records.iter().enumerate() {
            if r.version != k as u64 + 1 {
                failures.push(format!("{id}: version {} at index {k}", r.version));
                break;
            }
            match serde_json::from_value::<BankEvent>(r.payload.clone()) {
                Ok(e) => state.apply(&e),
                Err(e) => {
                    failures.push(format!("{id}: version {} does not decode: {e}", r.version));
                    break;
                }
            }
            if state.balance < 0 {
                failures.push(format!("{id}: negative balance at version {}", r.version));
            }
        }
        let expected = outcome.expected_balance(i);
        if state.balance != expected {
            failures.push(format!("{id}: balance {} != expected {expected}", state.balance));
        }
    }
    Ok(failures)
}
