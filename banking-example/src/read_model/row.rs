//! One account's row of the read model and how an event changes it — the
//! fold both stores share.

use es_core::{Aggregate, EventEnvelope};
use rust_decimal::Decimal;
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
    /// Money of transfers from this account whose credit (or refund) is in
    /// the log before their debit: write-behind flushes its shards each in
    /// its own order, so the log can hold a transfer's steps out of their
    /// order. The debits that follow are taken off this first; it is zero
    /// once every debit is in.
    pub landed_early: Money,
}

impl AccountRow {
    /// A row for an account with no events yet.
    pub fn empty(id: Uuid) -> Self {
        Self {
            id,
            account: Account::default(),
            version: 0,
            in_flight: Money::ZERO,
            landed_early: Money::ZERO,
        }
    }

    /// The row's money in flight as one signed figure (`in_flight` less
    /// `landed_early`), the form the stores keep.
    pub fn net_in_flight(&self) -> Decimal {
        self.in_flight.value() - self.landed_early.value()
    }

    /// Sets `in_flight` and `landed_early` from their stored signed figure.
    pub fn set_net_in_flight(&mut self, net: Decimal) {
        let amount = |d: Decimal| Money::new(d).unwrap_or(Money::ZERO);
        (self.in_flight, self.landed_early) = if net.is_sign_negative() {
            (Money::ZERO, amount(-net))
        } else {
            (amount(net), Money::ZERO)
        };
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
            AccountEvent::TransferDebited(e) => self.debit(e.amount),
            AccountEvent::TransferRefunded(e) => self.land(e.amount),
            _ => {}
        }
        true
    }

    /// Money of a transfer from this account arrived (or came back):
    /// it is no longer in flight (or, when its debit is not in yet, it
    /// landed early).
    pub fn land(&mut self, amount: Money) {
        settle(&mut self.in_flight, &mut self.landed_early, amount);
    }

    /// Money left this account for a transfer: in flight, unless its
    /// arrival is already in.
    fn debit(&mut self, amount: Money) {
        settle(&mut self.landed_early, &mut self.in_flight, amount);
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
/// what was taken out. (Where the log holds a credit before its debit, as
/// write-behind's flushes can, the sum is ahead by that amount until the
/// debit is in; nothing stays in flight after it, see
/// [`AccountRow::landed_early`].)
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

/// Takes `amount` off `owed`; what `owed` does not cover is added to
/// `ahead` (the other side's head start), and `owed` drops to zero.
fn settle(owed: &mut Money, ahead: &mut Money, amount: Money) {
    match owed.checked_sub(amount) {
        Some(left) => *owed = left,
        None => {
            let rest = amount.checked_sub(*owed).unwrap_or(Money::ZERO);
            *ahead = ahead.checked_add(rest).unwrap_or(*ahead);
            *owed = Money::ZERO;
        }
    }
}
