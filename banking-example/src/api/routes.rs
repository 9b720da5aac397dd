//! The router and its middleware stack.
//!
//! Outermost first: request id (set, then propagated), tracing span,
//! error-shape safety net, HTTP metrics, timeout, rate limiting, body
//! limit, routes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::errors::{ensure_json_errors, ApiError};
use super::extract::{client_id, REQUEST_ID_HEADER};
use super::{access, accounts, health, openapi};
use crate::app::AppState;
use crate::auth::routes as auth;
use crate::rate_limit::RateLimitDecision;

/// Every route of the API as `(method, path)`, as in the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/auth/register"),
    ("post", "/auth/login"),
    ("post", "/auth/refresh"),
    ("post", "/auth/change-password"),
    ("post", "/auth/reset-password"),
    ("post", "/auth/reset-password/confirm"),
    ("post", "/auth/logout"),
    ("get", "/auth/me"),
    ("get", "/auth/users"),
    ("post", "/accounts"),
    ("get", "/accounts"),
    ("get", "/accounts/{id}"),
    ("get", "/accounts/{id}/events"),
    ("post", "/accounts/{id}/deposit"),
    ("post", "/accounts/{id}/withdraw"),
    ("post", "/accounts/{id}/close"),
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
];

/// Builds the application router over `state`.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    let max_body = state.config.max_body_bytes;
    let timeout = state.config.request_timeout;
    Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/change-password", post(auth::change_password))
        .route("/auth/reset-password", post(auth::reset_password))
        .route("/auth/reset-password/confirm", post(auth::reset_confirm))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/auth/users", get(auth::list_users))
        .route("/accounts", post(accounts::create_account).get(access::list_accounts))
        .route("/accounts/{id}", get(accounts::get_account))
        .route("/accounts/{id}/events", get(accounts::list_events))
        .route("/accounts/{id}/deposit", post(accounts::deposit))
        .route("/accounts/{id}/withdraw", post(accounts::withdraw))
        .route("/accounts/{id}/close", post(accounts::close_account))
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(middleware::map_response(ensure_json_errors))
                .layer(middleware::from_fn(record_metrics))
                .layer(TimeoutLayer::with_status_code(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    timeout,
                ))
                .layer(middleware::from_fn_with_state(state.clone(), rate_limit))
                .layer(RequestBodyLimitLayer::new(max_body))
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state)
}

/// Counts requests and their latency by method, route template and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Limits per client id on `/accounts` routes (which require a valid
/// `x-client-id`) and per peer IP elsewhere.
async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let key = if path == "/accounts" || path.starts_with("/accounts/") {
        match client_id(req.headers()) {
            Ok(id) => format!("client:{id}"),
            Err(e) => return e.into_response(),
        }
    } else {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
        format!("ip:{ip}")
    };
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
            tracing::warn!(client = %key, retry_after_ms = retry_after.as_millis() as u64, "rate limit exceeded");
            metrics::counter!("rate_limit_violations_total").increment(1);
            ApiError::RateLimited {
                retry_after: retry_after.max(Duration::from_millis(1)),
            }
            .into_response()
        }
    }
}
