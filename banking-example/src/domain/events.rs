//! The facts an account records.

use es_core::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Money;

/// The account was opened.
///
/// Schema version 2 added `owner_id`; version 1 events kept it in the
/// `owner_id` metadata header, and the [`OwnerIdFromHeader`](super::OwnerIdFromHeader)
/// upcaster moves it into the payload on read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCreated {
    /// Name of the owner, trimmed.
    pub owner_name: String,
    /// Opening balance.
    pub initial_balance: Money,
    /// The user who owns the account (none for accounts opened without
    /// authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
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

/// Money was taken out for a transfer; it is in flight until the
/// destination is credited (or it is refunded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferDebited {
    /// The transfer.
    pub transfer: Uuid,
    /// The destination account.
    pub to: Uuid,
    /// Amount (positive).
    pub amount: Money,
}

/// The money of a transfer arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferCredited {
    /// The transfer.
    pub transfer: Uuid,
    /// The source account.
    pub from: Uuid,
    /// Amount (positive).
    pub amount: Money,
}

/// A transfer from this account completed: its debit is no longer
/// pending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSettled {
    /// The transfer.
    pub transfer: Uuid,
}

/// The money of a transfer that could not complete came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRefunded {
    /// The transfer.
    pub transfer: Uuid,
    /// Amount given back.
    pub amount: Money,
}

/// A transfer was cancelled before its debit: a later debit is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferVoided {
    /// The transfer.
    pub transfer: Uuid,
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
    /// See [`TransferDebited`].
    TransferDebited(TransferDebited),
    /// See [`TransferCredited`].
    TransferCredited(TransferCredited),
    /// See [`TransferSettled`].
    TransferSettled(TransferSettled),
    /// See [`TransferRefunded`].
    TransferRefunded(TransferRefunded),
    /// See [`TransferVoided`].
    TransferVoided(TransferVoided),
}

impl AccountEvent {
    /// The event's own fields as JSON (without the type tag).
    pub fn data(&self) -> serde_json::Value {
        let value = match self {
            Self::AccountCreated(e) => serde_json::to_value(e),
            Self::MoneyDeposited(e) => serde_json::to_value(e),
            Self::MoneyWithdrawn(e) => serde_json::to_value(e),
            Self::AccountClosed(e) => serde_json::to_value(e),
            Self::TransferDebited(e) => serde_json::to_value(e),
            Self::TransferCredited(e) => serde_json::to_value(e),
            Self::TransferSettled(e) => serde_json::to_value(e),
            Self::TransferRefunded(e) => serde_json::to_value(e),
            Self::TransferVoided(e) => serde_json::to_value(e),
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
            Self::TransferDebited(_) => "TransferDebited",
            Self::TransferCredited(_) => "TransferCredited",
            Self::TransferSettled(_) => "TransferSettled",
            Self::TransferRefunded(_) => "TransferRefunded",
            Self::TransferVoided(_) => "TransferVoided",
        }
    }

    fn schema_version(&self) -> u32 {
        match self {
            Self::AccountCreated(_) => 2,
            _ => 1,
        }
    }
}
