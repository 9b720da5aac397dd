//! The request and response headers of the API that are not standard
//! HTTP ones.

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
