//! [`SlotTurn`]: one relay at a time per replication slot, across
//! processes. Several server instances may each run a relay on the same
//! slot (the same deployment scaled out); only the one holding the slot's
//! turn, a session advisory lock on a connection of its own, reads and
//! advances it. The others stand by and take over within a second of the
//! holder's end (its connection closes, the lock goes with it).
//!
//! Without the turn, two relays would peek the same changes, both publish
//! them, and fail each other's rounds with "replication slot is active".

use sqlx::postgres::PgConnection;
use sqlx::PgPool;
use tokio::sync::Mutex;

/// The turn of one relay on one slot.
#[derive(Debug)]
pub(crate) struct SlotTurn {
    pool: PgPool,
    /// The advisory lock's key (hashed by PostgreSQL).
    key: String,
    /// The connection holding the lock, while held.
    held: Mutex<Option<PgConnection>>,
}

impl SlotTurn {
    pub(crate) fn new(pool: PgPool, slot: &str) -> Self {
        Self {
            pool,
            key: format!("es_kafka.cdc_relay.{slot}"),
            held: Mutex::new(None),
        }
    }

    /// Whether this relay holds the turn now: keeps it while its
    /// connection answers, or tries to take it.
    pub(crate) async fn hold(&self) -> Result<bool, sqlx::Error> {
        let mut held = self.held.lock().await;
        if let Some(conn) = held.as_mut() {
            match sqlx::query("SELECT 1").execute(&mut *conn).await {
                Ok(_) => return Ok(true),
                Err(e) => {
                    tracing::warn!(error = %e, lock = %self.key, "lost the connection holding the relay's turn");
                    *held = None;
                }
            }
        }
        let mut conn = self.pool.acquire().await?;
        let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&self.key)
            .fetch_one(&mut *conn)
            .await?;
        if taken {
            // Out of the pool: the lock lives as long as this connection.
            *held = Some(conn.detach());
        }
        Ok(taken)
    }

    /// Gives the turn up (closes its connection), for a relay that stops.
    pub(crate) async fn release(&self) {
        if let Some(conn) = self.held.lock().await.take() {
            use sqlx::Connection;
            if let Err(e) = conn.close().await {
                tracing::debug!(error = %e, "closing the connection of the relay's turn");
            }
        }
    }
}
