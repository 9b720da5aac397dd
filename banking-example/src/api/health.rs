//! Liveness, readiness and metrics. The public listener answers
//! `/health` and a bare `/health/ready` (status only); the detailed
//! readiness report and `/metrics` are on the operations listener
//! (`ADMIN_BIND_ADDR`), since they show positions, backends and errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::state::AppState;

/// Body of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    /// Always `ok` while the process serves requests.
    pub status: String,
}

/// State of one component in the readiness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ComponentStatus {
    /// `up` or `down`.
    pub status: String,
    /// Which backend (`memory`, `postgres`, `redis`, ...).
    pub backend: String,
    /// Extra facts (positions, lag, errors).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, serde_json::Value>,
}

/// Body of `GET /health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` when every component is up, else `not_ready`.
    pub status: String,
    /// Per-component status (on the operations listener only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentStatus>,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "Alive", body = Liveness)))]
pub async fn live() -> Json<Liveness> {
    Json(Liveness { status: "ok".into() })
}

fn component(up: bool, backend: &str, details: BTreeMap<String, serde_json::Value>) -> ComponentStatus {
    ComponentStatus {
        status: if up { "up" } else { "down" }.into(),
        backend: backend.into(),
        details,
    }
}

/// Readiness without details (the public listener): `ready` (200) or
/// `not_ready` (503); which component is down is on the operations
/// listener's `/health/ready`.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "A component is down (details on the operations listener)", body = Readiness),
    ))]
pub async fn ready_status(State(state): State<AppState>) -> Response {
    let (status, mut body) = readiness(&state).await;
    body.components.clear();
    (status, Json(body)).into_response()
}

/// Readiness with details (the operations listener): every backend
/// answers; the projection's position and lag; Kafka publishing (when
/// configured) makes progress, with its backlog.
pub async fn ready(State(state): State<AppState>) -> Response {
    let (status, body) = readiness(&state).await;
    (status, Json(body)).into_response()
}

/// How long readiness waits for one component: a backend that does not
/// answer (a database whose host is gone, say) is reported down with
/// this, instead of holding the probe until the request timeout.
pub const READINESS_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `check`'s result, or an error once [`READINESS_CHECK_TIMEOUT`] has
/// passed.
async fn bounded<T, E: std::fmt::Display>(check: impl Future<Output = Result<T, E>>) -> Result<T, String> {
    match tokio::time::timeout(READINESS_CHECK_TIMEOUT, check).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {} s", READINESS_CHECK_TIMEOUT.as_secs())),
    }
}

async fn readiness(state: &AppState) -> (StatusCode, Readiness) {
    let mut components = BTreeMap::new();
    // Every component at once, each bounded: the probe answers within
    // about READINESS_CHECK_TIMEOUT whatever is down.
    let publishing = async {
        match &state.publishing {
            Some(probe) => Some(tokio::time::timeout(READINESS_CHECK_TIMEOUT, probe.report()).await),
            None => None,
        }
    };
    let (head, held, checkpoint, limiter, dedup, publishing) = tokio::join!(
        bounded(state.repo.store().head_position()),
        tokio::time::timeout(READINESS_CHECK_TIMEOUT, held_back(state)),
        bounded(state.projection.position()),
        bounded(state.limiter.health()),
        bounded(state.idempotency.check()),
        publishing,
    );
    let store_up = head.is_ok();
    let mut details = BTreeMap::new();
    match &head {
        Ok(h) => details.insert("head_position".into(), (*h).into()),
        Err(e) => details.insert("error".into(), e.clone().into()),
    };
    if let Ok(Some(held)) = held {
        details.insert("held_back_events".into(), held.events.into());
        details.insert(
            "held_back_seconds".into(),
            held.for_how_long.map_or(0.0, |d| d.as_secs_f64()).into(),
        );
    }
    components.insert(
        "event_store".into(),
        component(store_up, &state.backends.store, details),
    );

    let mut details = BTreeMap::new();
    let failure = state
        .projection_failure
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let projection_up = checkpoint.is_ok() && failure.is_none();
    match (&head, &checkpoint) {
        (Ok(h), Ok(p)) => {
            details.insert("position".into(), (*p).into());
            details.insert("caught_up".into(), (p >= h).into());
        }
        (_, Err(e)) => {
            details.insert("error".into(), e.clone().into());
        }
        _ => {}
    }
    if let Some(f) = failure {
        details.insert("stopped".into(), f.into());
    }
    components.insert(
        "projection".into(),
        component(projection_up, state.read_model_backend, details),
    );

    let stopped = state
        .transfers_failure
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // Transfers move money through the event store: down with it.
    let mut details = BTreeMap::new();
    if let Some(f) = &stopped {
        details.insert("stopped".into(), f.clone().into());
    }
    if let Err(e) = &head {
        details.insert("error".into(), e.clone().into());
    }
    components.insert(
        "transfers".into(),
        component(stopped.is_none() && store_up, state.read_model_backend, details),
    );

    let mut details = BTreeMap::new();
    if let Err(e) = &limiter {
        details.insert("error".into(), e.clone().into());
    }
    components.insert(
        "rate_limiter".into(),
        component(limiter.is_ok(), state.limiter.name(), details),
    );
    if let Some(wb) = &state.write_behind {
        let status = wb.flusher_status();
        let mut details = BTreeMap::new();
        details.insert("pending_appends".into(), status.pending.into());
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
        details.insert("oldest_pending_ms".into(), ms(status.oldest_pending_age).into());
        details.insert("since_last_flush_ms".into(), ms(status.since_last_flush).into());
        details.insert("durability".into(), format!("{:?}", wb.durability()).into());
        if let Some(e) = &status.last_error {
            details.insert("error".into(), e.clone().into());
        }
        details.insert("stuck".into(), status.stuck.into());
        components.insert("write_behind".into(), component(!status.stuck, "redis", details));
    }
    let mut details = BTreeMap::new();
    if let Err(e) = &dedup {
        details.insert("error".into(), e.clone().into());
    }
    components.insert(
        "deduplicator".into(),
        component(dedup.is_ok(), &state.backends.dedup, details),
    );
    match publishing {
        Some(Ok(report)) => {
            components.insert(
                "kafka_publishing".into(),
                component(report.up, report.method, report.details),
            );
        }
        Some(Err(_)) => {
            let mut details = BTreeMap::new();
            let error = format!("no answer within {} s", READINESS_CHECK_TIMEOUT.as_secs());
            details.insert("error".into(), error.into());
            let method = state.publishing.as_ref().map_or("kafka", |p| p.method());
            components.insert("kafka_publishing".into(), component(false, method, details));
        }
        None => {}
    }

    let all_up = components.values().all(|c| c.status == "up");
    let status = if all_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        status: if all_up { "ready" } else { "not_ready" }.into(),
        components,
    };
    (status, body)
}

/// The events PostgreSQL's log holds back behind a transaction still
/// writing somewhere in the cluster (the head and every lag stand still
/// meanwhile), also set as the gauge `es_postgres_log_held_back_seconds`;
/// `None` on other stores or when the query fails.
async fn held_back(state: &AppState) -> Option<es_postgres::HeldBack> {
    let held = state.postgres.as_ref()?.held_back().await.ok()?;
    metrics::gauge!("es_postgres_log_held_back_seconds").set(held.for_how_long.map_or(0.0, |d| d.as_secs_f64()));
    Some(held)
}

/// Prometheus metrics (the operations listener).
pub async fn metrics(State(state): State<AppState>) -> Response {
    held_back(&state).await;
    if let Some(probe) = &state.publishing {
        // Refreshes the publishing gauges (backlog, lag, time since the
        // last publish) before rendering.
        probe.report().await;
    }
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
