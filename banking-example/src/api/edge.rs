//! What every API request passes through before its handler, in one
//! middleware ([`edge`]), in this order:
//!
//! 1. its `x-request-id` checked (an unacceptable one is replaced and the
//!    answer says so) or generated;
//! 2. its tracing span (`http`: method, path, request id), around all that
//!    follows;
//! 3. HTTP metrics (method, route template, status, latency);
//! 4. the request timeout (408);
//! 5. shard routing ([`forwarding`](super::forwarding)): handled here,
//!    forwarded to the shard's owner, or 503;
//! 6. rate limiting;
//!
//! and on the way out every error made a JSON `{"error": ...}`
//! ([`ensure_json_errors`]) and the request id echoed.
//!
//! One middleware instead of a stack of them: each layer of a stack boxes
//! its future and clones the services under it on every request, and the
//! request path is hot (see docs/benchmarks.md).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use uuid::Uuid;

use super::errors::{ensure_json_errors, error_response, ApiError};
use super::extract::{bearer_token, is_visible_ascii, AuthUser};
use super::forwarding::route_to_owner;
use super::headers::{CLIENT_ID, RATE_LIMIT_REMAINING, REQUEST_ID};
use super::http_metrics::{method_label, HttpMetrics};
use super::peer;
use super::state::AppState;
use crate::rate_limit::RateLimitDecision;

/// `x-request-id-replaced`, parsed once.
static REQUEST_ID_REPLACED: HeaderName = HeaderName::from_static(REQUEST_ID_REPLACED_HEADER);

/// Longest accepted `x-request-id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Response header set when the request's `x-request-id` was replaced.
pub const REQUEST_ID_REPLACED_HEADER: &str = "x-request-id-replaced";

/// Whether `id` is an acceptable `x-request-id`: 1-128 printable ASCII
/// characters (space to `~`).
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// The middleware (see the module documentation).
pub async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let (request_id, replaced) = request_id(&mut req);
    let span = request_span(&req);
    let response = async {
        tracing::debug!("started processing request");
        let start = Instant::now();
        let method = method_label(req.method());
        let route = req.extensions().get::<MatchedPath>().cloned();
        let response = within(
            state.config.request_timeout,
            route_to_owner(&state, req, |req| rate_limit(&state, req, next)),
        )
        .await;
        let status = response.status();
        let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
        record(method, route, status, start);
        ensure_json_errors(response).await
    }
    .instrument(span)
    .await;
    echo_request_id(response, request_id, replaced)
}

/// The request's id: the `x-request-id` it carries when every value of it
/// is acceptable, otherwise (none, or an unacceptable one, which would be
/// logged and stored in every event's metadata) a fresh UUID, set on the
/// request. Also whether an unacceptable one was replaced.
fn request_id(req: &mut Request) -> (Option<HeaderValue>, bool) {
    let headers = req.headers_mut();
    let replaced = headers
        .get_all(&REQUEST_ID)
        .iter()
        .any(|v| !is_valid_request_id(v.as_bytes()));
    if replaced {
        headers.remove(&REQUEST_ID);
    }
    if let Some(id) = headers.get(&REQUEST_ID) {
        return (Some(id.clone()), replaced);
    }
    let mut buffer = Uuid::encode_buffer();
    let fresh = HeaderValue::from_str(Uuid::new_v4().hyphenated().encode_lower(&mut buffer)).ok();
    if let Some(id) = &fresh {
        headers.insert(REQUEST_ID.clone(), id.clone());
    }
    (fresh, replaced)
}

/// The answer with the request id (unless the handler set one) and, when
/// the request's was replaced, `x-request-id-replaced: true`.
fn echo_request_id(mut response: Response, id: Option<HeaderValue>, replaced: bool) -> Response {
    let headers = response.headers_mut();
    if let Some(id) = id {
        headers.entry(REQUEST_ID.clone()).or_insert(id);
    }
    if replaced {
        headers.insert(REQUEST_ID_REPLACED.clone(), HeaderValue::from_static("true"));
    }
    response
}

/// The span of a request: method, path and request id. Its fields are
/// read only when the span is enabled (`info` for this module), so with
/// the level off it costs one level check.
fn request_span(req: &Request) -> tracing::Span {
    tracing::info_span!(
        "http",
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %RequestIdField(req)
    )
}

/// The `x-request-id` of a request as a span field (empty when absent or
/// not text).
struct RequestIdField<'a>(&'a Request);

impl std::fmt::Display for RequestIdField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self
            .0
            .headers()
            .get(&REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        f.write_str(id)
    }
}

/// Counts a request and its latency by method, route template and status
/// (see [`http_metrics`](super::http_metrics): bounded labels, kept
/// handles), and logs its end: at `debug`, or at `error` for a 5xx.
fn record(method: &'static str, route: &str, status: StatusCode, start: Instant) {
    static HTTP: LazyLock<HttpMetrics> = LazyLock::new(HttpMetrics::default);
    HTTP.record(method, route, status.as_u16(), start);
    if status.is_server_error() {
        let latency_ms = start.elapsed().as_millis() as u64;
        tracing::error!(status = status.as_u16(), latency_ms, "response failed");
    } else if tracing::enabled!(tracing::Level::DEBUG) {
        let latency_ms = start.elapsed().as_millis() as u64;
        tracing::debug!(status = status.as_u16(), latency_ms, "finished processing request");
    }
}

/// `answer`, or 408 `{"error": "request timed out"}` when it takes longer
/// than `timeout` (it is then dropped, cancelling what it was waiting on).
async fn within(timeout: Duration, answer: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(timeout, answer).await {
        Ok(response) => response,
        Err(_) => error_response(StatusCode::REQUEST_TIMEOUT, "request timed out"),
    }
}

/// Rate limiting. A request with a valid bearer token on an `/accounts`
/// route counts against its user (`user:<id>`): the `x-client-id` is the
/// caller's choice, so keying on it would let a caller escape the limit
/// with a fresh id per request, or exhaust a shared id for everybody
/// using it. Every other request counts against its client address
/// ([`peer::limit_key`]: IPv6 by /64, `X-Forwarded-For` only from
/// `TRUSTED_PROXIES`). The verified identity is kept in the request, so
/// the handler does not verify the token again.
async fn rate_limit(state: &AppState, mut req: Request, next: Next) -> Response {
    let peer_addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = peer::client_ip(peer_addr, req.headers(), &state.config.trusted_proxies);
    req.extensions_mut().insert(peer::ClientAddr(client));
    if state.limiter.is_unlimited() {
        // Nothing to count: no key, and the handler verifies the token.
        return next.run(req).await;
    }
    // Boxed: the future of every request stays small when limits are off.
    Box::pin(limited(state, req, next, client)).await
}

/// A request counted against its key (see [`rate_limit`]).
async fn limited(state: &AppState, mut req: Request, next: Next, client: Option<IpAddr>) -> Response {
    let path = req.uri().path();
    let mut key = None;
    if path == "/accounts" || path.starts_with("/accounts/") {
        if let Ok(token) = bearer_token(req.headers()) {
            if let Ok(identity) = state.auth.authenticate(token).await {
                key = Some(format!("user:{}", identity.user_id));
                req.extensions_mut().insert(AuthUser(identity));
            }
        }
    }
    let key = key.unwrap_or_else(|| peer::limit_key(client));
    match state.limiter.check(&key).await {
        RateLimitDecision::Allowed { remaining } => {
            let mut response = next.run(req).await;
            if remaining != u32::MAX {
                response
                    .headers_mut()
                    .insert(RATE_LIMIT_REMAINING.clone(), HeaderValue::from(remaining));
            }
            response
        }
        RateLimitDecision::Limited { retry_after } => {
            let client_id = req
                .headers()
                .get(&CLIENT_ID)
                .and_then(|v| v.to_str().ok())
                .filter(|v| is_visible_ascii(v, 128))
                .unwrap_or("");
            tracing::warn!(key = %key, client_id, retry_after_ms = retry_after.as_millis() as u64, "rate limit exceeded");
            metrics::counter!("rate_limit_violations_total").increment(1);
            ApiError::RateLimited {
                retry_after: retry_after.max(Duration::from_millis(1)),
            }
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::headers::REQUEST_ID_HEADER;

    #[test]
    fn request_ids_are_1_to_128_printable_ascii() {
        assert!(is_valid_request_id(b"trace-abc"));
        assert!(is_valid_request_id(b"with space ~"));
        assert!(is_valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!is_valid_request_id(b"tab\there"));
        assert!(!is_valid_request_id("é".as_bytes()));
    }

    fn request(ids: &[&[u8]]) -> Request {
        let mut req = Request::new(axum::body::Body::empty());
        for id in ids {
            req.headers_mut()
                .append(REQUEST_ID_HEADER, HeaderValue::from_bytes(id).unwrap());
        }
        req
    }

    #[test]
    fn an_acceptable_request_id_is_kept() {
        let mut req = request(&[b"trace-abc"]);
        let (id, replaced) = request_id(&mut req);
        assert_eq!(id.unwrap(), "trace-abc");
        assert!(!replaced);
        assert_eq!(req.headers()[REQUEST_ID_HEADER], "trace-abc");
    }

    #[test]
    fn a_missing_request_id_is_generated_and_an_unacceptable_one_replaced() {
        let mut req = request(&[]);
        let (id, replaced) = request_id(&mut req);
        let id = id.unwrap();
        assert!(Uuid::parse_str(id.to_str().unwrap()).is_ok());
        assert!(!replaced);
        assert_eq!(req.headers()[REQUEST_ID_HEADER], id);

        // One bad value among good ones: all go, one fresh id stands.
        let long = [b'x'; MAX_REQUEST_ID_LEN + 1];
        let mut req = request(&[b"fine".as_slice(), long.as_slice()]);
        let (id, replaced) = request_id(&mut req);
        let id = id.unwrap();
        assert!(replaced);
        assert!(Uuid::parse_str(id.to_str().unwrap()).is_ok());
        assert_eq!(req.headers().get_all(REQUEST_ID_HEADER).iter().count(), 1);

        let response = echo_request_id(Response::new(axum::body::Body::empty()), Some(id.clone()), replaced);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], id);
        assert_eq!(response.headers()[REQUEST_ID_REPLACED_HEADER], "true");
    }

    #[test]
    fn a_request_id_the_handler_set_is_not_overwritten() {
        let mut response = Response::new(axum::body::Body::empty());
        response
            .headers_mut()
            .insert(REQUEST_ID_HEADER, HeaderValue::from_static("own"));
        let response = echo_request_id(response, Some(HeaderValue::from_static("incoming")), false);
        assert_eq!(response.headers()[REQUEST_ID_HEADER], "own");
        assert!(response.headers().get(REQUEST_ID_REPLACED_HEADER).is_none());
    }

    #[tokio::test]
    async fn a_slow_answer_is_408_in_the_error_shape_a_quick_one_passes() {
        let slow = within(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        })
        .await;
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
        let body = axum::body::to_bytes(slow.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], br#"{"error":"request timed out"}"#);

        let quick = within(Duration::from_secs(5), async { StatusCode::CREATED.into_response() }).await;
        assert_eq!(quick.status(), StatusCode::CREATED);
    }
}
