//! The account read model that `GET /accounts/{id}` is served from.
//!
//! Kept current two ways, which converge because every update is keyed by
//! stream version (an update never moves a view backwards):
//! - as an es-core [`Projector`] driven by a [`ProjectionRunner`](es_core::ProjectionRunner)
//!   over the global log — the path that also sees writes of other
//!   instances, with the projection lag measured in
//!   `projection_lag_seconds`;
//! - as a post-commit [`EventHandler`], which updates the view before the
//!   write's response is sent: read-your-writes for the writer.
//!
//! A miss (an account written by another instance and not projected yet)
//! is read through from the event store by the handler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use async_trait::async_trait;
use es_core::{
    Aggregate, BoxError, CommittedEvent, EventCodec, EventFilter, EventHandler, Projector, RecordedEvent, StreamId,
    Versioned,
};
use uuid::Uuid;

use crate::api::AccountView;
use crate::domain::{Account, AccountEvent};

/// Event metadata header holding the owner's user id (on `AccountCreated`).
pub const OWNER_HEADER: &str = "owner_id";

/// Name (and checkpoint key) of the projection.
pub const PROJECTION_NAME: &str = "account_view";

/// In-memory account views by id.
#[derive(Debug, Default)]
pub struct AccountReadModel {
    views: RwLock<HashMap<Uuid, Versioned<Account>>>,
    owners: RwLock<HashMap<Uuid, Uuid>>,
    codec: EventCodec,
    projected_position: AtomicU64,
}

impl AccountReadModel {
    /// An empty read model.
    pub fn new() -> Self {
        Self::default()
    }

    /// The view of an account, if known.
    pub fn get(&self, id: Uuid) -> Option<AccountView> {
        let views = self.views.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        views
            .get(&id)
            .and_then(|v| AccountView::from_state(id, &v.state, v.version))
            .map(|v| v.owned_by(self.owner(id)))
    }

    /// The owner (user id) of an account, if known.
    pub fn owner(&self, id: Uuid) -> Option<Uuid> {
        let owners = self.owners.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        owners.get(&id).copied()
    }

    /// Records the owner of an account (owners never change).
    pub fn set_owner(&self, id: Uuid, owner: Uuid) {
        let mut owners = self.owners.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        owners.insert(id, owner);
    }

    fn record_owner(&self, id: Uuid, version: u64, metadata: &es_core::Metadata) {
        if version == 1 {
            if let Some(owner) = metadata.headers.get(OWNER_HEADER).and_then(|o| Uuid::parse_str(o).ok()) {
                self.set_owner(id, owner);
            }
        }
    }

    /// A page of the accounts owned by `owner` (all accounts for `None`),
    /// ordered by id (creation order for UUIDv7 ids), and their count.
    pub fn list(&self, owner: Option<Uuid>, offset: usize, limit: usize) -> (Vec<AccountView>, usize) {
        let mut ids: Vec<Uuid> = {
            let owners = self.owners.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            match owner {
                Some(o) => owners.iter().filter(|(_, v)| **v == o).map(|(k, _)| *k).collect(),
                None => {
                    let views = self.views.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                    views.keys().copied().collect()
                }
            }
        };
        ids.sort_unstable();
        let views: Vec<AccountView> = ids.into_iter().filter_map(|id| self.get(id)).collect();
        let total = views.len();
        (views.into_iter().skip(offset).take(limit).collect(), total)
    }

    /// Number of accounts in the model.
    pub fn len(&self) -> usize {
        self.views
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether the model is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Last global position the projector applied.
    pub fn projected_position(&self) -> u64 {
        self.projected_position.load(Ordering::Acquire)
    }

    /// Stores `state` unless a newer version is already stored.
    pub fn upsert(&self, id: Uuid, state: Versioned<Account>) {
        let mut views = self.views.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match views.get(&id) {
            Some(existing) if existing.version >= state.version => {}
            _ => {
                views.insert(id, state);
            }
        }
    }

    fn apply_event(&self, id: Uuid, version: u64, event: &AccountEvent) -> bool {
        let mut views = self.views.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = views.entry(id).or_insert_with(|| Versioned {
            state: Account::default(),
            version: 0,
        });
        if version <= entry.version {
            return true; // already there (post-commit handler or replay)
        }
        if version != entry.version + 1 {
            return false; // a gap: the next read-through repairs the view
        }
        entry.state.apply(event);
        entry.version = version;
        true
    }
}

#[async_trait]
impl Projector for AccountReadModel {
    fn name(&self) -> &str {
        PROJECTION_NAME
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().stream_types([Account::TYPE])
    }

    async fn apply(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let lag = chrono::Utc::now() - event.recorded_at;
        metrics::histogram!("projection_lag_seconds").record(lag.as_seconds_f64().max(0.0));
        let Ok(id) = Uuid::parse_str(event.stream_id.as_str()) else {
            tracing::warn!(stream_id = %event.stream_id, "account stream id is not a UUID; skipped");
            return Ok(());
        };
        self.record_owner(id, event.version, &event.metadata);
        let decoded: AccountEvent = self.codec.decode(event)?;
        if !self.apply_event(id, event.version, &decoded) {
            tracing::debug!(%id, version = event.version, "gap in account view; left to read-through");
        }
        self.projected_position
            .fetch_max(event.global_position, Ordering::AcqRel);
        metrics::gauge!("projection_position").set(event.global_position as f64);
        Ok(())
    }

    async fn reset(&self) -> Result<(), BoxError> {
        self.views
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.owners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.projected_position.store(0, Ordering::Release);
        Ok(())
    }
}

#[async_trait]
impl EventHandler<Account> for AccountReadModel {
    async fn on_committed(
        &self,
        stream_id: &StreamId,
        state: &Account,
        events: &[CommittedEvent<AccountEvent>],
    ) -> Result<(), BoxError> {
        let (Ok(id), Some(last)) = (Uuid::parse_str(stream_id.as_str()), events.last()) else {
            return Ok(());
        };
        for e in events {
            self.record_owner(id, e.version, &e.metadata);
        }
        self.upsert(
            id,
            Versioned {
                state: state.clone(),
                version: last.version,
            },
        );
        Ok(())
    }
}
