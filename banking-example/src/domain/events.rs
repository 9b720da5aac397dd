//! The facts an account records.

use es_core::DomainEvent;
use serde::{Deserialize, Serialize};

use super::Money;

/// The account was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCreated {
    /// Name of the owner, trimmed.
    pub owner_name: String,
    /// Opening balance.
    pub initial_balance: Money,
}

/// Money was paid in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyDeposited {
    /// Amount paid in (positive).
    pub amount: Money,
}

/// Money was taken out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyWithdrawn {
    /// Amount taken out (positive).
    pub amount: Money,
}

/// The account was closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountClosed {
    /// Why it was closed.
    pub reason: String,
}

/// Every event of the account aggregate. The stored payload is the serde
/// form `{"MoneyDeposited": {"amount": 5.00}}`; the event metadata (who,
/// correlation, idempotency key) travels in the es-core envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// See [`AccountCreated`].
    AccountCreated(AccountCreated),
    /// See [`MoneyDeposited`].
    MoneyDeposited(MoneyDeposited),
    /// See [`MoneyWithdrawn`].
    MoneyWithdrawn(MoneyWithdrawn),
    /// See [`AccountClosed`].
    AccountClosed(AccountClosed),
}

impl AccountEvent {
    /// The event's own fields as JSON (without the type tag).
    pub fn data(&self) -> serde_json::Value {
        let value = match self {
            Self::AccountCreated(e) => serde_json::to_value(e),
            Self::MoneyDeposited(e) => serde_json::to_value(e),
            Self::MoneyWithdrawn(e) => serde_json::to_value(e),
            Self::AccountClosed(e) => serde_json::to_value(e),
        };
        value.unwrap_or(serde_json::Value::Null)
    }
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::AccountCreated(_) => "AccountCreated",
            Self::MoneyDeposited(_) => "MoneyDeposited",
            Self::MoneyWithdrawn(_) => "MoneyWithdrawn",
            Self::AccountClosed(_) => "AccountClosed",
        }
    }
}
