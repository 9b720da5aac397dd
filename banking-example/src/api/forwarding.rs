//! Routing of commands to the owner of their account's shard.
//!
//! A command (`POST /accounts/{id}/deposit|withdraw|close`, and
//! `POST /accounts`) is handled here when this instance owns the shard,
//! forwarded once to the owner otherwise (same method, path, headers and
//! body, `Idempotency-Key` included, plus [`FORWARDED_BY`] as a loop
//! guard), and answered 503 with `Retry-After` while the shard has no
//! owner. A forwarded request that does not find its shard here is not
//! forwarded again: it is answered 503 and the client retries.
//!
//! `POST /accounts` routes by the id the account will get: the id derived
//! from the `Idempotency-Key` (the same on every instance), or, without a
//! key, a fresh id in one of this instance's shards.

use std::future::Future;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use es_core::StreamId;
use es_redis::Route;
use uuid::Uuid;

use super::errors::ApiError;
use super::extract::{Caller, IdempotencyKey};
use super::idempotency::Idempotency;
use super::state::AppState;
use crate::cluster::Cluster;

/// The loop-guard header of a forwarded request: the forwarding instance.
pub const FORWARDED_BY: &str = "x-bank-forwarded-by";

/// The id `POST /accounts` gives the new account, chosen by the router.
#[derive(Debug, Clone, Copy)]
pub struct AssignedAccountId(pub Uuid);

/// Seconds a client should wait before retrying a command whose shard has
/// no owner.
const RETRY_AFTER_SECS: &str = "1";

/// The account a command request is for, from its path.
fn command_account(path: &str) -> Option<Uuid> {
    let rest = path.strip_prefix("/accounts/")?;
    let (id, action) = rest.split_once('/')?;
    matches!(action, "deposit" | "withdraw" | "close")
        .then(|| id.parse().ok())
        .flatten()
}

/// Routes `req`: `local` handles it when this instance owns its shard (and
/// always outside cluster mode), or it is forwarded, or answered 503.
pub async fn route_to_owner<F, Fut>(state: &AppState, req: Request, local: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    match &state.cluster {
        // Boxed: the cluster's paths (a Redis read, forwarding) stay out
        // of the future of every request of a single instance.
        Some(cluster) if req.method() == Method::POST => Box::pin(route_in_cluster(state, cluster, req, local)).await,
        _ => local(req).await,
    }
}

/// [`route_to_owner`] in cluster mode, for a POST.
async fn route_in_cluster<F, Fut>(state: &AppState, cluster: &Cluster, req: Request, local: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let path = req.uri().path().to_owned();
    let forwarded = req.headers().contains_key(FORWARDED_BY);
    let (route, req) = if path == "/accounts" {
        match create_route(state, cluster, req).await {
            Ok(routed) => routed,
            Err(req) => return local(req).await,
        }
    } else if let Some(id) = command_account(&path) {
        let stream = StreamId::from(id.to_string());
        let route = match cluster.manager.route(&stream) {
            // The view may be up to one interval old: look again.
            Route::Unavailable { .. } if cluster.manager.refresh_view().await.is_ok() => cluster.manager.route(&stream),
            route => route,
        };
        (route, req)
    } else {
        return local(req).await;
    };
    match route {
        Route::Local(permit) => {
            let response = local(req).await;
            drop(permit);
            response
        }
        Route::Remote { address, shard, .. } if !forwarded => {
            metrics::counter!("cluster_forwarded_requests_total").increment(1);
            tracing::debug!(shard, %address, "forwarding to the shard's owner");
            forward(cluster, state, req, &address).await
        }
        Route::Remote { shard, .. } | Route::Unavailable { shard } => {
            metrics::counter!("cluster_unavailable_total").increment(1);
            tracing::info!(shard, forwarded, "shard has no owner here or yet; answering 503");
            unavailable("the account's shard is changing owner; retry shortly")
        }
    }
}

/// Where `POST /accounts` goes; `Err` hands the request to the handler
/// unrouted (it then refuses it: no valid caller or key).
async fn create_route(state: &AppState, cluster: &Cluster, req: Request) -> Result<(Route, Request), Request> {
    let (mut parts, body) = req.into_parts();
    let key = match IdempotencyKey::from_request_parts(&mut parts, state).await {
        Ok(IdempotencyKey(key)) => key,
        Err(_) => return Err(Request::from_parts(parts, body)),
    };
    let route = match key {
        Some(key) => {
            let Ok(caller) = Caller::from_request_parts(&mut parts, state).await else {
                return Err(Request::from_parts(parts, body));
            };
            let id = Idempotency::derived_id(&caller.idempotency_scope(), &key, "account");
            cluster.manager.route(StreamId::from(id.to_string()))
        }
        None => match cluster.fresh_local_account() {
            Some((id, permit)) => {
                parts.extensions.insert(AssignedAccountId(id));
                Route::Local(permit)
            }
            // No shard here: any owner can open it in one of its own.
            None => {
                let view = cluster.manager.view();
                let me = &cluster.manager.instance().id;
                let owner = view
                    .live_instances()
                    .find(|i| &i.id != me && i.load > 0)
                    .map(|i| (i.id.clone(), i.address.clone()));
                match owner {
                    Some((owner, address)) => Route::Remote {
                        shard: 0,
                        owner,
                        address,
                    },
                    None => Route::Unavailable { shard: 0 },
                }
            }
        },
    };
    Ok((route, Request::from_parts(parts, body)))
}

/// 503 with `Retry-After`.
pub fn unavailable(message: &str) -> Response {
    let mut response = ApiError::Unavailable(message.to_owned()).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "host"
            | "content-length"
    )
}

/// The answer when the owner's was not received: 503 with `Retry-After`
/// when a retry cannot apply the command twice (the owner was never
/// reached, or the request has an `Idempotency-Key`); otherwise 502 (the
/// owner may have applied it: the outcome is unknown, and a retry without
/// a key could apply it again).
fn no_answer(reached: bool, keyed: bool, message: &str) -> Response {
    if !reached || keyed {
        return unavailable(&format!("{message}; retry shortly"));
    }
    ApiError::BadGateway(format!(
        "{message}; the outcome is unknown (send an Idempotency-Key to retry safely)"
    ))
    .into_response()
}

/// Sends the request to the owner and relays its answer; see [`no_answer`]
/// when there is none.
async fn forward(cluster: &Cluster, state: &AppState, req: Request, base: &str) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return ApiError::PayloadTooLarge("request body too large".into()).into_response(),
    };
    let keyed = parts.headers.contains_key(&crate::api::headers::IDEMPOTENCY_KEY);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = cluster.client().request(parts.method.clone(), format!("{base}{path}"));
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            request = request.header(name, value);
        }
    }
    let me = &cluster.manager.instance().id;
    request = request.header(FORWARDED_BY, me.as_str()).body(bytes);
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, %base, "forwarding to the shard's owner failed");
            return no_answer(!e.is_connect(), keyed, "the account's owner instance did not answer");
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, %base, "the shard owner's answer was cut off");
            return no_answer(true, keyed, "the account's owner instance's answer was cut off");
        }
    };
    let mut response = Response::new(Body::from(body.to_vec()));
    *response.status_mut() = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_answer_is_retried_only_when_a_retry_is_safe() {
        let status = |reached, keyed| no_answer(reached, keyed, "x").status();
        assert_eq!(status(false, false), StatusCode::SERVICE_UNAVAILABLE, "never reached");
        assert_eq!(status(true, true), StatusCode::SERVICE_UNAVAILABLE, "keyed");
        let unknown = no_answer(true, false, "x");
        assert_eq!(unknown.status(), StatusCode::BAD_GATEWAY, "unkeyed, maybe applied");
        assert!(unknown.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn only_account_commands_are_routed_by_path() {
        let id = Uuid::now_v7();
        assert_eq!(command_account(&format!("/accounts/{id}/deposit")), Some(id));
        assert_eq!(command_account(&format!("/accounts/{id}/withdraw")), Some(id));
        assert_eq!(command_account(&format!("/accounts/{id}/close")), Some(id));
        assert_eq!(command_account(&format!("/accounts/{id}/events")), None);
        assert_eq!(command_account(&format!("/accounts/{id}")), None);
        assert_eq!(command_account("/accounts/not-a-uuid/deposit"), None);
    }
}
