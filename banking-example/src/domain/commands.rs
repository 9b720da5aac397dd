//! What can be asked of an account, and why it may refuse.

use uuid::Uuid;

use super::Money;

/// A command to the account aggregate. Amounts are already valid
/// [`Money`] (non-negative, two decimal places); the aggregate checks the
/// rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Open the account.
    Open {
        /// Owner's name (trimmed, non-empty).
        owner_name: String,
        /// Opening balance (may be zero).
        initial_balance: Money,
        /// The user who will own it.
        owner_id: Option<Uuid>,
    },
    /// Pay money in.
    Deposit {
        /// Positive amount.
        amount: Money,
    },
    /// Take money out.
    Withdraw {
        /// Positive amount.
        amount: Money,
    },
    /// Close the account (its balance must be zero).
    Close {
        /// Why.
        reason: String,
    },
}

/// Why the account refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The account was never opened.
    #[error("account not found")]
    NotFound,
    /// Open on an account that exists.
    #[error("account already exists")]
    AlreadyExists,
    /// Any operation on a closed account.
    #[error("account is closed")]
    Closed,
    /// A withdrawal larger than the balance.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        /// Current balance.
        balance: Money,
        /// Amount asked for.
        requested: Money,
    },
    /// Close with money left on the account.
    #[error("account balance must be zero to close (balance {balance})")]
    NonZeroBalance {
        /// Current balance.
        balance: Money,
    },
    /// A zero amount, or a missing owner name.
    #[error("{0}")]
    Invalid(String),
    /// The balance would overflow.
    #[error("amount too large")]
    Overflow,
}
