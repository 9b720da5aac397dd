//! The owners of the accounts seen lately, kept for authorization: held
//! by the handler state and read by [`super::access`].

use uuid::Uuid;

/// The owners of the accounts seen lately. An account's owner is set when
/// it is opened and never changes, so a known owner is kept (up to a
/// bound); an unknown account is looked up every time. Its keys are
/// existing accounts' ids, so it hashes with foldhash rather than SipHash.
#[derive(Clone)]
pub struct Owners(moka::sync::Cache<Uuid, Option<Uuid>, foldhash::fast::RandomState>);

impl Owners {
    /// Keeps the owners of at most `capacity` accounts.
    pub fn new(capacity: u64) -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(capacity)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        )
    }

    /// The kept owner of account `id` (`Some(None)`: an account without a
    /// recorded owner), `None` when it is not kept.
    pub fn get(&self, id: Uuid) -> Option<Option<Uuid>> {
        self.0.get(&id)
    }

    /// Keeps `owner` as the owner of account `id`.
    pub fn insert(&self, id: Uuid, owner: Option<Uuid>) {
        self.0.insert(id, owner);
    }
}

impl std::fmt::Debug for Owners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owners").field("kept", &self.0.entry_count()).finish()
    }
}
