//! Access tokens (JWT, HS256 only) and opaque tokens (refresh, reset).
//!
//! Access token claims: `iss` and `aud` (`JWT_ISSUER`, `JWT_AUDIENCE`),
//! `sub` (user id), `roles`, `iat`, `nbf`, `exp`, `jti` (unique id, the
//! blacklist key) and `sid` (the session, i.e. the refresh token family,
//! so logout can end the session); the header says `typ: at+jwt` (RFC
//! 9068). Verification accepts HS256 only — `alg: none`, RS*/ES* and every
//! other algorithm are rejected before the signature is looked at —
//! requires that `typ`, our issuer and our audience, and checks `exp`
//! (expired at that second, plus the leeway, none by default) and `nbf`
//! (at most the leeway or one second early; `iat` must not be in the
//! future either) against the injected clock. A token that passed is kept (bounded, keyed on
//! the whole string), so its next uses check only the time; revocation is
//! the caller's, on every request.
//!
//! Opaque tokens are 32 random bytes, base64url; the server stores only
//! their HMAC-SHA256 under `REFRESH_TOKEN_SECRET`.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;
use uuid::Uuid;

use super::rbac::Role;

/// Who a valid access token says is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`).
    pub user_id: Uuid,
    /// Roles from the token.
    pub roles: Vec<Role>,
    /// Token id (`jti`).
    pub jti: Uuid,
    /// Session id (`sid`): the refresh token family.
    pub sid: Uuid,
    /// Token expiry.
    pub expires_at: DateTime<Utc>,
}

/// Body of a successful login or refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    /// JWT access token (HS256).
    pub access_token: String,
    /// Opaque refresh token (single use).
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Access token lifetime in seconds.
    pub expires_in: i64,
}

/// The `typ` header of access tokens (RFC 9068): a token of another kind
/// signed with the same key (an ID token, say) is not accepted as one.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Default `iss` of access tokens.
pub const DEFAULT_ISSUER: &str = "banking-example";
/// Default `aud` of access tokens.
pub const DEFAULT_AUDIENCE: &str = "banking-example-api";

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued it (`JWT_ISSUER`).
    pub iss: String,
    /// Who it is for (`JWT_AUDIENCE`).
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    /// The user's roles when the token was issued.
    pub roles: Vec<Role>,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expiry.
    pub exp: i64,
    /// Unique token id.
    pub jti: Uuid,
    /// Session (refresh token family) id.
    pub sid: Uuid,
}

/// Why a token was refused (the reason is logged and counted; clients see
/// a generic message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWT of ours (bad encoding, missing claims).
    #[error("malformed token")]
    Malformed,
    /// `alg` is not HS256.
    #[error("unexpected signing algorithm")]
    Algorithm,
    /// The signature does not match our key.
    #[error("invalid signature")]
    Signature,
    /// Past `exp`.
    #[error("token expired")]
    Expired,
    /// Before `nbf` or issued in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Revoked (logout, password change or reset, refresh reuse).
    #[error("token revoked")]
    Revoked,
    /// Not an access token (`typ` is not `at+jwt`).
    #[error("not an access token")]
    WrongType,
    /// Issued by someone else or for someone else (`iss`, `aud`).
    #[error("wrong issuer or audience")]
    Audience,
}

impl TokenError {
    /// Short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::WrongType => "type",
            Self::Audience => "audience",
        }
    }
}

/// Issues and verifies access tokens.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    expiry: chrono::Duration,
    leeway: i64,
    issuer: String,
    audience: String,
    /// The claims of tokens whose signature, type, issuer and audience
    /// were checked before, keyed on the whole token: the same string
    /// verifies the same way under the same key, so only the time checks
    /// run again (revocation is the caller's, on every request). Only
    /// tokens that passed are kept; shared by clones. Hashed with
    /// foldhash (seeded per process): a token is some 300 bytes, hashed on
    /// every request, and SipHash's resistance to chosen keys buys
    /// nothing where only verified tokens are stored.
    verified: moka::sync::Cache<Box<str>, Arc<Claims>, foldhash::fast::RandomState>,
}

/// Verified tokens kept (about half a kilobyte each).
const VERIFIED_TOKENS_KEPT: u64 = 10_000;
/// A kept token unused this long is dropped (tokens live minutes).
const VERIFIED_TOKEN_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

impl std::fmt::Debug for AccessTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// Tokens signed with `secret`, valid for `expiry`, from
    /// [`DEFAULT_ISSUER`] to [`DEFAULT_AUDIENCE`].
    pub fn new(secret: &[u8], expiry: std::time::Duration, leeway: std::time::Duration) -> Self {
        Self::issued_by(secret, expiry, leeway, DEFAULT_ISSUER, DEFAULT_AUDIENCE)
    }

    /// Tokens signed with `secret`, valid for `expiry`, with these `iss`
    /// and `aud` (required on verification).
    pub fn issued_by(
        secret: &[u8],
        expiry: std::time::Duration,
        leeway: std::time::Duration,
        issuer: &str,
        audience: &str,
    ) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Time is checked against the injected clock below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss", "aud"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            expiry: chrono::Duration::from_std(expiry).unwrap_or(chrono::Duration::minutes(15)),
            leeway: i64::try_from(leeway.as_secs()).unwrap_or(0),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS_KEPT)
                .time_to_idle(VERIFIED_TOKEN_IDLE)
                .build_with_hasher(foldhash::fast::RandomState::default()),
        }
    }

    /// Lifetime of a new token, in seconds.
    pub fn expires_in(&self) -> i64 {
        self.expiry.num_seconds()
    }

    /// A new token for `user` in session `sid`, issued `now`.
    pub fn issue(&self, user: Uuid, roles: &[Role], sid: Uuid, now: DateTime<Utc>) -> Result<(String, Claims), String> {
        let iat = now.timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user,
            roles: roles.to_vec(),
            iat,
            nbf: iat,
            exp: (now + self.expiry).timestamp(),
            jti: Uuid::new_v4(),
            sid,
        };
        let header = Header {
            typ: Some(ACCESS_TOKEN_TYPE.to_owned()),
            ..Header::new(Algorithm::HS256)
        };
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map(|t| (t, claims))
            .map_err(|e| e.to_string())
    }

    /// The claims of a valid token at `now` (revocation is checked by the
    /// caller).
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Claims, TokenError> {
        let claims = match self.verified.get(token) {
            Some(claims) => claims,
            None => {
                let claims = Arc::new(self.decode(token)?);
                self.verified.insert(token.into(), Arc::clone(&claims));
                claims
            }
        };
        let now = now.timestamp();
        if claims.exp <= now - self.leeway {
            return Err(TokenError::Expired);
        }
        // A token from an instance whose clock is a little ahead is not
        // refused in its first second, whatever the leeway.
        let early = self.leeway.max(1);
        if claims.nbf > now + early || claims.iat > now + early {
            return Err(TokenError::NotYetValid);
        }
        Ok(Claims::clone(&claims))
    }

    /// The claims of a token with a valid signature, type, issuer and
    /// audience (time not checked).
    fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Algorithm);
        }
        if !header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE))
        {
            return Err(TokenError::WrongType);
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::Audience,
                _ => TokenError::Malformed,
            })
    }
}

/// A fresh opaque token: 32 random bytes, base64url without padding.
pub fn opaque_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of an opaque token: hex HMAC-SHA256 under `key`.
pub fn token_hash(key: &[u8], token: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new(); // HMAC accepts keys of any length
    };
    mac.update(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in mac.finalize().into_bytes() {
        hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(b & 0x0f)]));
    }
    hex
}

/// The reset token a queued mail's `seed` stands for: base64url
/// HMAC-SHA256 under `key` of a label and the seed. The outbox keeps the
/// seed only; without `key` it is no token.
pub fn reset_token_from_seed(key: &[u8], seed: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new(); // HMAC accepts keys of any length
    };
    mac.update(b"banking-example password reset mail\0");
    mac.update(seed.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tokens(secret: &[u8]) -> AccessTokens {
        AccessTokens::new(secret, Duration::from_secs(3600), Duration::from_secs(30))
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn round_trip_and_time_checks() {
        let t = tokens(&[7; 32]);
        let now = Utc::now();
        let (token, claims) = t.issue(Uuid::new_v4(), &[Role::Customer], Uuid::new_v4(), now).unwrap();
        assert_eq!(t.verify(&token, now).unwrap(), claims);
        let later = now + chrono::Duration::seconds(3600 + 31);
        assert_eq!(t.verify(&token, later), Err(TokenError::Expired));
        let earlier = now - chrono::Duration::seconds(60);
        assert_eq!(t.verify(&token, earlier), Err(TokenError::NotYetValid));
        assert_eq!(tokens(&[8; 32]).verify(&token, now), Err(TokenError::Signature));
        assert_eq!(t.verify("garbage", now), Err(TokenError::Malformed));
    }

    #[test]
    fn a_verified_token_is_kept_but_time_and_other_strings_are_checked_again() {
        let t = tokens(&[7; 32]);
        let now = Utc::now();
        let (token, claims) = t.issue(Uuid::new_v4(), &[Role::Customer], Uuid::new_v4(), now).unwrap();
        assert_eq!(t.verify(&token, now).unwrap(), claims);
        assert!(t.verified.get(token.as_str()).is_some(), "kept after the first check");
        // Kept claims still expire, on this instance and its clones.
        let later = now + chrono::Duration::seconds(3600 + 31);
        assert_eq!(t.clone().verify(&token, later), Err(TokenError::Expired));
        // The same claims under another signature are not the kept token.
        let (head, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{head}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(t.verify(&forged, now), Err(TokenError::Signature));
        assert!(t.verified.get(forged.as_str()).is_none(), "refused tokens are not kept");
        // Another key never sees this key's kept tokens.
        assert_eq!(tokens(&[8; 32]).verify(&token, now), Err(TokenError::Signature));
    }

    #[test]
    fn rejects_alg_none_and_other_algorithms() {
        let t = tokens(&[7; 32]);
        let now = Utc::now();
        let (token, _) = t.issue(Uuid::new_v4(), &[Role::Admin], Uuid::new_v4(), now).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let none = format!("{}.{payload}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT"})));
        assert!(t.verify(&none, now).is_err());
        let hs512 = format!(
            "{}.{payload}.c2ln",
            b64(&serde_json::json!({"alg": "HS512", "typ": "JWT"}))
        );
        assert_eq!(t.verify(&hs512, now), Err(TokenError::Algorithm));
    }

    #[test]
    fn type_issuer_and_audience_are_required() {
        let secret = [7; 32];
        let t = tokens(&secret);
        let now = Utc::now();
        let (_, claims) = t.issue(Uuid::new_v4(), &[Role::Customer], Uuid::new_v4(), now).unwrap();
        let sign = |header: Header, claims: &serde_json::Value| {
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&secret)).unwrap()
        };
        let at = Header {
            typ: Some(ACCESS_TOKEN_TYPE.into()),
            ..Header::new(Algorithm::HS256)
        };
        let good = serde_json::to_value(&claims).unwrap();
        assert!(t.verify(&sign(at.clone(), &good), now).is_ok());
        // Same key, same claims, but typ JWT (an ID token, say).
        assert_eq!(
            t.verify(&sign(Header::new(Algorithm::HS256), &good), now),
            Err(TokenError::WrongType)
        );
        for (claim, value) in [("aud", "another-api"), ("iss", "another-issuer")] {
            let mut other = good.clone();
            other[claim] = value.into();
            assert_eq!(
                t.verify(&sign(at.clone(), &other), now),
                Err(TokenError::Audience),
                "{claim}"
            );
            other.as_object_mut().unwrap().remove(claim);
            assert!(t.verify(&sign(at.clone(), &other), now).is_err(), "{claim} missing");
        }
        // Another deployment's tokens (another audience) are refused.
        let theirs = AccessTokens::issued_by(&secret, Duration::from_secs(60), Duration::ZERO, DEFAULT_ISSUER, "x");
        let (token, _) = theirs
            .issue(Uuid::new_v4(), &[Role::Admin], Uuid::new_v4(), now)
            .unwrap();
        assert_eq!(t.verify(&token, now), Err(TokenError::Audience));
    }

    #[test]
    fn opaque_tokens_are_random_and_hashed_with_a_key() {
        let a = opaque_token();
        assert_ne!(a, opaque_token());
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(b"k", &a), token_hash(b"k", &a));
        assert_ne!(token_hash(b"k", &a), token_hash(b"j", &a));
        assert_eq!(token_hash(b"k", &a).len(), 64);
    }
}
