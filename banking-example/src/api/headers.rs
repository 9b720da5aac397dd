//! The request and response headers of the API that are not standard
//! HTTP ones: their names as text, and parsed once (a lookup by text
//! parses the name every time).

use axum::http::HeaderName;

/// Header naming the calling client (required on `/accounts` routes).
pub const CLIENT_ID_HEADER: &str = "x-client-id";
/// Correlation header, generated when absent and echoed back.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Header making a POST idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Header carrying validation warnings.
pub const WARNINGS_HEADER: &str = "x-validation-warnings";

/// Header set on a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Header telling a caller under a rate limit how many requests it has left.
pub const RATE_LIMIT_REMAINING_HEADER: &str = "x-ratelimit-remaining";

/// [`CLIENT_ID_HEADER`], parsed.
pub static CLIENT_ID: HeaderName = HeaderName::from_static(CLIENT_ID_HEADER);
/// [`REQUEST_ID_HEADER`], parsed.
pub static REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);
/// [`IDEMPOTENCY_KEY_HEADER`], parsed.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(IDEMPOTENCY_KEY_HEADER);
/// [`WARNINGS_HEADER`], parsed.
pub static WARNINGS: HeaderName = HeaderName::from_static(WARNINGS_HEADER);
/// [`RATE_LIMIT_REMAINING_HEADER`], parsed.
pub static RATE_LIMIT_REMAINING: HeaderName = HeaderName::from_static(RATE_LIMIT_REMAINING_HEADER);
