//! [`AuthService`]: registration, login, token refresh and revocation,
//! password change and reset, and token verification for every request.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::Clock;
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::blacklist::{TokenRef, ValidAfter};
use super::lockout::{AttemptKey, LockoutPolicy, IDLE_AFTER};
use super::password::{check_policy, HashError, PasswordHasher};
use super::rbac::{may_set_roles, Role};
use super::refresh::RefreshRecord;
use super::reset::{BoundedMailer, Mailer, QueuedReset, ResetMail, ResetRecord};
use super::stores::AuthStores;
use super::tokens::{opaque_token, reset_token_from_seed, token_hash, AccessTokens, Identity, TokenError, TokenPair};
use super::users::{is_email, normalize_username, User, MAX_USERNAME_BYTES};
use super::{count, AuthConfig, AuthError};
use crate::rate_limit::RateLimitDecision;

/// The authentication service.
pub struct AuthService {
    config: AuthConfig,
    clock: Arc<dyn Clock>,
    hasher: PasswordHasher,
    tokens: AccessTokens,
    stores: AuthStores,
    /// Sends reset mails at once; without one they wait in the outbox.
    mailer: Option<BoundedMailer>,
    lockout: LockoutPolicy,
    dummy_hash: OnceCell<String>,
    /// One login at a time per username and source in this process: a
    /// burst of guesses is checked one after the other, each against the
    /// failures recorded before it, so the lockout and the progressive
    /// delay hold under concurrency (across instances the store's atomic
    /// count bounds it). A fixed set of turns, a pair hashed to one: never
    /// more memory, and a held turn is never forgotten (pairs sharing one
    /// merely wait for each other).
    login_turns: Box<[tokio::sync::Mutex<()>]>,
    /// Hashes a username and source to its turn.
    turn_hasher: foldhash::fast::RandomState,
}

/// Login turns (see `AuthService::login_turns`).
const LOGIN_TURNS: usize = 4096;

/// The longest progressive delay a login waits out before it is checked;
/// a longer one is refused at once with 429 and `Retry-After` (as a
/// lockout is). With the defaults (`LOGIN_BACKOFF_MS` 1000, five attempts)
/// the longest delay before the lockout is 4 s.
pub const MAX_LOGIN_WAIT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("config", &self.config)
            .field("stores", &self.stores)
            .finish_non_exhaustive()
    }
}

/// A hashing failure as an auth error: at capacity is 503 with
/// `Retry-After` (1 s), anything else a backend failure.
fn hash_error(e: HashError) -> AuthError {
    match e {
        HashError::Busy => AuthError::Busy {
            retry_after: Duration::from_secs(1),
        },
        HashError::Failed(detail) => AuthError::Backend(detail),
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl AuthService {
    /// A service over `stores`, telling time by `clock`.
    pub fn new(config: AuthConfig, clock: Arc<dyn Clock>, stores: AuthStores) -> Result<Self, AuthError> {
        let hasher = PasswordHasher::bounded(config.argon2, config.argon2_max_concurrent, config.argon2_queue_wait)
            .map_err(hash_error)?;
        let tokens = AccessTokens::issued_by(
            &config.jwt_secret,
            config.access_token_expiry,
            config.leeway,
            &config.jwt_issuer,
            &config.jwt_audience,
        );
        let lockout = LockoutPolicy {
            max_attempts: config.max_login_attempts,
            duration: chrono_duration(config.lockout_duration),
            backoff: chrono_duration(config.login_backoff),
        };
        Ok(Self {
            config,
            clock,
            hasher,
            tokens,
            stores,
            mailer: None,
            lockout,
            dummy_hash: OnceCell::new(),
            login_turns: (0..LOGIN_TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            turn_hasher: foldhash::fast::RandomState::default(),
        })
    }

    /// Sends reset mails with `mailer` as they are requested, instead of
    /// queuing them in the stores' outbox (see [`Mailer`]).
    #[must_use]
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = Some(BoundedMailer::new(mailer));
        self
    }

    /// The stores.
    pub fn stores(&self) -> &AuthStores {
        &self.stores
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Whether logins as `username` (normalized) failed from `source`
    /// since its last success there: such a source is subject to the
    /// per-username login limit, others are not.
    pub async fn failed_from(&self, username: &str, source: &str) -> Result<bool, AuthError> {
        let attempts = self.stores.attempts.get(AttemptKey { username, source }).await?;
        Ok(attempts.failures > 0 || attempts.locked_until.is_some())
    }

    /// Counts one request against the auth limit of `key` (`ip:...` or
    /// `user:<purpose>:...`).
    pub async fn check_rate(&self, key: &str) -> Result<(), AuthError> {
        match self.stores.limiter.check(&format!("auth:{key}")).await {
            RateLimitDecision::Allowed { .. } => Ok(()),
            RateLimitDecision::Limited { retry_after } => {
                count("rate_limited");
                tracing::warn!(kind = key.split(':').next().unwrap_or(""), "auth rate limit exceeded");
                Err(AuthError::RateLimited { retry_after })
            }
        }
    }

    /// Creates a user with `roles` (registration, the `create-admin`
    /// command, tests).
    #[tracing::instrument(name = "auth.create_user", skip_all, fields(roles = ?roles))]
    pub async fn create_user(&self, username: &str, password: &str, roles: &[Role]) -> Result<Uuid, AuthError> {
        let username = normalize_username(username);
        let mut problems = Vec::new();
        if !is_email(&username) {
            problems.push("username must be an email address".to_owned());
        }
        if let Err(p) = check_policy(&username, password) {
            problems.push(p);
        }
        if !problems.is_empty() {
            return Err(AuthError::Invalid(problems.join(", ")));
        }
        let password_hash = self.hasher.hash(password).await.map_err(hash_error)?;
        let user = User {
            id: Uuid::now_v7(),
            username,
            password_hash,
            roles: roles.to_vec(),
            created_at: self.now(),
        };
        let id = user.id;
        self.stores.users.create(user).await?;
        count("user_created");
        tracing::info!(user_id = %id, "user created");
        Ok(id)
    }

    /// Registers a customer.
    pub async fn register(&self, username: &str, password: &str) -> Result<Uuid, AuthError> {
        self.create_user(username, password, &[Role::Customer]).await
    }

    async fn dummy_hash(&self) -> Result<&str, AuthError> {
        self.dummy_hash
            .get_or_try_init(|| async { self.hasher.hash(&opaque_token()).await.map_err(hash_error) })
            .await
            .map(String::as_str)
    }

    /// Checks the credentials and opens a session. Unknown users cost a
    /// hash verification too, and get the same answer as a bad password.
    /// Failures are counted per username and `source` (the client
    /// address key, as [`crate::api::peer::limit_key`] makes it): see
    /// [`super::lockout`].
    #[tracing::instrument(name = "auth.login", skip_all)]
    pub async fn login(&self, username: &str, password: &str, source: &str) -> Result<TokenPair, AuthError> {
        if username.len() > MAX_USERNAME_BYTES {
            return Err(AuthError::Invalid(format!(
                "username must be at most {MAX_USERNAME_BYTES} bytes"
            )));
        }
        let username = normalize_username(username);
        let key = AttemptKey {
            username: &username,
            source,
        };
        let turn = self.turn_hasher.hash_one((username.as_str(), source)) as usize % LOGIN_TURNS;
        // The end of the progressive delay this try has sat out: time has
        // reached it, whatever the clock says (a manual one in tests).
        let mut served: Option<DateTime<Utc>> = None;
        let (_turn, now) = loop {
            let held = self.login_turns[turn].lock().await;
            let now = served.map_or_else(|| self.now(), |s| self.now().max(s));
            let attempts = self.stores.attempts.get(key).await?;
            let Some(until) = self.lockout.locked_until(&attempts, now) else {
                break (held, now);
            };
            let wait = (until - now).to_std().unwrap_or(Duration::from_secs(1));
            if attempts.failures == 0 || wait > MAX_LOGIN_WAIT {
                count("login_locked");
                tracing::warn!("login refused: username is locked out for this source");
                return Err(AuthError::Locked { retry_after: wait });
            }
            // A progressive delay: the try waits it out, then is checked
            // like any other (so wrong passwords keep answering 401 until
            // the lockout). The turn is not held while waiting: other
            // pairs hashed to it go on, and tries of this pair check again
            // after the wait, against the failures recorded meanwhile.
            drop(held);
            if served.is_none() {
                count("login_delayed");
                tracing::info!(
                    wait_ms = wait.as_millis() as u64,
                    "login delayed after failures from this source"
                );
            }
            tokio::time::sleep(wait).await;
            served = Some(until);
        };
        let user = self.stores.users.by_username(&username).await?;
        let valid = if let Some(u) = &user {
            self.hasher
                .verify(password, &u.password_hash)
                .await
                .map_err(hash_error)?
        } else {
            let dummy = self.dummy_hash().await?.to_owned();
            self.hasher.verify(password, &dummy).await.map_err(hash_error)?;
            false
        };
        let Some(user) = user.filter(|_| valid) else {
            count("login_failure");
            let after = self.stores.attempts.record_failure(key, self.lockout, now).await?;
            match self.lockout.locked_until(&after, now) {
                Some(until) if after.failures == 0 => {
                    count("lockout");
                    tracing::warn!(until = %until, "login failed; username locked out for this source");
                }
                Some(until) => {
                    tracing::info!(failures = after.failures, until = %until, "login failed; next try delayed");
                }
                None => tracing::info!(failures = after.failures, "login failed"),
            }
            match self.stores.attempts.purge_idle(now, chrono_duration(IDLE_AFTER)).await {
                Ok(n) if n > 0 => tracing::debug!(purged = n, "idle login failure counts deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not purge idle login failure counts"),
            }
            return Err(AuthError::InvalidCredentials);
        };
        self.stores.attempts.clear(key).await?;
        count("login_success");
        tracing::info!(user_id = %user.id, "login succeeded");
        self.issue_pair(&user, Uuid::new_v4()).await
    }

    async fn issue_pair(&self, user: &User, family_id: Uuid) -> Result<TokenPair, AuthError> {
        let now = self.now();
        let (access_token, _) = self
            .tokens
            .issue(user.id, &user.roles, family_id, now)
            .map_err(AuthError::Backend)?;
        let refresh_token = opaque_token();
        self.stores
            .refresh
            .insert(RefreshRecord {
                token_hash: token_hash(&self.config.refresh_token_secret, &refresh_token),
                user_id: user.id,
                family_id,
                expires_at: now + chrono_duration(self.config.refresh_token_expiry),
                used_at: None,
                revoked: false,
            })
            .await?;
        Ok(TokenPair {
            access_token,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: self.tokens.expires_in(),
        })
    }

    /// Rotates a refresh token. A token used before revokes its family.
    #[tracing::instrument(name = "auth.refresh", skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let now = self.now();
        let hash = token_hash(&self.config.refresh_token_secret, refresh_token);
        let Some(record) = self.stores.refresh.consume(&hash, now).await? else {
            count("refresh_invalid");
            return Err(AuthError::InvalidRefreshToken);
        };
        if record.used_at.is_some() {
            self.stores.refresh.revoke_family(record.family_id).await?;
            self.end_sessions(&[record.family_id], now).await?;
            count("token_reuse_detected");
            tracing::warn!(user_id = %record.user_id, family = %record.family_id, "refresh token reuse detected; session revoked");
            return Err(AuthError::InvalidRefreshToken);
        }
        if record.revoked || record.expires_at <= now {
            count("refresh_invalid");
            return Err(AuthError::InvalidRefreshToken);
        }
        let Some(user) = self.stores.users.by_id(record.user_id).await? else {
            return Err(AuthError::InvalidRefreshToken);
        };
        count("refresh");
        self.issue_pair(&user, record.family_id).await
    }

    /// The identity of a bearer token, or why it is refused.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let now = self.now();
        let refuse = |e: TokenError| {
            metrics::counter!("auth_token_rejections_total", "reason" => e.label()).increment(1);
            tracing::debug!(reason = e.label(), "access token rejected");
            AuthError::Unauthenticated(match e {
                TokenError::Expired => "token expired".into(),
                TokenError::Revoked => "token revoked".into(),
                _ => "invalid token".into(),
            })
        };
        let claims = self.tokens.verify(token, now).map_err(refuse)?;
        let token_ref = TokenRef {
            jti: claims.jti,
            sid: claims.sid,
            user_id: claims.sub,
            issued_at: claims.iat,
        };
        if self.stores.blacklist.refuses(&token_ref, now).await? {
            return Err(refuse(TokenError::Revoked));
        }
        Ok(Identity {
            user_id: claims.sub,
            roles: claims.roles,
            jti: claims.jti,
            sid: claims.sid,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(now),
        })
    }

    /// Until when a revocation must last: past the expiry of any access
    /// token issued until now.
    fn revocation_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono_duration(self.config.access_token_expiry) + chrono_duration(self.config.leeway)
    }

    /// Ends sessions: their refresh tokens are already revoked; their
    /// access tokens stop working now.
    async fn end_sessions(&self, sessions: &[Uuid], now: DateTime<Utc>) -> Result<(), AuthError> {
        for sid in sessions {
            self.stores
                .blacklist
                .revoke_session(*sid, self.revocation_end(now), now)
                .await?;
        }
        Ok(())
    }

    /// Every token of `user` issued before now stops working, but those of
    /// session `keep`; every other session is ended.
    async fn invalidate_user_tokens(
        &self,
        user: Uuid,
        keep: Option<Uuid>,
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        let sessions = self.stores.refresh.revoke_user(user, keep).await?;
        self.end_sessions(&sessions, now).await?;
        self.stores
            .blacklist
            .set_valid_after(
                user,
                ValidAfter {
                    after: now.timestamp(),
                    keep,
                },
                self.revocation_end(now),
                now,
            )
            .await?;
        Ok(())
    }

    /// Ends the caller's session: the access token presented, every other
    /// access token of the session (issued by earlier refreshes) and its
    /// refresh tokens.
    pub async fn logout(&self, who: &Identity) -> Result<(), AuthError> {
        let now = self.now();
        self.stores
            .blacklist
            .revoke(&who.jti.to_string(), who.expires_at, now)
            .await?;
        self.stores.refresh.revoke_family(who.sid).await?;
        self.end_sessions(&[who.sid], now).await?;
        count("logout");
        tracing::info!(user_id = %who.user_id, "logged out");
        Ok(())
    }

    /// Changes the password after checking the current one; revokes the
    /// refresh tokens of every other session.
    #[tracing::instrument(name = "auth.change_password", skip_all, fields(user_id = %who.user_id))]
    pub async fn change_password(&self, who: &Identity, current: &str, new: &str) -> Result<(), AuthError> {
        let user = self
            .stores
            .users
            .by_id(who.user_id)
            .await?
            .ok_or_else(|| AuthError::Unauthenticated("invalid token".into()))?;
        if !self
            .hasher
            .verify(current, &user.password_hash)
            .await
            .map_err(hash_error)?
        {
            count("password_change_failure");
            return Err(AuthError::InvalidCredentials);
        }
        check_policy(&user.username, new).map_err(AuthError::Invalid)?;
        let hash = self.hasher.hash(new).await.map_err(hash_error)?;
        self.stores.users.set_password(user.id, &hash).await?;
        self.invalidate_user_tokens(user.id, Some(who.sid), self.now()).await?;
        self.end_resets(&user).await?;
        count("password_changed");
        tracing::info!("password changed; other sessions revoked");
        Ok(())
    }

    /// Sets the roles of user `user` (admins only, never their own): the
    /// roles are replaced by `roles` (at least one; repeats count once),
    /// and every session of that user ends, so no token carrying the old
    /// roles works any more; their next login carries the new ones.
    /// Returns the user as stored.
    #[tracing::instrument(name = "auth.set_roles", skip_all, fields(admin = %who.user_id, user_id = %user))]
    pub async fn set_roles(&self, who: &Identity, user: Uuid, roles: &[Role]) -> Result<User, AuthError> {
        if !may_set_roles(&who.roles) {
            return Err(AuthError::Forbidden("only admins may set roles".into()));
        }
        if who.user_id == user {
            return Err(AuthError::OwnRoles);
        }
        let mut roles = roles.to_vec();
        roles.sort_unstable();
        roles.dedup();
        if roles.is_empty() {
            return Err(AuthError::Invalid("roles must name at least one role".into()));
        }
        let Some(mut target) = self.stores.users.by_id(user).await? else {
            return Err(AuthError::UnknownUser);
        };
        match self.stores.users.set_roles(user, &roles).await {
            Ok(()) => {}
            Err(super::AuthStoreError::NotFound) => return Err(AuthError::UnknownUser),
            Err(e) => return Err(e.into()),
        }
        self.invalidate_user_tokens(user, None, self.now()).await?;
        count("roles_changed");
        tracing::info!(roles = ?roles, before = ?target.roles, "roles changed; the user's sessions ended");
        target.roles = roles;
        Ok(target)
    }

    /// Every outstanding reset token of `user` stops working, and its
    /// pending mails are dropped.
    async fn end_resets(&self, user: &User) -> Result<(), AuthError> {
        self.stores.resets.revoke_for_user(user.id).await?;
        self.stores.outbox.discard_resets(&user.username).await?;
        Ok(())
    }

    /// Deletes expired reset tokens and mails (failures are logged only).
    async fn purge_expired_resets(&self, now: DateTime<Utc>) {
        let purged = (
            self.stores.resets.purge_expired(now).await,
            self.stores.outbox.purge_expired(now).await,
        );
        match purged {
            (Ok(tokens), Ok(mails)) if tokens + mails > 0 => {
                tracing::debug!(tokens, mails, "expired reset tokens and mails deleted");
            }
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "could not purge expired reset tokens"),
        }
    }

    /// Queues a reset mail when `email` is a user, or hands it to the
    /// [`Mailer`] when one is plugged in (in a task of its own, after this
    /// returns); does the same visible nothing otherwise. The outbox gets
    /// the token's seed, not the token.
    #[tracing::instrument(name = "auth.reset_request", skip_all)]
    pub async fn request_reset(&self, email: &str) -> Result<(), AuthError> {
        count("reset_requested");
        let now = self.now();
        self.purge_expired_resets(now).await;
        let username = normalize_username(email);
        let Some(user) = self.stores.users.by_username(&username).await? else {
            tracing::info!("password reset requested for an unknown address");
            return Ok(());
        };
        let token_seed = opaque_token();
        let token = reset_token_from_seed(&self.config.refresh_token_secret, &token_seed);
        let expires_at = now + chrono_duration(self.config.reset_token_expiry);
        self.stores
            .resets
            .insert(ResetRecord {
                token_hash: token_hash(&self.config.refresh_token_secret, &token),
                user_id: user.id,
                expires_at,
                used_at: None,
            })
            .await?;
        tracing::info!(user_id = %user.id, "password reset token issued");
        let Some(mailer) = &self.mailer else {
            self.stores
                .outbox
                .queue_reset(QueuedReset {
                    to: user.username,
                    token_seed,
                    expires_at,
                })
                .await?;
            return Ok(());
        };
        mailer.send(
            ResetMail {
                to: user.username,
                token,
                expires_at,
            },
            user.id,
        );
        Ok(())
    }

    /// Sets a new password with a reset token (single use); revokes every
    /// session of the user and every other reset token, and clears the
    /// user's lockouts. The token is used up only once the new password
    /// passed the policy and is hashed: a refused password leaves it
    /// usable.
    #[tracing::instrument(name = "auth.reset_confirm", skip_all)]
    pub async fn confirm_reset(&self, token: &str, new_password: &str) -> Result<(), AuthError> {
        let now = self.now();
        let hash = token_hash(&self.config.refresh_token_secret, token);
        let usable = |r: &ResetRecord| r.used_at.is_none() && r.expires_at > now;
        let invalid = || {
            count("reset_invalid");
            AuthError::InvalidResetToken
        };
        let Some(record) = self.stores.resets.find(&hash).await?.filter(usable) else {
            return Err(invalid());
        };
        let Some(user) = self.stores.users.by_id(record.user_id).await? else {
            return Err(invalid());
        };
        check_policy(&user.username, new_password).map_err(AuthError::Invalid)?;
        let new_hash = self.hasher.hash(new_password).await.map_err(hash_error)?;
        // The single-use gate: of concurrent confirmations one gets it.
        if !self
            .stores
            .resets
            .consume(&hash, now)
            .await?
            .is_some_and(|r| usable(&r))
        {
            return Err(invalid());
        }
        self.stores.users.set_password(user.id, &new_hash).await?;
        self.invalidate_user_tokens(user.id, None, now).await?;
        self.end_resets(&user).await?;
        self.stores.attempts.clear_user(&user.username).await?;
        count("reset_completed");
        tracing::info!(user_id = %user.id, "password reset completed; sessions revoked");
        Ok(())
    }

    /// Delivery of the reset mails to `email`: takes them out of the
    /// outbox (in memory, PostgreSQL or SQLite) and derives their tokens.
    /// Expired mails are dropped, not delivered. Mail delivery itself is
    /// the deployment's (this is what a delivery process calls).
    pub async fn take_reset_mails(&self, email: &str) -> Result<Vec<ResetMail>, AuthError> {
        let to = normalize_username(email);
        let queued = self.stores.outbox.take_resets(&to, self.now()).await?;
        Ok(queued
            .into_iter()
            .map(|m| ResetMail {
                token: reset_token_from_seed(&self.config.refresh_token_secret, &m.token_seed),
                to: m.to,
                expires_at: m.expires_at,
            })
            .collect())
    }
}
