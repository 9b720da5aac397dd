//! The PostgreSQL store passes es-core's conformance suite.
mod common;

async fn fresh_store() -> es_postgres::PostgresEventStore {
    common::store().await
}

es_core::event_store_conformance!(fresh_store, fencing);
