//! [`Session`]: the connected event store and the application's projection
//! runners, built once per command.

use std::str::FromStr;
use std::time::Duration;

use es_core::ProjectionRunner;
use es_postgres::{EventStoreConfig, PostgresEventStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::admin::Registrar;
use crate::log::relation_exists;
use crate::AdminError;

/// The connected store and the registered projections.
pub(crate) struct Session {
    pub store: PostgresEventStore,
    pub runners: Vec<ProjectionRunner>,
}

impl Session {
    /// Connects to `url` (waiting at most `timeout`), checks that `schema`
    /// holds an event store, and builds the projection runners.
    #[tracing::instrument(name = "es.admin.connect", skip(url, projections))]
    pub(crate) async fn open(
        url: &str,
        schema: &str,
        timeout: Duration,
        projections: &Registrar,
    ) -> Result<Self, AdminError> {
        if url.starts_with("sqlite:") {
            return Err(AdminError::NotPostgres);
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(AdminError::InvalidUrl)?
            .application_name("es-admin");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(AdminError::Connect)?;
        let config = EventStoreConfig {
            max_connections: 4,
            batch_processor_count: 1,
            ..EventStoreConfig::with_schema(schema)
        };
        let store = PostgresEventStore::with_pool(pool, config).map_err(|e| match e {
            es_postgres::SetupError::InvalidSchema(s) => AdminError::InvalidSchema(s),
            other => AdminError::Store(es_core::StoreError::backend("open the event store", other)),
        })?;
        for table in ["events", "checkpoints"] {
            if !relation_exists(&store, &format!("{schema}.{table}")).await? {
                return Err(AdminError::NoEventStore(schema.to_owned()));
            }
        }
        let runners = projections(&store);
        Ok(Self { store, runners })
    }

    /// The registered runner of `name`: a projection's own name, or the
    /// name of a blue/green projection (es-postgres `BlueGreen`, as
    /// `accounts` for `accounts_v2`), which stands for its active version.
    pub(crate) async fn runner(&self, name: &str) -> Result<&ProjectionRunner, AdminError> {
        let named = |n: &str| self.runners.iter().find(|r| r.name() == n);
        if let Some(runner) = named(name) {
            return Ok(runner);
        }
        let versions = format!("{}.projection_versions", self.store.schema());
        if relation_exists(&self.store, &versions).await? {
            let active: Option<i32> = sqlx::query_scalar(&format!("SELECT active FROM {versions} WHERE name = $1"))
                .bind(name)
                .fetch_optional(self.store.pool())
                .await
                .map_err(|source| AdminError::Database {
                    operation: "read the active projection version",
                    source,
                })?;
            if let Some(runner) = active.and_then(|v| named(&format!("{name}_v{v}"))) {
                return Ok(runner);
            }
        }
        Err(AdminError::UnknownProjection {
            name: name.to_owned(),
            known: self.runners.iter().map(|r| r.name().to_owned()).collect(),
        })
    }
}
