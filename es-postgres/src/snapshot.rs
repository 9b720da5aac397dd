//! [`PostgresSnapshotStore`] and the [`BackgroundSnapshotter`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use es_core::{Aggregate, EventStore, Repository, Snapshot, SnapshotStore, StoreError, StreamId, UpcasterRegistry};
use sqlx::postgres::PgPool;
use sqlx::Row;

use crate::column::bigint;
use crate::error::backend;
use crate::PostgresEventStore;

/// Snapshots in the store's schema (`snapshots` table, one row per stream).
/// `save` never moves a stream's snapshot to an older version.
#[derive(Debug, Clone)]
pub struct PostgresSnapshotStore {
    pool: PgPool,
    upsert: Arc<str>,
    select: Arc<str>,
}

impl PostgresSnapshotStore {
    /// The snapshot store of an event store's schema.
    pub fn new(store: &PostgresEventStore) -> Self {
        let s = store.schema();
        Self {
            pool: store.pool().clone(),
            upsert: format!(
                "INSERT INTO {s}.snapshots (stream_id, stream_type, version, schema_version, state, taken_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (stream_id) DO UPDATE SET stream_type = EXCLUDED.stream_type, version = EXCLUDED.version, \
                 schema_version = EXCLUDED.schema_version, state = EXCLUDED.state, taken_at = EXCLUDED.taken_at \
                 WHERE {s}.snapshots.version <= EXCLUDED.version"
            )
            .into(),
            select: format!(
                "SELECT stream_id, stream_type, version, schema_version, state, taken_at FROM {s}.snapshots WHERE stream_id = $1"
            )
            .into(),
        }
    }
}

#[async_trait]
impl SnapshotStore for PostgresSnapshotStore {
    #[tracing::instrument(level = "debug", name = "es.pg.snapshot.save", skip_all, fields(stream_id = %snapshot.stream_id, version = snapshot.version))]
    async fn save(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        sqlx::query(&self.upsert)
            .bind(snapshot.stream_id.as_str())
            .bind(&snapshot.stream_type)
            .bind(bigint(snapshot.version))
            .bind(snapshot.schema_version as i32)
            .bind(&snapshot.state)
            .bind(snapshot.taken_at)
            .execute(&self.pool)
            .await
            .map_err(|e| backend("save snapshot", e))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", name = "es.pg.snapshot.load", skip_all, fields(stream_id = %stream_id))]
    async fn load(&self, stream_id: &StreamId) -> Result<Option<Snapshot>, StoreError> {
        let row = sqlx::query(&self.select)
            .bind(stream_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| backend("load snapshot", e))?;
        let Some(row) = row else { return Ok(None) };
        let decode = |e: sqlx::Error| backend("decode snapshot", e);
        Ok(Some(Snapshot {
            stream_id: StreamId::from(row.try_get::<String, _>(0).map_err(decode)?),
            stream_type: row.try_get(1).map_err(decode)?,
            version: row.try_get::<i64, _>(2).map_err(decode)?.max(0) as u64,
            schema_version: row.try_get::<i32, _>(3).map_err(decode)?.max(0) as u32,
            state: row.try_get(4).map_err(decode)?,
            taken_at: row.try_get(5).map_err(decode)?,
        }))
    }
}

/// Settings of a [`BackgroundSnapshotter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotterConfig {
    /// Seconds between runs.
    pub snapshot_interval_secs: u64,
    /// Most snapshots taken per run.
    pub max_snapshots_per_run: usize,
    /// Events since a stream's last snapshot that make it due.
    pub threshold: u64,
}

impl Default for SnapshotterConfig {
    fn default() -> Self {
        Self {
            snapshot_interval_secs: 60,
            max_snapshots_per_run: 100,
            threshold: 100,
        }
    }
}

/// Takes snapshots of streams of one aggregate type in the background,
/// so command handling never waits for one.
///
/// Each run looks only at the log written since the previous run, picks
/// the streams whose version is at least `threshold` past their snapshot,
/// loads them through the repository and saves the state.
pub struct BackgroundSnapshotter<A: Aggregate> {
    store: PostgresEventStore,
    snapshots: PostgresSnapshotStore,
    repository: Repository<A, dyn EventStore>,
    config: SnapshotterConfig,
    position: u64,
}

impl<A: Aggregate> BackgroundSnapshotter<A> {
    /// A snapshotter for aggregate `A` in `store`'s schema.
    pub fn new(store: PostgresEventStore, config: SnapshotterConfig) -> Self {
        let dyn_store: Arc<dyn EventStore> = Arc::new(store.clone());
        Self {
            snapshots: PostgresSnapshotStore::new(&store),
            repository: Repository::builder(dyn_store).build(),
            store,
            config,
            position: 0,
        }
    }

    /// Reads the log through `upcasters`, as the aggregate's repository
    /// does: a snapshot is the state that repository would load, so it
    /// must decode old events the same way.
    ///
    /// ```no_run
    /// # use es_postgres::{BackgroundSnapshotter, PostgresEventStore, SnapshotterConfig};
    /// # use es_core::{Aggregate, UpcasterRegistry};
    /// # fn build<A: Aggregate>(store: PostgresEventStore, upcasters: UpcasterRegistry) {
    /// let snapshotter = BackgroundSnapshotter::<A>::new(store, SnapshotterConfig::default()).with_upcasters(upcasters);
    /// # }
    /// ```
    #[must_use]
    pub fn with_upcasters(mut self, upcasters: UpcasterRegistry) -> Self {
        let dyn_store: Arc<dyn EventStore> = Arc::new(self.store.clone());
        self.repository = Repository::builder(dyn_store).upcasters(upcasters).build();
        self
    }

    /// One run; returns how many snapshots were taken.
    #[tracing::instrument(name = "es.pg.snapshotter.run", skip(self), fields(stream_type = A::TYPE))]
    pub async fn run_once(&mut self) -> Result<usize, StoreError> {
        let s = self.store.schema();
        let head = self.store.head_position().await?;
        let due = sqlx::query(&format!(
            "SELECT e.stream_id, max(e.version) AS v FROM {s}.events e \
             WHERE e.global_position > $1 AND e.global_position <= $2 AND e.stream_type = $3 \
             GROUP BY e.stream_id \
             HAVING max(e.version) - coalesce((SELECT version FROM {s}.snapshots p WHERE p.stream_id = e.stream_id), 0) >= $4 \
             LIMIT $5"
        ))
        .bind(bigint(self.position))
        .bind(bigint(head))
        .bind(A::TYPE)
        .bind(bigint(self.config.threshold))
        .bind(bigint(self.config.max_snapshots_per_run as u64))
        .fetch_all(self.store.pool())
        .await
        .map_err(|e| backend("find streams due for a snapshot", e))?;
        let mut taken = 0;
        for row in &due {
            let id: String = row.try_get(0).map_err(|e| backend("decode", e))?;
            let state = match self.repository.load(&id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(stream_id = %id, error = %e, "cannot load stream for a snapshot");
                    continue;
                }
            };
            let value = serde_json::to_value(&state.state).map_err(|e| StoreError::backend("serialize state", e))?;
            self.snapshots
                .save(Snapshot {
                    stream_id: StreamId::from(id),
                    stream_type: A::TYPE.to_owned(),
                    version: state.version,
                    schema_version: A::SNAPSHOT_VERSION,
                    state: value,
                    taken_at: chrono::Utc::now(),
                })
                .await?;
            taken += 1;
        }
        // Only move on when this run covered everything that was due.
        if due.len() < self.config.max_snapshots_per_run {
            self.position = head;
        }
        tracing::debug!(taken, "snapshot run finished");
        Ok(taken)
    }

    /// Runs every `snapshot_interval_secs` until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(Duration::from_secs(self.config.snapshot_interval_secs.max(1)));
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {
                    if let Err(e) = self.run_once().await {
                        tracing::warn!(error = %e, "snapshot run failed");
                    }
                }
            }
        }
    }
}
