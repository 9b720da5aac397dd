//! [`TransferManager`]: the transfer saga on es-core's process driver.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use es_core::{BoxError, CommandContext, ProcessManager, Repository, RepositoryError, Step, StreamId};
use uuid::Uuid;

use super::{Transfer, TransferCommand, TransferEvent};
use crate::domain::{Account, AccountCommand, AccountError};

/// Name of the process manager: its checkpoint, dead letters and
/// deadlines.
pub const TRANSFERS: &str = "transfers";

/// Steps: `debit` the source (recorded against the transfer), `credit` the
/// destination, `settle` the source (completed). A refused debit fails
/// the transfer with nothing moved; a refused credit (closed or missing
/// destination) is compensated by `refund` to the source, then failed.
/// A transfer not debited by its deadline is timed out and `refund`ed
/// (which, without a debit, makes the source refuse a late one).
pub struct TransferManager {
    accounts: Repository<Account>,
}

impl TransferManager {
    /// The manager issuing account commands through `accounts`.
    pub fn new(accounts: Repository<Account>) -> Self {
        Self { accounts }
    }
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "every arm of `next` answers an Option; this keeps them alike"
)]
fn step(name: &str, account: Uuid, command: AccountCommand) -> Option<Step<(Uuid, AccountCommand)>> {
    Some(Step::new(name, (account, command)))
}

impl TransferManager {
    /// The next step of `t`, if any: the account and its command; pure.
    pub fn next(t: &Transfer) -> Option<Step<(Uuid, AccountCommand)>> {
        let r = t.request.as_ref()?;
        let id = r.id;
        let refund = || step("refund", r.from, AccountCommand::RefundTransfer { transfer: id });
        if t.refunded || t.settled {
            return None;
        }
        if t.timed_out {
            return refund();
        }
        if !t.debited {
            if t.debit_refused.is_some() {
                return None;
            }
            return step(
                "debit",
                r.from,
                AccountCommand::DebitForTransfer {
                    transfer: id,
                    to: r.to,
                    amount: r.amount,
                },
            );
        }
        if !t.credited {
            if t.credit_refused.is_some() {
                return refund();
            }
            return step(
                "credit",
                r.to,
                AccountCommand::CreditFromTransfer {
                    transfer: id,
                    from: r.from,
                    amount: r.amount,
                },
            );
        }
        step("settle", r.from, AccountCommand::SettleTransfer { transfer: id })
    }
}

#[async_trait]
impl ProcessManager for TransferManager {
    type Process = Transfer;
    type Command = (Uuid, AccountCommand);

    fn name(&self) -> &str {
        TRANSFERS
    }

    fn next_step(&self, t: &Transfer) -> Option<Step<(Uuid, AccountCommand)>> {
        Self::next(t)
    }

    fn deadline(&self, t: &Transfer) -> Option<DateTime<Utc>> {
        let r = t.request.as_ref()?;
        (!t.debited && t.debit_refused.is_none() && !t.timed_out).then_some(r.deadline)
    }

    fn on_deadline(&self, _: &Transfer, _: DateTime<Utc>) -> Option<TransferCommand> {
        Some(TransferCommand::Record(TransferEvent::TimedOut))
    }

    async fn issue(
        &self,
        _process_id: &StreamId,
        step: &Step<(Uuid, AccountCommand)>,
        command_id: Uuid,
    ) -> Result<TransferCommand, BoxError> {
        let (account, command) = &step.command;
        let ctx = CommandContext::default().with_command_id(command_id);
        let result = self.accounts.execute_in(*account, command.clone(), ctx).await;
        let fact = match (step.name.as_str(), result) {
            ("debit", Ok(_)) => TransferEvent::Debited,
            ("debit", Err(RepositoryError::Rejected(e))) => TransferEvent::DebitRefused { reason: e.to_string() },
            ("debit", Err(RepositoryError::Invalid(reason))) => TransferEvent::DebitRefused { reason },
            // An id that names another kind of stream (a transfer's, say):
            // no such account, for good; retrying would stop every transfer
            // behind this one.
            ("debit", Err(RepositoryError::WrongType { .. })) => TransferEvent::DebitRefused {
                reason: "source account not found".into(),
            },
            ("credit", Err(RepositoryError::WrongType { .. })) => TransferEvent::CreditRefused {
                reason: "destination account not found".into(),
            },
            ("credit", Ok(_)) => TransferEvent::Credited,
            ("credit", Err(RepositoryError::Rejected(e))) => TransferEvent::CreditRefused {
                reason: match e {
                    AccountError::NotFound => "destination account not found".into(),
                    AccountError::Closed => "destination account is closed".into(),
                    other => other.to_string(),
                },
            },
            ("refund", Ok(_)) => TransferEvent::Refunded,
            ("settle", Ok(_)) => TransferEvent::Settled,
            (_, Err(e)) => return Err(Box::new(e)),
            (other, Ok(_)) => return Err(format!("unknown step {other}").into()),
        };
        Ok(TransferCommand::Record(fact))
    }
}
