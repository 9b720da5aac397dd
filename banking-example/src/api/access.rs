//! Who may touch which account: ownership lookup, the RBAC check, and
//! `GET /accounts`.
//!
//! The owner is a field of the `AccountCreated` event (`owner_id`; older
//! events carried it in a metadata header, which an upcaster reads) and a
//! column of the read model; a miss (an account not projected yet) reads
//! the stream's first event.
//! An account the caller may not read is answered exactly like an unknown
//! one (404), so ids cannot be probed.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use super::dto::{AccountPage, ErrorBody, Page};
use super::errors::ApiError;
use super::extract::Caller;
use super::extract::PageParams;
use super::state::AppState;
use crate::auth::rbac::{can_read, may, sees_all_accounts, AccountAction};
use crate::domain::{Account, AccountEvent};

/// The account's existence and owner: `Ok(None)` when there is no such
/// account, `Ok(Some(None))` for an account without a recorded owner.
pub async fn owner_of(state: &AppState, id: Uuid) -> Result<Option<Option<Uuid>>, ApiError> {
    if let Some(owner) = state.owners.get(id) {
        return Ok(Some(owner));
    }
    let owner = stored_owner(state, id).await?;
    if let Some(owner) = owner {
        state.owners.insert(id, owner);
    }
    Ok(owner)
}

/// The owner as the read model has it, else as the stream's first event
/// has it.
async fn stored_owner(state: &AppState, id: Uuid) -> Result<Option<Option<Uuid>>, ApiError> {
    match state.read_model.get(id).await {
        Ok(Some(view)) => return Ok(Some(view.owner_id)),
        Ok(None) => {}
        Err(e) => tracing::warn!(account_id = %id, error = %e, "read model unavailable; reading the log"),
    }
    let first = state
        .repo
        .store()
        .read_stream_batch(&id.to_string().into(), 1, 1)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    // No stream, or another kind of stream under that id (a transfer's).
    let Some(created) = first
        .first()
        .filter(|e| e.stream_type == <Account as es_core::Aggregate>::TYPE)
    else {
        return Ok(None);
    };
    let event: AccountEvent = state
        .repo
        .codec()
        .decode(created)
        .map_err(|e| ApiError::Internal(format!("decode account {id}: {e}")))?;
    Ok(Some(match event {
        AccountEvent::AccountCreated(c) => c.owner_id,
        _ => None,
    }))
}

/// Checks that the caller may do `action` on account `id`; returns its
/// owner. 404 when the account does not exist or the caller may not see
/// it, 403 when they may see it but not do `action`.
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    action: AccountAction,
) -> Result<Option<Uuid>, ApiError> {
    let owner = owner_of(state, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("account {id} not found")))?;
    check(caller, id, owner, action)?;
    Ok(owner)
}

/// Whether the caller may do `action` on account `id` owned by `owner`:
/// 404 when they may not see it, 403 when they may see it but not do
/// `action`.
pub fn check(caller: &Caller, id: Uuid, owner: Option<Uuid>, action: AccountAction) -> Result<(), ApiError> {
    let not_found = || ApiError::NotFound(format!("account {id} not found"));
    let is_owner = owner == Some(caller.user.user_id);
    if !can_read(&caller.user.roles, is_owner) {
        tracing::info!(account_id = %id, user_id = %caller.user.user_id, ?action, "access to another user's account refused");
        metrics::counter!("authorization_denials_total", "reason" => "not_owner").increment(1);
        return Err(not_found());
    }
    if !may(&caller.user.roles, action, is_owner) {
        metrics::counter!("authorization_denials_total", "reason" => "role").increment(1);
        return Err(ApiError::Forbidden(
            format!("your role may not {action:?} this account").to_lowercase(),
        ));
    }
    Ok(())
}

/// Lists the caller's accounts (every account for tellers and admins).
#[utoipa::path(
    get, path = "/accounts", tag = "accounts",
    security(("bearer" = [])),
    params(Page, ("x-client-id" = String, Header, description = "Calling client")),
    responses(
        (status = 200, description = "A page of accounts, ordered by id", body = AccountPage),
        (status = 400, description = "`limit` or `offset` is not a number, or a header rule is broken", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 503, description = "The read model is unavailable", body = ErrorBody),
    )
)]
pub async fn list_accounts(State(state): State<AppState>, caller: Caller, PageParams(page): PageParams) -> Response {
    let (offset, limit) = match page.bounds() {
        Ok(bounds) => bounds,
        Err(e) => return ApiError::BadRequest(e).into_response(),
    };
    let owner = (!sees_all_accounts(&caller.user.roles)).then_some(caller.user.user_id);
    super::consistency::wait_for_committed(&state).await;
    let (accounts, total) = match state.read_model.list(owner, offset, limit).await {
        Ok(page) => page,
        Err(e) => {
            tracing::warn!(error = %e, "account read model unavailable");
            return ApiError::Unavailable("account read model unavailable".into()).into_response();
        }
    };
    Json(AccountPage {
        accounts,
        total,
        limit,
        offset,
    })
    .into_response()
}
