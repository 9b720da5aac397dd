//! [`BlueGreen`]: rebuild a projection into new tables while the old ones
//! serve, then switch readers atomically.

use sqlx::Row;

use crate::PostgresEventStore;

/// Errors of a [`BlueGreen`] operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlueGreenError {
    /// A name is not a lowercase SQL identifier.
    #[error("{0:?} is not a lowercase SQL identifier of at most 40 characters")]
    InvalidName(String),
    /// Dropping the version readers use was refused.
    #[error("version {version} of {name} is the active one; switch to another first")]
    DropActive {
        /// The projection.
        name: String,
        /// Its active version.
        version: u32,
    },
    /// The database failed.
    #[error("blue/green {operation}: {source}")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
}

fn db(operation: &'static str) -> impl FnOnce(sqlx::Error) -> BlueGreenError {
    move |source| BlueGreenError::Database { operation, source }
}

fn check(name: &str) -> Result<(), BlueGreenError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(BlueGreenError::InvalidName(name.to_owned()))
    }
}

/// What [`BlueGreen::switch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// Readers now see `to`.
    Switched {
        /// The version they saw before (none on the first switch).
        from: Option<u32>,
        /// The version they see now.
        to: u32,
    },
    /// `to` was already active.
    AlreadyActive,
    /// The candidate's checkpoint is behind the active version's: catch it
    /// up and try again. Readers still see the active version.
    Behind {
        /// The candidate's checkpoint.
        candidate: u64,
        /// The active version's checkpoint.
        active: u64,
    },
}

/// Blue/green versions of a projection whose read model readers query
/// through views.
///
/// Version *n* of the projection writes tables named `<relation>_v<n>` and
/// keeps its checkpoint under [`projection_name(n)`](Self::projection_name)
/// (`<name>_v<n>`). Readers query `<schema>.<relation>`: a view over the
/// active version's table. To change a projection's shape:
///
/// 1. run version 2 (a `PgProjectionUnit` whose projector writes
///    `<relation>_v2` and is named `projection_name(2)`) from position 0 —
///    version 1 keeps serving;
/// 2. [`switch`](Self::switch) to 2 once it has caught up: in one
///    transaction that holds both checkpoints, it checks that version 2 is
///    at or past version 1 and replaces every view, so a reader sees
///    version 1 or version 2 whole, never a half-built table, and never
///    goes back in time. Version 2's runner keeps following the log;
/// 3. stop version 1's runners and [`drop_version(1)`](Self::drop_version).
///
/// ```no_run
/// # async fn demo(store: es_postgres::PostgresEventStore, v2: es_core::ProjectionRunner) -> Result<(), Box<dyn std::error::Error>> {
/// use es_postgres::{BlueGreen, SwitchOutcome};
///
/// let accounts = BlueGreen::new(&store, "accounts", &["accounts"])?;
/// loop {
///     v2.catch_up().await?;
///     match accounts.switch(2).await? {
///         SwitchOutcome::Behind { .. } => continue,
///         _ => break,
///     }
/// }
/// accounts.drop_version(1).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BlueGreen {
    store: PostgresEventStore,
    name: String,
    relations: Vec<String>,
}

impl BlueGreen {
    /// The projection `name` whose readers query `relations` (views in the
    /// store's schema).
    pub fn new(store: &PostgresEventStore, name: &str, relations: &[&str]) -> Result<Self, BlueGreenError> {
        check(name)?;
        for r in relations {
            check(r)?;
        }
        Ok(Self {
            store: store.clone(),
            name: name.to_owned(),
            relations: relations.iter().map(|r| (*r).to_owned()).collect(),
        })
    }

    /// The checkpoint key of version `version`: `<name>_v<version>`.
    pub fn projection_name(&self, version: u32) -> String {
        format!("{}_v{version}", self.name)
    }

    /// The table of `relation` in version `version`, schema-qualified:
    /// `<schema>.<relation>_v<version>`.
    pub fn table(&self, relation: &str, version: u32) -> String {
        format!("{}.{relation}_v{version}", self.store.schema())
    }

    /// The version readers see, if any.
    pub async fn active(&self) -> Result<Option<u32>, BlueGreenError> {
        let v: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT active FROM {}.projection_versions WHERE name = $1",
            self.store.schema()
        ))
        .bind(&self.name)
        .fetch_optional(self.store.pool())
        .await
        .map_err(db("read active version"))?;
        Ok(v.map(|v| v.max(0) as u32))
    }

    /// Points readers at version `to` if its checkpoint is at or past the
    /// active version's (always, when none is active), atomically.
    #[tracing::instrument(name = "es.pg.blue_green.switch", skip(self), fields(projection = %self.name))]
    pub async fn switch(&self, to: u32) -> Result<SwitchOutcome, BlueGreenError> {
        let s = self.store.schema();
        let mut tx = self.store.pool().begin().await.map_err(db("begin switch"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("es-blue-green-{s}-{}", self.name))
            .execute(&mut *tx)
            .await
            .map_err(db("lock switch"))?;
        let active: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT active FROM {s}.projection_versions WHERE name = $1 FOR UPDATE"
        ))
        .bind(&self.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("read active version"))?;
        let from = active.map(|v| v.max(0) as u32);
        if from == Some(to) {
            return Ok(SwitchOutcome::AlreadyActive);
        }
        // Both checkpoints locked: neither runner commits a page until the
        // views are replaced, so the comparison holds at the switch.
        let candidate_key = self.projection_name(to);
        let keys: Vec<String> = std::iter::once(candidate_key.clone())
            .chain(from.map(|v| self.projection_name(v)))
            .collect();
        let rows = sqlx::query(&format!(
            "SELECT projection, position FROM {s}.checkpoints WHERE projection = ANY($1) ORDER BY projection FOR UPDATE"
        ))
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("lock checkpoints"))?;
        let position = |key: &str| -> u64 {
            rows.iter()
                .find(|r| r.try_get::<String, _>(0).is_ok_and(|k| k == key))
                .and_then(|r| r.try_get::<i64, _>(1).ok())
                .map_or(0, |p| p.max(0) as u64)
        };
        if let Some(old) = from {
            let (candidate, active) = (position(&candidate_key), position(&self.projection_name(old)));
            if candidate < active {
                return Ok(SwitchOutcome::Behind { candidate, active });
            }
        }
        for relation in &self.relations {
            sqlx::query(&format!("DROP VIEW IF EXISTS {s}.{relation}"))
                .execute(&mut *tx)
                .await
                .map_err(db("drop reader view"))?;
            sqlx::query(&format!(
                "CREATE VIEW {s}.{relation} AS SELECT * FROM {}",
                self.table(relation, to)
            ))
            .execute(&mut *tx)
            .await
            .map_err(db("create reader view"))?;
        }
        sqlx::query(&format!(
            "INSERT INTO {s}.projection_versions (name, active, switched_at) VALUES ($1, $2, now()) \
             ON CONFLICT (name) DO UPDATE SET active = EXCLUDED.active, switched_at = now()"
        ))
        .bind(&self.name)
        .bind(to as i32)
        .execute(&mut *tx)
        .await
        .map_err(db("record active version"))?;
        tx.commit().await.map_err(db("commit switch"))?;
        tracing::info!(projection = %self.name, ?from, to, "readers switched");
        Ok(SwitchOutcome::Switched { from, to })
    }

    /// Drops version `version`'s tables, checkpoint and dead letters.
    /// Refused for the active version. Stop its runners first.
    pub async fn drop_version(&self, version: u32) -> Result<(), BlueGreenError> {
        let s = self.store.schema();
        let mut tx = self.store.pool().begin().await.map_err(db("begin drop"))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("es-blue-green-{s}-{}", self.name))
            .execute(&mut *tx)
            .await
            .map_err(db("lock switch"))?;
        let active: Option<i32> =
            sqlx::query_scalar(&format!("SELECT active FROM {s}.projection_versions WHERE name = $1"))
                .bind(&self.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db("read active version"))?;
        if active == Some(version as i32) {
            return Err(BlueGreenError::DropActive {
                name: self.name.clone(),
                version,
            });
        }
        for relation in &self.relations {
            sqlx::query(&format!("DROP TABLE IF EXISTS {}", self.table(relation, version)))
                .execute(&mut *tx)
                .await
                .map_err(db("drop version table"))?;
        }
        let key = self.projection_name(version);
        for table in ["checkpoints", "dead_letters"] {
            sqlx::query(&format!("DELETE FROM {s}.{table} WHERE projection = $1"))
                .bind(&key)
                .execute(&mut *tx)
                .await
                .map_err(db("forget version"))?;
        }
        tx.commit().await.map_err(db("commit drop"))?;
        tracing::info!(projection = %self.name, version, "version dropped");
        Ok(())
    }
}
