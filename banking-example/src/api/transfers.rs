//! The `/transfers` handlers: start a transfer (202 + `Location`), read it.
//!
//! Only the owner of the source account (or a teller or admin) may
//! transfer from it; the destination may be anyone's account and is not
//! looked up (its existence is not revealed to the caller: a missing or
//! closed destination fails the transfer, and the money comes back). A
//! transfer is visible to whoever asked for it, the source's owner, and
//! tellers and admins; to anyone else it does not exist (404).

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use es_core::{CommandContext, Metadata, RepositoryError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::access::authorize;
use super::dto::ErrorBody;
use super::errors::ApiError;
use super::extract::{ApiJson, Caller, IdempotencyKey};
use super::idempotency::{Idempotency, Reply};
use super::state::AppState;
use crate::auth::rbac::{can_read, AccountAction};
use crate::domain::{Amount, Money};
use crate::transfer::{Transfer, TransferCommand, TransferError, TransferRequested, TransferStatus};

/// Body of `POST /transfers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// Source account (yours, unless you are a teller or admin).
    #[schema(required = true, nullable = false)]
    pub from: Option<Uuid>,
    /// Destination account (anyone's; not `from`: 422).
    #[schema(required = true, nullable = false)]
    pub to: Option<Uuid>,
    /// Positive amount, at most 2 decimal places.
    #[schema(value_type = super::amounts::PositiveAmount, required = true, nullable = false)]
    pub amount: Option<Amount>,
}

/// A transfer as returned by `POST /transfers` and `GET /transfers/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferView {
    /// Transfer id.
    pub id: Uuid,
    /// Source account.
    pub from: Uuid,
    /// Destination account.
    pub to: Uuid,
    /// Amount.
    pub amount: Money,
    /// `pending`, `completed` or `failed`.
    pub status: TransferStatus,
    /// Why it failed (absent unless failed or failing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
    /// When its last fact was recorded.
    pub updated_at: DateTime<Utc>,
    /// When it completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl TransferView {
    /// The view of `t`, its first event recorded at `requested_at` and its
    /// last at `updated_at` (to the microsecond, as the stores keep them:
    /// the answer to the request and a later read agree).
    fn of(t: &Transfer, requested_at: DateTime<Utc>, updated_at: DateTime<Utc>) -> Option<Self> {
        let r = t.request.as_ref()?;
        let status = t.status();
        let (requested_at, updated_at) = (requested_at.trunc_subsecs(6), updated_at.trunc_subsecs(6));
        Some(Self {
            id: r.id,
            from: r.from,
            to: r.to,
            amount: r.amount,
            status,
            reason: t.reason(),
            requested_at,
            updated_at,
            finished_at: (status != TransferStatus::Pending).then_some(updated_at),
        })
    }
}

/// Transfer `id` as stored, with the times of its first and last events;
/// `None` when there is no such transfer (or the id names another kind of
/// stream).
async fn stored(
    transfers: &crate::transfer::Transfers,
    id: Uuid,
) -> Result<Option<(Transfer, DateTime<Utc>, DateTime<Utc>)>, ApiError> {
    let history = match transfers.repo.history(id.to_string()).await {
        Ok(h) => h,
        // An account's id, say.
        Err(RepositoryError::WrongType { .. }) => return Ok(None),
        Err(RepositoryError::Store(e)) => return Err(ApiError::from_store(&e)),
        Err(e) => return Err(ApiError::Internal(format!("transfer {id}: {e}"))),
    };
    let (Some(first), Some(last)) = (history.first(), history.last()) else {
        return Ok(None);
    };
    let (requested_at, updated_at) = (first.recorded_at, last.recorded_at);
    let mut transfer = Transfer::default();
    for e in &history {
        es_core::Aggregate::apply(&mut transfer, &e.event);
    }
    Ok(Some((transfer, requested_at, updated_at)))
}

fn location(id: Uuid) -> HeaderValue {
    HeaderValue::from_str(&format!("/transfers/{id}")).unwrap_or_else(|_| HeaderValue::from_static("/transfers"))
}

/// Starts a transfer; it completes (or fails) in the background.
#[utoipa::path(
    post, path = "/transfers", tag = "transfers",
    security(("bearer" = [])),
    request_body = TransferRequest,
    params(
        ("x-client-id" = String, Header, description = "Calling client"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request idempotent: a retry returns the first response and starts nothing"),
    ),
    responses(
        (status = 202, description = "Accepted: the transfer is pending; follow `Location`", body = TransferView,
         headers(("Location" = String, description = "/transfers/{id}"))),
        (status = 400, description = "Invalid payload (missing field, bad amount)", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 404, description = "Unknown source account, or not yours", body = ErrorBody),
        (status = 409, description = "Idempotency key in use", body = ErrorBody),
        (status = 422, description = "`from` and `to` are the same account, or the idempotency key was used for another request", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn create_transfer(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<TransferRequest>,
) -> Response {
    let (Some(from), Some(to), Some(amount)) = (body.from, body.to, body.amount) else {
        return ApiError::BadRequest("from, to and amount are required".into()).into_response();
    };
    if from == to {
        // Well-formed (the schema cannot say "two different ids"), refused
        // by a rule: 422.
        return ApiError::Unprocessable("from and to must be different accounts".into()).into_response();
    }
    let amount = match Money::new(amount.0) {
        Ok(m) if m.is_zero() => return ApiError::BadRequest("amount must be greater than zero".into()).into_response(),
        Ok(m) if m > state.config.max_transaction_amount => {
            return ApiError::BadRequest(format!(
                "amount must not exceed {}",
                state.config.max_transaction_amount
            ))
            .into_response()
        }
        Ok(m) => m,
        Err(e) => return ApiError::BadRequest(format!("amount {e}")).into_response(),
    };
    let from_owner = match authorize(&state, &caller, from, AccountAction::Read).await {
        Ok(owner) => owner,
        Err(e) => return e.into_response(),
    };
    let id = match &key {
        Some(k) => Idempotency::derived_id(&caller.idempotency_scope(), k, "transfer"),
        None => Uuid::now_v7(),
    };
    let transfers = state.transfers.clone();
    let request = TransferRequested {
        id,
        from,
        to,
        amount,
        requested_by: Some(caller.user.user_id),
        from_owner,
        deadline: es_core::Clock::now(transfers.clock.as_ref())
            + chrono::Duration::from_std(transfers.timeout).unwrap_or(chrono::Duration::seconds(30)),
    };
    let mut metadata = Metadata::correlated(caller.correlation_id).with_header("client_id", &caller.client_id);
    metadata.actor_id = Some(caller.user_id());
    let fingerprint = format!("POST /transfers\n{}", serde_json::to_string(&body).unwrap_or_default());
    let mut response = state
        .idempotency
        .execute(
            &caller.idempotency_scope(),
            key.as_deref(),
            &fingerprint,
            |command_id| async move {
                let ctx = CommandContext {
                    metadata,
                    expected_version: None,
                    command_id,
                };
                let outcome = transfers
                    .repo
                    .execute_in(id, TransferCommand::Request(request), ctx)
                    .await
                    .map_err(|e| match e {
                        // The id comes from the key: the key's window has
                        // passed (or its record was lost) and it was used
                        // for another transfer.
                        RepositoryError::Rejected(TransferError::AlreadyExists) => {
                            ApiError::Unprocessable("Idempotency-Key was already used for a different request".into())
                        }
                        other => ApiError::Internal(format!("transfer {id}: {other}")),
                    })?;
                let view = match outcome.events.first() {
                    Some(e) => TransferView::of(&outcome.state, e.recorded_at, e.recorded_at),
                    // Already requested (a retry once the key's window has
                    // passed): the transfer as it stands, with its own times.
                    None => stored(&transfers, id)
                        .await?
                        .and_then(|(t, requested_at, updated_at)| TransferView::of(&t, requested_at, updated_at)),
                }
                .ok_or_else(|| ApiError::Internal(format!("transfer {id} has no request")))?;
                Reply::json(StatusCode::ACCEPTED, &view, None)
            },
        )
        .await;
    if response.status() == StatusCode::ACCEPTED {
        response.headers_mut().insert(header::LOCATION, location(id));
    }
    let outcome = if response.status().is_success() { "ok" } else { "error" };
    metrics::counter!("commands_total", "command" => "transfer", "outcome" => outcome).increment(1);
    response
}

/// Reads a transfer: its status, the reason if it failed, its times.
#[utoipa::path(
    get, path = "/transfers/{id}", tag = "transfers",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Transfer id"),
        ("x-client-id" = String, Header, description = "Calling client"),
    ),
    responses(
        (status = 200, description = "The transfer", body = TransferView),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 404, description = "Unknown transfer, not yours, or invalid id", body = ErrorBody),
    )
)]
pub async fn get_transfer(State(state): State<AppState>, caller: Caller, Path(raw): Path<String>) -> Response {
    let not_found = || ApiError::NotFound("transfer not found".into()).into_response();
    let Ok(id) = Uuid::parse_str(&raw) else {
        return not_found();
    };
    let (transfer, requested_at, updated_at) = match stored(&state.transfers, id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(),
        Err(e) => return e.into_response(),
    };
    let Some(request) = &transfer.request else {
        return not_found();
    };
    let me = Some(caller.user.user_id);
    let mine = request.requested_by == me || request.from_owner == me;
    if !can_read(&caller.user.roles, mine) {
        return not_found();
    }
    match TransferView::of(&transfer, requested_at, updated_at) {
        Some(view) => Json(view).into_response(),
        None => not_found(),
    }
}
