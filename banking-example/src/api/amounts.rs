//! The schemas of amounts in requests, with the limits the validation
//! applies: exact JSON numbers with at most 2 decimal places, at most the
//! per-transaction maximum (the default of `MAX_TRANSACTION_AMOUNT`; the
//! document a server serves carries its own, see
//! [`with_max_amount`](super::openapi::with_max_amount)).

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

fn default_max() -> f64 {
    crate::config::AppConfig::default()
        .max_transaction_amount
        .to_string()
        .parse()
        .unwrap_or(f64::MAX)
}

fn amount(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .multiple_of(Some(0.01))
        .maximum(Some(default_max()))
        .description(Some(description))
        .examples([serde_json::json!(1500.00)])
}

/// A deposit, withdrawal or transfer amount: greater than zero.
#[derive(Debug, Clone, Copy)]
pub struct PositiveAmount;

impl utoipa::PartialSchema for PositiveAmount {
    fn schema() -> RefOr<Schema> {
        amount("An exact amount (JSON number): greater than zero, at most 2 decimal places, at most the per-transaction maximum.")
            .exclusive_minimum(Some(0.0))
            .into()
    }
}

impl utoipa::ToSchema for PositiveAmount {}

/// An opening balance: zero or more.
#[derive(Debug, Clone, Copy)]
pub struct OpeningBalance;

impl utoipa::PartialSchema for OpeningBalance {
    fn schema() -> RefOr<Schema> {
        amount("An exact amount (JSON number): zero or more, at most 2 decimal places, at most the per-transaction maximum.")
            .minimum(Some(0.0))
            .into()
    }
}

impl utoipa::ToSchema for OpeningBalance {}
