//! The errors of starting the application: its configuration
//! ([`ConfigError`]) and its backends ([`AppError`]). The errors a client
//! sees are the HTTP layer's ([`ApiError`](crate::api::ApiError)); those of
//! the services stay with them ([`AuthError`](crate::auth::AuthError),
//! [`TransferError`](crate::transfer::TransferError)).

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The variable is set but unusable.
    #[error("invalid {name}: {reason}")]
    Invalid {
        /// Variable name.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// Parses a set variable, naming it in the error.
pub(crate) fn parse<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Invalid {
        name,
        reason: format!("{value:?}: {e}"),
    })
}

/// Why the application could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A configured backend is not available in this build yet.
    #[error("{0}")]
    Unsupported(String),
    /// The read model could not be built.
    #[error("account read model: {0}")]
    ReadModel(#[from] crate::read_model::ReadModelError),
    /// A backend could not be reached.
    #[error("cannot connect to {backend}: {reason}")]
    Connect {
        /// Which backend.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// Binding or serving failed.
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}
