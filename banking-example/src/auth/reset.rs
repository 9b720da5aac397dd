//! Password reset: single-use, expiring tokens (stored hashed), the
//! [`MailOutbox`] the reset mails wait in until delivered, and the
//! [`Mailer`] that sends them at once instead, when one is plugged in.
//!
//! The outbox never holds a usable token: a queued mail carries a random
//! seed, and the token is derived from it under `REFRESH_TOKEN_SECRET`
//! ([`super::tokens::reset_token_from_seed`]) only when the mail is
//! taken for delivery. Delivering a mail removes it; mails whose token
//! expired are purged; a successful reset or password change discards the
//! user's pending mails and every other reset token of the user. Only
//! the fact that a mail was queued is logged, never a token or a seed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tracing::Instrument;
use uuid::Uuid;

use super::{count, AuthStoreError};

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
    /// The token as stored, without using it up; `None` if unknown.
    async fn find(&self, token_hash: &str) -> Result<Option<ResetRecord>, AuthStoreError>;
    /// Atomically marks the token used and returns it as it was before
    /// (`used_at: Some` means it was already used); `None` if unknown.
    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<ResetRecord>, AuthStoreError>;
    /// Deletes every reset token of `user_id` (after a reset or a password
    /// change, none of them may be used any more).
    async fn revoke_for_user(&self, user_id: Uuid) -> Result<(), AuthStoreError>;
    /// Deletes the tokens expired at `now`; returns how many.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, AuthStoreError>;
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

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, ResetRecord>> {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ResetStore for InMemoryResetStore {
    async fn insert(&self, record: ResetRecord) -> Result<(), AuthStoreError> {
        self.tokens().insert(record.token_hash.clone(), record);
        Ok(())
    }

    async fn find(&self, token_hash: &str) -> Result<Option<ResetRecord>, AuthStoreError> {
        Ok(self.tokens().get(token_hash).cloned())
    }

    async fn consume(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<ResetRecord>, AuthStoreError> {
        Ok(self.tokens().get_mut(token_hash).map(|r| {
            let before = r.clone();
            r.used_at.get_or_insert(now);
            before
        }))
    }

    async fn revoke_for_user(&self, user_id: Uuid) -> Result<(), AuthStoreError> {
        self.tokens().retain(|_, r| r.user_id != user_id);
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, AuthStoreError> {
        let mut tokens = self.tokens();
        let before = tokens.len();
        tokens.retain(|_, r| r.expires_at > now);
        Ok((before - tokens.len()) as u64)
    }
}

/// A password reset mail as it waits in the outbox: the seed of its token,
/// not the token (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedReset {
    /// Recipient (the username).
    pub to: String,
    /// The token's seed: the token is derived from it under the secret.
    pub token_seed: String,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// A password reset mail as delivered: the token to put in the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetMail {
    /// Recipient (the username).
    pub to: String,
    /// The reset token.
    pub token: String,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// Sends password reset mails (over SMTP, through a mail API): plugged in
/// with [`AuthService::with_mailer`](super::AuthService::with_mailer).
/// Without one, the default, reset mails wait in the [`MailOutbox`] (the
/// auth store's table) until a delivery process takes them with
/// [`AuthService::take_reset_mails`](super::AuthService::take_reset_mails).
///
/// The service hands each mail over in a task of its own, after the
/// request has been answered: `POST /auth/reset-password` answers 202 in
/// the same time whether the address exists or not, and whether sending
/// works or not. At most [`MAILS_IN_FLIGHT`] sends run at once, each for
/// at most [`MAIL_SEND_TIMEOUT`]. A failed, late or dropped send is logged
/// (without the token) and counted (`auth_events_total{event=...}`:
/// `reset_mail_failed`, `reset_mail_dropped`); the user can ask again.
///
/// ```
/// use async_trait::async_trait;
/// use banking_example::auth::reset::{MailError, Mailer, ResetMail};
///
/// /// Hands reset links to the deployment's mail relay.
/// struct Relay;
///
/// #[async_trait]
/// impl Mailer for Relay {
///     async fn send_reset(&self, mail: &ResetMail) -> Result<(), MailError> {
///         let link = format!("https://bank.example/reset?token={}", mail.token);
///         if mail.to.is_empty() {
///             return Err(MailError::Rejected { reason: "no recipient".into() });
///         }
///         // ... send `link` to `mail.to` before `mail.expires_at` ...
///         let _ = link;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    /// Sends one reset mail: its token resets the password of `mail.to`
    /// until `mail.expires_at`, once.
    async fn send_reset(&self, mail: &ResetMail) -> Result<(), MailError>;
}

/// Most reset mails a service sends at once through its [`Mailer`]; a
/// mail requested while that many are in flight is dropped (logged and
/// counted as `reset_mail_dropped`; the user can ask again).
pub const MAILS_IN_FLIGHT: usize = 32;

/// Longest a [`Mailer::send_reset`] may take; then it counts as failed.
pub const MAIL_SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// A [`Mailer`] whose sends run in tasks of their own, at most
/// [`MAILS_IN_FLIGHT`] at once, each for at most [`MAIL_SEND_TIMEOUT`]:
/// a slow or hung mail service costs a bounded number of tasks.
#[derive(Clone)]
pub(crate) struct BoundedMailer {
    mailer: Arc<dyn Mailer>,
    slots: Arc<Semaphore>,
}

impl BoundedMailer {
    pub(crate) fn new(mailer: Arc<dyn Mailer>) -> Self {
        Self {
            mailer,
            slots: Arc::new(Semaphore::new(MAILS_IN_FLIGHT)),
        }
    }

    /// Starts sending `mail` (to `user_id`) and returns at once.
    pub(crate) fn send(&self, mail: ResetMail, user_id: Uuid) {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            count("reset_mail_dropped");
            tracing::warn!(%user_id, in_flight = MAILS_IN_FLIGHT, "password reset mail dropped: the mailer is busy");
            return;
        };
        let mailer = Arc::clone(&self.mailer);
        tokio::spawn(
            async move {
                let sent = tokio::time::timeout(MAIL_SEND_TIMEOUT, mailer.send_reset(&mail)).await;
                drop(slot);
                match sent {
                    Ok(Ok(())) => count("reset_mail_sent"),
                    Ok(Err(e)) => {
                        count("reset_mail_failed");
                        tracing::warn!(%user_id, error = %e, "password reset mail not sent");
                    }
                    Err(_) => {
                        count("reset_mail_failed");
                        tracing::warn!(%user_id, timeout = ?MAIL_SEND_TIMEOUT, "password reset mail not sent in time");
                    }
                }
            }
            .instrument(tracing::info_span!("auth.reset_mail")),
        );
    }
}

/// Why a [`Mailer`] could not send a mail.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail service could not be reached or did not answer.
    #[error("mail service unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
    },
    /// The mail service refused the message (recipient, content).
    #[error("mail refused: {reason}")]
    Rejected {
        /// Why it was refused.
        reason: String,
    },
}

/// Where reset mails wait for delivery.
#[async_trait]
pub trait MailOutbox: Send + Sync + 'static {
    /// Queues one message.
    async fn queue_reset(&self, mail: QueuedReset) -> Result<(), AuthStoreError>;
    /// Delivery: removes the queued mails to `to` and returns those not
    /// expired at `now`, oldest first.
    async fn take_resets(&self, to: &str, now: DateTime<Utc>) -> Result<Vec<QueuedReset>, AuthStoreError>;
    /// Drops the queued mails to `to` (their tokens no longer work).
    async fn discard_resets(&self, to: &str) -> Result<(), AuthStoreError>;
    /// Drops the mails expired at `now`; returns how many.
    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, AuthStoreError>;
}

/// Most mails the in-memory outbox holds (the oldest go first).
pub const MEMORY_OUTBOX_CAPACITY: usize = 10_000;

/// The in-memory outbox (without a database; and for tests).
#[derive(Debug, Default)]
pub struct InMemoryOutbox {
    outbox: Mutex<Vec<QueuedReset>>,
}

impl InMemoryOutbox {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Vec<QueuedReset>> {
        self.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.outbox().len()
    }

    /// Whether the outbox is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl MailOutbox for InMemoryOutbox {
    async fn queue_reset(&self, mail: QueuedReset) -> Result<(), AuthStoreError> {
        tracing::info!(expires_at = %mail.expires_at, "password reset mail queued in the in-memory outbox");
        let mut outbox = self.outbox();
        if outbox.len() >= MEMORY_OUTBOX_CAPACITY {
            outbox.remove(0);
        }
        outbox.push(mail);
        Ok(())
    }

    async fn take_resets(&self, to: &str, now: DateTime<Utc>) -> Result<Vec<QueuedReset>, AuthStoreError> {
        let mut outbox = self.outbox();
        let (taken, kept): (Vec<_>, Vec<_>) = outbox.drain(..).partition(|m| m.to == to);
        *outbox = kept;
        Ok(taken.into_iter().filter(|m| m.expires_at > now).collect())
    }

    async fn discard_resets(&self, to: &str) -> Result<(), AuthStoreError> {
        self.outbox().retain(|m| m.to != to);
        Ok(())
    }

    async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, AuthStoreError> {
        let mut outbox = self.outbox();
        let before = outbox.len();
        outbox.retain(|m| m.expires_at > now);
        Ok((before - outbox.len()) as u64)
    }
}
