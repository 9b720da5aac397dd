//! A small bank-account aggregate used by the es-core tests.
#![allow(dead_code)]

pub(crate) mod counting;

use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Wallet {
    pub balance: i64,
    pub closed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum WalletEvent {
    Credited { amount: i64 },
    Debited { amount: i64 },
    Closed,
}

impl DomainEvent for WalletEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Credited { .. } => "Credited",
            Self::Debited { .. } => "Debited",
            Self::Closed => "Closed",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum WalletCommand {
    Credit(i64),
    Debit(i64),
    Close,
    Nothing,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum WalletError {
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("wallet closed")]
    Closed,
    #[error("amount must be positive")]
    NonPositive,
}

impl Aggregate for Wallet {
    const TYPE: &'static str = "wallet";
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Error = WalletError;

    fn handle(&self, cmd: &WalletCommand) -> Result<Vec<WalletEvent>, WalletError> {
        if self.closed {
            return Err(WalletError::Closed);
        }
        match *cmd {
            WalletCommand::Credit(a) | WalletCommand::Debit(a) if a <= 0 => Err(WalletError::NonPositive),
            WalletCommand::Credit(amount) => Ok(vec![WalletEvent::Credited { amount }]),
            WalletCommand::Debit(amount) if amount > self.balance => Err(WalletError::InsufficientFunds),
            WalletCommand::Debit(amount) => Ok(vec![WalletEvent::Debited { amount }]),
            WalletCommand::Close => Ok(vec![WalletEvent::Closed]),
            WalletCommand::Nothing => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &WalletEvent) {
        match event {
            WalletEvent::Credited { amount } => self.balance += amount,
            WalletEvent::Debited { amount } => self.balance -= amount,
            WalletEvent::Closed => self.closed = true,
        }
    }
}
