//! The transfer process: its facts, and the state they add up to.

use chrono::{DateTime, Utc};
use es_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::Money;

/// A transfer was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequested {
    /// The transfer's id (its stream id), carried by every account command
    /// of the transfer.
    pub id: Uuid,
    /// Source account.
    pub from: Uuid,
    /// Destination account.
    pub to: Uuid,
    /// Amount (positive).
    pub amount: Money,
    /// The user who asked.
    pub requested_by: Option<Uuid>,
    /// The owner of the source account when it was asked (who may read
    /// the transfer besides tellers and admins).
    pub from_owner: Option<Uuid>,
    /// A transfer not debited by then fails (nothing moves).
    pub deadline: DateTime<Utc>,
}

/// The facts of a transfer. Outcomes of steps are recorded whatever was
/// recorded before them: they happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    /// See [`TransferRequested`].
    TransferRequested(TransferRequested),
    /// The source account was debited.
    Debited,
    /// The source account refused the debit (insufficient funds, closed…):
    /// nothing moved.
    DebitRefused {
        /// Why.
        reason: String,
    },
    /// The destination account was credited.
    Credited,
    /// The destination account refused the credit (closed, missing).
    CreditRefused {
        /// Why.
        reason: String,
    },
    /// The source account got its money back (or, never debited, refuses
    /// the debit from now on).
    Refunded,
    /// The source account forgot the transfer: done.
    Settled,
    /// The deadline passed before the debit was recorded.
    TimedOut,
}

impl DomainEvent for TransferEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::TransferRequested(_) => "TransferRequested",
            Self::Debited => "TransferDebitRecorded",
            Self::DebitRefused { .. } => "TransferDebitRefused",
            Self::Credited => "TransferCreditRecorded",
            Self::CreditRefused { .. } => "TransferCreditRefused",
            Self::Refunded => "TransferRefundRecorded",
            Self::Settled => "TransferCompleted",
            Self::TimedOut => "TransferTimedOut",
        }
    }
}

/// What can be asked of a transfer process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// Start it (idempotent: the same request again is a no-op).
    Request(TransferRequested),
    /// Record a fact (the process driver's outcomes).
    Record(TransferEvent),
}

/// Why a transfer refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The id is taken by another transfer.
    #[error("transfer already exists with other details")]
    AlreadyExists,
    /// A fact about a transfer never requested.
    #[error("transfer not found")]
    NotFound,
}

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TransferStatus {
    /// Moving (or about to).
    Pending,
    /// The money arrived.
    Completed,
    /// Nothing moved, or the money came back.
    Failed,
}

/// A transfer's state, folded from its facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The request, once made.
    pub request: Option<TransferRequested>,
    /// Debit recorded.
    pub debited: bool,
    /// Debit refused, and why.
    pub debit_refused: Option<String>,
    /// Credit recorded.
    pub credited: bool,
    /// Credit refused, and why.
    pub credit_refused: Option<String>,
    /// Refund recorded.
    pub refunded: bool,
    /// Settled (completed).
    pub settled: bool,
    /// The deadline passed before the debit.
    pub timed_out: bool,
}

impl Transfer {
    /// Pending, completed or failed.
    pub fn status(&self) -> TransferStatus {
        if self.settled {
            TransferStatus::Completed
        } else if self.refunded || (self.debit_refused.is_some() && !self.debited) {
            TransferStatus::Failed
        } else {
            TransferStatus::Pending
        }
    }

    /// Why it failed (or is failing).
    pub fn reason(&self) -> Option<String> {
        if self.settled {
            return None;
        }
        if self.timed_out && self.debited {
            // The debit landed as the deadline passed: it is refunded.
            return Some("timed out; the debited amount is refunded".into());
        }
        if self.timed_out {
            return Some("timed out before the debit".into());
        }
        self.credit_refused
            .clone()
            .map(|r| format!("credit refused: {r}"))
            .or_else(|| self.debit_refused.clone().map(|r| format!("debit refused: {r}")))
    }
}

impl Aggregate for Transfer {
    const TYPE: &'static str = "transfer";
    type Command = TransferCommand;
    type Event = TransferEvent;
    type Error = TransferError;

    fn handle(&self, command: &TransferCommand) -> Result<Vec<TransferEvent>, TransferError> {
        match (command, &self.request) {
            (TransferCommand::Request(r), None) => Ok(vec![TransferEvent::TransferRequested(r.clone())]),
            (TransferCommand::Request(r), Some(have)) => {
                let same =
                    (r.from, r.to, r.amount, r.requested_by) == (have.from, have.to, have.amount, have.requested_by);
                if same {
                    Ok(vec![])
                } else {
                    Err(TransferError::AlreadyExists)
                }
            }
            (TransferCommand::Record(_), None) => Err(TransferError::NotFound),
            (TransferCommand::Record(e), Some(_)) => Ok(vec![e.clone()]),
        }
    }

    fn apply(&mut self, event: &TransferEvent) {
        match event {
            TransferEvent::TransferRequested(r) => self.request = Some(r.clone()),
            TransferEvent::Debited => self.debited = true,
            TransferEvent::DebitRefused { reason } => self.debit_refused = Some(reason.clone()),
            TransferEvent::Credited => self.credited = true,
            TransferEvent::CreditRefused { reason } => self.credit_refused = Some(reason.clone()),
            TransferEvent::Refunded => self.refunded = true,
            TransferEvent::Settled => self.settled = true,
            TransferEvent::TimedOut => self.timed_out = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_says_whether_the_debit_landed() {
        let before = Transfer {
            timed_out: true,
            refunded: true,
            ..Transfer::default()
        };
        assert_eq!(before.reason().as_deref(), Some("timed out before the debit"));
        let landed = Transfer {
            debited: true,
            ..before
        };
        assert_eq!(landed.status(), TransferStatus::Failed);
        assert_eq!(
            landed.reason().as_deref(),
            Some("timed out; the debited amount is refunded")
        );
    }
}
