//! Group commit: batch processors that write many appends in one statement.
//!
//! Each processor takes whatever appends are queued (up to `batch_size`),
//! resolves `Any`/`StreamExists` expectations to exact versions, and writes
//! all events in **one** statement (one round trip, one commit). The
//! statement's own predicate decides each append: its rows go in only if
//! the stream is at its expected version, so an append is all or nothing
//! and conflicts cost nothing extra. Appends the statement skipped are
//! then told why (conflict, or a replay of an append already stored). A
//! unique violation (a racing writer in another process, or a reused event
//! id) aborts the statement; the batch is then written append by append.

use std::collections::HashMap as StdHashMap;
use std::collections::HashSet as StdHashSet;

/// The batcher's maps: keyed by the streams and event ids of one batch
/// (bounded by its size), looked up for every append.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = StdHashSet<K, foldhash::fast::RandomState>;
use std::sync::Arc;
use std::time::Duration;

use es_core::backend::check_replay;
use es_core::{AppendResult, ExpectedVersion, NewEvent, ShardFence, SharedError, StoreError, StreamId};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Row};
use tokio::sync::{mpsc, oneshot, Mutex};
use uuid::Uuid;

use crate::column::{decoded, unsigned};
use crate::error::{backend, is_transient, sqlstate, UNIQUE_VIOLATION};
use crate::notify::Notifier;
use crate::sql::{Sql, ROWS_PER_TRANSACTION};
use crate::EventStoreConfig;

/// One caller's append, waiting for its result.
pub(crate) struct AppendJob {
    pub(crate) stream_type: String,
    pub(crate) stream_id: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    /// The shard fence the append is written under, if any.
    pub(crate) fence: Option<ShardFence>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// A job with its expectation resolved to the version its rows follow.
struct Resolved {
    job: AppendJob,
    base: u64,
}

/// How long a processor keeps its connection while no append comes.
const KEEP_IDLE_CONNECTION: Duration = Duration::from_millis(500);

/// A batch processor's own connection, kept while appends keep coming:
/// a connection given back to the pool costs a round trip (sqlx pings it
/// on release), which would double the round trips of every append.
struct Writer {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    /// Whether the pool is big enough to keep the connection between
    /// batches (otherwise readers could starve).
    keep: bool,
    notifier: Arc<Notifier>,
    /// An append taken off the queue that did not fit its batch (the
    /// batch would have held [`ROWS_PER_TRANSACTION`] events): the first
    /// of the next one.
    carry: Option<AppendJob>,
}

impl Writer {
    /// The connection, taken from the pool if the processor has none.
    async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
    }

    /// Looks at a statement's result: a connection that failed for any
    /// reason but the statement's data is given up (it may be broken), so
    /// the next statement takes a fresh one.
    fn check<T>(&mut self, result: &Result<T, sqlx::Error>) {
        if let Err(e) = result {
            let data_error = sqlstate(e).is_some_and(|c| c.starts_with("22") || c.starts_with("23"));
            if !data_error {
                self.conn = None;
            }
        }
    }

    /// Gives the connection back to the pool while the processor idles.
    fn release(&mut self) {
        self.conn = None;
    }
}

/// Takes the next batch off the queue: waits for one append, then takes
/// whatever else is queued (up to `batch_size`, or until
/// `batch_timeout_ms`). `None` when the queue is closed and drained.
async fn next_batch(
    queue: &Mutex<mpsc::Receiver<AppendJob>>,
    config: &EventStoreConfig,
    writer: &mut Writer,
) -> Option<Vec<AppendJob>> {
    let batch_size = config.batch_size.max(1);
    let first = async {
        let mut rx = queue.lock().await;
        let job = rx.recv().await;
        (rx, job)
    };
    // Hold on to the connection while appends keep coming; give it back
    // to the pool for readers when the writer idles.
    let (mut rx, first) = if let Some(carried) = writer.carry.take() {
        (queue.lock().await, Some(carried))
    } else if let Ok(got) = tokio::time::timeout(KEEP_IDLE_CONNECTION, first).await {
        got
    } else {
        writer.release();
        let mut rx = queue.lock().await;
        let job = rx.recv().await;
        (rx, job)
    };
    let mut batch = Vec::with_capacity(batch_size);
    let first = first?;
    let mut rows = first.events.len();
    batch.push(first);
    // Whether `job` fits the batch; if not it is carried to the next one.
    let mut fits = |job: AppendJob, batch: &mut Vec<AppendJob>| {
        if rows + job.events.len() >= ROWS_PER_TRANSACTION {
            writer.carry = Some(job);
            return false;
        }
        rows += job.events.len();
        batch.push(job);
        true
    };
    if config.batch_timeout_ms > 0 {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(config.batch_timeout_ms);
        while batch.len() < batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => {
                    if !fits(job, &mut batch) {
                        break;
                    }
                }
                _ => break,
            }
        }
    } else {
        while batch.len() < batch_size {
            match rx.try_recv() {
                Ok(job) => {
                    if !fits(job, &mut batch) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    }
    // The appends left waiting: callers set the gauge only as they queue,
    // so without this it would keep a burst's depth while the queue idles.
    metrics::gauge!("es_postgres_append_queue_length").set(rx.len() as f64);
    Some(batch)
}

/// A batch processor: runs until the queue is closed and drained.
pub(crate) async fn run(
    pool: PgPool,
    sql: Arc<Sql>,
    config: EventStoreConfig,
    queue: Arc<Mutex<mpsc::Receiver<AppendJob>>>,
    notifier: Arc<Notifier>,
    keep_connection: bool,
) {
    let mut writer = Writer {
        pool,
        conn: None,
        keep: keep_connection,
        notifier,
        carry: None,
    };
    while let Some(batch) = next_batch(&queue, &config, &mut writer).await {
        let span = tracing::debug_span!("es.pg.batch", appends = batch.len());
        let entered = span.enter();
        drop(entered);
        metrics::histogram!("es_postgres_batch_appends").record(batch.len() as f64);
        write_batch(&mut writer, &sql, &config, batch).await;
        if !writer.keep {
            writer.release();
        }
    }
}

/// Writes a batch, in rounds: one append per stream per round (a row's
/// predecessor check cannot see rows of its own statement).
async fn write_batch(writer: &mut Writer, sql: &Sql, config: &EventStoreConfig, mut batch: Vec<AppendJob>) {
    while !batch.is_empty() {
        let mut seen = HashSet::with_capacity_and_hasher(batch.len(), foldhash::fast::RandomState::default());
        let (round, later): (Vec<_>, Vec<_>) = batch.into_iter().partition(|j| seen.insert(j.stream_id.clone()));
        batch = later;
        let Ok(resolved) = resolve(writer, sql, round).await else {
            continue;
        };
        if resolved.is_empty() {
            continue;
        }
        let retry_later = write_round(writer, sql, config, resolved).await;
        batch.extend(retry_later);
    }
}

/// Turns each expectation into a base version; answers the appends whose
/// expectation already fails. `Err` when the version lookup failed (every
/// job has been answered).
async fn resolve(writer: &mut Writer, sql: &Sql, jobs: Vec<AppendJob>) -> Result<Vec<Resolved>, ()> {
    let lookup: Vec<String> = jobs
        .iter()
        .filter(|j| j.expected.exact().is_none())
        .map(|j| j.stream_id.as_str().to_owned())
        .collect();
    let mut current = HashMap::default();
    if !lookup.is_empty() {
        let query = format!(
            "SELECT s.id, coalesce((SELECT max(version) FROM {}.events e WHERE e.stream_id = s.id), 0) \
             FROM unnest($1::text[]) AS s(id)",
            sql.schema
        );
        let result = async { sqlx::query(&query).bind(&lookup).fetch_all(writer.get().await?).await }.await;
        writer.check(&result);
        match result {
            Ok(rows) => {
                for row in rows {
                    let id: String = row.try_get(0).unwrap_or_default();
                    let v: i64 = row.try_get(1).unwrap_or_default();
                    current.insert(id, v.max(0) as u64);
                }
            }
            Err(e) => {
                let err = SharedError::new(e);
                for j in jobs {
                    let _ = j
                        .reply
                        .send(Err(StoreError::backend("resolve stream versions", err.clone())));
                }
                return Err(());
            }
        }
    }
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        match job.expected {
            ExpectedVersion::Exact(v) => out.push(Resolved { job, base: v }),
            ExpectedVersion::NoStream => out.push(Resolved { job, base: 0 }),
            ExpectedVersion::Any | ExpectedVersion::StreamExists => {
                let v = current.get(job.stream_id.as_str()).copied().unwrap_or(0);
                if job.expected == ExpectedVersion::StreamExists && v == 0 {
                    let _ = job.reply.send(Err(StoreError::Conflict {
                        stream_id: job.stream_id.clone(),
                        expected: job.expected,
                        actual: 0,
                    }));
                } else {
                    out.push(Resolved { job, base: v });
                }
            }
        }
    }
    Ok(out)
}

/// The column arrays of one append statement.
#[derive(Default)]
pub(crate) struct Columns {
    stream_ids: Vec<String>,
    versions: Vec<i64>,
    bases: Vec<i64>,
    stream_types: Vec<String>,
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    payloads: Vec<String>,
    metadata: Vec<String>,
    recorded_at: Vec<chrono::DateTime<chrono::Utc>>,
    /// Each row's shard and token: only bound (to the fenced statements)
    /// when some row has a fence.
    shards: Vec<Option<i32>>,
    tokens: Vec<Option<i64>>,
    fenced: bool,
}

impl Columns {
    /// Adds the rows of one append whose events follow version `base`.
    pub(crate) fn push(&mut self, stream_type: &str, stream_id: &StreamId, base: u64, events: &[NewEvent]) {
        self.push_fenced(stream_type, stream_id, base, events, None);
    }

    /// Adds the rows of one append written under `fence`.
    pub(crate) fn push_fenced(
        &mut self,
        stream_type: &str,
        stream_id: &StreamId,
        base: u64,
        events: &[NewEvent],
        fence: Option<ShardFence>,
    ) {
        self.fenced |= fence.is_some();
        for (i, e) in events.iter().enumerate() {
            self.shards
                .push(fence.map(|f| i32::try_from(f.shard).unwrap_or(i32::MAX)));
            self.tokens
                .push(fence.map(|f| i64::try_from(f.token).unwrap_or(i64::MAX)));
            self.stream_ids.push(stream_id.as_str().to_owned());
            self.versions.push((base + 1 + i as u64) as i64);
            self.bases.push(base as i64);
            self.stream_types.push(stream_type.to_owned());
            self.event_ids.push(e.event_id);
            self.event_types.push(e.event_type.clone());
            self.schema_versions
                .push(i32::try_from(e.schema_version).unwrap_or(i32::MAX));
            self.payloads.push(e.payload.to_string());
            self.metadata
                .push(serde_json::to_string(&e.metadata).unwrap_or_else(|_| "{}".to_owned()));
            self.recorded_at.push(e.recorded_at);
        }
    }

    /// How many rows the columns hold.
    pub(crate) fn len(&self) -> usize {
        self.stream_ids.len()
    }

    /// Binds the only row, value by value, to the one-row append statement
    /// (`Sql::append_one`); `None` unless the columns hold exactly one row.
    pub(crate) fn bind_one<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Option<sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>> {
        if self.len() != 1 {
            return None;
        }
        let query = query
            .bind(self.stream_ids.first()?)
            .bind(self.versions.first()?)
            .bind(self.bases.first()?)
            .bind(self.stream_types.first()?)
            .bind(self.event_ids.first()?)
            .bind(self.event_types.first()?)
            .bind(self.schema_versions.first()?)
            .bind(self.payloads.first()?)
            .bind(self.metadata.first()?)
            .bind(self.recorded_at.first()?);
        Some(if self.fenced {
            query.bind(self.shards.first()?).bind(self.tokens.first()?)
        } else {
            query
        })
    }

    /// Binds the arrays to the append statement, in its parameter order.
    pub(crate) fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.stream_ids)
            .bind(&self.versions)
            .bind(&self.bases)
            .bind(&self.stream_types)
            .bind(&self.event_ids)
            .bind(&self.event_types)
            .bind(&self.schema_versions)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .bind(&self.recorded_at)
    }

    /// Binds the arrays to the fenced append statement, in its parameter
    /// order.
    pub(crate) fn bind_fenced<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        self.bind(query).bind(&self.shards).bind(&self.tokens)
    }
}

/// Where each of `ids` is stored, from rows of the `find_events` statement,
/// in the form `es_core::backend::check_replay` takes.
pub(crate) fn stored_slots(rows: &[sqlx::postgres::PgRow], ids: &[Uuid]) -> Vec<Option<(StreamId, u64, u64)>> {
    let mut by_id = HashMap::with_capacity_and_hasher(rows.len(), foldhash::fast::RandomState::default());
    for row in rows {
        if let (Ok(id), Ok(sid), Ok(v), Ok(p)) = (
            row.try_get::<Uuid, _>(0),
            row.try_get::<String, _>(1),
            row.try_get::<i64, _>(2),
            row.try_get::<i64, _>(3),
        ) {
            // A negative version or position is no slot an append can be
            // a replay of.
            if let (Ok(v), Ok(p)) = (unsigned(v), unsigned(p)) {
                by_id.insert(id, (StreamId::from(sid), v, p));
            }
        }
    }
    ids.iter().map(|id| by_id.get(id).cloned()).collect()
}

/// Executes the append statement for these appends; returns the position
/// of every inserted event id.
async fn execute(
    conn: &mut PgConnection,
    sql: &Sql,
    appends: &[Resolved],
    notify: bool,
) -> Result<HashMap<Uuid, u64>, sqlx::Error> {
    let mut c = Columns::default();
    for r in appends {
        c.push_fenced(&r.job.stream_type, &r.job.stream_id, r.base, &r.job.events, r.job.fence);
    }
    // Rounds with a fenced append use the fenced statements (their
    // unfenced rows pass the fence check untouched); others the plain ones.
    let (one, many) = match (c.fenced, notify) {
        (false, false) => (&sql.append_one, &sql.append),
        (false, true) => (&sql.append_one_notify, &sql.append_notify),
        (true, false) => (&sql.append_one_fenced, &sql.append_fenced),
        (true, true) => (&sql.append_one_fenced_notify, &sql.append_fenced_notify),
    };
    let query = match c.bind_one(sqlx::query(one)) {
        Some(query) => query,
        None if c.fenced => c.bind_fenced(sqlx::query(many)),
        None => c.bind(sqlx::query(many)),
    };
    let rows = query.fetch_all(conn).await?;
    let mut positions = HashMap::with_capacity_and_hasher(rows.len(), foldhash::fast::RandomState::default());
    for row in rows {
        let id: Uuid = row.try_get(0)?;
        positions.insert(id, decoded(row.try_get(1)?)?);
    }
    Ok(positions)
}

/// Executes with retries of transient failures.
async fn execute_with_retry(
    writer: &mut Writer,
    sql: &Sql,
    config: &EventStoreConfig,
    appends: &[Resolved],
) -> Result<HashMap<Uuid, u64>, sqlx::Error> {
    let mut attempts = config.transient_retry.attempts();
    loop {
        // Carry the LISTENers' notification when one is due.
        let carry = writer.notifier.claim();
        let result = async { execute(writer.get().await?, sql, appends, carry.is_some()).await }.await;
        // The notification went out only if the statement inserted rows.
        let notified = matches!(&result, Ok(positions) if !positions.is_empty());
        writer.notifier.finished(carry.map(|c| (c, notified)));
        writer.check(&result);
        let retry = |e: &sqlx::Error, attempt| {
            metrics::counter!("es_postgres_append_retries_total").increment(1);
            tracing::warn!(error = %e, attempt, "transient append failure; retrying");
        };
        if let Some(done) = attempts.settle(result, is_transient, retry).await {
            return done;
        }
    }
}

/// Writes one round; returns the `Any` appends that lost a race and must
/// be resolved again.
async fn write_round(
    writer: &mut Writer,
    sql: &Sql,
    config: &EventStoreConfig,
    round: Vec<Resolved>,
) -> Vec<AppendJob> {
    metrics::histogram!("es_postgres_batch_events")
        .record(round.iter().map(|r| r.job.events.len()).sum::<usize>() as f64);
    match execute_with_retry(writer, sql, config, &round).await {
        Ok(positions) => {
            let mut again = Vec::new();
            for r in round {
                if let Some(job) = settle(writer, sql, r, &positions).await {
                    again.push(job);
                }
            }
            again
        }
        Err(e) if round.len() > 1 && matches!(e, sqlx::Error::Database(_)) => {
            // The database refused the statement because of some append in
            // it (someone else's row in the way, a payload PostgreSQL cannot
            // store): go append by append so only the offender fails.
            tracing::debug!(error = %e, appends = round.len(), "batch statement refused; writing append by append");
            let mut again = Vec::new();
            for r in round {
                again.extend(write_one(writer, sql, config, r).await);
            }
            again
        }
        Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
            let mut again = Vec::new();
            for r in round {
                again.extend(settle(writer, sql, r, &HashMap::default()).await);
            }
            again
        }
        Err(e) if sqlstate(&e).is_some_and(|c| c.starts_with("22")) => {
            for r in round {
                let _ = r.job.reply.send(Err(StoreError::InvalidAppend {
                    stream_id: r.job.stream_id.clone(),
                    reason: format!("PostgreSQL refused the data: {e}"),
                }));
            }
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, appends = round.len(), "append statement failed");
            let err = SharedError::new(e);
            for r in round {
                let _ = r.job.reply.send(Err(StoreError::backend("append", err.clone())));
            }
            Vec::new()
        }
    }
}

async fn write_one(writer: &mut Writer, sql: &Sql, config: &EventStoreConfig, r: Resolved) -> Option<AppendJob> {
    let single = [r];
    match execute_with_retry(writer, sql, config, &single).await {
        Ok(positions) => {
            let [r] = single;
            settle(writer, sql, r, &positions).await
        }
        Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
            let [r] = single;
            settle(writer, sql, r, &HashMap::default()).await
        }
        Err(e) if sqlstate(&e).is_some_and(|c| c.starts_with("22")) => {
            // A data exception: PostgreSQL cannot store this append's data
            // (for example a NUL character in a JSON string).
            let [r] = single;
            let _ = r.job.reply.send(Err(StoreError::InvalidAppend {
                stream_id: r.job.stream_id.clone(),
                reason: format!("PostgreSQL refused the data: {e}"),
            }));
            None
        }
        Err(e) => {
            let [r] = single;
            let _ = r.job.reply.send(Err(backend("append", e)));
            None
        }
    }
}

/// Answers one append after its statement: success when all its rows went
/// in; otherwise a replay, a duplicate, or a conflict with the real
/// version. Returns the job if it must be resolved and written again.
async fn settle(writer: &mut Writer, sql: &Sql, r: Resolved, positions: &HashMap<Uuid, u64>) -> Option<AppendJob> {
    let Resolved { job, base } = r;
    let got: Vec<Option<u64>> = job.events.iter().map(|e| positions.get(&e.event_id).copied()).collect();
    if got.iter().all(Option::is_some) {
        let n = job.events.len() as u64;
        let _ = job.reply.send(Ok(AppendResult {
            first_version: base + 1,
            new_version: base + n,
            positions: got.into_iter().flatten().collect(),
        }));
        return None;
    }
    // Skipped: is it a replay of an append already stored?
    let ids: Vec<Uuid> = job.events.iter().map(|e| e.event_id).collect();
    let result = async {
        sqlx::query(&sql.find_events)
            .bind(&ids)
            .fetch_all(writer.get().await?)
            .await
    }
    .await;
    writer.check(&result);
    let stored = match result {
        Ok(rows) => rows,
        Err(e) => {
            let _ = job.reply.send(Err(backend("check replay", e)));
            return None;
        }
    };
    if !stored.is_empty() {
        let slots = stored_slots(&stored, &ids);
        let answer = check_replay(&job.stream_id, job.expected, &job.events, &slots).and_then(|r| {
            r.ok_or_else(|| StoreError::Corrupt {
                stream_id: job.stream_id.clone(),
                version: base + 1,
                reason: "stored ids vanished".into(),
            })
        });
        let _ = job.reply.send(answer);
        return None;
    }
    if let Some(fence) = job.fence {
        // Skipped and not a replay: was it the fence?
        let result = async {
            sqlx::query_scalar::<_, i64>(&sql.shard_fence)
                .bind(i32::try_from(fence.shard).unwrap_or(i32::MAX))
                .fetch_one(writer.get().await?)
                .await
        }
        .await;
        writer.check(&result);
        match result {
            Ok(current) if current.max(0) as u64 > fence.token => {
                metrics::counter!("es_postgres_fenced_appends_total").increment(1);
                let _ = job.reply.send(Err(StoreError::Fenced {
                    shard: fence.shard,
                    token: fence.token,
                    current: current.max(0) as u64,
                }));
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = job.reply.send(Err(backend("read shard fence", e)));
                return None;
            }
        }
    }
    let result = async {
        sqlx::query_scalar::<_, i64>(&sql.stream_version)
            .bind(job.stream_id.as_str())
            .fetch_one(writer.get().await?)
            .await
    }
    .await;
    writer.check(&result);
    let actual: i64 = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = job.reply.send(Err(backend("read version after conflict", e)));
            return None;
        }
    };
    let actual = actual.max(0) as u64;
    if job.expected == ExpectedVersion::Any || (job.expected == ExpectedVersion::StreamExists && actual > 0) {
        // Lost a race between resolving and writing: go again.
        return Some(job);
    }
    let _ = job.reply.send(Err(StoreError::Conflict {
        stream_id: job.stream_id.clone(),
        expected: job.expected,
        actual,
    }));
    None
}
