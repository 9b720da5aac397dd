//! The account read model in process memory (no `DATABASE_URL`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::RwLock;

use async_trait::async_trait;
use es_core::{BoxError, EventEnvelope, StoreError, TypedProjector};
use uuid::Uuid;

use super::row::{account_id, arrival, AccountRow};
use super::AccountView;
use super::{AccountQueries, PROJECTION};
use crate::domain::{Account, AccountEvent};

#[derive(Debug, Default)]
struct Data {
    rows: BTreeMap<Uuid, AccountRow>,
    /// (owner, account) for listing one owner's accounts in id order.
    by_owner: BTreeSet<(Uuid, Uuid)>,
}

/// Accounts by id, kept by es-core's runner with an in-memory checkpoint:
/// it lives and dies with the process, like the in-memory event store.
#[derive(Debug, Default)]
pub struct InMemoryAccounts {
    data: RwLock<Data>,
}

impl InMemoryAccounts {
    /// An empty read model.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Data> {
        self.data.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl TypedProjector for InMemoryAccounts {
    type Aggregate = Account;

    fn name(&self) -> &str {
        PROJECTION
    }

    async fn apply(&self, event: &EventEnvelope<AccountEvent>) -> Result<(), BoxError> {
        let Some(id) = account_id(event) else {
            return Ok(());
        };
        let mut data = self.data.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let row = data.rows.entry(id).or_insert_with(|| AccountRow::empty(id));
        if row.apply(event) {
            if let Some(owner) = row.account.owner_id {
                data.by_owner.insert((owner, id));
            }
            if let Some((from, amount)) = arrival(event) {
                data.rows
                    .entry(from)
                    .or_insert_with(|| AccountRow::empty(from))
                    .land(amount);
            }
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), BoxError> {
        *self.data.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Data::default();
        Ok(())
    }
}

#[async_trait]
impl AccountQueries for InMemoryAccounts {
    async fn get(&self, id: Uuid) -> Result<Option<AccountView>, StoreError> {
        Ok(self.read().rows.get(&id).and_then(AccountRow::view))
    }

    async fn list(
        &self,
        owner: Option<Uuid>,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<AccountView>, usize), StoreError> {
        let data = self.read();
        Ok(match owner {
            None => (
                data.rows
                    .values()
                    .filter_map(AccountRow::view)
                    .skip(offset)
                    .take(limit)
                    .collect(),
                data.rows.len(),
            ),
            Some(o) => {
                let ids = data.by_owner.range((o, Uuid::nil())..=(o, Uuid::max()));
                let total = ids.clone().count();
                let page = ids
                    .skip(offset)
                    .take(limit)
                    .filter_map(|(_, id)| data.rows.get(id).and_then(AccountRow::view))
                    .collect();
                (page, total)
            }
        })
    }
}
