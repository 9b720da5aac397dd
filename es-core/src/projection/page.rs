//! Where a reader of the global log stands after a page.

use crate::RecordedEvent;

/// Where a reader of the global log stands after one page, and whether
/// another page may follow.
///
/// `head_before_read` must be [`EventStore::head_position`](crate::EventStore::head_position)
/// read *before* the page. A full page ends at its last event. A short page
/// means every matching event up to that head was in it, so the reader may
/// move to the head even past events its filter skipped — never past one it
/// has not considered (the gap-safe log only grows at or above the head).
///
/// ```
/// # use es_core::backend::checkpoint_after_page;
/// assert_eq!(checkpoint_after_page(10, 50, &[], 100), (50, false));
/// ```
pub fn checkpoint_after_page(
    position: u64,
    head_before_read: u64,
    page: &[RecordedEvent],
    page_size: usize,
) -> (u64, bool) {
    let full = page.len() >= page_size;
    let next = match page.last() {
        Some(last) if full => last.global_position,
        Some(last) => last.global_position.max(head_before_read),
        None => head_before_read.max(position),
    };
    (next, full)
}
