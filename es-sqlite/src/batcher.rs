//! Group commit: the one writer, committing many appends per transaction.
//!
//! SQLite lets one connection write at a time, so the store has exactly
//! one writer task with its own connection. It takes whatever appends
//! are queued (up to `batch_size`) and writes them in **one** `BEGIN
//! IMMEDIATE … COMMIT` transaction: one commit — one sync of the WAL with
//! [`Synchronous::Full`](crate::Synchronous::Full) — for the whole batch.
//!
//! Inside the transaction each append is checked on its own, in queue
//! order, against the stream's version as the transaction sees it (so an
//! append sees the appends before it in the same batch). An append's
//! events go in with one multi-row INSERT — all or none — which, with an
//! exact expectation (`Exact`, `NoStream`), carries the version check
//! itself; a batch of one such append is that one statement, committed by
//! SQLite without a transaction around it. The first appends of a batch
//! to distinct streams with exact expectations (the common case of many
//! writers) go in together with one INSERT whose rows each carry their
//! append's check; the appends it refused, and the rest, follow one by
//! one. An append whose expectation
//! fails, or whose event ids are already stored, is answered (conflict,
//! replay, duplicate) and writes nothing; an append longer than one
//! statement runs under a savepoint. Either way the other appends of the
//! batch go on. Answers
//! are sent only after the commit.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use es_core::backend::check_replay;
use es_core::{AppendResult, ExpectedVersion, NewEvent, StoreError, StreamId};
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{backend, is_transient, is_unique_violation};
use crate::gate::WriteGate;
use crate::sql::{self, signed, unsigned};
use crate::SqliteConfig;

/// The outcome of one append, sent to its caller.
pub(crate) type Answer = Result<AppendResult, StoreError>;

/// An answer and how many events its append stored (none for a replay).
type Outcome = (Answer, u64);

/// An event's payload and metadata, encoded by the caller (off the one
/// writer's path).
pub(crate) struct Encoded {
    pub(crate) payload: String,
    pub(crate) metadata: String,
}

/// One caller's append, waiting for its result.
pub(crate) struct AppendJob {
    pub(crate) stream_type: String,
    pub(crate) stream_id: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) encoded: Vec<Encoded>,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// What the writer has done since the store was opened; see
/// [`SqliteEventStore::writer_stats`](crate::SqliteEventStore::writer_stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Write transactions committed (group commits).
    pub transactions: u64,
    /// Appends answered by those transactions: stored, replayed or
    /// refused (conflict, duplicate event id).
    pub appends: u64,
    /// Events stored.
    pub events: u64,
}

/// The writer's counters, shared with the store.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    transactions: AtomicU64,
    appends: AtomicU64,
    events: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
        }
    }
}

/// The writer task's state.
pub(crate) struct Writer {
    pub(crate) conn: SqliteConnection,
    pub(crate) config: SqliteConfig,
    pub(crate) gate: Arc<WriteGate>,
    /// The last committed position, for waiting readers of this process.
    pub(crate) head: Arc<watch::Sender<u64>>,
    pub(crate) counters: Arc<Counters>,
}

/// The writer task: runs until the queue is closed and drained, then
/// closes its connection.
pub(crate) async fn run(mut writer: Writer, mut queue: mpsc::Receiver<AppendJob>) {
    let batch_size = writer.config.batch_size.max(1);
    let mut batch = Vec::with_capacity(batch_size);
    while queue.recv_many(&mut batch, batch_size).await > 0 {
        // The appends left waiting: callers set the gauge only as they
        // queue, so without this it would keep a burst's depth while idle.
        metrics::gauge!("es_sqlite_append_queue_length").set(queue.len() as f64);
        writer.write(std::mem::take(&mut batch)).await;
    }
    if let Err(e) = writer.conn.close().await {
        tracing::warn!(error = %e, "closing the writer's connection failed");
    }
}

impl Writer {
    /// Writes a batch and answers every append of it.
    async fn write(&mut self, jobs: Vec<AppendJob>) {
        let events: usize = jobs.iter().map(|j| j.events.len()).sum();
        let span = tracing::debug_span!("es.sqlite.batch", appends = jobs.len(), events);
        async {
            metrics::histogram!("es_sqlite_batch_appends").record(jobs.len() as f64);
            match self.commit_with_retry(&jobs).await {
                Ok(answers) => self.answer(jobs, answers),
                Err(e) if jobs.len() > 1 => {
                    // The transaction failed as a whole (disk full, an I/O
                    // error): write append by append so that only an
                    // append that cannot be written fails.
                    tracing::warn!(error = %e, appends = jobs.len(), "batch failed; writing append by append");
                    for job in jobs {
                        self.write_alone(job).await;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "append failed");
                    if let Some(job) = jobs.into_iter().next() {
                        let _ = job.reply.send(Err(backend("append", e)));
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    async fn write_alone(&mut self, job: AppendJob) {
        let jobs = [job];
        match self.commit_with_retry(&jobs).await {
            Ok(answers) => self.answer(jobs.into(), answers),
            Err(e) => {
                tracing::error!(error = %e, "append failed");
                let [job] = jobs;
                let _ = job.reply.send(Err(backend("append", e)));
            }
        }
    }

    /// Commits `jobs` in one transaction, retrying the whole transaction
    /// when the database is locked (another process writing) or it failed
    /// transiently. A retry after a commit of unknown outcome is safe:
    /// appends whose ids are stored are answered as replays.
    async fn commit_with_retry(&mut self, jobs: &[AppendJob]) -> Result<Vec<Outcome>, sqlx::Error> {
        let mut attempts = self.config.transient_retry.attempts();
        loop {
            let result = self.commit(jobs).await;
            let retry = |e: &sqlx::Error, attempt| {
                metrics::counter!("es_sqlite_append_retries_total").increment(1);
                tracing::warn!(error = %e, attempt, "write transaction failed transiently; retrying");
            };
            if let Some(done) = attempts.settle(result, is_transient, retry).await {
                return done;
            }
        }
    }

    /// One write transaction over `jobs`; answers in job order.
    async fn commit(&mut self, jobs: &[AppendJob]) -> Result<Vec<Outcome>, sqlx::Error> {
        let _turn = self.gate.enter().await;
        let conn = &mut self.conn;
        if let [job] = jobs {
            if job.events.len() <= sql::INSERT_CHUNK && job.expected.exact().is_some() {
                // A lone append with an exact expectation is one statement,
                // which SQLite commits by itself.
                return Ok(vec![append(conn, job).await?]);
            }
        }
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
        let result = async {
            let mut answers: Vec<Option<Outcome>> = jobs.iter().map(|_| None).collect();
            let group = first_appends_of_streams(jobs);
            if group.len() > 1 {
                match insert_group(&mut *conn, jobs, &group).await {
                    Ok(stored) => {
                        for &i in &group {
                            answers[i] = stored_answer(&jobs[i], &stored);
                        }
                    }
                    // The statement was undone as a whole: the appends go
                    // one by one below, which sorts out replays and
                    // duplicates.
                    Err(e) if is_unique_violation(&e) => {}
                    Err(e) => return Err(e),
                }
            }
            let mut outcomes = Vec::with_capacity(jobs.len());
            for (job, answer) in jobs.iter().zip(answers) {
                outcomes.push(match answer {
                    Some(outcome) => outcome,
                    None => append(&mut *conn, job).await?,
                });
            }
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(outcomes)
        }
        .await;
        if result.is_err() {
            // Fails harmlessly when SQLite already rolled back.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        result
    }

    /// After a commit: counts, wakes this process's waiting readers, and
    /// answers each caller.
    fn answer(&self, jobs: Vec<AppendJob>, outcomes: Vec<Outcome>) {
        let mut last = 0;
        let mut stored = 0;
        for (answer, n) in &outcomes {
            if let (Ok(done), 1..) = (answer, n) {
                last = last.max(done.positions.last().copied().unwrap_or(0));
                stored += n;
            }
        }
        self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        self.counters.appends.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        self.counters.events.fetch_add(stored, Ordering::Relaxed);
        self.head.send_if_modified(|head| {
            let moved = last > *head;
            *head = (*head).max(last);
            moved
        });
        for (job, (answer, _)) in jobs.into_iter().zip(outcomes) {
            if matches!(answer, Err(StoreError::Conflict { .. })) {
                metrics::counter!("es_sqlite_append_conflicts_total").increment(1);
            }
            let _ = job.reply.send(answer);
        }
    }
}

/// The appends of a batch that one statement can write together: each the
/// first of the batch for its stream (so writing them first changes no
/// stream's order), with an exact expectation, together at most
/// `INSERT_CHUNK` events. Indexes into `jobs`.
fn first_appends_of_streams(jobs: &[AppendJob]) -> Vec<usize> {
    let mut seen = HashSet::with_capacity(jobs.len());
    let mut rows = 0;
    let mut group = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let first = seen.insert(job.stream_id.as_str());
        if first && job.expected.exact().is_some() && rows + job.events.len() <= sql::INSERT_CHUNK {
            rows += job.events.len();
            group.push(i);
        }
    }
    group
}

/// Writes the events of the appends `group` with one statement, each
/// append only if its stream is at its expected version; the position of
/// every event stored, by event id.
async fn insert_group(
    conn: &mut SqliteConnection,
    jobs: &[AppendJob],
    group: &[usize],
) -> Result<HashMap<Uuid, u64>, sqlx::Error> {
    let rows: usize = group.iter().map(|&i| jobs[i].events.len()).sum();
    let statement = sql::insert_appends(rows);
    let mut query = sqlx::query_as::<_, (Uuid, i64)>(&statement);
    for &i in group {
        let job = &jobs[i];
        let base = job.expected.exact().unwrap_or(0);
        for (k, (event, encoded)) in job.events.iter().zip(&job.encoded).enumerate() {
            query = query
                .bind(job.stream_id.as_str())
                .bind(signed(base + 1 + k as u64))
                .bind(&job.stream_type)
                .bind(event.event_id)
                .bind(&event.event_type)
                .bind(i64::from(event.schema_version))
                .bind(&encoded.payload)
                .bind(&encoded.metadata)
                .bind(sql::micros(event.recorded_at))
                .bind(signed(base));
        }
    }
    let stored = query.fetch_all(&mut *conn).await?;
    Ok(stored
        .into_iter()
        .map(|(id, position)| (id, unsigned(position)))
        .collect())
}

/// The outcome of an append of a group statement when all its events
/// went in; `None` when they did not (the stream was elsewhere).
fn stored_answer(job: &AppendJob, stored: &HashMap<Uuid, u64>) -> Option<Outcome> {
    let positions: Option<Vec<u64>> = job.events.iter().map(|e| stored.get(&e.event_id).copied()).collect();
    let positions = positions?;
    let base = job.expected.exact().unwrap_or(0);
    let n = job.events.len() as u64;
    let done = AppendResult {
        first_version: base + 1,
        new_version: base + n,
        positions,
    };
    Some((Ok(done), n))
}

/// The savepoint around an append of several events.
const SAVEPOINT: &str = "SAVEPOINT es_append";
const ROLLBACK_TO: &str = "ROLLBACK TO es_append";
const RELEASE: &str = "RELEASE es_append";

/// Appends one job inside the writer's transaction. `Ok(outcome)`
/// whatever the append's fate; `Err` only when the transaction itself
/// failed.
///
/// With an exact expectation (`Exact`, `NoStream`: what a repository
/// sends) the first insert checks the stream's version itself, so a
/// one-event append costs one statement; `Any` and `StreamExists` read
/// the version first.
async fn append(conn: &mut SqliteConnection, job: &AppendJob) -> Result<Outcome, sqlx::Error> {
    let checked = job.expected.exact();
    let base = if let Some(base) = checked {
        base
    } else {
        let current = stream_version(conn, job).await?;
        if !job.expected.accepts(current) {
            return refused(conn, job, current).await;
        }
        current
    };
    // One statement writes all events (or none) of an append of up to
    // `INSERT_CHUNK` events; a longer one runs under a savepoint, so that a
    // failure of a later statement undoes the earlier ones.
    let n = job.events.len();
    let several = n > sql::INSERT_CHUNK;
    if several {
        sqlx::query(SAVEPOINT).execute(&mut *conn).await?;
    }
    let mut positions = Vec::with_capacity(n);
    for start in (0..n).step_by(sql::INSERT_CHUNK) {
        let end = (start + sql::INSERT_CHUNK).min(n);
        let statement = sql::insert_events(end - start, start == 0 && checked.is_some());
        let mut query = sqlx::query(&statement);
        for (i, (event, encoded)) in job.events.iter().zip(&job.encoded).enumerate().take(end).skip(start) {
            query = query
                .bind(job.stream_id.as_str())
                .bind(signed(base + 1 + i as u64))
                .bind(&job.stream_type)
                .bind(event.event_id)
                .bind(&event.event_type)
                .bind(i64::from(event.schema_version))
                .bind(&encoded.payload)
                .bind(&encoded.metadata)
                .bind(sql::micros(event.recorded_at));
        }
        let rows = (end - start) as u64;
        let failure = match query.execute(&mut *conn).await {
            Ok(done) if done.rows_affected() == rows => {
                let last = unsigned(done.last_insert_rowid());
                positions.extend(last + 1 - rows..=last);
                continue;
            }
            Ok(_) => None,
            Err(e) => Some(e),
        };
        if several {
            sqlx::query(ROLLBACK_TO).execute(&mut *conn).await?;
            sqlx::query(RELEASE).execute(&mut *conn).await?;
        }
        return match failure {
            // The checked insert found the stream elsewhere than expected.
            None => {
                let current = stream_version(conn, job).await?;
                refused(conn, job, current).await
            }
            // An event id already stored: a replay of this very append
            // (same ids, same place) or a duplicate.
            Some(e) if is_unique_violation(&e) => {
                let answer = replay(conn, job).await?.unwrap_or_else(|| Err(backend("append", e)));
                Ok((answer, 0))
            }
            Some(e) => Err(e),
        };
    }
    if several {
        sqlx::query(RELEASE).execute(&mut *conn).await?;
    }
    let done = AppendResult {
        first_version: base + 1,
        new_version: base + n as u64,
        positions,
    };
    Ok((Ok(done), n as u64))
}

async fn stream_version(conn: &mut SqliteConnection, job: &AppendJob) -> Result<u64, sqlx::Error> {
    let current: i64 = sqlx::query_scalar(sql::STREAM_VERSION)
        .bind(job.stream_id.as_str())
        .fetch_one(&mut *conn)
        .await?;
    Ok(unsigned(current))
}

/// The answer to an append whose expectation does not hold at `current`:
/// a replay of an append already stored, a duplicate, or a conflict.
async fn refused(conn: &mut SqliteConnection, job: &AppendJob, current: u64) -> Result<Outcome, sqlx::Error> {
    let answer = replay(conn, job).await?.unwrap_or_else(|| {
        Err(StoreError::Conflict {
            stream_id: job.stream_id.clone(),
            expected: job.expected,
            actual: current,
        })
    });
    Ok((answer, 0))
}

/// The answer to an append some of whose event ids are stored (the
/// original result of a replay, or `DuplicateEventId`); `None` when none
/// is stored.
async fn replay(conn: &mut SqliteConnection, job: &AppendJob) -> Result<Option<Answer>, sqlx::Error> {
    let mut slots = Vec::with_capacity(job.events.len());
    for event in &job.events {
        let slot: Option<(String, i64, i64)> = sqlx::query_as(sql::FIND_SLOT)
            .bind(event.event_id)
            .fetch_optional(&mut *conn)
            .await?;
        slots.push(
            slot.map(|(stream, version, position)| (StreamId::from(stream), unsigned(version), unsigned(position))),
        );
    }
    if slots.iter().all(Option::is_none) {
        return Ok(None);
    }
    let answer = check_replay(&job.stream_id, job.expected, &job.events, &slots).and_then(|r| {
        r.ok_or_else(|| StoreError::Corrupt {
            stream_id: job.stream_id.clone(),
            version: 0,
            reason: "stored event ids vanished during the replay check".into(),
        })
    });
    Ok(Some(answer))
}
