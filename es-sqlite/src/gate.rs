//! The write gate: the writers of one database file in this process take
//! turns in arrival order.
//!
//! SQLite lets one connection write at a time; a connection that finds
//! the file locked sleeps and tries again (the busy handler, with sleeps
//! growing to 100 ms), which is unfair and slow when the event writer and
//! projection transactions of the same process want the lock at once.
//! So every write transaction of this process — the event writer's group
//! commits, projection pages, snapshots, checkpoints — first takes the
//! file's gate (a FIFO async mutex), and SQLite's lock is then free, but
//! for other processes, whose writes still meet the busy handler.
//!
//! A turn waits at most the busy timeout for the gate and then goes to
//! SQLite's lock anyway, so a write transaction that waits on another
//! write of the same process (a projector that appends) fails after the
//! busy timeout, as it would without the gate, instead of hanging.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

/// The gate of one database file.
#[derive(Debug)]
pub(crate) struct WriteGate {
    lock: Arc<tokio::sync::Mutex<()>>,
    patience: Duration,
}

/// A turn at writing; the next writer of this process goes when it drops.
pub(crate) type Turn = Option<OwnedMutexGuard<()>>;

impl WriteGate {
    /// A gate of its own (an in-memory database, or a file whose path
    /// cannot be resolved).
    pub(crate) fn private(patience: Duration) -> Arc<Self> {
        Arc::new(Self {
            lock: Arc::new(tokio::sync::Mutex::new(())),
            patience,
        })
    }

    /// The gate shared by every store of this process on the file at
    /// `path` (which must exist).
    pub(crate) async fn for_file(path: &Path, patience: Duration) -> Arc<Self> {
        static GATES: Mutex<Option<HashMap<PathBuf, Weak<WriteGate>>>> = Mutex::new(None);
        let Ok(path) = tokio::fs::canonicalize(path).await else {
            return Self::private(patience);
        };
        let mut gates = GATES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gates = gates.get_or_insert_with(HashMap::new);
        gates.retain(|_, gate| gate.strong_count() > 0);
        if let Some(gate) = gates.get(&path).and_then(Weak::upgrade) {
            return gate;
        }
        let gate = Self::private(patience);
        gates.insert(path, Arc::downgrade(&gate));
        gate
    }

    /// Waits for this process's turn to write (at most the busy timeout).
    pub(crate) async fn enter(&self) -> Turn {
        let turn = tokio::time::timeout(self.patience, Arc::clone(&self.lock).lock_owned())
            .await
            .ok();
        if turn.is_none() {
            tracing::warn!(
                patience_ms = self.patience.as_millis() as u64,
                "another write of this process holds the database; going to SQLite's lock"
            );
        }
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_of_one_file_share_a_gate_and_a_turn_waits_at_most_its_patience() {
        let dir = std::env::temp_dir().join(format!("es-sqlite-gate-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("db");
        std::fs::write(&file, b"").unwrap();
        let patience = Duration::from_millis(30);
        let a = WriteGate::for_file(&file, patience).await;
        let b = WriteGate::for_file(&dir.join(".").join("db"), patience).await;
        assert!(Arc::ptr_eq(&a, &b), "one gate per file");
        let other = WriteGate::private(patience);
        assert!(!Arc::ptr_eq(&a, &other));

        let turn = a.enter().await;
        assert!(turn.is_some());
        assert!(b.enter().await.is_none(), "held: gives up after its patience");
        drop(turn);
        assert!(b.enter().await.is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
