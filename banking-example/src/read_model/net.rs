//! Accounts that only moved money in a page of events: their deposits and
//! withdrawals, in version order, change the row by one net amount, which
//! a store can add in place instead of reading the row, folding and
//! writing it back.

use std::collections::HashMap;

use es_core::EventEnvelope;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::row::arrival;
use crate::domain::AccountEvent;

/// One account's net movement over a page: deposits minus withdrawals,
/// with the running sum's lowest and highest points, so a store can check
/// that the fold would have taken no step below zero or near overflow
/// (where it saturates instead of adding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NetMove {
    /// The account.
    pub(super) id: Uuid,
    /// The version the row must have: the account's first event in the
    /// page directly follows it.
    pub(super) from_version: u64,
    /// The version after the account's last event in the page.
    pub(super) to_version: u64,
    /// Deposits minus withdrawals.
    pub(super) net: Decimal,
    /// The lowest running sum (zero or below).
    pub(super) low: Decimal,
    /// The highest running sum (zero or above).
    pub(super) high: Decimal,
}

impl NetMove {
    fn start(id: Uuid, version: u64, amount: Decimal) -> Option<Self> {
        Some(Self {
            id,
            from_version: version.checked_sub(1)?,
            to_version: version,
            net: amount,
            low: amount.min(Decimal::ZERO),
            high: amount.max(Decimal::ZERO),
        })
    }

    /// Adds the account's next event; `None` when it does not follow.
    fn then(mut self, version: u64, amount: Decimal) -> Option<Self> {
        if version != self.to_version.checked_add(1)? {
            return None;
        }
        self.net = self.net.checked_add(amount)?;
        self.low = self.low.min(self.net);
        self.high = self.high.max(self.net);
        self.to_version = version;
        Some(self)
    }
}

/// The signed amount of a deposit or withdrawal; `None` for any other
/// event.
fn signed_amount(event: &AccountEvent) -> Option<Decimal> {
    match event {
        AccountEvent::MoneyDeposited(e) => Some(e.amount.value()),
        AccountEvent::MoneyWithdrawn(e) => Some(-e.amount.value()),
        _ => None,
    }
}

/// The accounts of `events` that only moved money, ordered by id: every
/// event of theirs in the page is a deposit or a withdrawal, their
/// versions follow each other, and no transfer in the page credits money
/// sent from them. Every other account of the page needs the full fold.
pub(super) fn net_moves(events: &[EventEnvelope<AccountEvent>]) -> Vec<NetMove> {
    let mut moves: HashMap<Uuid, Option<NetMove>, foldhash::fast::RandomState> = HashMap::default();
    for e in events {
        let Ok(id) = Uuid::parse_str(e.stream_id.as_str()) else {
            continue;
        };
        if let Some((from, _)) = arrival(e) {
            moves.insert(from, None);
            moves.insert(id, None);
            continue;
        }
        let amount = signed_amount(&e.event);
        let next = match (moves.remove(&id), amount) {
            (_, None) | (Some(None), _) => None,
            (None, Some(a)) => NetMove::start(id, e.version, a),
            (Some(Some(m)), Some(a)) => m.then(e.version, a),
        };
        moves.insert(id, next);
    }
    let mut out: Vec<NetMove> = moves.into_values().flatten().collect();
    out.sort_unstable_by_key(|m| m.id);
    out
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use es_core::{Metadata, StreamId};

    use super::*;
    use crate::domain::{Money, MoneyDeposited, MoneyWithdrawn, TransferCredited};

    fn env(id: Uuid, version: u64, event: AccountEvent) -> EventEnvelope<AccountEvent> {
        EventEnvelope {
            global_position: version,
            stream_id: StreamId::from(id),
            version,
            event_id: Uuid::now_v7(),
            recorded_at: Utc::now(),
            metadata: Metadata::default(),
            event,
        }
    }

    fn dep(cents: u64) -> AccountEvent {
        AccountEvent::MoneyDeposited(MoneyDeposited {
            amount: Money::from_cents(cents),
        })
    }

    fn wd(cents: u64) -> AccountEvent {
        AccountEvent::MoneyWithdrawn(MoneyWithdrawn {
            amount: Money::from_cents(cents),
        })
    }

    fn d(cents: i64) -> Decimal {
        Decimal::new(cents, 2)
    }

    #[test]
    fn deposits_and_withdrawals_sum_with_their_lowest_and_highest_points() {
        let a = Uuid::now_v7();
        let page = [env(a, 4, dep(500)), env(a, 5, wd(800)), env(a, 6, dep(100))];
        assert_eq!(
            net_moves(&page),
            vec![NetMove {
                id: a,
                from_version: 3,
                to_version: 6,
                net: d(-200),
                low: d(-300),
                high: d(500),
            }]
        );
    }

    #[test]
    fn other_events_gaps_and_transfers_leave_the_account_to_the_fold() {
        let (a, b, c, e) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let credited = AccountEvent::TransferCredited(TransferCredited {
            transfer: Uuid::now_v7(),
            from: b,
            amount: Money::from_cents(100),
        });
        let closed = AccountEvent::AccountClosed(crate::domain::AccountClosed { reason: "done".into() });
        let page = [
            // a: a gap between its versions
            env(a, 2, dep(1)),
            env(a, 4, dep(1)),
            // b: money it sent lands on c, so both change in_flight
            env(b, 7, dep(1)),
            env(c, 3, credited),
            // e: a deposit, then a close
            env(e, 2, dep(1)),
            env(e, 3, closed),
        ];
        assert!(net_moves(&page).is_empty(), "{:?}", net_moves(&page));
    }

    #[test]
    fn accounts_come_out_ordered_by_id() {
        let mut ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        let page: Vec<_> = ids.iter().map(|id| env(*id, 2, dep(1))).collect();
        ids.sort_unstable();
        assert_eq!(net_moves(&page).iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    }
}
