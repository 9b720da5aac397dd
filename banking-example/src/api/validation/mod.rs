//! Request validation: async rules registered per request type, producing
//! errors (400, all messages joined) and warnings (returned in the
//! `x-validation-warnings` header, never failing the request).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use banking_example::api::validation::{AccountCreationValidator, ValidatorRegistry};
//! use banking_example::api::CreateAccountRequest;
//! let mut registry = ValidatorRegistry::new();
//! registry.register::<CreateAccountRequest>(AccountCreationValidator::default());
//! let request = CreateAccountRequest { owner_name: Some(" ".into()), initial_balance: None };
//! let report = registry.validate(&request).await;
//! assert_eq!(report.error_message(), "owner_name is required, initial_balance is required");
//! # });
//! ```

mod account_creation;
mod closure;
mod rule;
mod transaction;

pub use account_creation::AccountCreationValidator;
pub use closure::CloseRequestValidator;
pub use rule::{RequestValidationRule, ValidationReport};
pub use transaction::{TransactionInput, TransactionValidator};

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

type Rules<T> = Vec<Arc<dyn RequestValidationRule<T>>>;

/// Rules by request type. Validating a type with no rules passes.
#[derive(Default)]
pub struct ValidatorRegistry {
    rules: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for ValidatorRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidatorRegistry")
            .field("request_types", &self.rules.len())
            .finish()
    }
}

impl ValidatorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule for requests of type `T`; rules run in registration order.
    pub fn register<T: Send + Sync + 'static>(&mut self, rule: impl RequestValidationRule<T>) -> &mut Self {
        let entry = self
            .rules
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Box::new(Rules::<T>::new()));
        if let Some(rules) = entry.downcast_mut::<Rules<T>>() {
            rules.push(Arc::new(rule));
        }
        self
    }

    /// Runs every rule registered for `T`.
    pub async fn validate<T: Send + Sync + 'static>(&self, request: &T) -> ValidationReport {
        let mut report = ValidationReport::default();
        let Some(rules) = self
            .rules
            .get(&TypeId::of::<T>())
            .and_then(|r| r.downcast_ref::<Rules<T>>())
        else {
            return report;
        };
        for rule in rules {
            rule.validate(request, &mut report).await;
        }
        if !report.is_valid() {
            tracing::debug!(errors = %report.error_message(), "request failed validation");
        }
        report
    }
}

/// Checks an amount's precision, sign and size; `field` names it in messages.
pub(crate) fn check_amount(
    field: &str,
    amount: rust_decimal::Decimal,
    allow_zero: bool,
    max: crate::domain::Money,
    report: &mut ValidationReport,
) {
    if amount.is_sign_negative() && !amount.is_zero() {
        report.error(if allow_zero {
            format!("{field} must be non-negative")
        } else {
            format!("{field} must be greater than zero")
        });
        return;
    }
    if amount.is_zero() && !allow_zero {
        report.error(format!("{field} must be greater than zero"));
        return;
    }
    if amount.normalize().scale() > crate::domain::SCALE {
        report.error(format!("{field} must have at most 2 decimal places"));
        return;
    }
    if amount > max.value() {
        report.error(format!("{field} must not exceed {max}"));
    }
}
