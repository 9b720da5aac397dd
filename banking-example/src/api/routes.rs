//! The router and its middleware stack.
//!
//! Outermost first: request id (capped, set, then propagated), tracing
//! span, error-shape safety net, HTTP metrics, timeout, rate limiting,
//! body limit, routes.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::auth;
use super::errors::{ensure_json_errors, ApiError};
use super::extract::{bearer_token, is_visible_ascii, AuthUser, CLIENT_ID_HEADER, REQUEST_ID_HEADER};
pub use super::http_metrics::method_label;
use super::http_metrics::HttpMetrics;
use super::state::AppState;
use super::{access, accounts, cluster, health, openapi, peer, transfers};
use crate::rate_limit::RateLimitDecision;

/// An HTTP method of the API (the only two it uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
}

impl Verb {
    /// Lowercase, as the keys of an OpenAPI path item.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
        }
    }

    /// The [`axum::http::Method`].
    pub fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
        }
    }
}

/// One route: method, path template, handler.
pub struct Route {
    /// The method.
    pub verb: Verb,
    /// The path template (`/accounts/{id}`), as in the OpenAPI document.
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb.as_str(), self.path)
    }
}

fn route<H, T>(verb: Verb, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    Route {
        verb,
        path,
        handler: on(verb.filter(), handler),
    }
}

/// Every route of the API. [`router`] is built from this table and
/// nothing else, so it is the list of what the server answers.
pub fn route_table() -> Vec<Route> {
    use Verb::{Get, Post};
    vec![
        route(Post, "/auth/register", auth::register),
        route(Post, "/auth/login", auth::login),
        route(Post, "/auth/refresh", auth::refresh),
        route(Post, "/auth/change-password", auth::change_password),
        route(Post, "/auth/reset-password", auth::reset_password),
        route(Post, "/auth/reset-password/confirm", auth::reset_confirm),
        route(Post, "/auth/logout", auth::logout),
        route(Get, "/auth/me", auth::me),
        route(Get, "/auth/users", auth::list_users),
        route(Post, "/accounts", accounts::create_account),
        route(Get, "/accounts", access::list_accounts),
        route(Get, "/accounts/{id}", accounts::get_account),
        route(Get, "/accounts/{id}/events", accounts::list_events),
        route(Post, "/accounts/{id}/deposit", accounts::deposit),
        route(Post, "/accounts/{id}/withdraw", accounts::withdraw),
        route(Post, "/accounts/{id}/close", accounts::close_account),
        route(Get, "/cluster", cluster::cluster),
        route(Post, "/transfers", transfers::create_transfer),
        route(Get, "/transfers/{id}", transfers::get_transfer),
        route(Get, "/health", health::live),
        route(Get, "/health/ready", health::ready_status),
        route(Get, "/openapi.json", openapi::openapi_json),
        route(Get, "/docs", openapi::docs),
    ]
}

/// The operations listener's router (`ADMIN_BIND_ADDR`): the detailed
/// readiness report, Prometheus metrics, and liveness. It is not rate
/// limited or authenticated: keep it on loopback or a private network.
pub fn admin_router(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    Router::new()
        .route("/health", axum::routing::get(health::live))
        .route("/health/ready", axum::routing::get(health::ready))
        .route("/metrics", axum::routing::get(health::metrics))
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .layer(
            ServiceBuilder::new()
                .layer(TraceLayer::new_for_http().make_span_with(
                    |req: &Request| tracing::debug_span!("admin", method = %req.method(), path = %req.uri().path()),
                ))
                .layer(middleware::map_response(ensure_json_errors))
                .layer(TimeoutLayer::with_status_code(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    timeout,
                )),
        )
        .with_state(state)
}

/// Builds the application router over `state`.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let max_body = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    // Routes sharing a path (`/accounts`: GET and POST) merge.
    route_table()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(cap_request_id))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::map_response(ensure_json_errors))
                .layer(middleware::from_fn(record_metrics))
                .layer(TimeoutLayer::with_status_code(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    timeout,
                ))
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    super::forwarding::route_to_owner,
                ))
                .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
                .layer(RequestBodyLimitLayer::new(max_body))
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state)
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
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        f.write_str(id)
    }
}

/// Counts requests and their latency by method, route template and status
/// (see [`http_metrics`](super::http_metrics): bounded labels, kept
/// handles).
async fn record_metrics(req: Request, next: Next) -> Response {
    static HTTP: LazyLock<HttpMetrics> = LazyLock::new(HttpMetrics::default);
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    HTTP.record(method, route, response.status().as_u16(), start);
    response
}

/// Longest accepted `x-request-id`.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// Response header set when the request's `x-request-id` was replaced.
pub const REQUEST_ID_REPLACED_HEADER: &str = "x-request-id-replaced";

/// Whether `id` is an acceptable `x-request-id`: 1-128 printable ASCII
/// characters (space to `~`).
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// Drops an `x-request-id` that is too long or not printable ASCII (it
/// would be logged and stored in every event's metadata): a fresh one is
/// generated in its place and the answer carries
/// `x-request-id-replaced: true`.
async fn cap_request_id(mut req: Request, next: Next) -> Response {
    let invalid = req
        .headers()
        .get_all(REQUEST_ID_HEADER)
        .iter()
        .any(|v| !is_valid_request_id(v.as_bytes()));
    if !invalid {
        return next.run(req).await;
    }
    req.headers_mut().remove(REQUEST_ID_HEADER);
    let mut response = next.run(req).await;
    response
        .headers_mut()
        .insert(REQUEST_ID_REPLACED_HEADER, HeaderValue::from_static("true"));
    response
}

/// Rate limiting. A request with a valid bearer token on an `/accounts`
/// route counts against its user (`user:<id>`): the `x-client-id` is the
/// caller's choice, so keying on it would let a caller escape the limit
/// with a fresh id per request, or exhaust a shared id for everybody
/// using it. Every other request counts against its client address
/// ([`peer::limit_key`]: IPv6 by /64, `X-Forwarded-For` only from
/// `TRUSTED_PROXIES`). The verified identity is kept in the request, so
/// the handler does not verify the token again.
async fn rate_limit(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer_addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = peer::client_ip(peer_addr, req.headers(), &state.config.trusted_proxies);
    req.extensions_mut().insert(peer::ClientAddr(client));
    if state.limiter.is_unlimited() {
        // Nothing to count: no key, and the handler verifies the token.
        return next.run(req).await;
    }
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
                if let Ok(v) = HeaderValue::from_str(&remaining.to_string()) {
                    response.headers_mut().insert("x-ratelimit-remaining", v);
                }
            }
            response
        }
        RateLimitDecision::Limited { retry_after } => {
            let client_id = req
                .headers()
                .get(CLIENT_ID_HEADER)
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
