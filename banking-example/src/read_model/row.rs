//! One account's row of the read model and how an event changes it — the
//! fold both stores share.

use es_core::{Aggregate, EventEnvelope};
use uuid::Uuid;

use crate::api::AccountView;
use crate::domain::{Account, AccountEvent};

/// An account as the read model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    /// The account id (its stream id).
    pub id: Uuid,
    /// Its state.
    pub account: Account,
    /// The stream version the state includes.
    pub version: u64,
}

impl AccountRow {
    /// A row for an account with no events yet.
    pub fn empty(id: Uuid) -> Self {
        Self {
            id,
            account: Account::default(),
            version: 0,
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
        true
    }

    /// The API's view of the row (none before the account is opened).
    pub fn view(&self) -> Option<AccountView> {
        AccountView::from_state(self.id, &self.account, self.version)
    }
}

/// The account id of an event's stream, if it is a UUID.
pub fn account_id(event: &EventEnvelope<AccountEvent>) -> Option<Uuid> {
    let id = Uuid::parse_str(event.stream_id.as_str()).ok();
    if id.is_none() {
        tracing::warn!(stream_id = %event.stream_id, "account stream id is not a UUID; not projected");
    }
    id
}
