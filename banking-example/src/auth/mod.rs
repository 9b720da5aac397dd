//! Authentication and authorization: Argon2id passwords, HS256 access
//! tokens, rotating refresh tokens with reuse detection, lockout, password
//! reset, a token blacklist and role-based access to accounts.
//!
//! [`AuthService`] holds it together; the stores are traits with
//! in-memory implementations, PostgreSQL ones ([`pg::PgAuthStore`]) and
//! SQLite ones ([`sqlite::SqliteAuthStore`]);
//! the blacklist is in Redis when `REDIS_URL` is set. Passwords and tokens
//! are never logged.

pub mod blacklist;
pub mod config;
pub mod lockout;
pub mod password;
pub mod pg;
pub mod rbac;
pub mod refresh;
pub mod reset;
mod service;
pub mod sqlite;
mod stores;
pub mod tokens;
pub mod users;

pub use config::{AuthConfig, Persistence};
pub use rbac::Role;
pub use service::{AuthService, MAX_LOGIN_WAIT};
pub use stores::AuthStores;
pub use tokens::{Identity, TokenPair};

use std::time::Duration;

/// A failure of an auth store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthStoreError {
    /// A unique key (username, token hash) is taken.
    #[error("already exists")]
    Duplicate,
    /// The record does not exist.
    #[error("not found")]
    NotFound,
    /// The backend failed.
    #[error("{0}")]
    Backend(String),
}

/// Why an auth operation was refused. Messages are what clients see; they
/// never say whether a username exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password (indistinguishable).
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed logins.
    #[error("too many failed login attempts; try again later")]
    Locked {
        /// Until the lock ends.
        retry_after: Duration,
    },
    /// Missing, malformed, expired, forged or revoked access token.
    #[error("{0}")]
    Unauthenticated(String),
    /// Unknown, expired, revoked or reused refresh token.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// Unknown, expired or used reset token.
    #[error("invalid or expired reset token")]
    InvalidResetToken,
    /// The username is taken.
    #[error("username is already registered")]
    UsernameTaken,
    /// Invalid input (messages joined by `", "`).
    #[error("{0}")]
    Invalid(String),
    /// The caller's role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// No user has this id (said to admins only).
    #[error("user not found")]
    UnknownUser,
    /// An admin asked to change their own roles (another admin must).
    #[error("an admin cannot change their own roles; another admin must")]
    OwnRoles,
    /// Rate limited.
    #[error("Rate limit exceeded")]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
    },
    /// Every password-hashing slot is busy: retry after this long.
    #[error("the server is busy; retry later")]
    Busy {
        /// When to retry.
        retry_after: Duration,
    },
    /// A backend failed (the detail is logged only).
    #[error("service temporarily unavailable")]
    Backend(String),
}

impl From<AuthStoreError> for AuthError {
    fn from(e: AuthStoreError) -> Self {
        match e {
            AuthStoreError::Duplicate => Self::UsernameTaken,
            other => Self::Backend(other.to_string()),
        }
    }
}

/// Counts one auth event (`auth_events_total{event}`).
pub fn count(event: &'static str) {
    metrics::counter!("auth_events_total", "event" => event).increment(1);
}
