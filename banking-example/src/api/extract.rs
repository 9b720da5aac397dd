//! Extractors that turn request parts into typed values or API errors.
//!
//! [`AuthUser`] and [`Caller`] are the one place that says who is calling:
//! the identity comes from the verified Bearer access token, never from a
//! header. `x-client-id` still names the calling client (event metadata,
//! idempotency scope, logs); rate limits are keyed on the user, never on
//! it (see [`routes`](super::routes)).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::errors::ApiError;
use super::state::AppState;
use crate::auth::Identity;

pub use super::headers::{CLIENT_ID_HEADER, IDEMPOTENCY_KEY_HEADER, REQUEST_ID_HEADER, WARNINGS_HEADER};

/// Namespace of correlation ids derived from non-UUID request ids.
const REQUEST_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a0e_93d4_4c51_8f4b_0c1d_22e3_a001);

/// Whether `value` is 1..=`max` visible ASCII characters (no spaces).
pub fn is_visible_ascii(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic())
}

/// The validated `x-client-id` of a request.
pub fn client_id(headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(raw) = headers.get(&super::headers::CLIENT_ID) else {
        return Err(ApiError::BadRequest("x-client-id header is required".into()));
    };
    match raw.to_str() {
        Ok(v) if is_visible_ascii(v, 128) => Ok(v.to_owned()),
        _ => Err(ApiError::BadRequest(
            "x-client-id must be 1-128 visible ASCII characters".into(),
        )),
    }
}

/// The identity of a valid `Authorization: Bearer <access token>`; 401
/// with `WWW-Authenticate: Bearer` otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser(pub Identity);

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = || ApiError::Unauthorized("missing bearer token".into());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| missing())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(missing()),
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(user.clone());
        }
        let token = bearer_token(&parts.headers)?;
        let identity = state.auth.authenticate(token).await?;
        let user = AuthUser(identity);
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

/// Who is calling on an `/accounts` route, and under which correlation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The `x-client-id` (validated).
    pub client_id: String,
    /// The authenticated user.
    pub user: Identity,
    /// The `x-request-id` as received or generated.
    pub request_id: String,
    /// The request id as a UUID (derived by UUIDv5 when it is not one).
    pub correlation_id: Uuid,
}

impl Caller {
    /// The user id as a string (event metadata, ownership).
    pub fn user_id(&self) -> String {
        self.user.user_id.to_string()
    }

    /// The idempotency scope: keys are per user and client, so one user
    /// can never be served another's stored response.
    pub fn idempotency_scope(&self) -> String {
        format!("{}:{}", self.user.user_id, self.client_id)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // Who is calling comes first: a request with neither a token nor
        // an `x-client-id` is 401, not 400.
        let AuthUser(user) = AuthUser::from_request_parts(parts, state).await?;
        let client_id = client_id(&parts.headers)?;
        let request_id = parts
            .headers
            .get(&super::headers::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
        let correlation_id =
            Uuid::parse_str(&request_id).unwrap_or_else(|_| Uuid::new_v5(&REQUEST_ID_NAMESPACE, request_id.as_bytes()));
        Ok(Self {
            client_id,
            user,
            request_id,
            correlation_id,
        })
    }
}

/// The `limit` and `offset` query parameters of a list; anything but whole
/// numbers of 0 or more is a 400 that says so.
#[derive(Debug, Clone, Copy)]
pub struct PageParams(pub super::dto::Page);

impl<S: Send + Sync> FromRequestParts<S> for PageParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<super::dto::Page>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(page)) => Ok(Self(page)),
            Err(_) => Err(ApiError::BadRequest(
                "limit and offset must be whole numbers of 0 or more".into(),
            )),
        }
    }
}

/// The optional `Idempotency-Key` header (1-255 visible ASCII characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.headers.get(&super::headers::IDEMPOTENCY_KEY) {
            None => Ok(Self(None)),
            Some(v) => match v.to_str() {
                Ok(v) if is_visible_ascii(v, 255) => Ok(Self(Some(v.to_owned()))),
                _ => Err(ApiError::BadRequest(
                    "Idempotency-Key must be 1-255 visible ASCII characters".into(),
                )),
            },
        }
    }
}

/// The `{id}` path segment as a UUID; anything else is an unknown `what`
/// (404), so that ids cannot be told from malformed ones.
async fn id_segment<S: Send + Sync>(parts: &mut Parts, state: &S, what: &str) -> Result<Uuid, ApiError> {
    let not_found = || ApiError::NotFound(format!("{what} not found: the id is not a valid UUID"));
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|_| not_found())?;
    Uuid::parse_str(&raw).map_err(|_| not_found())
}

/// The `{id}` path segment as an account id; anything that is not a UUID
/// is an unknown account (404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for AccountId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        id_segment(parts, state, "account").await.map(AccountId)
    }
}

/// The `{id}` path segment as a user id; anything that is not a UUID is
/// an unknown user (404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for UserId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        id_segment(parts, state, "user").await.map(UserId)
    }
}

/// `axum::Json` with every rejection mapped to the `{"error"}` shape: bad
/// syntax, wrong types and unknown fields are 400, a body over the limit
/// 413, a missing JSON content type 415.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(map_json_rejection(&rejection)),
        }
    }
}

fn map_json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::BadRequest(format!("invalid request body: {}", e.body_text())),
        JsonRejection::JsonSyntaxError(e) => ApiError::BadRequest(format!("malformed JSON: {}", e.body_text())),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("request body too large".into())
        }
        other => ApiError::BadRequest(format!("cannot read request body: {}", other.body_text())),
    }
}
