//! Positions and versions between Rust (`u64`) and PostgreSQL (`BIGINT`).
//!
//! A value read back must not be negative: a row written by hand, another
//! writer or a restored dump with a negative position is reported as an
//! error instead of turning into a number near `u64::MAX` (which would
//! then be written back as a checkpoint, say). A value bound as a
//! parameter above `i64::MAX` saturates: no stored row is that far, so a
//! lookup finds nothing instead of a wrapped-around negative one.

/// A stored `BIGINT` that should be a position, version or count is
/// negative.
#[derive(Debug, thiserror::Error)]
#[error("negative value {0} where a position, version or count was expected")]
pub(crate) struct NegativeValue(pub(crate) i64);

/// `value` read from a `BIGINT` column, refused when negative.
pub(crate) fn unsigned(value: i64) -> Result<u64, NegativeValue> {
    u64::try_from(value).map_err(|_| NegativeValue(value))
}

/// `value` as a `BIGINT` parameter, saturating at `i64::MAX`.
pub(crate) fn bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// [`unsigned`] as a sqlx decoding error, for code that reports those.
pub(crate) fn decoded(value: i64) -> Result<u64, sqlx::Error> {
    unsigned(value).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_values_are_refused_and_large_ones_saturate() {
        assert_eq!(unsigned(0).ok(), Some(0));
        assert_eq!(unsigned(i64::MAX).ok(), Some(i64::MAX as u64));
        let e = unsigned(-5).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("negative value -5"), "{e}");
        assert!(matches!(decoded(-1), Err(sqlx::Error::Decode(_))));
        assert_eq!(bigint(7), 7);
        assert_eq!(bigint(u64::MAX), i64::MAX);
        assert_eq!(bigint(i64::MAX as u64 + 1), i64::MAX);
    }
}
