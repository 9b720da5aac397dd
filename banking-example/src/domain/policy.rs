//! The configurable per-transaction maximum, enforced on the command path
//! as an es-core [`EventValidator`] (so it holds for every caller of the
//! repository, not only the HTTP API).

use es_core::EventValidator;

use super::{Account, AccountEvent, Money};

/// Rejects any event that moves more than `max` in one go (opening
/// balance, deposit or withdrawal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxTransactionAmount {
    /// The largest amount one transaction may move.
    pub max: Money,
}

impl EventValidator<Account> for MaxTransactionAmount {
    fn validate(&self, _state: &Account, events: &[AccountEvent]) -> Result<(), String> {
        for event in events {
            let amount = match event {
                AccountEvent::AccountCreated(e) => e.initial_balance,
                AccountEvent::MoneyDeposited(e) => e.amount,
                AccountEvent::MoneyWithdrawn(e) => e.amount,
                AccountEvent::TransferDebited(e) => e.amount,
                // A transfer's later steps move money already debited
                // under the limit: refusing them would strand it.
                AccountEvent::AccountClosed(_)
                | AccountEvent::TransferCredited(_)
                | AccountEvent::TransferSettled(_)
                | AccountEvent::TransferRefunded(_)
                | AccountEvent::TransferVoided(_) => continue,
            };
            if amount > self.max {
                return Err(format!("amount must not exceed {}", self.max));
            }
        }
        Ok(())
    }
}
