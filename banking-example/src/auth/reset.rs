//! Password reset: single-use, expiring tokens (stored hashed) and the
//! [`Mailer`] that delivers them.
//!
//! The default mailer is an outbox: the message (with the token, which is
//! what a mail must carry) is stored for a delivery process — in memory,
//! or in the `auth_mail_outbox` table with PostgreSQL — and only the fact
//! that a mail was queued is logged, never the token.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::AuthStoreError;

/// A stored reset token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetRecord {
    /// HMAC of the token.
    pub token_hash: String,
    /// Whose password it resets.
    pub user_id: Uuid,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// When it was used, if it was.
    pub used_at: Option<DateTime<Utc>>,
}

/// Where reset tokens live.
#[async_trait]
pub trait ResetStore: Send + Sync + 'static {
    /// Stores a new token.
    async fn insert(&self, record: ResetRecord) -> Result<(), AuthStoreError>;
    /// Atomically marks the token used and returns it as it was before
    /// (`used_at: Some` means it was already used); `None` if unknown.
    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<ResetRecord>, AuthStoreError>;
}

/// Reset tokens in process memory.
#[derive(Debug, Default)]
pub struct InMemoryResetStore {
    tokens: Mutex<HashMap<String, ResetRecord>>,
}

impl InMemoryResetStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ResetStore for InMemoryResetStore {
    async fn insert(&self, record: ResetRecord) -> Result<(), AuthStoreError> {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.insert(record.token_hash.clone(), record);
        Ok(())
    }

    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<ResetRecord>, AuthStoreError> {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(tokens.get_mut(token_hash).map(|r| {
            let before = r.clone();
            r.used_at.get_or_insert(now);
            before
        }))
    }
}

/// A password reset message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetMail {
    /// Recipient (the username).
    pub to: String,
    /// The reset token to put in the link.
    pub token: String,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// Delivers password reset messages.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Sends (or queues) one message.
    async fn send_reset(&self, mail: ResetMail) -> Result<(), AuthStoreError>;
}

/// The default mailer: keeps messages in memory for a delivery process
/// (and for tests); logs that a message was queued, without the token.
#[derive(Debug, Default)]
pub struct OutboxMailer {
    outbox: Mutex<Vec<ResetMail>>,
}

impl OutboxMailer {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// The queued messages to `to`, oldest first.
    pub fn messages_to(&self, to: &str) -> Vec<ResetMail> {
        let outbox = self.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        outbox.iter().filter(|m| m.to == to).cloned().collect()
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.outbox
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether the outbox is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send_reset(&self, mail: ResetMail) -> Result<(), AuthStoreError> {
        tracing::info!(expires_at = %mail.expires_at, "password reset mail queued in the in-memory outbox");
        let mut outbox = self.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if outbox.len() >= 10_000 {
            outbox.remove(0);
        }
        outbox.push(mail);
        Ok(())
    }
}
