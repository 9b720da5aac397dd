//! Refresh tokens: opaque, stored hashed, rotated on every use, grouped
//! in families (one family per login session).
//!
//! Using a refresh token marks it used and issues a new one in the same
//! family. Presenting a token that was **already used** means it was
//! copied: the whole family is revoked (theft detection), so neither the
//! thief nor the victim can continue the session; the user logs in again.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::AuthStoreError;

/// A stored refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    /// HMAC of the token.
    pub token_hash: String,
    /// Owner.
    pub user_id: Uuid,
    /// Session the token belongs to.
    pub family_id: Uuid,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// When it was used (rotated), if it was.
    pub used_at: Option<DateTime<Utc>>,
    /// Whether its family was revoked.
    pub revoked: bool,
}

/// Where refresh tokens live.
#[async_trait]
pub trait RefreshStore: Send + Sync + 'static {
    /// Stores a new token.
    async fn insert(&self, record: RefreshRecord) -> Result<(), AuthStoreError>;
    /// Atomically marks the token used at `now` and returns the record
    /// **as it was before** (so `used_at: Some` means reuse); `None` for
    /// an unknown token.
    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<RefreshRecord>, AuthStoreError>;
    /// Revokes every token of a family.
    async fn revoke_family(&self, family_id: Uuid) -> Result<(), AuthStoreError>;
    /// Revokes every token of a user, except those of `keep` (a family);
    /// returns the families (sessions) it revoked, so their access tokens
    /// can be revoked too.
    async fn revoke_user(&self, user_id: Uuid, keep: Option<Uuid>) -> Result<Vec<Uuid>, AuthStoreError>;
}

/// Refresh tokens in process memory (expired ones are dropped on insert).
#[derive(Debug, Default)]
pub struct InMemoryRefreshStore {
    tokens: Mutex<HashMap<String, RefreshRecord>>,
}

impl InMemoryRefreshStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn revoke_where(&self, f: impl Fn(&RefreshRecord) -> bool) -> Vec<Uuid> {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut families: Vec<Uuid> = tokens
            .values_mut()
            .filter(|r| f(r))
            .map(|r| {
                r.revoked = true;
                r.family_id
            })
            .collect();
        families.sort_unstable();
        families.dedup();
        families
    }
}

#[async_trait]
impl RefreshStore for InMemoryRefreshStore {
    async fn insert(&self, record: RefreshRecord) -> Result<(), AuthStoreError> {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if tokens.len() % 1024 == 1023 {
            let now = Utc::now();
            tokens.retain(|_, r| r.expires_at > now);
        }
        tokens.insert(record.token_hash.clone(), record);
        Ok(())
    }

    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<RefreshRecord>, AuthStoreError> {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(tokens.get_mut(token_hash).map(|r| {
            let before = r.clone();
            r.used_at.get_or_insert(now);
            before
        }))
    }

    async fn revoke_family(&self, family_id: Uuid) -> Result<(), AuthStoreError> {
        self.revoke_where(|r| r.family_id == family_id);
        Ok(())
    }

    async fn revoke_user(&self, user_id: Uuid, keep: Option<Uuid>) -> Result<Vec<Uuid>, AuthStoreError> {
        Ok(self.revoke_where(|r| r.user_id == user_id && Some(r.family_id) != keep))
    }
}
