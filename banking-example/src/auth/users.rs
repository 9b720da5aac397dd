//! Users: the [`UserStore`] trait and its in-memory implementation (the
//! PostgreSQL one is in [`super::pg`]). Usernames are emails, stored
//! lowercased and trimmed, unique.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rbac::Role;
use super::AuthStoreError;

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User id (the token subject).
    pub id: Uuid,
    /// Normalized username (lowercase email).
    pub username: String,
    /// Argon2id PHC hash.
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// When the user registered.
    pub created_at: DateTime<Utc>,
}

/// Longest accepted username (an email address), in bytes.
pub const MAX_USERNAME_BYTES: usize = 254;

/// Normalizes a username: trimmed, lowercase.
pub fn normalize_username(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Whether `username` (normalized) looks like an email address: one `@`,
/// a non-empty local part, a dotted domain, no spaces, at most 254 bytes.
pub fn is_email(username: &str) -> bool {
    let Some((local, domain)) = username.split_once('@') else {
        return false;
    };
    username.len() <= MAX_USERNAME_BYTES
        && !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && username
            .chars()
            .all(|c| c.is_ascii_graphic() || (!c.is_ascii() && !c.is_whitespace()))
}

/// Where users live.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Adds a user; [`AuthStoreError::Duplicate`] when the username is
    /// taken.
    async fn create(&self, user: User) -> Result<(), AuthStoreError>;
    /// The user with this (normalized) username.
    async fn by_username(&self, username: &str) -> Result<Option<User>, AuthStoreError>;
    /// The user with this id.
    async fn by_id(&self, id: Uuid) -> Result<Option<User>, AuthStoreError>;
    /// Replaces a user's password hash.
    async fn set_password(&self, id: Uuid, password_hash: &str) -> Result<(), AuthStoreError>;
    /// Replaces a user's roles.
    async fn set_roles(&self, id: Uuid, roles: &[Role]) -> Result<(), AuthStoreError>;
    /// A page of users by username, and the total count.
    async fn list(&self, offset: usize, limit: usize) -> Result<(Vec<User>, usize), AuthStoreError>;
}

/// Users in process memory.
#[derive(Debug, Default)]
pub struct InMemoryUserStore {
    users: RwLock<HashMap<Uuid, User>>,
}

impl InMemoryUserStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, id: Uuid, f: impl FnOnce(&mut User)) -> Result<(), AuthStoreError> {
        let mut users = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        match users.get_mut(&id) {
            Some(u) => {
                f(u);
                Ok(())
            }
            None => Err(AuthStoreError::NotFound),
        }
    }
}

#[async_trait]
impl UserStore for InMemoryUserStore {
    async fn create(&self, user: User) -> Result<(), AuthStoreError> {
        let mut users = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if users.values().any(|u| u.username == user.username) {
            return Err(AuthStoreError::Duplicate);
        }
        users.insert(user.id, user);
        Ok(())
    }

    async fn by_username(&self, username: &str) -> Result<Option<User>, AuthStoreError> {
        let users = self.users.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(users.values().find(|u| u.username == username).cloned())
    }

    async fn by_id(&self, id: Uuid) -> Result<Option<User>, AuthStoreError> {
        let users = self.users.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(users.get(&id).cloned())
    }

    async fn set_password(&self, id: Uuid, password_hash: &str) -> Result<(), AuthStoreError> {
        self.update(id, |u| password_hash.clone_into(&mut u.password_hash))
    }

    async fn set_roles(&self, id: Uuid, roles: &[Role]) -> Result<(), AuthStoreError> {
        self.update(id, |u| u.roles = roles.to_vec())
    }

    async fn list(&self, offset: usize, limit: usize) -> Result<(Vec<User>, usize), AuthStoreError> {
        let users = self.users.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<_> = users.values().cloned().collect();
        all.sort_by(|a, b| a.username.cmp(&b.username));
        let total = all.len();
        Ok((all.into_iter().skip(offset).take(limit).collect(), total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(is_email("a@b.c"));
        assert!(is_email(&normalize_username("  Ada@Example.COM ")));
        for bad in ["", "a", "a@b", "@b.c", "a@@b.c", "a b@c.d", "a@.c", "a@c."] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn usernames_are_unique() {
        let s = InMemoryUserStore::new();
        let u = User {
            id: Uuid::new_v4(),
            username: "a@b.c".into(),
            password_hash: "h".into(),
            roles: vec![Role::Customer],
            created_at: Utc::now(),
        };
        s.create(u.clone()).await.unwrap();
        let dup = User {
            id: Uuid::new_v4(),
            ..u.clone()
        };
        assert_eq!(s.create(dup).await, Err(AuthStoreError::Duplicate));
        assert_eq!(s.by_username("a@b.c").await.unwrap(), Some(u));
    }
}
