//! [`CdcRelay`]: peek the slot, publish, wait for acknowledgements, advance.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use es_core::RecordedEvent;
use sqlx::PgPool;
use tracing::Instrument;

use super::decode::{event_from_columns, parse_change, Change};
use super::slot::{self, OtherSlot, SlotStatus};
use super::turn::SlotTurn;
use super::CdcConfig;
use crate::error::{CdcError, SetupError};
use crate::health::{HealthSnapshot, PublishHealth};
use crate::publisher::KafkaPublisher;
use crate::rounds::{self, Pace, Progress};
use crate::telemetry;

const METHOD: &str = "cdc_builtin";

/// Relays committed inserts of `{schema}.events` from a logical
/// replication slot (`test_decoding`, read with
/// `pg_logical_slot_peek_changes`) to Kafka.
///
/// Guarantees:
/// - **only committed events**: logical decoding emits a transaction at
///   its commit; a rolled-back append is never decoded;
/// - **at least once, restart-safe**: the slot is advanced
///   (`pg_replication_slot_advance`) only past transactions whose events
///   Kafka has all acknowledged, after the acknowledgement. Changes are
///   never consumed with `get_changes`, so a relay that dies at any point
///   reads and publishes them again;
/// - **per-stream order**: changes arrive in commit order, and a stream's
///   versions commit in order;
/// - events committed before the slot existed are not emitted (publish
///   history once with [`KafkaPublisher::publish`] if needed).
///
/// Relays on the same slot (one per server instance of a deployment
/// scaled out) take turns: [`run`](Self::run) reads the slot only while
/// it holds the slot's turn, a PostgreSQL advisory lock on a connection of
/// its own; the others stand by (healthy, [`HealthSnapshot::standby`]) and
/// the first to see the turn free takes over, within a second of the
/// holder's end. [`relay_once`](Self::relay_once) takes no turn: call it
/// from one place only. The database's `wal_level` must be `logical`.
#[derive(Debug, Clone)]
pub struct CdcRelay {
    pool: PgPool,
    publisher: Arc<KafkaPublisher>,
    config: CdcConfig,
    table: EventsTable,
    health: Arc<PublishHealth>,
    /// Highest global position acknowledged so far (0: none yet).
    acked_position: Arc<AtomicU64>,
    /// Lowest global position among the events the last round read but
    /// could not publish (0: none, or no round failed): the lag's baseline
    /// before the first publish, so that a relay started while Kafka is
    /// down still reports what waits.
    pending_from: Arc<AtomicU64>,
    /// One relay per slot at a time, across processes.
    turn: Arc<SlotTurn>,
}

/// The relay's lag, for readiness checks and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayStatus {
    /// The slot.
    pub slot: SlotStatus,
    /// Events committed with a global position above the highest one
    /// published since this relay started; before its first publish,
    /// events from the lowest position its last round read and could not
    /// publish (`None` before either: nothing published or read yet). An
    /// estimate: positions follow transaction ids, not commit order.
    pub lag_events: Option<u64>,
}

/// The events of whole transactions read from the slot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangeBatch {
    /// Events of the captured table, in commit order, with their commit time.
    pub events: Vec<(RecordedEvent, DateTime<Utc>)>,
    /// Per complete transaction: its commit LSN and how many of `events`
    /// it contributed (transactions of other tables contribute 0).
    pub transactions: Vec<(String, usize)>,
    /// When the slot had nothing to decode: the WAL position flushed
    /// before it was read, which the slot may move to. Its database idle,
    /// the slot would otherwise stay where it is while other databases of
    /// the cluster write, and keep their WAL.
    pub idle_upto: Option<String>,
}

impl ChangeBatch {
    /// The LSN to advance to once events `..published` are acknowledged:
    /// the commit of the last transaction all of whose events are in.
    pub fn safe_lsn(&self, published: usize) -> Option<&str> {
        self.passed(published).0
    }

    /// The commit of the last transaction all of whose events are among
    /// `..published`, and how many events those whole transactions hold.
    fn passed(&self, published: usize) -> (Option<&str>, usize) {
        let mut covered = 0;
        let mut passed = (None, 0);
        for (commit, n) in &self.transactions {
            covered += n;
            if covered > published {
                break;
            }
            passed = (Some(commit.as_str()), covered);
        }
        passed
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayOutcome {
    /// Transactions read.
    pub transactions: usize,
    /// Events acknowledged by Kafka.
    pub published: usize,
    /// The LSN the slot was advanced to, if it moved.
    pub advanced_to: Option<String>,
    /// Commit-to-acknowledgement lag of each published event.
    pub lags: Vec<Duration>,
}

impl CdcRelay {
    /// A relay for `config`. Does not touch the database.
    pub fn new(pool: PgPool, publisher: Arc<KafkaPublisher>, config: CdcConfig) -> Result<Self, SetupError> {
        let schema = crate::ident::check(&config.schema)?;
        crate::ident::check(&config.slot)?;
        Ok(Self {
            table: EventsTable::of(schema),
            health: Arc::new(PublishHealth::new(METHOD, config.unhealthy_after)),
            acked_position: Arc::new(AtomicU64::new(0)),
            pending_from: Arc::new(AtomicU64::new(0)),
            turn: Arc::new(SlotTurn::new(pool.clone(), &config.slot)),
            pool,
            publisher,
            config,
        })
    }

    /// Progress of [`run`](Self::run): failed rounds, the last error, the
    /// last publish (for readiness checks).
    pub fn health(&self) -> HealthSnapshot {
        self.health.snapshot()
    }

    /// The slot's lag in bytes and events; sets the
    /// [`telemetry::CDC_LAG_BYTES`] and [`telemetry::CDC_LAG_EVENTS`]
    /// gauges.
    pub async fn status(&self) -> Result<RelayStatus, CdcError> {
        let slot = self.slot_status().await?;
        // Events above `after`: those past the last acknowledged one, or,
        // before any, from the first one a failed round left.
        let after = match self.acked_position.load(Ordering::Relaxed) {
            0 => self.pending_from.load(Ordering::Relaxed).checked_sub(1),
            acked => Some(acked),
        };
        let lag_events = match after {
            None => None,
            Some(after) => {
                let n: i64 = sqlx::query_scalar(&format!(
                    "SELECT count(*) FROM (SELECT 1 FROM {} WHERE global_position > $1 LIMIT 10000000) x",
                    self.table.sql
                ))
                .bind(i64::try_from(after).unwrap_or(i64::MAX))
                .fetch_one(&self.pool)
                .await?;
                Some(n.max(0) as u64)
            }
        };
        if let Some(b) = slot.lag_bytes {
            ::metrics::gauge!(telemetry::CDC_LAG_BYTES).set(b as f64);
        }
        if let Some(n) = lag_events {
            ::metrics::gauge!(telemetry::CDC_LAG_EVENTS).set(n as f64);
        }
        Ok(RelayStatus { slot, lag_events })
    }

    /// The startup check: fails with [`CdcError::SlotConflict`] when the
    /// slot name is taken in another database of the cluster (or by another
    /// plugin), and warns, with the command to drop them, about other
    /// logical slots that hold back more than `abandoned_slot_bytes` of WAL
    /// (a retired deployment's slot keeps WAL forever). Returns those.
    pub async fn check_slot(&self) -> Result<Vec<OtherSlot>, CdcError> {
        let (same, here, heavy) =
            slot::inspect(&self.pool, &self.config.slot, self.config.abandoned_slot_bytes).await?;
        if let Some(existing) = same {
            if !here || existing.plugin.as_deref() != Some("test_decoding") {
                return Err(CdcError::SlotConflict {
                    slot: existing.name,
                    database: existing.database.unwrap_or_default(),
                    plugin: existing.plugin.unwrap_or_default(),
                });
            }
        }
        for other in &heavy {
            tracing::warn!(
                slot = %other.name,
                database = ?other.database,
                retained_bytes = ?other.retained_bytes,
                "a replication slot holds back WAL; if its deployment is retired, drop it: \
                 SELECT pg_drop_replication_slot('{}') (connected to its database)",
                other.name
            );
        }
        Ok(heavy)
    }

    /// The settings.
    pub fn config(&self) -> &CdcConfig {
        &self.config
    }

    /// Checks the slot name ([`check_slot`](Self::check_slot)) and creates
    /// the slot unless it exists; returns whether it was created. Events
    /// committed from then on will be relayed.
    pub async fn ensure_slot(&self) -> Result<bool, CdcError> {
        self.check_slot().await?;
        slot::ensure(&self.pool, &self.config.slot).await
    }

    /// Drops the slot (decommissioning; a forgotten slot keeps WAL forever).
    pub async fn drop_slot(&self) -> Result<(), CdcError> {
        slot::drop(&self.pool, &self.config.slot).await
    }

    /// The slot's confirmed position and the WAL it retains.
    pub async fn slot_status(&self) -> Result<SlotStatus, CdcError> {
        slot::slot_status(&self.pool, &self.config.slot).await
    }

    /// Reads (peeks, without consuming) the next whole transactions.
    pub async fn read_batch(&self) -> Result<ChangeBatch, CdcError> {
        let (rows, flushed) = slot::peek(&self.pool, &self.config.slot, self.config.max_changes).await?;
        let mut batch = ChangeBatch {
            idle_upto: rows.is_empty().then_some(flushed),
            ..ChangeBatch::default()
        };
        let mut open: Vec<RecordedEvent> = Vec::new();
        for (lsn, data) in rows {
            let decode_err = |reason: String| CdcError::Decode {
                lsn: lsn.clone(),
                reason,
            };
            match parse_change(&data).map_err(decode_err)? {
                Change::Begin => open.clear(),
                Change::Insert { table, columns } if self.table.is(&table) => {
                    open.push(event_from_columns(&columns).map_err(decode_err)?);
                }
                Change::Insert { .. } | Change::Other => {}
                Change::Commit(at) => {
                    let at = at.unwrap_or_else(Utc::now);
                    batch.transactions.push((lsn.clone(), open.len()));
                    batch.events.extend(open.drain(..).map(|e| (e, at)));
                }
            }
        }
        Ok(batch)
    }

    /// Publishes a batch, waits for every acknowledgement, and advances the
    /// slot past the transactions that are fully acknowledged. Fails (after
    /// advancing past the acknowledged prefix) if any event was not.
    pub async fn publish_batch(&self, batch: &ChangeBatch) -> Result<RelayOutcome, CdcError> {
        let events: Vec<RecordedEvent> = batch.events.iter().map(|(e, _)| e.clone()).collect();
        let results = self.publisher.publish(&events).await;
        let prefix = results.iter().take_while(|r| r.is_ok()).count();
        // Only the events of whole acknowledged transactions are done: the
        // others (acknowledged or not) are read and published again, so
        // they are neither counted nor timed here.
        let (safe, passed) = batch.passed(prefix);
        let mut outcome = RelayOutcome {
            transactions: batch.transactions.len(),
            published: passed,
            ..RelayOutcome::default()
        };
        let left = batch.events.iter().skip(passed).map(|(e, _)| e.global_position).min();
        self.pending_from.store(left.unwrap_or(0), Ordering::Relaxed);
        for ((event, committed_at), result) in batch.events.iter().zip(&results).take(passed) {
            self.acked_position.fetch_max(event.global_position, Ordering::Relaxed);
            if let Ok(d) = result {
                outcome
                    .lags
                    .push(telemetry::record_lag(METHOD, *committed_at, d.acked_at));
            }
        }
        if let Some(lsn) = safe.or(batch.idle_upto.as_deref()) {
            slot::advance(&self.pool, &self.config.slot, lsn).await?;
            outcome.advanced_to = Some(lsn.to_owned());
        }
        ::metrics::counter!(telemetry::PUBLISHED, "method" => METHOD).increment(passed as u64);
        let failed = results.len() - prefix;
        if failed > 0 {
            ::metrics::counter!(telemetry::PUBLISH_FAILURES, "method" => METHOD)
                .increment((results.len() - passed) as u64);
            if let Some(Err(first)) = results.into_iter().nth(prefix) {
                return Err(CdcError::Publish {
                    published: passed,
                    failed,
                    total: events.len(),
                    first,
                });
            }
        }
        Ok(outcome)
    }

    /// One round: [`read_batch`](Self::read_batch) then
    /// [`publish_batch`](Self::publish_batch).
    pub async fn relay_once(&self) -> Result<RelayOutcome, CdcError> {
        let started = Instant::now();
        let span = tracing::debug_span!("cdc.relay", slot = %self.config.slot);
        let outcome = async { self.publish_batch(&self.read_batch().await?).await }
            .instrument(span)
            .await?;
        if outcome.transactions > 0 {
            ::metrics::histogram!(telemetry::BATCH_DURATION, "method" => METHOD)
                .record(started.elapsed().as_secs_f64());
        }
        Ok(outcome)
    }

    /// Relays until `shutdown` completes: again at once after a busy
    /// round, after `poll_interval` when idle, with back-off after errors
    /// (logged, counted in [`health`](Self::health), never returned).
    /// Checks and creates the slot first; reads it only while holding the
    /// slot's turn (see above), and gives the turn up when it returns.
    /// Shutdown lets the round in progress finish for at most
    /// `shutdown_grace`.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let ready = AtomicBool::new(false);
        let pace = Pace {
            poll_interval: self.config.poll_interval,
            backoff: &self.config.backoff,
            shutdown_grace: self.config.shutdown_grace,
            what: METHOD,
        };
        rounds::run(pace, shutdown, || async {
            if !ready.load(Ordering::Relaxed) {
                return match self.ensure_slot().await {
                    Ok(_) => {
                        ready.store(true, Ordering::Relaxed);
                        Progress::Busy
                    }
                    Err(e) => {
                        tracing::error!(error = %e, slot = %self.config.slot, "cdc relay cannot start");
                        self.health.failed(e.to_string());
                        Progress::Failed
                    }
                };
            }
            match self.turn.hold().await {
                Ok(true) => {}
                Ok(false) => {
                    if !self.health.standby() {
                        tracing::info!(slot = %self.config.slot, "another relay holds this slot's turn; standing by");
                    }
                    return Progress::Standby;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cdc relay cannot take its slot's turn");
                    self.health.failed(format!("taking the slot's turn: {e}"));
                    return Progress::Failed;
                }
            }
            match self.relay_once().await {
                Ok(o) => {
                    self.health.progress(o.published);
                    if o.transactions > 0 {
                        Progress::Busy
                    } else {
                        Progress::Idle
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cdc relay round failed");
                    match e {
                        // Part of the batch went out and the slot moved past
                        // it: a failed round that published, and the next
                        // one goes at once (it starts with the failure).
                        // Events of a transaction acknowledged in part are
                        // published again, so they are not counted here.
                        CdcError::Publish { published, .. } if published > 0 => {
                            self.health.partial(published, e.to_string());
                            Progress::Busy
                        }
                        e => {
                            self.health.failed(e.to_string());
                            Progress::Failed
                        }
                    }
                }
            }
        })
        .await;
        // A relay on standby elsewhere takes over.
        self.turn.release().await;
    }
}

/// The names of `{schema}.events`.
#[derive(Debug, Clone)]
struct EventsTable {
    /// As SQL writes it: the schema quoted, which a keyword (`time`,
    /// `values`, ...) needs.
    sql: String,
    /// As `test_decoding` prints it: the schema quoted only when it is a
    /// keyword (the schema is a plain identifier, `ident::check`).
    plain: String,
}

impl EventsTable {
    fn of(schema: &str) -> Self {
        Self {
            sql: format!("\"{schema}\".events"),
            plain: format!("{schema}.events"),
        }
    }

    /// Whether `decoded`, a table name of a decoded change, is this table.
    fn is(&self, decoded: &str) -> bool {
        decoded == self.plain || decoded == self.sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_events_table_is_recognised_quoted_or_not() {
        let names = EventsTable::of("time");
        assert_eq!(names.sql, "\"time\".events");
        for decoded in ["time.events", "\"time\".events"] {
            assert!(names.is(decoded), "{decoded}");
        }
        for other in [
            "time.outbox",
            "\"time\".outbox",
            "times.events",
            "\"times\".events",
            "events",
        ] {
            assert!(!names.is(other), "{other}");
        }
    }

    #[test]
    fn safe_lsn_stops_before_a_partly_published_transaction() {
        let batch = ChangeBatch {
            events: Vec::new(),
            transactions: vec![("0/1".into(), 2), ("0/2".into(), 0), ("0/3".into(), 3)],
            idle_upto: None,
        };
        assert_eq!(batch.safe_lsn(0), None);
        assert_eq!(batch.safe_lsn(1), None);
        assert_eq!(batch.safe_lsn(2), Some("0/2"));
        assert_eq!(batch.safe_lsn(4), Some("0/2"));
        assert_eq!(batch.safe_lsn(5), Some("0/3"));
        assert_eq!(batch.passed(1), (None, 0));
        assert_eq!(batch.passed(4), (Some("0/2"), 2));
        assert_eq!(batch.passed(5), (Some("0/3"), 5));
    }
}
