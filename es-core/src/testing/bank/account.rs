//! The workload's aggregate: an account with a balance in cents.

use serde::{Deserialize, Serialize};

use crate::{Aggregate, DomainEvent};

/// The balance every account opens with: 1,000.00.
pub const INITIAL_BALANCE: i64 = 100_000;

/// An account of the workload (stream type `account`); balances in cents.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct BankAccount {
    /// The balance, in cents.
    pub balance: i64,
    /// Whether the account was opened.
    pub open: bool,
}

/// What happens to an account. Stored as `{"MoneyDeposited": {"amount": 1025}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankEvent {
    /// Opened with a balance.
    AccountCreated {
        /// Cents.
        initial_balance: i64,
    },
    /// Money paid in.
    MoneyDeposited {
        /// Cents.
        amount: i64,
    },
    /// Money taken out.
    MoneyWithdrawn {
        /// Cents.
        amount: i64,
    },
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::AccountCreated { .. } => "AccountCreated",
            Self::MoneyDeposited { .. } => "MoneyDeposited",
            Self::MoneyWithdrawn { .. } => "MoneyWithdrawn",
        }
    }
}

/// What a worker asks of an account (amounts in cents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankCommand {
    /// Open with this balance.
    Open(i64),
    /// Pay in.
    Deposit(i64),
    /// Take out; rejected when over the balance.
    Withdraw(i64),
}

impl BankCommand {
    /// How the command moves the balance when accepted (opening counts
    /// as none: [`INITIAL_BALANCE`] is the base of every check).
    pub fn delta(self) -> i64 {
        match self {
            Self::Open(_) => 0,
            Self::Deposit(amount) => amount,
            Self::Withdraw(amount) => -amount,
        }
    }
}

/// Why an account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    /// A withdrawal over the balance.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// A deposit or withdrawal on an account never opened.
    #[error("no such account")]
    NotOpen,
}

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankCommand;
    type Event = BankEvent;
    type Error = BankError;

    fn handle(&self, c: &BankCommand) -> Result<Vec<BankEvent>, BankError> {
        if let BankCommand::Open(initial_balance) = *c {
            return Ok(vec![BankEvent::AccountCreated { initial_balance }]);
        }
        if !self.open {
            return Err(BankError::NotOpen);
        }
        match *c {
            BankCommand::Open(_) => Ok(vec![]),
            BankCommand::Deposit(amount) => Ok(vec![BankEvent::MoneyDeposited { amount }]),
            BankCommand::Withdraw(amount) if amount > self.balance => Err(BankError::InsufficientFunds),
            BankCommand::Withdraw(amount) => Ok(vec![BankEvent::MoneyWithdrawn { amount }]),
        }
    }

    fn apply(&mut self, e: &BankEvent) {
        match e {
            BankEvent::AccountCreated { initial_balance } => {
                self.open = true;
                self.balance = *initial_balance;
            }
            BankEvent::MoneyDeposited { amount } => self.balance += amount,
            BankEvent::MoneyWithdrawn { amount } => self.balance -= amount,
        }
    }
}
