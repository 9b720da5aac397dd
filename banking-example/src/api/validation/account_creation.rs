//! Rules for opening an account.

use async_trait::async_trait;

use super::{check_amount, RequestValidationRule, ValidationReport};
use crate::api::dto::CreateAccountRequest;
use crate::domain::Money;

/// Longest accepted owner name, in characters.
pub(super) const MAX_OWNER_NAME_CHARS: usize = 200;

/// `owner_name` non-empty after trimming, at most 200 characters (as sent), no
/// control characters; `initial_balance` present, non-negative, at most 2
/// decimal places and at most the per-transaction maximum.
#[derive(Debug, Clone)]
pub struct AccountCreationValidator {
    /// Largest opening balance.
    pub max_amount: Money,
}

impl Default for AccountCreationValidator {
    fn default() -> Self {
        Self {
            max_amount: crate::config::AppConfig::default().max_transaction_amount,
        }
    }
}

#[async_trait]
impl RequestValidationRule<CreateAccountRequest> for AccountCreationValidator {
    fn name(&self) -> &'static str {
        "account_creation"
    }

    async fn validate(&self, request: &CreateAccountRequest, report: &mut ValidationReport) {
        match request.owner_name.as_deref().map(str::trim) {
            None | Some("") => report.error("owner_name is required"),
            Some(name) => {
                if request.owner_name.as_deref().map_or(0, |raw| raw.chars().count()) > MAX_OWNER_NAME_CHARS {
                    report.error(format!("owner_name must be at most {MAX_OWNER_NAME_CHARS} characters"));
                }
                if name.chars().any(char::is_control) {
                    report.error("owner_name must not contain control characters");
                }
                if request.owner_name.as_deref() != Some(name) {
                    report.warning("owner_name had surrounding whitespace, which was removed");
                }
            }
        }
        match request.initial_balance {
            None => report.error("initial_balance is required"),
            Some(amount) => check_amount("initial_balance", amount.0, true, self.max_amount, report),
        }
    }
}
