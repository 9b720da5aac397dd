//! The rule trait and the report rules write into.

use async_trait::async_trait;

/// Errors (which fail the request) and warnings (which do not) collected
/// by the rules of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Why the request is invalid, in rule order.
    pub errors: Vec<String>,
    /// Things worth telling the caller that do not fail the request.
    pub warnings: Vec<String>,
}

impl ValidationReport {
    /// Records an error.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    /// Records a warning.
    pub fn warning(&mut self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// Whether no rule reported an error.
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    /// All errors joined with `", "`.
    pub fn error_message(&self) -> String {
        self.errors.join(", ")
    }

    /// All warnings joined with `"; "`.
    pub fn warning_message(&self) -> String {
        self.warnings.join("; ")
    }

    /// The `x-validation-warnings` of the answer: the warnings joined with
    /// `"; "`, `None` without any.
    pub fn warnings(&self) -> Option<String> {
        (!self.warnings.is_empty()).then(|| self.warning_message())
    }
}

/// One validation rule for requests of type `T`.
///
/// Rules are async so that a rule may consult outside state (a blocklist,
/// a per-customer limit); they must not fail on their own errors — report
/// them as request errors or log them.
#[async_trait]
pub trait RequestValidationRule<T: Send + Sync + 'static>: Send + Sync + 'static {
    /// Short name, for logs.
    fn name(&self) -> &'static str;
    /// Checks the request and records errors and warnings.
    async fn validate(&self, request: &T, report: &mut ValidationReport);
}
