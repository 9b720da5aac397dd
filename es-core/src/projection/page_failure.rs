//! [`PageFailure`]: why a transactional projector did not apply a page.

use crate::error::BoxError;

/// Why a page did not apply: the projector's error and, when known, the
/// index of the event it failed on. Returned by the page-writing
/// projectors of the database backends (es-postgres, es-sqlite).
///
/// Any `std::error::Error` (a `sqlx::Error`, say) converts with `?` into a
/// failure of the page as a whole.
///
/// ```
/// use es_core::PageFailure;
/// let f = PageFailure::at(3, "bad amount");
/// assert_eq!(f.index, Some(3));
/// let whole: PageFailure = std::io::Error::other("disk").into();
/// assert_eq!(whole.index, None);
/// ```
#[derive(Debug)]
pub struct PageFailure {
    /// Index in the page of the failing event, when known.
    pub index: Option<usize>,
    /// The error.
    pub error: BoxError,
}

impl PageFailure {
    /// The page failed at event `index`.
    pub fn at(index: usize, error: impl Into<BoxError>) -> Self {
        Self {
            index: Some(index),
            error: error.into(),
        }
    }

    /// The page failed as a whole (the unit then finds the event by
    /// applying them one at a time).
    pub fn whole(error: impl Into<BoxError>) -> Self {
        Self {
            index: None,
            error: error.into(),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for PageFailure {
    fn from(e: E) -> Self {
        Self::whole(e)
    }
}
