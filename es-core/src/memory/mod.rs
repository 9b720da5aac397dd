//! In-memory backends of every trait: thread-safe, with the same semantics
//! as the database backends. Used by tests, examples and the quick start.

mod cache;
mod checkpoint;
mod dedup;
mod lock;
mod snapshot;
mod store;

pub use cache::InMemoryStateCache;
pub use checkpoint::InMemoryCheckpointStore;
pub use dedup::{InMemoryDeduplicator, DEFAULT_DEDUP_CAPACITY_BYTES};
pub use lock::InMemoryLockManager;
pub use snapshot::InMemorySnapshotStore;
pub use store::InMemoryEventStore;

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

// No code here panics while holding a lock, so a poisoned lock still guards
// consistent data: take it instead of propagating the poison.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
