//! Health check of the store.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::PostgresEventStore;

/// What [`PostgresEventStore::health`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// Whether a round trip to the database succeeded.
    pub ok: bool,
    /// Round-trip time of `SELECT 1`.
    pub round_trip: Duration,
    /// Connections open in the pool.
    pub pool_size: u32,
    /// Of which idle.
    pub pool_idle: usize,
    /// The error, when not ok.
    pub error: Option<String>,
}

impl PostgresEventStore {
    /// Pool statistics and a round-trip check.
    pub async fn health(&self) -> Health {
        let started = Instant::now();
        let result = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(self.pool()).await;
        let round_trip = started.elapsed();
        Health {
            ok: result.is_ok(),
            round_trip,
            pool_size: self.pool().size(),
            pool_idle: self.pool().num_idle(),
            error: result.err().map(|e| e.to_string()),
        }
    }
}
