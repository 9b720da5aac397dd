//! The `/accounts` handlers.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use es_core::{CommandContext, Metadata};
use uuid::Uuid;

use super::access::{authorize, check};
use super::consistency::view_is_current;
use super::dto::{
    AccountView, CloseAccountRequest, CreateAccountRequest, ErrorBody, EventHistory, EventView, EventsQuery,
    TransactionRequest, DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE,
};
use super::errors::ApiError;
use super::extract::{AccountId, ApiJson, Caller, IdempotencyKey};
use super::idempotency::{Idempotency, Reply};
use super::state::AppState;
use super::validation::TransactionInput;
use crate::auth::rbac::AccountAction;
use crate::domain::{AccountCommand, Money};

/// Opens an account.
#[utoipa::path(
    post, path = "/accounts", tag = "accounts",
    security(("bearer" = [])),
    request_body = CreateAccountRequest,
    params(
        ("x-client-id" = String, Header, description = "Calling client: 1-128 visible ASCII characters"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request idempotent: a retry returns the first response"),
    ),
    responses(
        (status = 201, description = "Account opened", body = AccountView),
        (status = 400, description = "Invalid payload or validation failure", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 409, description = "Idempotency key in use", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 422, description = "Idempotency key reused for another request", body = ErrorBody),
        (status = 429, description = "Rate limited (see Retry-After)", body = ErrorBody),
    )
)]
pub async fn create_account(
    State(state): State<AppState>,
    assigned: Option<axum::Extension<super::forwarding::AssignedAccountId>>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<CreateAccountRequest>,
) -> Response {
    let report = state.validators.validate(&body).await;
    if !report.is_valid() {
        return ApiError::BadRequest(report.error_message()).into_response();
    }
    let (Some(owner_name), Some(balance)) = (body.owner_name.clone(), body.initial_balance) else {
        return ApiError::BadRequest("owner_name and initial_balance are required".into()).into_response();
    };
    let initial_balance = match Money::new(balance.0) {
        Ok(m) => m,
        Err(e) => return ApiError::BadRequest(format!("initial_balance {e}")).into_response(),
    };
    let id = match &key {
        Some(k) => Idempotency::derived_id(&caller.idempotency_scope(), k, "account"),
        // In cluster mode the router picked an id in a shard it owns.
        None => assigned.map_or_else(Uuid::now_v7, |axum::Extension(a)| a.0),
    };
    let command = AccountCommand::Open {
        owner_name,
        initial_balance,
        owner_id: Some(caller.user.user_id),
    };
    let fingerprint = fingerprint(key.as_deref(), || "POST /accounts".to_owned(), &body);
    let owner = Some(caller.user.user_id);
    let request = CommandRequest {
        kind: CommandKind::Open,
        account: id,
        command,
        expected_version: None,
        owner,
        key,
        fingerprint,
        warnings: report.warnings(),
    };
    run(&state, &caller, request).await
}

/// Reads an account from the read model.
#[utoipa::path(
    get, path = "/accounts/{id}", tag = "accounts",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Account id"),
        ("x-client-id" = String, Header, description = "Calling client"),
    ),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 404, description = "Unknown account, not yours, or invalid id", body = ErrorBody),
    )
)]
pub async fn get_account(State(state): State<AppState>, caller: Caller, AccountId(id): AccountId) -> Response {
    match state.read_model.get(id).await {
        // Commands do not wait for the projection (and with write-behind
        // the store itself lags the acknowledged commands): a row older
        // than its stream answers from the log instead.
        Ok(Some(view)) => {
            if view_is_current(&state, id, view.version).await {
                return match check(&caller, id, view.owner_id, AccountAction::Read) {
                    Ok(()) => Json(view).into_response(),
                    Err(e) => e.into_response(),
                };
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(account_id = %id, error = %e, "read model unavailable; reading the log"),
    }
    // Not projected yet (the projection is behind the stream: a command
    // just answered, write-behind events not flushed yet, or the read
    // model is down). Answer from the log.
    let loaded = match state.repo.load(id.to_string()).await {
        Ok(loaded) => loaded,
        Err(e) => return ApiError::from_repository(e, id).into_response(),
    };
    let Some(view) = AccountView::from_state(id, &loaded.state, loaded.version) else {
        return ApiError::NotFound(format!("account {id} not found")).into_response();
    };
    let view = view.owned_by(loaded.state.owner_id);
    match check(&caller, id, view.owner_id, AccountAction::Read) {
        Ok(()) => Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Lists an account's events, a page at a time.
#[utoipa::path(
    get, path = "/accounts/{id}/events", tag = "accounts",
    security(("bearer" = [])),
    params(
        ("id" = Uuid, Path, description = "Account id"),
        ("x-client-id" = String, Header, description = "Calling client"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "A page of the event history, oldest first; `next` is the `after` of the following page", body = EventHistory),
        (status = 400, description = "`after` or `limit` out of range", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 404, description = "Unknown account, not yours, or invalid id", body = ErrorBody),
    )
)]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    AccountId(id): AccountId,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return ApiError::BadRequest(format!(
            "after must be a version (0 or more) and limit 1-{MAX_EVENTS_PAGE}"
        ))
        .into_response();
    };
    if let Err(e) = version_in_range("after", query.after) {
        return e.into_response();
    }
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS_PAGE);
    if !(1..=MAX_EVENTS_PAGE).contains(&limit) {
        return ApiError::BadRequest(format!("limit must be 1-{MAX_EVENTS_PAGE}")).into_response();
    }
    if let Err(e) = authorize(&state, &caller, id, AccountAction::Read).await {
        return e.into_response();
    }
    // One more than asked: whether another page follows.
    let mut page = match state.repo.history_page(id.to_string(), after, limit + 1).await {
        Ok(h) => h,
        Err(e) => return ApiError::from_repository(e, id).into_response(),
    };
    if page.is_empty() && after == 0 {
        return ApiError::NotFound(format!("account {id} not found")).into_response();
    }
    let more = page.len() > limit;
    page.truncate(limit);
    let events: Vec<EventView> = page
        .iter()
        .map(|c| EventView {
            event_type: es_core::DomainEvent::event_type(&c.event).to_owned(),
            version: c.version,
            data: c.event.data(),
            recorded_at: c.recorded_at,
        })
        .collect();
    let next = if more { events.last().map(|e| e.version) } else { None };
    Json(EventHistory {
        account_id: id,
        events,
        next,
    })
    .into_response()
}

/// Pays money in.
#[utoipa::path(
    post, path = "/accounts/{id}/deposit", tag = "accounts",
    security(("bearer" = [])),
    request_body = TransactionRequest,
    params(
        ("id" = Uuid, Path, description = "Account id"),
        ("x-client-id" = String, Header, description = "Calling client"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request idempotent"),
    ),
    responses(
        (status = 200, description = "The account after the deposit", body = AccountView),
        (status = 400, description = "Invalid payload or validation failure", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Your role may not do this to the account", body = ErrorBody),
        (status = 404, description = "Unknown account or not yours", body = ErrorBody),
        (status = 409, description = "Version conflict or closed account", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn deposit(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    AccountId(id): AccountId,
    ApiJson(body): ApiJson<TransactionRequest>,
) -> Response {
    transaction(&state, &caller, key, id, body, CommandKind::Deposit).await
}

/// Takes money out.
#[utoipa::path(
    post, path = "/accounts/{id}/withdraw", tag = "accounts",
    security(("bearer" = [])),
    request_body = TransactionRequest,
    params(
        ("id" = Uuid, Path, description = "Account id"),
        ("x-client-id" = String, Header, description = "Calling client"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request idempotent"),
    ),
    responses(
        (status = 200, description = "The account after the withdrawal", body = AccountView),
        (status = 400, description = "Invalid payload or validation failure", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Your role may not do this to the account", body = ErrorBody),
        (status = 404, description = "Unknown account or not yours", body = ErrorBody),
        (status = 409, description = "Version conflict or closed account", body = ErrorBody),
        (status = 422, description = "Insufficient funds", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    AccountId(id): AccountId,
    ApiJson(body): ApiJson<TransactionRequest>,
) -> Response {
    transaction(&state, &caller, key, id, body, CommandKind::Withdraw).await
}

/// Closes an account (its balance must be zero).
#[utoipa::path(
    post, path = "/accounts/{id}/close", tag = "accounts",
    security(("bearer" = [])),
    request_body = CloseAccountRequest,
    params(
        ("id" = Uuid, Path, description = "Account id"),
        ("x-client-id" = String, Header, description = "Calling client"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request idempotent"),
    ),
    responses(
        (status = 200, description = "The closed account", body = AccountView),
        (status = 400, description = "Invalid payload or validation failure", body = ErrorBody),
        (status = 401, description = "Missing, invalid, expired or revoked token", body = ErrorBody),
        (status = 403, description = "Your role may not do this to the account", body = ErrorBody),
        (status = 404, description = "Unknown account or not yours", body = ErrorBody),
        (status = 409, description = "Version conflict or already closed", body = ErrorBody),
        (status = 422, description = "Balance is not zero", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn close_account(
    State(state): State<AppState>,
    caller: Caller,
    IdempotencyKey(key): IdempotencyKey,
    AccountId(id): AccountId,
    ApiJson(body): ApiJson<CloseAccountRequest>,
) -> Response {
    let owner = match authorize(&state, &caller, id, AccountAction::Close).await {
        Ok(owner) => owner,
        Err(e) => return e.into_response(),
    };
    let report = state.validators.validate(&body).await;
    if !report.is_valid() {
        return ApiError::BadRequest(report.error_message()).into_response();
    }
    let command = AccountCommand::Close {
        reason: body.reason.clone().unwrap_or_default(),
    };
    if let Err(e) = version_in_range("expected_version", body.expected_version) {
        return e.into_response();
    }
    let request = CommandRequest {
        kind: CommandKind::Close,
        account: id,
        command,
        expected_version: body.expected_version,
        owner,
        fingerprint: fingerprint(key.as_deref(), || format!("POST /accounts/{id}/close"), &body),
        key,
        warnings: report.warnings(),
    };
    run(&state, &caller, request).await
}

/// A deposit or a withdrawal (`kind`).
async fn transaction(
    state: &AppState,
    caller: &Caller,
    IdempotencyKey(key): IdempotencyKey,
    id: Uuid,
    body: TransactionRequest,
    kind: CommandKind,
) -> Response {
    let action = match kind {
        CommandKind::Withdraw => AccountAction::Withdraw,
        _ => AccountAction::Deposit,
    };
    let owner = match authorize(state, caller, id, action).await {
        Ok(owner) => owner,
        Err(e) => return e.into_response(),
    };
    let input = TransactionInput {
        account_id: id.to_string(),
        amount: body.amount,
    };
    let report = state.validators.validate(&input).await;
    if !report.is_valid() {
        return ApiError::BadRequest(report.error_message()).into_response();
    }
    let amount = match body.amount.map(|a| Money::new(a.0)) {
        Some(Ok(m)) => m,
        Some(Err(e)) => return ApiError::BadRequest(format!("amount {e}")).into_response(),
        None => return ApiError::BadRequest("amount is required".into()).into_response(),
    };
    let command = match kind {
        CommandKind::Withdraw => AccountCommand::Withdraw { amount },
        _ => AccountCommand::Deposit { amount },
    };
    if let Err(e) = version_in_range("expected_version", body.expected_version) {
        return e.into_response();
    }
    let request = CommandRequest {
        kind,
        account: id,
        command,
        expected_version: body.expected_version,
        owner,
        fingerprint: fingerprint(key.as_deref(), || format!("POST /accounts/{id}/{}", kind.name()), &body),
        key,
        warnings: report.warnings(),
    };
    run(state, caller, request).await
}

/// Which account command a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandKind {
    /// `POST /accounts`.
    Open,
    /// `POST /accounts/{id}/deposit`.
    Deposit,
    /// `POST /accounts/{id}/withdraw`.
    Withdraw,
    /// `POST /accounts/{id}/close`.
    Close,
}

impl CommandKind {
    /// The `command` label of `commands_total`, and the last path segment
    /// of the route.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Deposit => "deposit",
            Self::Withdraw => "withdraw",
            Self::Close => "close",
        }
    }

    /// The status of a success: 201 for a new account, 200 otherwise.
    fn success(self) -> StatusCode {
        match self {
            Self::Open => StatusCode::CREATED,
            _ => StatusCode::OK,
        }
    }
}

/// One validated, authorized account command, ready to run.
#[derive(Debug)]
struct CommandRequest {
    kind: CommandKind,
    /// The account (stream) it runs on.
    account: Uuid,
    command: AccountCommand,
    /// The version the caller expects the account at, if any.
    expected_version: Option<u64>,
    /// The account's owner, for the view answered.
    owner: Option<Uuid>,
    /// The `Idempotency-Key`, if any.
    key: Option<String>,
    /// Route and canonical body, with a key (a key reused for another
    /// request is caught by it); empty without.
    fingerprint: String,
    /// The `x-validation-warnings` of the answer.
    warnings: Option<String>,
}

/// Runs one command through the idempotency layer and the repository.
async fn run(state: &AppState, caller: &Caller, request: CommandRequest) -> Response {
    let CommandRequest {
        kind,
        account: id,
        command,
        expected_version,
        owner,
        key,
        fingerprint,
        warnings,
    } = request;
    let name = kind.name();
    let success = kind.success();
    let metadata = metadata(caller, key.as_deref());
    let scope = key.as_ref().map(|_| caller.idempotency_scope()).unwrap_or_default();
    let response = state
        .idempotency
        .execute(&scope, key.as_deref(), &fingerprint, |command_id| async move {
            let ctx = CommandContext {
                metadata,
                expected_version,
                command_id,
            };
            let outcome = state
                .repo
                .execute_in(id, command, ctx)
                .await
                .map_err(|e| ApiError::from_repository(e, id))?;
            if outcome.already_applied {
                tracing::info!(account_id = %id, "command already applied (retry recognised by the store)");
            }
            let view = AccountView::from_state(id, &outcome.state, outcome.version)
                .map(|v| v.owned_by(owner))
                .ok_or_else(|| ApiError::Internal(format!("account {id} has no state after {name}")))?;
            Reply::json(success, &view, warnings)
        })
        .await;
    let outcome = if response.status().is_success() { "ok" } else { "error" };
    metrics::counter!("commands_total", "command" => name, "outcome" => outcome).increment(1);
    response
}

/// Event metadata of a request: correlation id, actor, client, key.
fn metadata(caller: &Caller, key: Option<&str>) -> Metadata {
    let mut m = Metadata::correlated(caller.correlation_id).with_header("client_id", &caller.client_id);
    let user_id = caller.user_id();
    m.actor_id = Some(user_id.clone());
    m = m.with_header("user_id", user_id);
    let mut buffer = Uuid::encode_buffer();
    if caller.request_id != *caller.correlation_id.hyphenated().encode_lower(&mut buffer) {
        m = m.with_header("request_id", &caller.request_id);
    }
    if let Some(key) = key {
        m = m.with_header("idempotency_key", key);
    }
    m
}

/// What identifies a keyed request: route and canonical body. Only a
/// keyed request needs one (empty without a key).
fn fingerprint<T: serde::Serialize>(key: Option<&str>, route: impl FnOnce() -> String, body: &T) -> String {
    if key.is_none() {
        return String::new();
    }
    format!("{}\n{}", route(), serde_json::to_string(body).unwrap_or_default())
}

/// Largest version a request may name: versions are signed 64-bit in the
/// stores (and `int64` in the OpenAPI document).
pub const MAX_VERSION: u64 = i64::MAX as u64;

/// 400 when `value` is over [`MAX_VERSION`].
fn version_in_range(field: &str, value: Option<u64>) -> Result<(), ApiError> {
    match value {
        Some(v) if v > MAX_VERSION => Err(ApiError::BadRequest(format!("{field} must be at most {MAX_VERSION}"))),
        _ => Ok(()),
    }
}
