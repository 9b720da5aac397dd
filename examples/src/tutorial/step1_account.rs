//! Step 1: the aggregate. It decides on commands (`handle`, pure) and
//! evolves by events (`apply`, infallible).

use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

// ANCHOR: state
/// A bank account. Amounts are in cents: integers, never floats.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Who owns it.
    pub owner: String,
    /// The balance, in cents; never negative.
    pub balance: i64,
    /// Whether it was opened.
    pub open: bool,
    /// Whether it was closed (then nothing more happens to it).
    pub closed: bool,
}
// ANCHOR_END: state

// ANCHOR: events
/// What happened to an account: facts, in the past tense. The derive
/// names each event after its variant; `#[event(name = ...)]` stores it
/// under another (stable) name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
pub enum AccountEvent {
    /// The account was opened.
    #[event(name = "AccountOpened")]
    Opened {
        /// Its owner.
        owner: String,
        /// The first deposit, in cents.
        initial_balance: i64,
    },
    /// Money came in.
    #[event(name = "MoneyDeposited")]
    Deposited {
        /// Cents.
        amount: i64,
    },
    /// Money went out.
    #[event(name = "MoneyWithdrawn")]
    Withdrawn {
        /// Cents.
        amount: i64,
    },
    /// The account was closed.
    #[event(name = "AccountClosed")]
    Closed,
}
// ANCHOR_END: events

// ANCHOR: commands
/// What a customer asks of an account.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    /// Open it with a first deposit.
    Open {
        /// The owner.
        owner: String,
        /// Cents, zero or more.
        initial_balance: i64,
    },
    /// Put money in.
    Deposit {
        /// Cents, more than zero.
        amount: i64,
    },
    /// Take money out.
    Withdraw {
        /// Cents, more than zero and at most the balance.
        amount: i64,
    },
    /// Close it (its balance must be zero).
    Close,
}

/// Why an account refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// Opening an account twice.
    #[error("the account is already open")]
    AlreadyOpen,
    /// Using an account that was never opened.
    #[error("no such account")]
    NotOpen,
    /// Using a closed account.
    #[error("the account is closed")]
    Closed,
    /// A zero or negative amount.
    #[error("amounts must be positive")]
    InvalidAmount,
    /// Withdrawing more than the balance.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        /// The balance, cents.
        balance: i64,
        /// The withdrawal, cents.
        requested: i64,
    },
    /// Closing an account that still holds money.
    #[error("the balance must be zero to close, it is {0}")]
    NotEmpty(i64),
}
// ANCHOR_END: commands

// ANCHOR: aggregate
impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand::{Close, Deposit, Open, Withdraw};
        match command {
            Open { .. } if self.open => Err(AccountError::AlreadyOpen),
            Open { initial_balance, .. } if *initial_balance < 0 => Err(AccountError::InvalidAmount),
            Open { owner, initial_balance } => Ok(vec![AccountEvent::Opened {
                owner: owner.clone(),
                initial_balance: *initial_balance,
            }]),
            _ if !self.open => Err(AccountError::NotOpen),
            _ if self.closed => Err(AccountError::Closed),
            Deposit { amount } | Withdraw { amount } if *amount <= 0 => Err(AccountError::InvalidAmount),
            Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount: *amount }]),
            Withdraw { amount } if *amount > self.balance => Err(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: *amount,
            }),
            Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount: *amount }]),
            Close if self.balance != 0 => Err(AccountError::NotEmpty(self.balance)),
            Close => Ok(vec![AccountEvent::Closed]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner, initial_balance } => {
                self.owner.clone_from(owner);
                self.balance = *initial_balance;
                self.open = true;
            }
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
            AccountEvent::Closed => self.closed = true,
        }
    }
}
// ANCHOR_END: aggregate
