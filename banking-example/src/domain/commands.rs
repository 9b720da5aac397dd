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
    /// Close the account (its balance must be zero and no transfer from it
    /// in flight).
    Close {
        /// Why.
        reason: String,
    },
    /// Take money out for a transfer (its first step): the amount stays
    /// recorded against the transfer until it is settled or refunded.
    DebitForTransfer {
        /// The transfer.
        transfer: Uuid,
        /// Where the money goes.
        to: Uuid,
        /// Positive amount.
        amount: Money,
    },
    /// Pay in the money of a transfer (its second step).
    CreditFromTransfer {
        /// The transfer.
        transfer: Uuid,
        /// Where the money comes from.
        from: Uuid,
        /// Positive amount.
        amount: Money,
    },
    /// The transfer's money arrived: forget it (the last step). A no-op
    /// when nothing is recorded against the transfer.
    SettleTransfer {
        /// The transfer.
        transfer: Uuid,
    },
    /// Give back the money of a transfer that cannot complete; when the
    /// debit never happened, refuse it from now on (so a late debit cannot
    /// strand money). Idempotent.
    RefundTransfer {
        /// The transfer.
        transfer: Uuid,
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
    /// Close while transfers from the account are still in flight.
    #[error("{count} transfer(s) from this account are still in flight")]
    TransfersInFlight {
        /// How many.
        count: usize,
    },
    /// A debit for a transfer that was already refunded or voided.
    #[error("transfer {0} was cancelled")]
    TransferCancelled(Uuid),
}
