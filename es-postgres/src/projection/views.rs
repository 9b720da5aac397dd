//! [`PgViews`]: serde views per stream id in a table the library creates.

use std::collections::HashMap;
use std::marker::PhantomData;

use async_trait::async_trait;
use es_core::{Aggregate, BoxError, EventEnvelope, StoreError, StreamId, Versioned, View};
use sqlx::{PgConnection, Row};

use super::{PageFailure, PgTypedProjector};
use crate::column::bigint;
use crate::error::backend;
use crate::PostgresEventStore;

/// Keeps an es-core [`View`] per stream id as JSONB in
/// `<schema>.<table>` (`stream_id`, `version`, `view`, `updated_at`),
/// created by the projection's setup: a durable read model without SQL.
///
/// A page is written with two statements (read the views it touches,
/// upsert them), so rebuilds run at page speed. Run it through
/// [`PgTyped`](crate::PgTyped) in a [`PgProjectionUnit`](crate::PgProjectionUnit);
/// query it with [`get`](Self::get) and [`list`](Self::list).
///
/// ```no_run
/// # async fn demo(store: es_postgres::PostgresEventStore) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use es_core::{Aggregate, EventEnvelope, StreamId, View};
/// use es_postgres::{PgProjectionUnit, PgTyped, PgViews};
/// use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, Serialize, Deserialize)]
/// # enum CounterEvent { Added(u64) }
/// # impl es_core::DomainEvent for CounterEvent { fn event_type(&self) -> &'static str { "Added" } }
/// # #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// # struct Counter;
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = CounterEvent; type Error = std::convert::Infallible;
/// #     fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, Self::Error> { Ok(vec![CounterEvent::Added(*n)]) }
/// #     fn apply(&mut self, _: &CounterEvent) {}
/// # }
///
/// #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// struct Summary { total: u64 }
/// impl View for Summary {
///     type Aggregate = Counter;
///     fn apply(&mut self, e: &EventEnvelope<CounterEvent>) {
///         let CounterEvent::Added(n) = e.event;
///         self.total += n;
///     }
/// }
///
/// let views = Arc::new(PgViews::<Summary>::new(&store, "counter_summary")?);
/// PgProjectionUnit::new(&store, Arc::new(PgTyped::new(views.clone()))).runner().catch_up().await?;
/// if let Some(c1) = views.get(&StreamId::from("c1")).await? {
///     println!("c1: {} at version {}", c1.state.total, c1.version);
/// }
/// # Ok(()) }
/// ```
pub struct PgViews<V> {
    store: PostgresEventStore,
    name: String,
    table: String,
    _view: PhantomData<fn() -> V>,
}

impl<V: View> PgViews<V> {
    /// Views named `name` (the projection's checkpoint key and the table's
    /// name, a lowercase SQL identifier) in the store's schema.
    pub fn new(store: &PostgresEventStore, name: &str) -> Result<Self, StoreError> {
        let valid = !name.is_empty()
            && name.len() <= 48
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(StoreError::backend(
                "create view store",
                format!("view name {name:?} must be a lowercase SQL identifier of at most 48 characters"),
            ));
        }
        Ok(Self {
            store: store.clone(),
            name: name.to_owned(),
            table: format!("{}.{name}", store.schema()),
            _view: PhantomData,
        })
    }

    /// The qualified table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The view of `stream_id` and the stream version it reflects.
    pub async fn get(&self, stream_id: impl Into<StreamId>) -> Result<Option<Versioned<V>>, StoreError> {
        let stream_id: StreamId = stream_id.into();
        let row = sqlx::query(&format!(
            "SELECT version, view FROM {} WHERE stream_id = $1",
            self.table
        ))
        .bind(stream_id.as_str())
        .fetch_optional(self.store.pool())
        .await
        .map_err(|e| backend("read view", e))?;
        row.map(|r| decode(&r, 0)).transpose()
    }

    /// Up to `limit` views ordered by stream id, after `after` (a cursor:
    /// the last id of the previous page).
    pub async fn list(
        &self,
        after: Option<&StreamId>,
        limit: usize,
    ) -> Result<Vec<(StreamId, Versioned<V>)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT version, view, stream_id FROM {} WHERE stream_id > $1 ORDER BY stream_id LIMIT $2",
            self.table
        ))
        .bind(after.map_or("", StreamId::as_str))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(self.store.pool())
        .await
        .map_err(|e| backend("list views", e))?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get(2).map_err(|e| backend("decode view", e))?;
                Ok((StreamId::from(id), decode(r, 0)?))
            })
            .collect()
    }
}

fn decode<V: View>(r: &sqlx::postgres::PgRow, first: usize) -> Result<Versioned<V>, StoreError> {
    let version: i64 = r.try_get(first).map_err(|e| backend("decode view", e))?;
    let json: serde_json::Value = r.try_get(first + 1).map_err(|e| backend("decode view", e))?;
    let state = serde_json::from_value(json).map_err(|e| StoreError::backend("decode view", e))?;
    Ok(Versioned {
        state,
        version: version.max(0) as u64,
    })
}

#[async_trait]
impl<V: View> PgTypedProjector for PgViews<V> {
    type Aggregate = V::Aggregate;

    fn name(&self) -> &str {
        &self.name
    }

    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (stream_id TEXT PRIMARY KEY, version BIGINT NOT NULL, \
             view JSONB NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            self.table
        ))
        .execute(tx)
        .await?;
        Ok(())
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &EventEnvelope<<V::Aggregate as Aggregate>::Event>,
    ) -> Result<(), BoxError> {
        self.apply_page(tx, std::slice::from_ref(event))
            .await
            .map_err(|f| f.error)
    }

    async fn apply_page(
        &self,
        tx: &mut PgConnection,
        events: &[EventEnvelope<<V::Aggregate as Aggregate>::Event>],
    ) -> Result<(), PageFailure> {
        let mut ids: Vec<&str> = events.iter().map(|e| e.stream_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        // By primary key whatever the statistics say (a table truncated for
        // a rebuild has none, and a sequential scan per page grows with it).
        sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await?;
        let rows = sqlx::query(&format!(
            "SELECT version, view, stream_id FROM {} WHERE stream_id = ANY($1)",
            self.table
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut views: HashMap<String, Versioned<V>> = HashMap::with_capacity(ids.len());
        for r in &rows {
            let id: String = r.try_get(2)?;
            views.insert(id, decode(r, 0).map_err(PageFailure::whole)?);
        }
        for e in events {
            let view = views
                .entry(e.stream_id.as_str().to_owned())
                .or_insert_with(|| Versioned {
                    state: V::default(),
                    version: 0,
                });
            // A version already folded in (a replay from an earlier
            // position) is not applied twice.
            if e.version > view.version {
                view.state.apply(e);
                view.version = e.version;
            }
        }
        let (mut out_ids, mut versions, mut jsons) = (Vec::new(), Vec::new(), Vec::new());
        for (id, v) in views {
            out_ids.push(id);
            versions.push(bigint(v.version));
            jsons.push(serde_json::to_value(&v.state).map_err(PageFailure::whole)?);
        }
        sqlx::query(&format!(
            "INSERT INTO {} (stream_id, version, view, updated_at) \
             SELECT id, v, j, now() FROM UNNEST($1::text[], $2::bigint[], $3::jsonb[]) AS u(id, v, j) \
             ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, view = EXCLUDED.view, updated_at = now()",
            self.table
        ))
        .bind(&out_ids)
        .bind(&versions)
        .bind(&jsons)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(&format!("TRUNCATE {}", self.table)).execute(tx).await?;
        Ok(())
    }
}
