//! Rules for closing an account.

use async_trait::async_trait;

use super::{RequestValidationRule, ValidationReport};
use crate::api::dto::CloseAccountRequest;

/// Longest accepted close reason, in characters.
pub(super) const MAX_REASON_CHARS: usize = 500;

/// `reason` non-empty after trimming, at most 500 characters (as sent), no control
/// characters.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloseRequestValidator;

#[async_trait]
impl RequestValidationRule<CloseAccountRequest> for CloseRequestValidator {
    fn name(&self) -> &'static str {
        "account_close"
    }

    async fn validate(&self, request: &CloseAccountRequest, report: &mut ValidationReport) {
        match request.reason.as_deref().map(str::trim) {
            None | Some("") => report.error("reason is required"),
            Some(reason) => {
                if request.reason.as_deref().map_or(0, |raw| raw.chars().count()) > MAX_REASON_CHARS {
                    report.error(format!("reason must be at most {MAX_REASON_CHARS} characters"));
                }
                if reason.chars().any(char::is_control) {
                    report.error("reason must not contain control characters");
                }
            }
        }
    }
}
