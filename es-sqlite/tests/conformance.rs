//! The SQLite store passes es-core's conformance suite, on a database
//! file and in memory.

/// On a fresh database file (removed with the store).
mod on_file {
    async fn fresh_store() -> es_sqlite::SqliteEventStore {
        es_sqlite::testing::temp_store(es_sqlite::SqliteConfig::default())
            .await
            .expect("store on a temporary file")
    }

    es_core::event_store_conformance!(fresh_store);
}

/// On a private in-memory database (the pool and the writer share it).
mod in_memory {
    async fn fresh_store() -> es_sqlite::SqliteEventStore {
        es_sqlite::testing::memory_store(es_sqlite::SqliteConfig::default())
            .await
            .expect("store in memory")
    }

    es_core::event_store_conformance!(fresh_store);
}
