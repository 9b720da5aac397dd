//! Errors of Redis calls made through [`RedisBackend`](crate::RedisBackend).

/// Why a Redis call did not produce a result.
///
/// Every variant names the operation that failed. None of them is ever
/// surfaced by the cache (it degrades to a miss); the de-duplicator and the
/// lock manager wrap them in es-core's error types.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The circuit breaker is open: Redis failed repeatedly and is not
    /// asked again until the cool-down ends. Nothing was sent.
    #[error("redis circuit open; {operation} not attempted")]
    CircuitOpen {
        /// The operation refused.
        operation: &'static str,
    },
    /// Too many Redis calls were in flight; this one was shed without being
    /// sent.
    #[error("redis overloaded ({max_in_flight} calls in flight); {operation} shed")]
    Shed {
        /// The operation refused.
        operation: &'static str,
        /// The configured bound.
        max_in_flight: usize,
    },
    /// The call did not complete within the response timeout. It may or may
    /// not have taken effect.
    #[error("redis {operation} timed out after {timeout_ms} ms")]
    Timeout {
        /// The operation.
        operation: &'static str,
        /// The timeout in milliseconds.
        timeout_ms: u128,
    },
    /// Redis (or the connection to it) reported an error.
    #[error("redis {operation} failed: {source}")]
    Redis {
        /// The operation.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A stored value could not be encoded or decoded.
    #[error("cannot {direction} value for redis key {key}: {source}")]
    Codec {
        /// `"encode"` or `"decode"`.
        direction: &'static str,
        /// The Redis key.
        key: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// Redis answered something this crate never writes (a foreign value
    /// under one of its keys).
    #[error("unexpected reply to {operation}: {detail}")]
    Protocol {
        /// The operation.
        operation: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl RedisError {
    /// Whether nothing was sent to Redis (open circuit or shed), so the
    /// call certainly had no effect.
    pub fn not_attempted(&self) -> bool {
        matches!(self, Self::CircuitOpen { .. } | Self::Shed { .. })
    }

    /// Whether Redis could not be reached or answered too late: nothing
    /// sent (open circuit, shed), a timeout, or a connection refused,
    /// dropped or failing mid-call. A retry later may succeed; the other
    /// errors (a script or codec error, an unexpected reply) would fail
    /// again. A call that reached Redis may have taken effect.
    ///
    /// ```
    /// use es_redis::RedisError;
    /// let dropped = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    /// assert!(RedisError::Redis { operation: "get", source: dropped }.is_unreachable());
    /// assert!(RedisError::Timeout { operation: "get", timeout_ms: 250 }.is_unreachable());
    /// let script = redis::RedisError::from((redis::ErrorKind::ResponseError, "ERR in script"));
    /// assert!(!RedisError::Redis { operation: "eval", source: script }.is_unreachable());
    /// ```
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::CircuitOpen { .. } | Self::Shed { .. } | Self::Timeout { .. } => true,
            Self::Redis { source, .. } => {
                source.is_io_error()
                    || source.is_connection_refusal()
                    || source.is_connection_dropped()
                    || source.is_timeout()
                    || source.is_unrecoverable_error()
            }
            Self::Codec { .. } | Self::Protocol { .. } => false,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Shed { .. } => "shed",
            Self::Timeout { .. } => "timeout",
            Self::Redis { .. } => "redis",
            Self::Codec { .. } => "codec",
            Self::Protocol { .. } => "protocol",
        }
    }
}
