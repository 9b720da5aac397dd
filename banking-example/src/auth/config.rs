//! [`AuthConfig`]: secrets, token lifetimes, lockout and rate limits, and
//! the environment rules for secrets.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `JWT_SECRET` | random per process (in memory only) | HS256 key of access tokens, >= 32 bytes |
//! | `REFRESH_TOKEN_SECRET` | random per process (in memory only) | HMAC key hashing refresh and reset tokens, >= 32 bytes, not equal to `JWT_SECRET` |
//! | `ACCESS_TOKEN_EXPIRY_SECS` | 900 (15 min) | access token lifetime |
//! | `JWT_ISSUER` | `banking-example` | `iss` of access tokens (required on verification) |
//! | `JWT_AUDIENCE` | `banking-example-api` | `aud` of access tokens (required on verification) |
//! | `REFRESH_TOKEN_EXPIRY_SECS` | 604800 (7 days) | refresh token lifetime |
//! | `RESET_TOKEN_EXPIRY_SECS` | 1800 | password reset token lifetime |
//! | `AUTH_RATE_LIMIT_PER_MINUTE` | 20 | per IP and per username on the auth routes; 0 disables |
//! | `AUTH_RATE_LIMIT_WINDOW_SECS` | 60 | window of that limit |
//! | `MAX_LOGIN_ATTEMPTS` | 5 | failed logins of one username from one source (client address, IPv6 by /64) before that source is locked out of it |
//! | `LOCKOUT_DURATION_SECS` | 300 | lockout length (and the longest progressive delay) |
//! | `LOGIN_BACKOFF_MS` | 1000 | progressive delay: the wait after the second failure from one source, doubled after each further one; 0 disables |
//! | `JWT_LEEWAY_SECS` | 0 | clock skew tolerated on `exp` and `nbf` (`nbf` always gets at least 1 s): an access token is refused from its `exp` second on |
//! | `ARGON2_MEMORY_KIB`, `ARGON2_ITERATIONS`, `ARGON2_PARALLELISM` | 19456, 2, 1 | Argon2id cost (OWASP minimum) |
//! | `ARGON2_MAX_CONCURRENT` | number of CPUs | password hashes running at once (each holds `ARGON2_MEMORY_KIB`) |
//! | `ARGON2_QUEUE_WAIT_MS` | 1000 | how long a login waits for a hashing slot before 503 with `Retry-After` |
//! | `AUTH_ALLOW_INSECURE_SECRETS` | unset | `1`/`true`: with a persistent store, start even without proper secrets (development only; logs a loud warning). Persistent: `DATABASE_URL` (both secrets required and strong) or the embedded SQLite file, the default (a secret that is set must be strong; an unset one is drawn at random, so sessions end with the process) |

use std::time::Duration;

use rand::RngCore;

use crate::error::{parse, ConfigError};

/// The longest accepted lifetime, lockout or window (`*_SECS`): 10 years.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Values that are never accepted as secrets with a persistent store.
const KNOWN_DEFAULTS: &[&str] = &[
    "secret",
    "changeme",
    "change-me",
    "please-change-me",
    "your-secret-key",
    "jwt-secret",
    "dev-secret",
];

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory in KiB (default 19456 = 19 MiB, the OWASP recommendation).
    pub memory_kib: u32,
    /// Passes over memory (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
}

impl Default for Argon2Params {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Authentication settings. `Debug` never prints the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// HS256 key of access tokens.
    pub jwt_secret: Vec<u8>,
    /// HMAC key under which refresh and reset tokens are stored hashed.
    pub refresh_token_secret: Vec<u8>,
    /// Access token lifetime (15 min).
    pub access_token_expiry: Duration,
    /// `iss` of access tokens.
    pub jwt_issuer: String,
    /// `aud` of access tokens.
    pub jwt_audience: String,
    /// Refresh token lifetime (7 days).
    pub refresh_token_expiry: Duration,
    /// Password reset token lifetime (30 min).
    pub reset_token_expiry: Duration,
    /// Requests per window on the auth routes, per IP and per username
    /// (0 disables).
    pub rate_limit_requests: u32,
    /// The window of `rate_limit_requests`.
    pub rate_limit_window: Duration,
    /// Failed logins before a lockout (5).
    pub max_login_attempts: u32,
    /// How long a lockout lasts (5 min).
    pub lockout_duration: Duration,
    /// The wait after the second failed login from one source, doubled
    /// after each further one (1 s; zero disables the delay).
    pub login_backoff: Duration,
    /// Clock skew tolerated when checking `exp` and `nbf` (none by
    /// default: a token is refused from its `exp` second on; `nbf` always
    /// gets at least one second).
    pub leeway: Duration,
    /// Password hashing cost.
    pub argon2: Argon2Params,
    /// Password hashes running at once (0: one per CPU).
    pub argon2_max_concurrent: usize,
    /// How long a request waits for a hashing slot before it is refused
    /// (503 with `Retry-After`).
    pub argon2_queue_wait: Duration,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &"<redacted>")
            .field("refresh_token_secret", &"<redacted>")
            .field("access_token_expiry", &self.access_token_expiry)
            .field("refresh_token_expiry", &self.refresh_token_expiry)
            .field("reset_token_expiry", &self.reset_token_expiry)
            .field("rate_limit_requests", &self.rate_limit_requests)
            .field("max_login_attempts", &self.max_login_attempts)
            .field("lockout_duration", &self.lockout_duration)
            .field("login_backoff", &self.login_backoff)
            .finish_non_exhaustive()
    }
}

impl Default for AuthConfig {
    /// Random per-process secrets (tokens do not survive a restart).
    fn default() -> Self {
        Self {
            jwt_secret: random_secret(),
            refresh_token_secret: random_secret(),
            access_token_expiry: Duration::from_secs(15 * 60),
            jwt_issuer: super::tokens::DEFAULT_ISSUER.into(),
            jwt_audience: super::tokens::DEFAULT_AUDIENCE.into(),
            refresh_token_expiry: Duration::from_secs(7 * 24 * 3600),
            reset_token_expiry: Duration::from_secs(30 * 60),
            rate_limit_requests: 20,
            rate_limit_window: Duration::from_secs(60),
            max_login_attempts: 5,
            lockout_duration: Duration::from_secs(300),
            login_backoff: Duration::from_secs(1),
            leeway: Duration::ZERO,
            argon2: Argon2Params::default(),
            argon2_max_concurrent: 0,
            argon2_queue_wait: Duration::from_secs(1),
        }
    }
}

/// 32 random bytes from the operating system.
pub fn random_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; MIN_SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Why a configured secret is not acceptable, if it is not.
pub fn secret_problem(secret: &str) -> Option<String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Some(format!("shorter than {MIN_SECRET_BYTES} bytes"));
    }
    let lower = secret.to_ascii_lowercase();
    if KNOWN_DEFAULTS.iter().any(|d| lower.contains(d)) {
        return Some("a well-known default value".into());
    }
    None
}

/// What the server keeps across restarts, which decides how strict the
/// secrets must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// Nothing (`STORE=memory`, no `DATABASE_URL`): any secret is accepted,
    /// with a warning when it is weak; unset ones are drawn at random.
    Nothing,
    /// The embedded SQLite file of the default (no `DATABASE_URL`): users
    /// outlive the process,
    /// so a secret that is set must be strong; unset ones are drawn at
    /// random (sessions then end with the process, users stay).
    EmbeddedFile,
    /// A store configured by `DATABASE_URL` (PostgreSQL, or a SQLite file
    /// named by a `sqlite://` URL): both secrets must be set and strong.
    Database,
}

impl AuthConfig {
    /// Reads the auth settings (names in the module docs). `persistence`
    /// says what the server keeps: with a database a missing, default or
    /// short secret is an error, with the embedded file a default or short
    /// one is, unless `AUTH_ALLOW_INSECURE_SECRETS` is set.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>, persistence: Persistence) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let dev = get("AUTH_ALLOW_INSECURE_SECRETS").is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes"));
        // As configured: a weak secret may be swapped for a random one
        // below, which would hide that both were set the same.
        let equal = |a: Option<String>, b: Option<String>| a.is_some() && a == b;
        if equal(get("JWT_SECRET"), get("REFRESH_TOKEN_SECRET")) {
            return Err(ConfigError::Invalid {
                name: "REFRESH_TOKEN_SECRET",
                reason: "must differ from JWT_SECRET".into(),
            });
        }
        let mut c = Self {
            jwt_secret: secret(get("JWT_SECRET"), "JWT_SECRET", persistence, dev)?,
            refresh_token_secret: secret(get("REFRESH_TOKEN_SECRET"), "REFRESH_TOKEN_SECRET", persistence, dev)?,
            ..Self::default()
        };
        if c.jwt_secret == c.refresh_token_secret {
            // One key for both would let a stored token hash be replayed
            // as a signature, and a leak of one is a leak of both.
            return Err(ConfigError::Invalid {
                name: "REFRESH_TOKEN_SECRET",
                reason: "must differ from JWT_SECRET".into(),
            });
        }
        if let Some(v) = get("JWT_ISSUER") {
            c.jwt_issuer = v;
        }
        if let Some(v) = get("JWT_AUDIENCE") {
            c.jwt_audience = v;
        }
        // Each is added to the clock's time: bounded, so the sum stays a date.
        let secs = |name: &'static str, d: &mut Duration| -> Result<(), ConfigError> {
            if let Some(v) = get(name) {
                *d = Duration::from_secs(parse(name, &v)?);
                if *d > MAX_DURATION {
                    return Err(ConfigError::Invalid {
                        name,
                        reason: format!("{v:?} is more than {} seconds (10 years)", MAX_DURATION.as_secs()),
                    });
                }
            }
            Ok(())
        };
        secs("ACCESS_TOKEN_EXPIRY_SECS", &mut c.access_token_expiry)?;
        secs("REFRESH_TOKEN_EXPIRY_SECS", &mut c.refresh_token_expiry)?;
        secs("RESET_TOKEN_EXPIRY_SECS", &mut c.reset_token_expiry)?;
        secs("AUTH_RATE_LIMIT_WINDOW_SECS", &mut c.rate_limit_window)?;
        secs("LOCKOUT_DURATION_SECS", &mut c.lockout_duration)?;
        secs("JWT_LEEWAY_SECS", &mut c.leeway)?;
        let num = |name: &'static str, n: &mut u32| -> Result<(), ConfigError> {
            if let Some(v) = get(name) {
                *n = parse(name, &v)?;
            }
            Ok(())
        };
        num("AUTH_RATE_LIMIT_PER_MINUTE", &mut c.rate_limit_requests)?;
        num("MAX_LOGIN_ATTEMPTS", &mut c.max_login_attempts)?;
        num("ARGON2_MEMORY_KIB", &mut c.argon2.memory_kib)?;
        num("ARGON2_ITERATIONS", &mut c.argon2.iterations)?;
        num("ARGON2_PARALLELISM", &mut c.argon2.parallelism)?;
        if let Some(v) = get("ARGON2_MAX_CONCURRENT") {
            c.argon2_max_concurrent = parse("ARGON2_MAX_CONCURRENT", &v)?;
        }
        if let Some(v) = get("LOGIN_BACKOFF_MS") {
            c.login_backoff = Duration::from_millis(parse("LOGIN_BACKOFF_MS", &v)?);
        }
        if let Some(v) = get("ARGON2_QUEUE_WAIT_MS") {
            c.argon2_queue_wait = Duration::from_millis(parse("ARGON2_QUEUE_WAIT_MS", &v)?);
        }
        if c.access_token_expiry.is_zero() || c.refresh_token_expiry.is_zero() {
            return Err(ConfigError::Invalid {
                name: "ACCESS_TOKEN_EXPIRY_SECS",
                reason: "token lifetimes must be positive".into(),
            });
        }
        Ok(c)
    }
}

fn secret(
    value: Option<String>,
    name: &'static str,
    persistence: Persistence,
    dev: bool,
) -> Result<Vec<u8>, ConfigError> {
    let problem = match &value {
        None => Some("not set".to_owned()),
        Some(v) => secret_problem(v),
    };
    // A weak secret that is set is refused whenever something persists; a
    // missing one only with a database (the embedded file draws one).
    let strict = match persistence {
        Persistence::Database => true,
        Persistence::EmbeddedFile => value.is_some(),
        Persistence::Nothing => false,
    };
    match (problem, strict, dev) {
        (None, _, _) => Ok(value.unwrap_or_default().into_bytes()),
        (Some(problem), true, false) => Err(ConfigError::Invalid {
            name,
            reason: match persistence {
                Persistence::EmbeddedFile => format!(
                    "{problem}: with the embedded file (DATA_DIR) a secret that is set must be at least \
                     {MIN_SECRET_BYTES} random bytes; unset, one is drawn at random per process \
                     (set AUTH_ALLOW_INSECURE_SECRETS=1 for development only)"
                ),
                _ => format!(
                    "{problem}: with a store configured by DATABASE_URL both secrets must be set, each \
                     at least {MIN_SECRET_BYTES} random bytes (set AUTH_ALLOW_INSECURE_SECRETS=1 for \
                     development only)"
                ),
            },
        }),
        (Some(problem), true, true) => {
            tracing::warn!(
                variable = name,
                problem = %problem,
                "INSECURE: AUTH_ALLOW_INSECURE_SECRETS is set; never run like this in production"
            );
            Ok(value
                .filter(|v| v.len() >= MIN_SECRET_BYTES)
                .map_or_else(random_secret, String::into_bytes))
        }
        (Some(_), false, _) if value.is_none() => {
            tracing::warn!(
                variable = name,
                "not set: using a random secret for this process; tokens will not survive a restart"
            );
            Ok(random_secret())
        }
        (Some(problem), false, _) => {
            tracing::warn!(variable = name, problem = %problem, "weak secret (accepted because nothing is persisted: STORE=memory)");
            Ok(value.unwrap_or_default().into_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], persistent: bool) -> Result<AuthConfig, ConfigError> {
        let persistence = if persistent {
            Persistence::Database
        } else {
            Persistence::Nothing
        };
        load_with(vars, persistence)
    }

    fn load_with(vars: &[(&str, &str)], persistence: Persistence) -> Result<AuthConfig, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        AuthConfig::from_lookup(|k| vars.get(k).cloned(), persistence)
    }

    const GOOD: &str = "0123456789abcdef0123456789abcdef-x";

    #[test]
    fn in_memory_without_secrets_uses_random_ones() {
        let a = load(&[], false).unwrap();
        let b = load(&[], false).unwrap();
        assert_eq!(a.jwt_secret.len(), MIN_SECRET_BYTES);
        assert_ne!(a.jwt_secret, b.jwt_secret);
        assert_ne!(a.jwt_secret, a.refresh_token_secret);
    }

    #[test]
    fn persistent_store_requires_strong_secrets() {
        let err = load(&[("REFRESH_TOKEN_SECRET", GOOD)], true).unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"), "{err}");
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
        let err = load(&[("JWT_SECRET", "short"), ("REFRESH_TOKEN_SECRET", GOOD)], true).unwrap_err();
        assert!(err.to_string().contains("shorter"), "{err}");
        let default = "changeme-changeme-changeme-changeme";
        assert!(load(&[("JWT_SECRET", default), ("REFRESH_TOKEN_SECRET", GOOD)], true).is_err());
        let ok = load(&[("JWT_SECRET", GOOD), ("REFRESH_TOKEN_SECRET", &GOOD.repeat(2))], true).unwrap();
        assert_eq!(ok.jwt_secret, GOOD.as_bytes());
        // The development flag lets it start (with a random secret).
        let dev = load(&[("AUTH_ALLOW_INSECURE_SECRETS", "1")], true).unwrap();
        assert_eq!(dev.jwt_secret.len(), MIN_SECRET_BYTES);
    }

    #[test]
    fn the_embedded_file_refuses_weak_secrets_and_draws_missing_ones() {
        let file = Persistence::EmbeddedFile;
        let err = load_with(&[("JWT_SECRET", "secret"), ("REFRESH_TOKEN_SECRET", GOOD)], file).unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET"), "{err}");
        // It says what this store needs: unset is fine, set must be strong.
        assert!(err.to_string().contains("embedded file"), "{err}");
        assert!(!err.to_string().contains("DATABASE_URL"), "{err}");
        let err = load_with(&[("JWT_SECRET", GOOD), ("REFRESH_TOKEN_SECRET", "short")], file).unwrap_err();
        assert!(err.to_string().contains("REFRESH_TOKEN_SECRET"), "{err}");
        let drawn = load_with(&[], file).unwrap();
        assert_eq!(drawn.jwt_secret.len(), MIN_SECRET_BYTES);
        let set = load_with(&[("JWT_SECRET", GOOD), ("REFRESH_TOKEN_SECRET", &GOOD.repeat(2))], file).unwrap();
        assert_eq!(set.jwt_secret, GOOD.as_bytes());
        // In memory only, a weak secret is accepted (with a warning).
        assert!(load_with(&[("JWT_SECRET", "secret")], Persistence::Nothing).is_ok());
        assert!(load_with(&[("JWT_SECRET", "secret"), ("AUTH_ALLOW_INSECURE_SECRETS", "1")], file).is_ok());
    }

    #[test]
    fn lifetimes_are_bounded_so_their_deadlines_stay_dates() {
        for name in [
            "ACCESS_TOKEN_EXPIRY_SECS",
            "REFRESH_TOKEN_EXPIRY_SECS",
            "RESET_TOKEN_EXPIRY_SECS",
            "AUTH_RATE_LIMIT_WINDOW_SECS",
            "LOCKOUT_DURATION_SECS",
            "JWT_LEEWAY_SECS",
        ] {
            let err = load(&[(name, "10000000000000")], false).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
            let max = MAX_DURATION.as_secs().to_string();
            assert!(load(&[(name, max.as_str())], false).is_ok(), "{name}");
        }
    }

    #[test]
    fn equal_secrets_are_a_startup_error() {
        for persistent in [false, true] {
            let err = load(&[("JWT_SECRET", GOOD), ("REFRESH_TOKEN_SECRET", GOOD)], persistent).unwrap_err();
            assert!(err.to_string().contains("must differ from JWT_SECRET"), "{err}");
            // Also when both are weak and the development flag would
            // otherwise swap them for random ones.
            let err = load(
                &[
                    ("JWT_SECRET", "short"),
                    ("REFRESH_TOKEN_SECRET", "short"),
                    ("AUTH_ALLOW_INSECURE_SECRETS", "1"),
                ],
                persistent,
            )
            .unwrap_err();
            assert!(err.to_string().contains("must differ from JWT_SECRET"), "{err}");
        }
    }

    #[test]
    fn issuer_audience_and_lifetime_defaults() {
        let c = load(&[], false).unwrap();
        assert_eq!(c.access_token_expiry, Duration::from_secs(900));
        assert_eq!(
            (c.jwt_issuer.as_str(), c.jwt_audience.as_str()),
            ("banking-example", "banking-example-api")
        );
        let c = load(
            &[("JWT_ISSUER", "https://bank.example"), ("JWT_AUDIENCE", "accounts")],
            false,
        )
        .unwrap();
        assert_eq!(
            (c.jwt_issuer.as_str(), c.jwt_audience.as_str()),
            ("https://bank.example", "accounts")
        );
    }

    #[test]
    fn reads_durations_and_limits() {
        let c = load(
            &[
                ("ACCESS_TOKEN_EXPIRY_SECS", "60"),
                ("MAX_LOGIN_ATTEMPTS", "3"),
                ("AUTH_RATE_LIMIT_PER_MINUTE", "0"),
            ],
            false,
        )
        .unwrap();
        assert_eq!(c.access_token_expiry, Duration::from_secs(60));
        assert_eq!((c.max_login_attempts, c.rate_limit_requests), (3, 0));
        assert!(load(&[("LOCKOUT_DURATION_SECS", "soon")], false).is_err());
        assert!(!format!("{c:?}").contains(&format!("{:?}", c.jwt_secret)));
    }
}
