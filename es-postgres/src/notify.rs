//! LISTEN/NOTIFY wake-ups for live readers of the global log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Longest time between two notifications carried by append statements.
const CARRY_INTERVAL: Duration = Duration::from_millis(2);
/// How long appends must pause before a trailing NOTIFY is sent for
/// statements no carried notification covered.
const QUIET: Duration = Duration::from_millis(2);
/// Longest a written statement waits for a notification while appends keep
/// coming without any statement carrying one.
const MAX_DELAY: Duration = Duration::from_millis(20);
/// How long the trailing notifier keeps its connection while nothing is
/// appended.
const KEEP_IDLE_CONNECTION: Duration = Duration::from_millis(500);

/// Who tells LISTENers that events were written, without extra commits.
///
/// A NOTIFY makes PostgreSQL assign a transaction id and flush a commit
/// record, so a standalone NOTIFY costs as much as an append. Instead,
/// append statements carry `pg_notify` themselves (it is delivered when
/// their rows commit): at most one carrying statement in flight and at most
/// one every [`CARRY_INTERVAL`], since notifying commits serialise on a
/// cluster-wide lock. A standalone NOTIFY is sent only for statements no
/// carried notification covered — when appends pause for [`QUIET`], or
/// after [`MAX_DELAY`] at the latest.
///
/// "Covered" is counted conservatively: a carried notification covers the
/// statements that finished before it was sent, and itself; a statement
/// finishing meanwhile stays uncovered, so a trailing NOTIFY may be
/// spent needlessly but a wake-up is never missed.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// Append statements finished (whatever their outcome).
    finished: AtomicU64,
    /// How many of them a delivered notification is known to cover.
    covered: AtomicU64,
    /// Whether a carrying statement is in flight.
    carrying: AtomicBool,
    /// When the last carrying statement was sent, in µs since `epoch`.
    last_carried_us: AtomicU64,
    epoch: Instant,
    poke: tokio::sync::Notify,
}

/// A statement's permission to carry the notification.
#[derive(Debug)]
pub(crate) struct Carry {
    finished_before: u64,
}

impl Notifier {
    pub(crate) fn new() -> Self {
        Self {
            finished: AtomicU64::new(0),
            covered: AtomicU64::new(0),
            carrying: AtomicBool::new(false),
            last_carried_us: AtomicU64::new(0),
            epoch: Instant::now(),
            poke: tokio::sync::Notify::new(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether the next append statement should carry `pg_notify`.
    pub(crate) fn claim(&self) -> Option<Carry> {
        let last = self.last_carried_us.load(Ordering::Acquire);
        let now = self.now_us().max(1);
        let due = last == 0 || now.saturating_sub(last) >= CARRY_INTERVAL.as_micros() as u64;
        if !due || self.carrying.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.last_carried_us.store(now, Ordering::Release);
        Some(Carry {
            finished_before: self.finished.load(Ordering::Acquire),
        })
    }

    /// Records that an append statement finished; `carried` is its claim
    /// and whether its notification went out (it committed rows).
    pub(crate) fn finished(&self, carried: Option<(Carry, bool)>) {
        self.finished.fetch_add(1, Ordering::AcqRel);
        if let Some((carry, committed)) = carried {
            if committed {
                self.covered.fetch_max(carry.finished_before + 1, Ordering::AcqRel);
            }
            self.carrying.store(false, Ordering::Release);
        }
        self.poke.notify_one();
    }
}

/// Starts the task that sends a trailing NOTIFY for statements no carried
/// notification covered. It keeps its connection (one given back to the
/// pool costs a ping) and takes a fresh one after a failure.
pub(crate) fn spawn_trailing(
    pool: PgPool,
    statement: String,
    notifier: Arc<Notifier>,
    keep_connection: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut conn: Option<PoolConnection<Postgres>> = None;
        loop {
            if tokio::time::timeout(KEEP_IDLE_CONNECTION, notifier.poke.notified())
                .await
                .is_err()
            {
                // Idle: give the connection back for readers.
                conn = None;
                notifier.poke.notified().await;
            }
            loop {
                // Wait for a pause in the appends (or MAX_DELAY). After a
                // pause every finished statement must be covered; while
                // appends keep coming, those that finished before the wait
                // (carried notifications normally covered them meanwhile).
                let waited_for = notifier.finished.load(Ordering::Acquire);
                let deadline = tokio::time::Instant::now() + MAX_DELAY;
                let mut paused = false;
                while !paused && tokio::time::Instant::now() < deadline {
                    let pause = tokio::time::Instant::now() + QUIET;
                    paused = tokio::time::timeout_at(pause.min(deadline), notifier.poke.notified())
                        .await
                        .is_err()
                        && pause <= deadline;
                }
                let must_cover = if paused {
                    notifier.finished.load(Ordering::Acquire)
                } else {
                    waited_for
                };
                if notifier.covered.load(Ordering::Acquire) < must_cover {
                    send(&pool, &statement, &notifier, &mut conn).await;
                    if !keep_connection {
                        conn = None;
                    }
                }
                if paused {
                    break;
                }
            }
        }
    })
}

/// Sends a standalone NOTIFY on the trailing notifier's connection.
async fn send(pool: &PgPool, statement: &str, notifier: &Notifier, conn: &mut Option<PoolConnection<Postgres>>) {
    let finished_before = notifier.finished.load(Ordering::Acquire);
    if conn.is_none() {
        *conn = pool.acquire().await.ok();
    }
    let Some(c) = conn.as_deref_mut() else {
        tracing::debug!("no connection for NOTIFY; readers fall back to polling");
        return;
    };
    match sqlx::query(statement).execute(c).await {
        Ok(_) => {
            notifier.covered.fetch_max(finished_before, Ordering::AcqRel);
        }
        Err(e) => {
            tracing::debug!(error = %e, "NOTIFY failed; readers fall back to polling");
            *conn = None;
        }
    }
}
