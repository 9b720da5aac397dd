//! LISTEN/NOTIFY wake-ups for live readers of the global log.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgPool};
use sqlx::Postgres;
use tokio::sync::watch;

/// Starts a task that LISTENs on `channel` and bumps the returned counter
/// on every notification (and on every reconnect, since notifications may
/// have been missed). Readers that miss a wake-up still poll.
pub(crate) fn spawn_listener(pool: PgPool, channel: String) -> (watch::Receiver<u64>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(0u64);
    let handle = tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; readers fall back to polling");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if let Err(e) = listener.listen(&channel).await {
                tracing::warn!(error = %e, channel, "LISTEN failed; readers fall back to polling");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            tx.send_modify(|n| *n += 1);
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => tx.send_modify(|n| *n += 1),
                    Ok(None) => {
                        // Connection lost and re-established: wake readers.
                        tx.send_modify(|n| *n += 1);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection broke; reconnecting");
                        break;
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        }
    });
    (rx, handle)
}

/// Starts a task that sends one NOTIFY after appends were written,
/// coalescing every append that happened while the previous NOTIFY was in
/// flight. Off the append path: no commit waits for it. The task keeps its
/// connection (a connection given back to the pool costs a ping) and
/// takes a fresh one after a failure.
pub(crate) fn spawn_notifier(
    pool: PgPool,
    statement: String,
) -> (std::sync::Arc<tokio::sync::Notify>, tokio::task::JoinHandle<()>) {
    let poke = std::sync::Arc::new(tokio::sync::Notify::new());
    let waiter = std::sync::Arc::clone(&poke);
    let handle = tokio::spawn(async move {
        let mut conn: Option<PoolConnection<Postgres>> = None;
        loop {
            if tokio::time::timeout(KEEP_IDLE_CONNECTION, waiter.notified()).await.is_err() {
                // Idle: give the connection back for readers.
                conn = None;
                waiter.notified().await;
            }
            // Coalesce a burst of appends into one NOTIFY.
            tokio::time::sleep(Duration::from_millis(2)).await;
            if conn.is_none() {
                conn = pool.acquire().await.ok();
            }
            let Some(c) = conn.as_deref_mut() else {
                tracing::debug!("no connection for NOTIFY; readers fall back to polling");
                continue;
            };
            if let Err(e) = sqlx::query(&statement).execute(c).await {
                tracing::debug!(error = %e, "NOTIFY failed; readers fall back to polling");
                conn = None;
            }
        }
    });
    (poke, handle)
}

/// How long the notifier keeps its connection while nothing is appended.
const KEEP_IDLE_CONNECTION: Duration = Duration::from_millis(500);
