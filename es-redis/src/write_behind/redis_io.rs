//! Running the write-behind scripts through the [`RedisBackend`] and
//! reading their replies.

use std::sync::Arc;

use es_core::StoreError;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::{Idempotency, RedisBackend, RedisError};

/// Runs a script with `args` (no keys: the scripts build their keys from
/// the prefix). Every write-behind script may be sent again after an
/// unknown outcome (admission answers a repeated append as a replay), so
/// calls are retried by the backend's policy.
pub(crate) async fn eval(
    backend: &RedisBackend,
    operation: &'static str,
    script: &'static Script,
    args: Vec<Vec<u8>>,
) -> Result<Value, StoreError> {
    let args = Arc::new(args);
    backend
        .run(operation, Idempotency::Idempotent, move |mut c: ConnectionManager| {
            let mut inv = script.prepare_invoke();
            for a in args.iter() {
                inv.arg(a.as_slice());
            }
            async move { inv.invoke_async::<Value>(&mut c).await }
        })
        .await
        .map_err(|e| store_error(operation, e))
}

/// Redis failures as store errors: refused without I/O is unavailable
/// (nothing happened); anything else may or may not have taken effect.
pub(crate) fn store_error(operation: &'static str, e: RedisError) -> StoreError {
    match e {
        RedisError::CircuitOpen { .. } | RedisError::Shed { .. } => StoreError::Unavailable {
            operation,
            reason: e.to_string(),
        },
        other => StoreError::Backend {
            operation,
            source: Box::new(other),
        },
    }
}

/// A reply field as an integer.
pub(crate) fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A reply field as text.
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A reply field as a list of texts (a missing or nil field is empty).
pub(crate) fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}
