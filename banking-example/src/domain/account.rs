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
//! - closing requires a zero balance (withdraw the rest first) and no
//!   transfer from the account in flight, so no money is ever stranded on
//!   a closed account and a refund always has somewhere to go;
//! - a transfer's debit is recorded against the transfer until it is
//!   settled or refunded; a refund of a transfer never debited voids it,
//!   and a later debit for it is refused.

use std::collections::{BTreeMap, BTreeSet};

use es_core::Aggregate;
use serde::{Deserialize, Serialize};

use super::{
    AccountClosed, AccountCommand, AccountCreated, AccountError, AccountEvent, Money, MoneyDeposited, MoneyWithdrawn,
    TransferCredited, TransferDebited, TransferRefunded, TransferSettled, TransferVoided,
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
    /// Transfers from this account debited and not yet settled or
    /// refunded, with their amounts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transfers_out: BTreeMap<uuid::Uuid, Money>,
    /// Transfers cancelled before their debit (a debit is refused).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub voided_transfers: BTreeSet<uuid::Uuid>,
}

impl Account {
    /// The money of transfers from this account not yet settled.
    pub fn pending_out(&self) -> Money {
        self.transfers_out
            .values()
            .fold(Money::ZERO, |sum, a| sum.checked_add(*a).unwrap_or(sum))
    }

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
                if !self.transfers_out.is_empty() {
                    return Err(AccountError::TransfersInFlight {
                        count: self.transfers_out.len(),
                    });
                }
                Ok(vec![AccountEvent::AccountClosed(AccountClosed {
                    reason: reason.trim().to_owned(),
                })])
            }
            AccountCommand::DebitForTransfer { transfer, to, amount } => {
                self.require_open()?;
                let amount = positive(*amount)?;
                if self.voided_transfers.contains(transfer) {
                    return Err(AccountError::TransferCancelled(*transfer));
                }
                if self.transfers_out.contains_key(transfer) {
                    return Ok(vec![]);
                }
                if self.balance.checked_sub(amount).is_none() {
                    return Err(AccountError::InsufficientFunds {
                        balance: self.balance,
                        requested: amount,
                    });
                }
                Ok(vec![AccountEvent::TransferDebited(TransferDebited {
                    transfer: *transfer,
                    to: *to,
                    amount,
                })])
            }
            AccountCommand::CreditFromTransfer { transfer, from, amount } => {
                self.require_open()?;
                let amount = positive(*amount)?;
                self.balance.checked_add(amount).ok_or(AccountError::Overflow)?;
                Ok(vec![AccountEvent::TransferCredited(TransferCredited {
                    transfer: *transfer,
                    from: *from,
                    amount,
                })])
            }
            AccountCommand::SettleTransfer { transfer } => Ok(if self.transfers_out.contains_key(transfer) {
                vec![AccountEvent::TransferSettled(TransferSettled { transfer: *transfer })]
            } else {
                vec![]
            }),
            AccountCommand::RefundTransfer { transfer } => Ok(match self.transfers_out.get(transfer) {
                Some(amount) => vec![AccountEvent::TransferRefunded(TransferRefunded {
                    transfer: *transfer,
                    amount: *amount,
                })],
                None if self.voided_transfers.contains(transfer) => vec![],
                None => vec![AccountEvent::TransferVoided(TransferVoided { transfer: *transfer })],
            }),
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
            AccountEvent::TransferDebited(e) => {
                self.balance = self.balance.checked_sub(e.amount).unwrap_or(Money::ZERO);
                self.transfers_out.insert(e.transfer, e.amount);
            }
            AccountEvent::TransferCredited(e) => {
                self.balance = self.balance.checked_add(e.amount).unwrap_or(self.balance);
            }
            AccountEvent::TransferSettled(e) => {
                self.transfers_out.remove(&e.transfer);
            }
            AccountEvent::TransferRefunded(e) => {
                self.balance = self.balance.checked_add(e.amount).unwrap_or(self.balance);
                self.transfers_out.remove(&e.transfer);
            }
            AccountEvent::TransferVoided(e) => {
                self.voided_transfers.insert(e.transfer);
            }
        }
    }
}
