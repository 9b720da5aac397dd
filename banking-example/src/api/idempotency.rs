//! `Idempotency-Key` handling: two layers.
//!
//! 1. The [`CommandDeduplicator`] (in-memory, or Redis when configured)
//!    stores the first response of a key and replays it to retries; a
//!    concurrent retry waits for the first request to finish.
//! 2. The key is also turned into the command id (UUIDv5 of client id and
//!    key), from which the repository derives the event ids. The events
//!    therefore carry the key, and the store recognises a retry even when
//!    the server died between committing and answering (and the
//!    de-duplicator's in-flight mark was lost): the retry is answered with
//!    the current state, and the money moves once.
//!
//! Reusing a key for a different request (other route or body) is refused
//! with 422; a retry while the first request still runs after
//! `wait` is refused with 409 (both as in the IETF idempotency-key draft).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use es_core::{CommandDeduplicator, DedupError, DedupStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::errors::ApiError;
use super::headers::WARNINGS_HEADER;

/// Namespace of command ids and request fingerprints.
const NAMESPACE: Uuid = Uuid::from_u128(0x0b8e_55d4_2f0c_4a59_9a52_7c7e_5e1b_1d01);

pub use super::headers::REPLAYED_HEADER;

/// A response as stored for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    body: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warnings: Option<String>,
    fingerprint: Uuid,
}

/// What a handler produced: status, JSON body and validation warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: serde_json::Value,
    /// Validation warnings for the `x-validation-warnings` header.
    pub warnings: Option<String>,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(w) = self.warnings.and_then(|w| HeaderValue::from_str(&w).ok()) {
            response.headers_mut().insert(WARNINGS_HEADER, w);
        }
        response
    }
}

/// Runs commands at most once per (client id, idempotency key).
#[derive(Clone)]
pub struct Idempotency {
    dedup: Arc<dyn CommandDeduplicator>,
    wait: Duration,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl Idempotency {
    /// Uses `dedup`; a retry waits up to `wait` for a running first request.
    pub fn new(dedup: Arc<dyn CommandDeduplicator>, wait: Duration) -> Self {
        Self { dedup, wait }
    }

    /// The command id of a client's key (stable across processes).
    pub fn command_id(client_id: &str, key: &str) -> Uuid {
        Uuid::new_v5(&NAMESPACE, scoped(client_id, key).as_bytes())
    }

    /// A deterministic id derived from a client's key, for resources the
    /// command creates (the new account's id), so that a retry after a
    /// crash addresses the same stream.
    pub fn derived_id(client_id: &str, key: &str, purpose: &str) -> Uuid {
        Uuid::new_v5(&Self::command_id(client_id, key), purpose.as_bytes())
    }

    /// Runs `run` once per key and replays its reply to retries. Without a
    /// key it just runs. `request` identifies the request (route and
    /// canonical body) so that a key reused for another request is caught.
    /// `run` receives the command id to put in the `CommandContext`.
    pub async fn execute<F, Fut>(&self, client_id: &str, key: Option<&str>, request: &str, run: F) -> Response
    where
        F: FnOnce(Option<Uuid>) -> Fut,
        Fut: Future<Output = Result<Reply, ApiError>>,
    {
        let Some(key) = key else {
            return run(None).await.into_response();
        };
        let dedup_key = format!("idem:{}", scoped(client_id, key));
        let fingerprint = Uuid::new_v5(&NAMESPACE, request.as_bytes());
        match self.dedup.begin_or_wait(&dedup_key, self.wait).await {
            Ok(DedupStatus::Completed(stored)) => replay(stored, fingerprint),
            Ok(DedupStatus::Started) => {
                let result = run(Some(Self::command_id(client_id, key))).await;
                self.finish(&dedup_key, fingerprint, result).await
            }
            Ok(DedupStatus::InProgress) | Err(DedupError::InProgress { .. }) => {
                ApiError::Conflict("a request with this Idempotency-Key is still in progress".into()).into_response()
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency store unavailable; refusing keyed request");
                ApiError::Unavailable("idempotency store unavailable, retry later".into()).into_response()
            }
        }
    }

    async fn finish(&self, dedup_key: &str, fingerprint: Uuid, result: Result<Reply, ApiError>) -> Response {
        let reply = match result {
            Ok(reply) => reply,
            // Errors that say nothing final about the command are not
            // stored: a retry runs it again (safely, by its command id).
            Err(
                e @ (ApiError::Internal(_)
                | ApiError::Unavailable(_)
                | ApiError::Overloaded { .. }
                | ApiError::RateLimited { .. }),
            ) => {
                if let Err(err) = self.dedup.abandon(dedup_key).await {
                    tracing::warn!(error = %err, "could not release idempotency key");
                }
                return e.into_response();
            }
            Err(e) => Reply {
                status: e.status(),
                body: serde_json::json!({ "error": e.public_message() }),
                warnings: None,
            },
        };
        let stored = StoredResponse {
            status: reply.status.as_u16(),
            body: reply.body.clone(),
            warnings: reply.warnings.clone(),
            fingerprint,
        };
        match serde_json::to_value(&stored) {
            Ok(value) => {
                if let Err(err) = self.dedup.complete(dedup_key, &value).await {
                    // The command id still protects the money; only the
                    // exact replay of this response is lost.
                    tracing::warn!(error = %err, "could not store idempotent response");
                }
            }
            Err(err) => tracing::warn!(error = %err, "idempotent response does not serialize"),
        }
        reply.into_response()
    }
}

fn scoped(client_id: &str, key: &str) -> String {
    // Length-prefixed so that ("a:b", "c") and ("a", "b:c") differ.
    format!("{}:{client_id}:{key}", client_id.len())
}

fn replay(stored: serde_json::Value, fingerprint: Uuid) -> Response {
    let stored: StoredResponse = match serde_json::from_value(stored) {
        Ok(s) => s,
        Err(e) => return ApiError::Internal(format!("stored idempotent response unreadable: {e}")).into_response(),
    };
    if stored.fingerprint != fingerprint {
        return ApiError::Unprocessable("Idempotency-Key was already used for a different request".into())
            .into_response();
    }
    metrics::counter!("idempotent_replays_total").increment(1);
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = Reply {
        status,
        body: stored.body,
        warnings: stored.warnings,
    }
    .into_response();
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
