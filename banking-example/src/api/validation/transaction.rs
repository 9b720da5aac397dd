//! Rules for deposits and withdrawals.

use async_trait::async_trait;

use super::{check_amount, RequestValidationRule, ValidationReport};
use crate::domain::{Amount, Money};

/// A deposit or withdrawal as validated: the account id from the path and
/// the body's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionInput {
    /// The account id as given.
    pub account_id: String,
    /// The amount, if given.
    pub amount: Option<Amount>,
}

/// `account_id` a valid UUID; `amount` present, greater than zero, at most
/// 2 decimal places and at most the per-transaction maximum. Amounts at or
/// above `warn_above` pass with a warning.
#[derive(Debug, Clone)]
pub struct TransactionValidator {
    /// Largest amount of one transaction.
    pub max_amount: Money,
    /// Amounts from which a warning is returned (none when `None`).
    pub warn_above: Option<Money>,
}

impl Default for TransactionValidator {
    fn default() -> Self {
        Self {
            max_amount: crate::config::AppConfig::default().max_transaction_amount,
            warn_above: Some(Money::from_cents(1_000_000)),
        }
    }
}

#[async_trait]
impl RequestValidationRule<TransactionInput> for TransactionValidator {
    fn name(&self) -> &'static str {
        "transaction"
    }

    async fn validate(&self, request: &TransactionInput, report: &mut ValidationReport) {
        if uuid::Uuid::parse_str(&request.account_id).is_err() {
            report.error("account_id must be a valid UUID");
        }
        let Some(amount) = request.amount else {
            report.error("amount is required");
            return;
        };
        let errors = report.errors.len();
        check_amount("amount", amount.0, false, self.max_amount, report);
        if let Some(threshold) = self.warn_above {
            if report.errors.len() == errors && amount.0 >= threshold.value() {
                report.warning(format!("amount is at or above the reporting threshold of {threshold}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(account_id: &str, amount: Option<&str>) -> ValidationReport {
        let input = TransactionInput {
            account_id: account_id.into(),
            amount: amount.map(|a| Amount(crate::domain::parse_decimal(a).unwrap())),
        };
        let mut report = ValidationReport::default();
        TransactionValidator::default().validate(&input, &mut report).await;
        report
    }

    #[tokio::test]
    async fn collects_every_error() {
        let r = check("nope", None).await;
        assert_eq!(r.error_message(), "account_id must be a valid UUID, amount is required");
        let id = uuid::Uuid::nil().to_string();
        assert_eq!(
            check(&id, Some("0")).await.error_message(),
            "amount must be greater than zero"
        );
        assert_eq!(
            check(&id, Some("-5")).await.error_message(),
            "amount must be greater than zero"
        );
        assert_eq!(
            check(&id, Some("1.001")).await.error_message(),
            "amount must have at most 2 decimal places"
        );
        assert_eq!(
            check(&id, Some("1000000.01")).await.error_message(),
            "amount must not exceed 1000000.00"
        );
        assert!(check(&id, Some("1.10")).await.is_valid());
    }

    #[tokio::test]
    async fn large_amounts_warn() {
        let r = check(&uuid::Uuid::nil().to_string(), Some("20000")).await;
        assert!(r.is_valid());
        assert_eq!(r.warnings.len(), 1);
    }
}
