//! Request and response bodies of the accounts API.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::Amount;
pub use crate::read_model::{AccountView, AccountViewStatus};

/// Body of `POST /accounts`. Fields are optional here so that validation
/// can report every missing one at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// Owner's name: at most 200 characters, not blank, no control
    /// characters (surrounding whitespace is removed, with a warning).
    #[schema(
        example = "Ada Lovelace",
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub owner_name: Option<String>,
    /// Opening balance, non-negative, at most 2 decimal places.
    #[schema(value_type = super::amounts::OpeningBalance, required = true, nullable = false)]
    pub initial_balance: Option<Amount>,
}

/// Body of `POST /accounts/{id}/deposit` and `/withdraw`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionRequest {
    /// Positive amount, at most 2 decimal places.
    #[schema(value_type = super::amounts::PositiveAmount, required = true, nullable = false)]
    pub amount: Option<Amount>,
    /// When given, the command fails with 409 unless the account is at
    /// exactly this version.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(nullable = false, minimum = 0, maximum = 9223372036854775807_i64)]
    pub expected_version: Option<u64>,
}

/// Body of `POST /accounts/{id}/close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseAccountRequest {
    /// Why the account is closed: at most 500 characters, not blank, no
    /// control characters.
    #[schema(
        example = "customer request",
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub reason: Option<String>,
    /// Optional optimistic-concurrency check, as for transactions.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(nullable = false, minimum = 0, maximum = 9223372036854775807_i64)]
    pub expected_version: Option<u64>,
}

/// A present `expected_version`: a JSON integer, or a number with a whole
/// value (`7.0` is the integer 7, as JSON Schema counts it), 0 or more;
/// `null` and anything else are refused.
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use rust_decimal::prelude::ToPrimitive;
    let number = serde_json::Number::deserialize(d)?;
    if let Some(v) = number.as_u64() {
        return Ok(Some(v));
    }
    crate::domain::parse_decimal(&number.to_string())
        .filter(|v| v.fract().is_zero() && !v.is_sign_negative())
        .and_then(|v| v.to_u64())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("a version must be a whole number, 0 or more"))
}

/// Answer of `GET /accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountPage {
    /// Accounts ordered by id.
    pub accounts: Vec<AccountView>,
    /// Accounts in total (for the caller).
    pub total: usize,
    /// Page size used.
    pub limit: usize,
    /// Offset used.
    pub offset: usize,
}

/// One event of an account's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Event type, e.g. `MoneyDeposited`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Account version after the event.
    pub version: u64,
    /// The event's fields.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

/// Body of `GET /accounts/{id}/events`: one page of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventHistory {
    /// The account.
    pub account_id: Uuid,
    /// Its events after `after`, in version order, at most `limit`.
    pub events: Vec<EventView>,
    /// The `after` of the next page (the last version of this one), or
    /// `null` when this page is the last.
    pub next: Option<u64>,
}

/// Largest page of `GET /accounts/{id}/events`.
pub const MAX_EVENTS_PAGE: usize = 1000;
/// Page size of `GET /accounts/{id}/events` without `limit`.
pub const DEFAULT_EVENTS_PAGE: usize = 100;

/// Query of `GET /accounts/{id}/events`.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events with a version greater than this (default 0: from the
    /// first); pass the previous page's `next`.
    #[param(minimum = 0)]
    pub after: Option<u64>,
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// Every error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    #[schema(example = "owner_name is required, initial_balance must be non-negative")]
    pub error: String,
}

/// `limit` (1-100, default 50) and `offset` (default 0).
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Page size, 1-100 (default 50; a value outside the range is brought
    /// into it).
    #[param(maximum = 9223372036854775807_i64)]
    pub limit: Option<usize>,
    /// Items to skip (default 0).
    #[param(maximum = 9223372036854775807_i64)]
    pub offset: Option<usize>,
}

/// The largest `limit` or `offset` a page takes (as the schema says).
pub(super) const MAX_PAGE_NUMBER: usize = 9_223_372_036_854_775_807;

impl Page {
    /// The effective `(offset, limit)`; an error past [`MAX_PAGE_NUMBER`].
    pub fn bounds(self) -> Result<(usize, usize), String> {
        for (name, value) in [("limit", self.limit), ("offset", self.offset)] {
            if value.is_some_and(|v| v > MAX_PAGE_NUMBER) {
                return Err(format!("{name} must be at most {MAX_PAGE_NUMBER}"));
            }
        }
        Ok((self.offset.unwrap_or(0), self.limit.unwrap_or(50).clamp(1, 100)))
    }
}
