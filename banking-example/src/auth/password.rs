//! Password hashing (Argon2id) and the password policy.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`)
//! with a random 16-byte salt per password; the parameters come from
//! [`Argon2Params`] (default: 19 MiB, 2 passes, 1 lane — the OWASP
//! recommendation) and are stored in each hash, so they can be raised
//! without invalidating old hashes. Hashing and verifying run on the
//! blocking thread pool (`spawn_blocking`), never on the async executor.
//!
//! Policy: at least 12 characters, at most 1024 bytes, not equal to the
//! username (case-insensitive).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use super::config::Argon2Params;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in bytes (bounds hashing work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashing failed (bad parameters or a worker that died).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Hashes and verifies passwords with Argon2id.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: Params,
}

impl PasswordHasher {
    /// A hasher with these costs.
    pub fn new(p: Argon2Params) -> Result<Self, HashError> {
        let params =
            Params::new(p.memory_kib, p.iterations, p.parallelism, None).map_err(|e| HashError(e.to_string()))?;
        Ok(Self { params })
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// The PHC hash of `password` with a fresh salt.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let params = self.params.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Self::argon2(params)
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| HashError(e.to_string()))
        })
        .await
        .map_err(|e| HashError(e.to_string()))?
    }

    /// Whether `password` matches `hash` (false for a malformed hash).
    pub async fn verify(&self, password: &str, hash: &str) -> bool {
        let params = self.params.clone();
        let password = password.to_owned();
        let hash = hash.to_owned();
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Self::argon2(params)
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }
}

/// The policy's verdict on a new password: `Err` with the reason.
pub fn check_policy(username: &str, password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("password must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("password must be at most {MAX_PASSWORD_BYTES} bytes"));
    }
    if password.trim().eq_ignore_ascii_case(username.trim()) {
        return Err("password must not equal the username".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(Argon2Params {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_are_salted() {
        let h = cheap();
        let a = h.hash("correct horse battery").await.unwrap();
        let b = h.hash("correct horse battery").await.unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "per-password salt");
        assert!(h.verify("correct horse battery", &a).await);
        assert!(!h.verify("correct horse batterY", &a).await);
        assert!(!h.verify("x", "not a hash").await);
    }

    #[test]
    fn policy() {
        assert!(check_policy("a@b.c", "short").is_err());
        assert!(check_policy("someone@example.com", "SomeOne@Example.com").is_err());
        assert!(check_policy("a@b.c", "long enough password").is_ok());
        assert!(check_policy("a@b.c", &"x".repeat(2000)).is_err());
    }
}
