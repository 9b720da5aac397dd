//! The accounts domain: the [`Account`] aggregate, its commands and events,
//! exact [`Money`], and the per-transaction limit policy.

mod account;
mod commands;
mod events;
mod money;
mod policy;
mod upcast;

pub use account::{Account, AccountStatus};
pub use commands::{AccountCommand, AccountError};
pub use events::{
    AccountClosed, AccountCreated, AccountEvent, MoneyDeposited, MoneyWithdrawn, TransferCredited, TransferDebited,
    TransferRefunded, TransferSettled, TransferVoided,
};
pub use money::{parse_decimal, Amount, Money, MoneyError, SCALE};
pub use policy::MaxTransactionAmount;
pub use upcast::{upcasters, OwnerIdFromHeader, OWNER_HEADER};

#[cfg(test)]
mod tests;
