//! Errors at the HTTP edge: always `{"error": "..."}` with the right status.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use es_core::{RepositoryError, StoreError};

use super::dto::ErrorBody;
use crate::domain::AccountError;

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: invalid payload or validation failure.
    #[error("{0}")]
    BadRequest(String),
    /// 401 with `WWW-Authenticate: Bearer`: missing, invalid, expired or
    /// revoked credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// 404: unknown account or route.
    #[error("{0}")]
    NotFound(String),
    /// 409: version conflict, closed account, idempotency key in use.
    #[error("{0}")]
    Conflict(String),
    /// 413: body over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but refused by a business rule (insufficient funds).
    #[error("{0}")]
    Unprocessable(String),
    /// 429 with `Retry-After`.
    #[error("Rate limit exceeded")]
    RateLimited {
        /// When the client may try again.
        retry_after: Duration,
    },
    /// 429 with `Retry-After` and a specific message (login lockout).
    #[error("{message}")]
    TooManyRequests {
        /// What the client sees.
        message: String,
        /// When the client may try again.
        retry_after: Duration,
    },
    /// 503 with `Retry-After`: the server is at capacity (every password
    /// hashing slot busy).
    #[error("{message}")]
    Overloaded {
        /// What the client sees.
        message: String,
        /// When the client may try again.
        retry_after: Duration,
    },
    /// 503: a backend is unavailable (safe to retry).
    #[error("{0}")]
    Unavailable(String),
    /// 502: in cluster mode, the answer of the instance that owns the
    /// account was lost after the request reached it, for a request
    /// without `Idempotency-Key`: the outcome is unknown.
    #[error("{0}")]
    BadGateway(String),
    /// 500: the detail is logged, never sent.
    #[error("internal server error")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } | Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message the client sees.
    pub fn public_message(&self) -> String {
        self.to_string()
    }

    /// Maps a repository failure on account `id`.
    pub fn from_repository(err: RepositoryError<AccountError>, id: uuid::Uuid) -> Self {
        match err {
            RepositoryError::Rejected(e) => Self::from_domain(e, id),
            RepositoryError::Invalid(reason) => Self::BadRequest(reason),
            RepositoryError::Conflict { expected, actual, .. } => Self::Conflict(format!(
                "version conflict: expected version {expected}, current version {actual}"
            )),
            RepositoryError::Store(store) => Self::from_store(&store),
            // The id names another kind of stream: no such account.
            RepositoryError::WrongType { .. } => Self::from_domain(AccountError::NotFound, id),
            other => Self::Internal(other.to_string()),
        }
    }

    /// Maps an event store (or read model) error: 503 when the database is
    /// unreachable.
    pub fn from_store(store: &StoreError) -> Self {
        match store {
            StoreError::DuplicateEventId { .. } => {
                Self::Conflict("Idempotency-Key was already used for a different request".into())
            }
            StoreError::Unavailable { .. } => Self::Unavailable("service temporarily unavailable".into()),
            StoreError::Backend { source, .. } if database_unreachable(source.as_ref()) => {
                tracing::warn!(error = %store, "database unreachable");
                Self::Unavailable("service temporarily unavailable".into())
            }
            StoreError::Fenced { .. } | StoreError::NotShardOwner { .. } => {
                // Another instance owns the account's shard now; nothing
                // was written. The client retries (reaching the owner).
                metrics::counter!("cluster_fenced_appends_total").increment(1);
                tracing::warn!(error = %store, "append refused: shard moved");
                Self::Unavailable("the account's shard moved to another instance; retry".into())
            }
            StoreError::InvalidAppend { .. } => {
                Self::BadRequest("the request contains data that cannot be stored".into())
            }
            other => Self::Internal(other.to_string()),
        }
    }

    /// Maps a domain refusal on account `id`.
    pub fn from_domain(err: AccountError, id: uuid::Uuid) -> Self {
        match err {
            AccountError::NotFound => Self::NotFound(format!("account {id} not found")),
            AccountError::AlreadyExists => Self::Conflict(format!("account {id} already exists")),
            AccountError::Closed => Self::Conflict(format!("account {id} is closed")),
            e @ AccountError::TransferCancelled(_) => Self::Conflict(e.to_string()),
            e @ (AccountError::InsufficientFunds { .. }
            | AccountError::NonZeroBalance { .. }
            | AccountError::TransfersInFlight { .. }) => Self::Unprocessable(e.to_string()),
            e @ (AccountError::Invalid(_) | AccountError::Overflow) => Self::BadRequest(e.to_string()),
        }
    }
}

/// Whether a backend failure means the database (or, with write-behind,
/// Redis) could not be reached (connection refused or lost, no pooled
/// connection in time, server shutting down): safe to retry later, so 503
/// rather than 500.
fn database_unreachable(source: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(source);
    while let Some(e) = next {
        if let Some(db) = e.downcast_ref::<sqlx::Error>() {
            return match db {
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                // Connection exceptions (08...) and operator intervention
                // (57P01 admin shutdown, 57P02 crash shutdown, 57P03
                // cannot connect now).
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")),
                _ => false,
            };
        }
        if e.is::<std::io::Error>() {
            return true;
        }
        // Write-behind admits appends through Redis.
        if let Some(redis) = e.downcast_ref::<es_redis::RedisError>() {
            return redis.is_unreachable();
        }
        next = e.source();
    }
    false
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as A;
        let message = e.to_string();
        match e {
            A::InvalidCredentials | A::Unauthenticated(_) | A::InvalidRefreshToken => Self::Unauthorized(message),
            A::Locked { retry_after } => Self::TooManyRequests { message, retry_after },
            A::RateLimited { retry_after } => Self::RateLimited { retry_after },
            A::Busy { retry_after } => Self::Overloaded { message, retry_after },
            A::InvalidResetToken | A::Invalid(_) => Self::BadRequest(message),
            A::UsernameTaken => Self::Conflict(message),
            A::Forbidden(_) => Self::Forbidden(message),
            A::UnknownUser => Self::NotFound(message),
            A::OwnRoles => Self::Conflict(message),
            A::Backend(detail) => {
                tracing::warn!(error = %detail, "auth backend failed");
                Self::Unavailable("service temporarily unavailable".into())
            }
        }
    }
}

/// The `{"error": ...}` response for a status and message.
pub fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: message.into() })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Self::Unavailable(detail) => tracing::warn!(error = %detail, "backend unavailable"),
            _ => {}
        }
        let mut response = error_response(status, self.public_message());
        if matches!(self, Self::Unauthorized(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, Self::Unavailable(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RateLimited { retry_after }
        | Self::TooManyRequests { retry_after, .. }
        | Self::Overloaded { retry_after, .. } = self
        {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// Turns any error response that is not JSON (a 404 of an unknown route, a
/// 405, a 408 timeout, a 413 from the body limit) into the
/// `{"error": ...}` shape, keeping its status and headers.
pub async fn ensure_json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "not found".to_owned(),
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed".to_owned(),
        StatusCode::REQUEST_TIMEOUT => "request timed out".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
        s if s.is_server_error() => "internal server error".to_owned(),
        s => s.canonical_reason().unwrap_or("request failed").to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let fresh = error_response(status, message);
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.extend(fresh_parts.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store_failure(source: impl Into<es_core::BoxError>) -> StatusCode {
        let err = RepositoryError::<AccountError>::Store(Arc::new(StoreError::backend("append", source)));
        ApiError::from_repository(err, uuid::Uuid::nil()).status()
    }

    #[test]
    fn an_unreachable_database_is_503_other_backend_failures_500() {
        assert_eq!(
            store_failure(sqlx::Error::PoolTimedOut),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(store_failure(sqlx::Error::Io(refused)), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            store_failure(sqlx::Error::ColumnNotFound("x".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(store_failure("disk on fire"), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn an_unreachable_redis_is_503_a_failing_script_500() {
        let broken = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert_eq!(
            store_failure(es_redis::RedisError::Redis {
                operation: "write-behind admit",
                source: broken,
            }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            store_failure(es_redis::RedisError::Timeout {
                operation: "write-behind admit",
                timeout_ms: 250,
            }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let script = redis::RedisError::from((redis::ErrorKind::ResponseError, "ERR in script"));
        assert_eq!(
            store_failure(es_redis::RedisError::Redis {
                operation: "write-behind admit",
                source: script,
            }),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
