//! Helpers for tests (feature `testing`): a fresh database file per test
//! in its own temporary directory, removed afterwards, so tests run in
//! parallel without seeing each other.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use es_sqlite::{testing, SqliteConfig};
//! let store = testing::temp_store(SqliteConfig::default()).await.unwrap();   // a file, removed with the store
//! let memory = testing::memory_store(SqliteConfig::default()).await.unwrap();
//! # });
//! ```

use std::path::{Path, PathBuf};

use crate::{SetupError, SqliteConfig, SqliteEventStore};

/// A directory of its own under the system's temporary directory, for a
/// database file; removed (with the database and its WAL) when dropped.
/// The directory itself is not created: opening a store at
/// [`path`](Self::path) creates it.
#[derive(Debug)]
pub struct TempDatabase {
    dir: PathBuf,
}

impl TempDatabase {
    /// A fresh, not yet existing directory named after `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            dir: std::env::temp_dir()
                .join("es-sqlite-tests")
                .join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple())),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file in it.
    pub fn path(&self) -> PathBuf {
        self.dir.join("events.db")
    }

    /// The database file as an `sqlite://` URL.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path().display())
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A store on a fresh database file that is removed when the last clone
/// of the store is dropped.
pub async fn temp_store(config: SqliteConfig) -> Result<SqliteEventStore, SetupError> {
    let temp = TempDatabase::new("store");
    let store = SqliteEventStore::connect(&temp.url(), config).await?;
    let _ = store.inner.temporary.set(temp);
    Ok(store)
}

/// A store on a private in-memory database.
pub async fn memory_store(config: SqliteConfig) -> Result<SqliteEventStore, SetupError> {
    SqliteEventStore::connect("sqlite::memory:", config).await
}
