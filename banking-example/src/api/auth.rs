//! The `/auth` handlers and their bodies.
//!
//! Login, registration and the reset routes count against the stricter
//! auth limit per peer IP and per username (`AUTH_RATE_LIMIT_PER_MINUTE`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::{ErrorBody, Page};
use super::errors::ApiError;
use super::extract::{ApiJson, AuthUser, PageParams, UserId};
use super::peer::{limit_key, ClientAddr};
use super::state::AppState;
use crate::auth::rbac::{may_list_users, Role};
use crate::auth::users::{is_email, normalize_username, User, MAX_USERNAME_BYTES};
use crate::auth::{AuthError, TokenPair};

/// Body of `POST /auth/register` and `POST /auth/login`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// An email address (case-insensitive, unique), at most 254 bytes.
    #[schema(example = "ada@example.com", format = Email, max_length = 254)]
    pub username: String,
    /// 12-1024 characters, not equal to the username.
    #[schema(min_length = 12, max_length = 1024, format = Password)]
    pub password: String,
}

/// Answer of `POST /auth/register`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    /// The new user's id.
    pub user_id: Uuid,
}

/// Body of `POST /auth/refresh`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token of the last login or refresh.
    pub refresh_token: String,
}

/// Body of `POST /auth/change-password`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current password.
    pub current_password: String,
    /// The new password (policy as for registration).
    #[schema(min_length = 12, max_length = 1024, format = Password)]
    pub new_password: String,
}

/// Body of `POST /auth/reset-password`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// The account's email address (at most 254 bytes).
    #[schema(example = "ada@example.com", format = Email, max_length = 254)]
    pub email: String,
}

/// Body of `POST /auth/reset-password/confirm`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirmRequest {
    /// The token from the reset mail.
    pub token: String,
    /// The new password (policy as for registration).
    #[schema(min_length = 12, max_length = 1024, format = Password)]
    pub new_password: String,
}

/// A user as shown by `GET /auth/me` and `GET /auth/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// User id.
    pub user_id: Uuid,
    /// Username (email).
    pub username: String,
    /// Roles.
    pub roles: Vec<Role>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            user_id: u.id,
            username: u.username,
            roles: u.roles,
        }
    }
}

/// Body of `PUT /auth/users/{id}/roles`.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesRequest {
    /// The user's roles from now on (at least one; repeats count once).
    #[schema(min_items = 1, example = json!(["teller"]))]
    pub roles: Vec<Role>,
}

/// Answer of `GET /auth/users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    /// Users ordered by username.
    pub users: Vec<UserView>,
    /// Users in total.
    pub total: usize,
    /// Page size used.
    pub limit: usize,
    /// Offset used.
    pub offset: usize,
}

/// The client address as a rate-limit key (`ip:...`; IPv6 by /64,
/// `X-Forwarded-For` only from trusted proxies: see
/// [`peer`](crate::api::peer)).
#[derive(Debug, Clone)]
pub struct PeerIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let client = match parts.extensions.get::<ClientAddr>() {
            Some(ClientAddr(client)) => *client,
            None => parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
        };
        Ok(Self(limit_key(client)))
    }
}

/// What a per-username auth limit is counted for: each has a bucket of its
/// own, so that floods of one (reset requests, say) do not refuse another
/// (the owner's login).
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Register,
    Login,
    Reset,
}

/// The per-address auth limit, then the per-username one of `purpose`.
async fn limit(state: &AppState, ip: &str, username: Option<(&str, Purpose)>) -> Result<(), ApiError> {
    state.auth.check_rate(ip).await?;
    if let Some((u, purpose)) = username {
        let u = normalize_username(u);
        let key = match purpose {
            Purpose::Register => format!("user:register:{u}"),
            Purpose::Reset => format!("user:reset:{u}"),
            // Counted only for sources that failed to log in as `u`: a
            // flood of guesses from elsewhere never refuses the owner, who
            // logs in from a source without failures (the lockout and its
            // delay still bind each guessing source).
            Purpose::Login if state.auth.failed_from(&u, ip).await? => format!("user:login:{u}"),
            Purpose::Login => return Ok(()),
        };
        state.auth.check_rate(&key).await?;
    }
    Ok(())
}

/// Refuses a username (or reset address) over 254 bytes, before any
/// lookup, limiter or lockout key is built from it.
fn check_length(field: &str, raw: &str) -> Result<(), ApiError> {
    if raw.len() > MAX_USERNAME_BYTES {
        return Err(ApiError::BadRequest(format!(
            "{field} must be at most {MAX_USERNAME_BYTES} bytes"
        )));
    }
    Ok(())
}

fn err(e: impl Into<ApiError>) -> Response {
    e.into().into_response()
}

/// Registers a customer.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = Credentials,
    responses(
        (status = 201, description = "Registered", body = Registered),
        (status = 400, description = "Not an email, or the password policy is not met", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn register(State(state): State<AppState>, ip: PeerIp, ApiJson(body): ApiJson<Credentials>) -> Response {
    if let Err(e) = check_length("username", &body.username) {
        return err(e);
    }
    if let Err(e) = limit(&state, &ip.0, Some((&body.username, Purpose::Register))).await {
        return err(e);
    }
    match state.auth.register(&body.username, &body.password).await {
        Ok(user_id) => (StatusCode::CREATED, Json(Registered { user_id })).into_response(),
        Err(e) => err(e),
    }
}

/// Logs in.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, description = "Tokens", body = TokenPair),
        (status = 400, description = "Username over 254 bytes", body = ErrorBody),
        (status = 401, description = "Invalid username or password (one answer for both)", body = ErrorBody),
        (status = 429, description = "Locked out after too many failures, or rate limited", body = ErrorBody),
    ))]
pub async fn login(State(state): State<AppState>, ip: PeerIp, ApiJson(body): ApiJson<Credentials>) -> Response {
    if let Err(e) = check_length("username", &body.username) {
        return err(e);
    }
    if let Err(e) = limit(&state, &ip.0, Some((&body.username, Purpose::Login))).await {
        return err(e);
    }
    match state.auth.login(&body.username, &body.password, &ip.0).await {
        Ok(pair) => Json(pair).into_response(),
        Err(e) => err(e),
    }
}

/// Rotates a refresh token.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair; the old refresh token stops working", body = TokenPair),
        (status = 401, description = "Invalid, expired, revoked or reused refresh token", body = ErrorBody),
    ))]
pub async fn refresh(State(state): State<AppState>, ip: PeerIp, ApiJson(body): ApiJson<RefreshRequest>) -> Response {
    if let Err(e) = limit(&state, &ip.0, None).await {
        return err(e);
    }
    match state.auth.refresh(&body.refresh_token).await {
        Ok(pair) => Json(pair).into_response(),
        Err(e) => err(e),
    }
}

/// Changes the caller's password; other sessions are revoked.
#[utoipa::path(post, path = "/auth/change-password", tag = "auth", request_body = ChangePasswordRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "The new password does not meet the policy", body = ErrorBody),
        (status = 401, description = "Bad token or wrong current password", body = ErrorBody),
    ))]
pub async fn change_password(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Response {
    if let Err(e) = state.auth.check_rate(&format!("uid:{}", who.user_id)).await {
        return err(e);
    }
    match state
        .auth
        .change_password(&who, &body.current_password, &body.new_password)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

/// Requests a password reset mail; always 202.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetRequest,
    responses(
        (status = 202, description = "Accepted (whether or not the address is registered)"),
        (status = 400, description = "Not an email address, or over 254 bytes", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    ip: PeerIp,
    ApiJson(body): ApiJson<ResetRequest>,
) -> Response {
    if let Err(e) = check_length("email", &body.email) {
        return err(e);
    }
    if !is_email(&normalize_username(&body.email)) {
        return err(ApiError::BadRequest("email must be an email address".into()));
    }
    if let Err(e) = limit(&state, &ip.0, Some((&body.email, Purpose::Reset))).await {
        return err(e);
    }
    if let Err(e) = state.auth.request_reset(&body.email).await {
        // Logged, but answered like a success: the answer never depends
        // on the address.
        tracing::warn!(error = %e, "password reset request failed");
    }
    StatusCode::ACCEPTED.into_response()
}

/// Sets a new password with a reset token.
#[utoipa::path(post, path = "/auth/reset-password/confirm", tag = "auth", request_body = ResetConfirmRequest,
    responses(
        (status = 204, description = "Password set; every session revoked"),
        (status = 400, description = "Invalid, expired or used token, or the policy is not met", body = ErrorBody),
    ))]
pub async fn reset_confirm(
    State(state): State<AppState>,
    ip: PeerIp,
    ApiJson(body): ApiJson<ResetConfirmRequest>,
) -> Response {
    if let Err(e) = limit(&state, &ip.0, None).await {
        return err(e);
    }
    match state.auth.confirm_reset(&body.token, &body.new_password).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

/// Revokes the access token and its session's refresh tokens.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
pub async fn logout(State(state): State<AppState>, AuthUser(who): AuthUser) -> Response {
    match state.auth.logout(&who).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

/// The caller.
#[utoipa::path(get, path = "/auth/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
    ))]
pub async fn me(State(state): State<AppState>, AuthUser(who): AuthUser) -> Response {
    match state.auth.stores().users.by_id(who.user_id).await {
        Ok(Some(u)) => Json(UserView::from(u)).into_response(),
        Ok(None) => err(AuthError::Unauthenticated("invalid token".into())),
        Err(e) => err(AuthError::from(e)),
    }
}

/// Lists users (admins only).
#[utoipa::path(get, path = "/auth/users", tag = "auth", params(Page), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, description = "`limit` or `offset` is not a number", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    PageParams(page): PageParams,
) -> Response {
    if !may_list_users(&who.roles) {
        return err(ApiError::Forbidden("only admins may list users".into()));
    }
    let (offset, limit) = match page.bounds() {
        Ok(bounds) => bounds,
        Err(e) => return err(ApiError::BadRequest(e)),
    };
    match state.auth.stores().users.list(offset, limit).await {
        Ok((users, total)) => Json(UserPage {
            users: users.into_iter().map(UserView::from).collect(),
            total,
            limit,
            offset,
        })
        .into_response(),
        Err(e) => err(AuthError::from(e)),
    }
}

/// Sets a user's roles (admins only, not their own). Every session of
/// that user ends: tokens carrying the old roles stop working at once, and
/// the next login carries the new ones.
#[utoipa::path(put, path = "/auth/users/{id}/roles", tag = "auth", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = RolesRequest,
    responses(
        (status = 200, description = "The user with the new roles", body = UserView),
        (status = 400, description = "No role, an unknown role, or a malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 409, description = "An admin's own roles (another admin must change them)", body = ErrorBody),
    ))]
pub async fn set_user_roles(
    State(state): State<AppState>,
    AuthUser(who): AuthUser,
    UserId(user): UserId,
    ApiJson(body): ApiJson<RolesRequest>,
) -> Response {
    match state.auth.set_roles(&who, user, &body.roles).await {
        Ok(u) => Json(UserView::from(u)).into_response(),
        Err(e) => err(e),
    }
}
