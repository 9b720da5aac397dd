//! The account aggregate.
//!
//! Rules:
//! - an account is opened once, with a non-empty owner name and a
//!   non-negative opening balance;
//! - deposits and withdrawals are positive amounts with at most two decimal
//!   places (the per-transaction maximum is a configurable policy checked by
//!   [`MaxTransactionAmount`](super::MaxTransactionAmount) on the command
//!   path);
//! - a withdrawal never takes the balance below zero;
//! - nothing happens to a closed account;
//! - closing requires a zero balance (withdraw the rest first), so no money
//!   is ever stranded on a closed account.

use es_core::Aggregate;
use serde::{Deserialize, Serialize};

use super::{
    AccountClosed, AccountCommand, AccountCreated, AccountError, AccountEvent, Money, MoneyDeposited, MoneyWithdrawn,
};

/// Lifecycle of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// No `AccountCreated` yet (the default state of any stream).
    #[default]
    NotOpened,
    /// Open for business.
    Open,
    /// Closed for good.
    Closed,
}

/// State of one account, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Owner's name.
    pub owner_name: String,
    /// Current balance (never negative).
    pub balance: Money,
    /// Lifecycle.
    pub status: AccountStatus,
    /// The owning user, when known.
    #[serde(default)]
    pub owner_id: Option<uuid::Uuid>,
}

impl Account {
    fn require_open(&self) -> Result<(), AccountError> {
        match self.status {
            AccountStatus::NotOpened => Err(AccountError::NotFound),
            AccountStatus::Closed => Err(AccountError::Closed),
            AccountStatus::Open => Ok(()),
        }
    }
}

fn positive(amount: Money) -> Result<Money, AccountError> {
    if amount.is_zero() {
        return Err(AccountError::Invalid("amount must be greater than zero".into()));
    }
    Ok(amount)
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match command {
            AccountCommand::Open {
                owner_name,
                initial_balance,
                owner_id,
            } => {
                if self.status != AccountStatus::NotOpened {
                    return Err(AccountError::AlreadyExists);
                }
                let owner_name = owner_name.trim();
                if owner_name.is_empty() {
                    return Err(AccountError::Invalid("owner_name is required".into()));
                }
                Ok(vec![AccountEvent::AccountCreated(AccountCreated {
                    owner_name: owner_name.to_owned(),
                    initial_balance: *initial_balance,
                    owner_id: *owner_id,
                })])
            }
            AccountCommand::Deposit { amount } => {
                self.require_open()?;
                let amount = positive(*amount)?;
                self.balance.checked_add(amount).ok_or(AccountError::Overflow)?;
                Ok(vec![AccountEvent::MoneyDeposited(MoneyDeposited { amount })])
            }
            AccountCommand::Withdraw { amount } => {
                self.require_open()?;
                let amount = positive(*amount)?;
                if self.balance.checked_sub(amount).is_none() {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: amount,
                    });
                }
                Ok(vec![AccountEvent::MoneyWithdrawn(MoneyWithdrawn { amount })])
            }
            AccountCommand::Close { reason } => {
                self.require_open()?;
                if !self.balance.is_zero() {
                    return Err(AccountError::NonZeroBalance { balance: self.balance });
                }
                Ok(vec![AccountEvent::AccountClosed(AccountClosed {
                    reason: reason.trim().to_owned(),
                })])
            }
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountCreated(e) => {
                self.owner_name.clone_from(&e.owner_name);
                self.balance = e.initial_balance;
                self.owner_id = e.owner_id;
                self.status = AccountStatus::Open;
            }
            // `handle` proved these stay in range; saturate defensively
            // rather than panic on a corrupt history.
            AccountEvent::MoneyDeposited(e) => {
                self.balance = self.balance.checked_add(e.amount).unwrap_or(self.balance);
            }
            AccountEvent::MoneyWithdrawn(e) => {
                self.balance = self.balance.checked_sub(e.amount).unwrap_or(Money::ZERO);
            }
            AccountEvent::AccountClosed(_) => self.status = AccountStatus::Closed,
        }
    }
}
