//! The router and its middleware stack.
//!
//! Outermost first: [`edge`](super::edge) (request id, tracing span,
//! HTTP metrics, timeout, shard routing, rate limiting, the JSON error
//! shape), body limit, routes.

use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use super::auth;
use super::edge::edge;
pub use super::edge::{is_valid_request_id, MAX_REQUEST_ID_LEN, REQUEST_ID_REPLACED_HEADER};
use super::errors::{ensure_json_errors, ApiError};
pub use super::http_metrics::method_label;
use super::state::AppState;
use super::{access, accounts, cluster, health, openapi, transfers};

/// An HTTP method of the API (the only three it uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
}

impl Verb {
    /// Lowercase, as the keys of an OpenAPI path item.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
        }
    }

    /// The [`axum::http::Method`].
    pub fn method(self) -> Method {
        match self {
            Self::Get => Method::GET,
            Self::Post => Method::POST,
            Self::Put => Method::PUT,
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
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
    use Verb::{Get, Post, Put};
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
        route(Put, "/auth/users/{id}/roles", auth::set_user_roles),
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
    let max_body = state.config.max_body_bytes;
    // Routes sharing a path (`/accounts`: GET and POST) merge.
    route_table()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .fallback(|| async { ApiError::NotFound("not found".into()) })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn_with_state(state.clone(), edge))
                .layer(RequestBodyLimitLayer::new(max_body))
                .layer(DefaultBodyLimit::max(max_body)),
        )
        .with_state(state)
}
