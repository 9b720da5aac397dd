//! One account's row of the read model and how an event changes it — the
//! fold both stores share.

use es_core::{Aggregate, EventEnvelope};
use uuid::Uuid;

use super::AccountView;
use crate::domain::{Account, AccountEvent, Money};

/// An account as the read model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// The account id (its stream id).
    pub id: Uuid,
    /// Its state.
    pub account: Account,
    /// The stream version the state includes.
    pub version: u64,
    /// Money debited from this account for transfers whose destination
    /// has not been credited (nor the money refunded) yet.
    pub in_flight: Money,
}

impl AccountRow {
    /// A row for an account with no events yet.
    pub fn empty(id: Uuid) -> Self {
        Self {
            id,
            account: Account::default(),
            version: 0,
            in_flight: Money::ZERO,
        }
    }

    /// Applies `event` if it is the row's next version; a version already
    /// in (a replay from an earlier position) is skipped. Whether the row
    /// changed.
    pub fn apply(&mut self, event: &EventEnvelope<AccountEvent>) -> bool {
        if event.version <= self.version {
            return false;
        }
        if event.version != self.version + 1 {
            // Versions are gapless and the log is read in order, so this is
            // a read model built from part of the log (a replay `From` a
            // position past the row's creation): apply and move on.
            tracing::warn!(account_id = %self.id, have = self.version, got = event.version, "account row skips versions");
        }
        self.account.apply(&event.event);
        self.version = event.version;
        match &event.event {
            AccountEvent::TransferDebited(e) => {
                self.in_flight = self.in_flight.checked_add(e.amount).unwrap_or(self.in_flight);
            }
            AccountEvent::TransferRefunded(e) => self.land(e.amount),
            _ => {}
        }
        true
    }

    /// Money of a transfer from this account arrived (or came back):
    /// it is no longer in flight.
    pub fn land(&mut self, amount: Money) {
        self.in_flight = self.in_flight.checked_sub(amount).unwrap_or(Money::ZERO);
    }

    /// The API's view of the row (none before the account is opened).
    pub fn view(&self) -> Option<AccountView> {
        AccountView::from_state(self.id, &self.account, self.version).map(|v| v.with_in_flight(self.in_flight))
    }
}

/// The source account and amount of a transfer an event credits: when the
/// destination's row applies it, the same page write takes the amount off
/// the source's `in_flight`, so that at every position of the log the read
/// model shows `sum(balance + in_flight)` equal to what was paid in minus
/// what was taken out.
pub fn arrival(event: &EventEnvelope<AccountEvent>) -> Option<(Uuid, Money)> {
    match &event.event {
        AccountEvent::TransferCredited(e) => Some((e.from, e.amount)),
        _ => None,
    }
}

/// The account id of an event's stream, if it is a UUID.
pub(super) fn account_id(event: &EventEnvelope<AccountEvent>) -> Option<Uuid> {
    let id = Uuid::parse_str(event.stream_id.as_str()).ok();
    if id.is_none() {
        tracing::warn!(stream_id = %event.stream_id, "account stream id is not a UUID; not projected");
    }
    id
}
