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

use axum::body::Bytes;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use es_core::{CommandDeduplicator, DedupClaim, DedupError, DedupStatus};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::errors::ApiError;

/// Namespace of command ids and request fingerprints.
const NAMESPACE: Uuid = Uuid::from_u128(0x0b8e_55d4_2f0c_4a59_9a52_7c7e_5e1b_1d01);

pub use super::headers::REPLAYED_HEADER;

/// A response as stored for replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    /// The body as a JSON value (all that earlier versions stored, and
    /// what they replay).
    body: serde_json::Value,
    /// The body exactly as first sent, replayed byte for byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    warnings: Option<String>,
    fingerprint: Uuid,
}

/// What a handler produced: status, JSON body and validation warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body, serialized (once: the answer and a stored replay
    /// are these bytes).
    pub body: Bytes,
    /// Validation warnings for the `x-validation-warnings` header.
    pub warnings: Option<String>,
}

impl Reply {
    /// A reply of `status` with `body` serialized as JSON.
    pub fn json<T: Serialize>(status: StatusCode, body: &T, warnings: Option<String>) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Internal(format!("response body: {e}")))?;
        Ok(Self {
            status,
            body: Bytes::from(body),
            warnings,
        })
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        let mut response = (self.status, content_type, self.body).into_response();
        if let Some(w) = self.warnings.and_then(|w| HeaderValue::from_str(&w).ok()) {
            response.headers_mut().insert(super::headers::WARNINGS.clone(), w);
        }
        response
    }
}

/// How often a running keyed request renews its in-flight mark, which
/// lives [`IN_FLIGHT_TTL`](crate::backends::IN_FLIGHT_TTL) without it.
pub const IN_FLIGHT_RENEWAL: Duration = Duration::from_secs(1);

/// Runs commands at most once per (client id, idempotency key).
#[derive(Clone)]
pub struct Idempotency {
    dedup: Arc<dyn CommandDeduplicator>,
    wait: Duration,
    renewal: Duration,
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
        Self {
            dedup,
            wait,
            renewal: IN_FLIGHT_RENEWAL,
        }
    }

    /// Renews a running request's in-flight mark every `renewal` instead of
    /// [`IN_FLIGHT_RENEWAL`] (well within the de-duplicator's TTL).
    #[must_use]
    pub fn renewing_every(mut self, renewal: Duration) -> Self {
        self.renewal = renewal.max(Duration::from_millis(1));
        self
    }

    /// Whether the de-duplicator's backend answers (readiness).
    pub async fn check(&self) -> Result<(), es_core::DedupError> {
        self.dedup.check().await
    }

    /// The command id of a client's key (stable across processes).
    pub fn command_id(client_id: &str, key: &str) -> Uuid {
        Uuid::new_v5(&NAMESPACE, scoped(client_id, key).as_bytes())
    }

    /// The command id of a keyed request: its key and the request itself
    /// (`fingerprint`), so that once the key's window has passed (or its
    /// record is lost) the same request is still recognised by the store,
    /// and another request under the same key is another command rather
    /// than taken for the first one.
    pub fn request_command_id(client_id: &str, key: &str, fingerprint: Uuid) -> Uuid {
        Uuid::new_v5(&Self::command_id(client_id, key), fingerprint.as_bytes())
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
            Ok(DedupStatus::Started(claim)) => {
                let running = run(Some(Self::request_command_id(client_id, key, fingerprint)));
                let result = self.holding(&dedup_key, &claim, running).await;
                self.finish(&dedup_key, &claim, fingerprint, result).await
            }
            Ok(DedupStatus::InProgress) | Err(DedupError::InProgress { .. }) => {
                // Retry with the same key: it is answered from the stored
                // outcome once the first request finishes (or its claim,
                // left by a process that died, lapses).
                let mut response =
                    ApiError::Conflict("a request with this Idempotency-Key is still in progress".into())
                        .into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                response
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency store unavailable; refusing keyed request");
                ApiError::Unavailable("idempotency store unavailable, retry later".into()).into_response()
            }
        }
    }

    /// Awaits `running`, renewing the key's in-flight mark every
    /// [`IN_FLIGHT_RENEWAL`] while it lasts.
    async fn holding<T>(&self, dedup_key: &str, claim: &DedupClaim, running: impl Future<Output = T>) -> T {
        tokio::pin!(running);
        let start = tokio::time::Instant::now() + self.renewal;
        let mut renewal = tokio::time::interval_at(start, self.renewal);
        renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = &mut running => return out,
                _ = renewal.tick() => match self.dedup.renew(dedup_key, claim).await {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!("idempotency key's in-flight mark lapsed while its request ran"),
                    Err(e) => tracing::warn!(error = %e, "could not renew idempotency key's in-flight mark"),
                },
            }
        }
    }

    async fn finish(
        &self,
        dedup_key: &str,
        claim: &DedupClaim,
        fingerprint: Uuid,
        result: Result<Reply, ApiError>,
    ) -> Response {
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
                if let Err(err) = self.dedup.abandon(dedup_key, claim).await {
                    tracing::warn!(error = %err, "could not release idempotency key");
                }
                return e.into_response();
            }
            Err(e) => match Reply::json(e.status(), &serde_json::json!({ "error": e.public_message() }), None) {
                Ok(reply) => reply,
                Err(e) => return e.into_response(),
            },
        };
        let stored = serde_json::from_slice(&reply.body).map(|body| StoredResponse {
            status: reply.status.as_u16(),
            body,
            body_text: std::str::from_utf8(&reply.body).ok().map(str::to_owned),
            warnings: reply.warnings.clone(),
            fingerprint,
        });
        match stored.and_then(|stored| serde_json::to_value(&stored)) {
            Ok(value) => {
                if let Err(err) = self.dedup.complete(dedup_key, claim, &value).await {
                    // The command id still protects the money; only the
                    // exact replay of this response is lost (or, when the
                    // claim was lost, another request's stands).
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
    let body = match stored.body_text {
        Some(text) => Bytes::from(text),
        // Stored by an earlier version: the value, serialized again.
        None => match serde_json::to_vec(&stored.body) {
            Ok(body) => Bytes::from(body),
            Err(e) => return ApiError::Internal(format!("stored idempotent response unreadable: {e}")).into_response(),
        },
    };
    let mut response = Reply {
        status,
        body,
        warnings: stored.warnings,
    }
    .into_response();
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use es_core::InMemoryDeduplicator;

    async fn body(response: Response) -> (StatusCode, Option<String>, String) {
        let status = response.status();
        let replayed = response
            .headers()
            .get(REPLAYED_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, replayed, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_retry_gets_the_first_answer_byte_for_byte() {
        let dedup = Arc::new(InMemoryDeduplicator::new(
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let idempotency = Idempotency::new(dedup, Duration::from_secs(1));
        // Field order as the handler serialized it, not sorted.
        let answer = serde_json::json!({ "b": 1, "a": "2.50" });
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let run = |_| async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Reply::json(StatusCode::CREATED, &Ordered, None)
        };
        let first = body(idempotency.execute("client", Some("k"), "req", run).await).await;
        let retry = body(idempotency.execute("client", Some("k"), "req", run).await).await;
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(first, (StatusCode::CREATED, None, r#"{"b":1,"a":"2.50"}"#.to_owned()));
        assert_eq!(retry, (StatusCode::CREATED, Some("true".to_owned()), first.2.clone()));
        assert_eq!(serde_json::from_str::<serde_json::Value>(&first.2).unwrap(), answer);
    }

    /// A request that runs several times the in-flight TTL keeps its key
    /// (its mark is renewed while it runs): a retry meanwhile is told the
    /// request is in progress, and the command runs once. Without renewal
    /// the mark would lapse after the TTL and the retry would run it again.
    #[tokio::test]
    async fn a_long_request_keeps_its_key_while_it_runs() {
        let ttl = Duration::from_millis(300);
        let dedup = Arc::new(InMemoryDeduplicator::new(Duration::from_secs(60), ttl));
        let idempotency = Idempotency::new(dedup, Duration::ZERO).renewing_every(ttl / 5);
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let run = |_| async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(ttl * 4).await;
            Reply::json(StatusCode::OK, &Ordered, None)
        };
        let first = idempotency.execute("client", Some("slow"), "req", run);
        let retry = async {
            tokio::time::sleep(ttl * 2).await;
            idempotency.execute("client", Some("slow"), "req", run).await
        };
        let (first, retry) = tokio::join!(first, retry);
        assert_eq!(
            runs.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the command ran once"
        );
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(retry.status(), StatusCode::CONFLICT, "still in progress");
        assert_eq!(
            retry.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }

    /// Serializes its fields out of alphabetical order.
    struct Ordered;

    impl Serialize for Ordered {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut st = s.serialize_struct("Ordered", 2)?;
            st.serialize_field("b", &1)?;
            st.serialize_field("a", "2.50")?;
            st.end()
        }
    }

    #[tokio::test]
    async fn a_response_stored_by_an_earlier_version_is_replayed_from_its_value() {
        let fingerprint = Uuid::new_v5(&NAMESPACE, b"req");
        let stored = serde_json::json!({
            "status": 200,
            "body": { "balance": "5.00", "version": 2 },
            "fingerprint": fingerprint,
        });
        let (status, replayed, text) = body(replay(stored.clone(), fingerprint)).await;
        assert_eq!((status, replayed.as_deref()), (StatusCode::OK, Some("true")));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            stored["body"]
        );
        // Another request under the same key is still refused.
        let other = Uuid::new_v5(&NAMESPACE, b"other");
        assert_eq!(replay(stored, other).status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
