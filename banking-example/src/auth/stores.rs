//! [`AuthStores`]: the stores behind the auth service, in memory, in
//! PostgreSQL or in SQLite.

use std::sync::Arc;

use super::blacklist::{InMemoryBlacklist, PersistentBlacklist, TokenBlacklist};
use super::lockout::{InMemoryLoginAttempts, LoginAttempts};
use super::pg::PgAuthStore;
use super::refresh::{InMemoryRefreshStore, RefreshStore};
use super::reset::{InMemoryOutbox, InMemoryResetStore, MailOutbox, ResetStore};
use super::sqlite::SqliteAuthStore;
use super::users::{InMemoryUserStore, UserStore};
use super::AuthConfig;
use crate::rate_limit::{InMemoryRateLimiter, NoRateLimit, RateLimitConfig, RateLimiter};

/// The stores the service works on.
#[derive(Clone)]
pub struct AuthStores {
    /// Users.
    pub users: Arc<dyn UserStore>,
    /// Refresh tokens.
    pub refresh: Arc<dyn RefreshStore>,
    /// Reset tokens.
    pub resets: Arc<dyn ResetStore>,
    /// Failed login counts, per username and source.
    pub attempts: Arc<dyn LoginAttempts>,
    /// Revoked access tokens.
    pub blacklist: Arc<dyn TokenBlacklist>,
    /// Reset mails waiting for delivery.
    pub outbox: Arc<dyn MailOutbox>,
    /// The stricter limiter of the auth routes (per IP and per username).
    pub limiter: Arc<dyn RateLimiter>,
    /// The PostgreSQL store, when used.
    pub pg: Option<PgAuthStore>,
    /// The SQLite store, when used.
    pub sqlite: Option<SqliteAuthStore>,
}

impl std::fmt::Debug for AuthStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthStores")
            .field("postgres", &self.pg.is_some())
            .field("sqlite", &self.sqlite.is_some())
            .field("blacklist", &self.blacklist.name())
            .finish_non_exhaustive()
    }
}

impl AuthStores {
    /// Everything in memory.
    pub fn in_memory(config: &AuthConfig) -> Self {
        Self {
            users: Arc::new(InMemoryUserStore::new()),
            refresh: Arc::new(InMemoryRefreshStore::new()),
            resets: Arc::new(InMemoryResetStore::new()),
            attempts: Arc::new(InMemoryLoginAttempts::new()),
            blacklist: Arc::new(InMemoryBlacklist::new()),
            outbox: Arc::new(InMemoryOutbox::new()),
            limiter: Self::memory_limiter(config),
            pg: None,
            sqlite: None,
        }
    }

    /// Users, tokens, attempts, the mail outbox and the revoked tokens in
    /// PostgreSQL (the revocations read once into memory).
    pub fn postgres(config: &AuthConfig, pg: PgAuthStore) -> Self {
        let shared = Arc::new(pg.clone());
        Self {
            users: shared.clone(),
            refresh: shared.clone(),
            resets: shared.clone(),
            attempts: shared.clone(),
            outbox: shared.clone(),
            blacklist: Arc::new(PersistentBlacklist::new(shared, "postgres")),
            pg: Some(pg),
            ..Self::in_memory(config)
        }
    }

    /// Users, tokens, attempts, the mail outbox and the revoked tokens in
    /// SQLite (the revocations read once into memory; the
    /// application's database file; `store` migrated by the caller).
    pub fn sqlite(config: &AuthConfig, store: SqliteAuthStore) -> Self {
        let shared = Arc::new(store.clone());
        Self {
            users: shared.clone(),
            refresh: shared.clone(),
            resets: shared.clone(),
            attempts: shared.clone(),
            outbox: shared.clone(),
            blacklist: Arc::new(PersistentBlacklist::new(shared, "sqlite")),
            sqlite: Some(store),
            ..Self::in_memory(config)
        }
    }

    /// The limits of the auth routes (`burst` = the per-minute count).
    pub fn rate_limit_config(config: &AuthConfig) -> RateLimitConfig {
        RateLimitConfig {
            requests_per_minute: config.rate_limit_requests,
            burst_size: config.rate_limit_requests,
            window_size: config.rate_limit_window,
            ..RateLimitConfig::default()
        }
    }

    fn memory_limiter(config: &AuthConfig) -> Arc<dyn RateLimiter> {
        let limits = Self::rate_limit_config(config);
        if limits.is_disabled() {
            Arc::new(NoRateLimit)
        } else {
            Arc::new(InMemoryRateLimiter::new(limits))
        }
    }
}
