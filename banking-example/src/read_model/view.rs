//! The account as every account route shows it, and as the read model
//! stores it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::{Account, AccountStatus, Money};

/// Lifecycle of an account as shown by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccountViewStatus {
    /// Open.
    Open,
    /// Closed.
    Closed,
}

/// An account as returned by every account route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    /// Account id.
    pub id: Uuid,
    /// Owner's name.
    pub owner_name: String,
    /// Balance, exact, two decimal places.
    pub balance: Money,
    /// Number of events recorded for the account.
    pub version: u64,
    /// `open` or `closed`.
    pub status: AccountViewStatus,
    /// The owner's user id (absent for accounts opened before
    /// authentication existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Uuid>,
    /// Money transferred out of the account that has not reached its
    /// destination yet (it is in neither balance): the sum over all
    /// accounts of `balance + in_flight` only changes by deposits and
    /// withdrawals.
    #[serde(default)]
    pub in_flight: Money,
}

impl AccountView {
    /// The view of an account state; `None` for an account never opened.
    pub fn from_state(id: Uuid, state: &Account, version: u64) -> Option<Self> {
        let status = match state.status {
            AccountStatus::NotOpened => return None,
            AccountStatus::Open => AccountViewStatus::Open,
            AccountStatus::Closed => AccountViewStatus::Closed,
        };
        Some(Self {
            id,
            owner_name: state.owner_name.clone(),
            balance: state.balance,
            version,
            status,
            owner_id: state.owner_id,
            in_flight: state.pending_out(),
        })
    }

    /// The view with its money in flight set (the read model's figure).
    #[must_use]
    pub fn with_in_flight(mut self, in_flight: Money) -> Self {
        self.in_flight = in_flight;
        self
    }

    /// The view with its owner set.
    #[must_use]
    pub fn owned_by(mut self, owner: Option<Uuid>) -> Self {
        self.owner_id = owner;
        self
    }
}
