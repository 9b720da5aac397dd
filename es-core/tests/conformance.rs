//! The in-memory store passes the backend conformance suite.

async fn fresh_store() -> es_core::InMemoryEventStore {
    es_core::InMemoryEventStore::new()
}

es_core::event_store_conformance!(fresh_store, fencing);
