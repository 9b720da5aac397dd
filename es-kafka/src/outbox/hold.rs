//! Rows held behind a parked row: a parked row blocks its stream, and the
//! rows appended behind it are held (out of the pending index the claims'
//! windows read) once a claim has seen them, until the parked row is
//! released. Holding and releasing a stream take the stream's hold lock,
//! so a hold never strands rows that a release has just freed.

use sqlx::PgPool;

use super::sql::OutboxSql;
use crate::error::OutboxError;

/// A parked row released by [`unpark`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unparked {
    /// The stream it blocked.
    pub stream_id: String,
    /// Rows of the stream that were held behind it and are pending again.
    pub released: u64,
}

/// Releases the parked outbox row at `global_position` in `schema`: it is
/// retried with a fresh attempt count, and the rows of its stream held
/// behind it are pending again. `None` when no row there is parked. The
/// same as [`OutboxPoller::unpark`](super::OutboxPoller::unpark), without
/// a poller or a Kafka client (operators' tools).
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), es_kafka::OutboxError> {
/// if let Some(done) = es_kafka::outbox::unpark(&pool, "bank", 19_368_247_297).await? {
///     println!("{} released, {} rows pending again", done.stream_id, done.released);
/// }
/// # Ok(()) }
/// ```
pub async fn unpark(pool: &PgPool, schema: &str, global_position: u64) -> Result<Option<Unparked>, OutboxError> {
    let schema = crate::ident::check(schema)?;
    release(pool, &OutboxSql::new(schema), global_position).await
}

/// [`unpark`] with the schema's statements at hand.
pub(super) async fn release(
    pool: &PgPool,
    sql: &OutboxSql,
    global_position: u64,
) -> Result<Option<Unparked>, OutboxError> {
    let position = i64::try_from(global_position).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    let stream: Option<String> = sqlx::query_scalar(&sql.unpark)
        .bind(position)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(stream_id) = stream else {
        return Ok(None);
    };
    sqlx::query(&sql.hold_lock)
        .bind(std::slice::from_ref(&stream_id))
        .execute(&mut *tx)
        .await?;
    let released = sqlx::query(&sql.release)
        .bind(&stream_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    tracing::info!(global_position, stream = %stream_id, released, "outbox row unparked");
    Ok(Some(Unparked { stream_id, released }))
}

/// Holds the pending rows of `streams` while a parked row blocks them.
pub(super) async fn hold(pool: &PgPool, sql: &OutboxSql, mut streams: Vec<String>) -> Result<u64, OutboxError> {
    streams.sort_unstable();
    let mut tx = pool.begin().await?;
    sqlx::query(&sql.hold_lock).bind(&streams).execute(&mut *tx).await?;
    let held = sqlx::query(&sql.hold)
        .bind(&streams)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    tracing::debug!(streams = streams.len(), held, "outbox rows held behind parked rows");
    Ok(held)
}
