//! Transfers between accounts: a process manager (saga) on es-core's
//! process driver, run by the same projection engine as the read model.
//!
//! A transfer is its own event stream (type `transfer`): the request, then
//! the outcome of each step as a fact. [`TransferManager`] reads the facts
//! and issues the next account command under a command id derived from
//! (transfer, step), so a step issued again after a crash is recognised
//! by the event store and applied once:
//!
//! 1. `debit` the source: the money leaves its balance and is recorded
//!    against the transfer (refused: insufficient funds, closed → failed,
//!    nothing moved);
//! 2. `credit` the destination (refused: closed or missing → `refund` the
//!    source, failed);
//! 3. `settle` the source: completed.
//!
//! A transfer not debited by its deadline (`TRANSFER_TIMEOUT_SECS` after
//! the request) is timed out and refunded; the source account arbitrates
//! a debit racing the timeout (a refund without a debit voids the
//! transfer there, and a later debit is refused).
//!
//! Money is conserved at every instant a reader can see: in the accounts
//! read model, `sum(balance + in_flight)` over all accounts changes only
//! by deposits, withdrawals and opening balances (see
//! [`read_model`](crate::read_model)).

mod manager;
mod process;
mod runtime;

pub use manager::{TransferManager, TRANSFERS};
pub use process::{Transfer, TransferCommand, TransferError, TransferEvent, TransferRequested, TransferStatus};
pub use runtime::{runner_config, TransferStores, Transfers};
