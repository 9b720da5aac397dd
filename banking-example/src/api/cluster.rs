//! `GET /cluster`: instances and shards of the cluster, for operators.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::dto::ErrorBody;
use super::errors::ApiError;
use super::extract::AuthUser;
use super::state::AppState;
use crate::auth::rbac::Role;

/// One server instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstanceView {
    /// Instance id (new at every process start).
    pub id: String,
    /// Where the other instances reach it.
    pub address: String,
    /// Shards it owned at its last heartbeat.
    pub load: u32,
    /// When its registration lapses unless renewed.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether its registration is live.
    pub live: bool,
}

/// One shard.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShardView {
    /// Shard number.
    pub shard: u32,
    /// Owning instance, if any.
    pub owner: Option<String>,
    /// `Available`, `Assigned`, `Rebalancing` or `Failed` (owner's lease
    /// ran out).
    pub status: String,
    /// Fencing token of the latest owner.
    pub token: u64,
    /// End of the owner's lease.
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// The cluster.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterStatus {
    /// Registered instances.
    pub instances: Vec<InstanceView>,
    /// Every shard, in order.
    pub shards: Vec<ShardView>,
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0).then(|| DateTime::from_timestamp_millis(ms)).flatten()
}

/// Shows instances and shard owners (admins only; cluster mode only).
#[utoipa::path(
    get, path = "/cluster", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Instances and shards", body = ClusterStatus),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Cluster mode is off", body = ErrorBody),
        (status = 503, description = "Redis unreachable", body = ErrorBody),
    )
)]
pub async fn cluster(State(state): State<AppState>, AuthUser(who): AuthUser) -> Response {
    if !who.roles.contains(&Role::Admin) {
        return ApiError::Forbidden("only admins may see the cluster".into()).into_response();
    }
    let Some(cluster) = &state.cluster else {
        return ApiError::NotFound("cluster mode is off (CLUSTER_SHARDS=1 turns it on)".into()).into_response();
    };
    let view = match cluster.manager.read_view().await {
        Ok(v) => v,
        Err(e) => return ApiError::Unavailable(format!("cluster state unavailable: {e}")).into_response(),
    };
    let now = view.now_ms;
    Json(ClusterStatus {
        instances: view
            .instances
            .values()
            .map(|i| InstanceView {
                id: i.id.clone(),
                address: i.address.clone(),
                load: i.load,
                expires_at: time(i.expires_at_ms),
                live: i.expires_at_ms > now,
            })
            .collect(),
        shards: view
            .shards
            .iter()
            .map(|s| ShardView {
                shard: s.shard,
                owner: s.owner.clone(),
                status: s.status_at(now).as_str().to_owned(),
                token: s.token,
                lease_expires_at: time(s.lease_expires_at_ms),
            })
            .collect(),
    })
    .into_response()
}
