//! [`AdminError`]: why a command failed, worded for the person on call.

use es_core::{ProjectionError, StoreError};

/// Why an es-admin command failed. Printed on stderr (`error: …`) and
/// turned into exit code 1; usage errors (an unknown flag, a position that
/// is not a number) are clap's and exit with 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Neither `--database-url` nor `DATABASE_URL` was given.
    #[error("no database URL: pass --database-url or set DATABASE_URL")]
    NoUrl,
    /// The database URL names a SQLite file: es-admin reads PostgreSQL
    /// event stores only.
    #[error(
        "es-admin reads PostgreSQL event stores only (a postgres:// URL in --database-url / DATABASE_URL); \
         a SQLite file is not supported"
    )]
    NotPostgres,
    /// The database URL does not parse.
    #[error("invalid database URL (--database-url / DATABASE_URL): {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database could not be reached.
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    /// The schema name is not a plain identifier.
    #[error("invalid schema name {0:?} (--schema / DATABASE_SCHEMA): use lowercase letters, digits and _")]
    InvalidSchema(String),
    /// The schema holds no event store.
    #[error("schema {0:?} has no event store (no {0}.events table): check --schema / DATABASE_SCHEMA")]
    NoEventStore(String),
    /// No projection of that name is registered with this es-admin.
    #[error("unknown projection {name:?}; registered: {}", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    UnknownProjection {
        /// The name asked for.
        name: String,
        /// The registered projections.
        known: Vec<String>,
    },
    /// A full or from-a-position replay of the version readers are served
    /// from, without `--serving`.
    #[error(
        "readers are served from {projection} (the active version of {name}): a replay would show them a \
             half-built read model; build a new version beside it, or pass --serving to replay it in place"
    )]
    Serving {
        /// The projection.
        projection: String,
        /// The blue/green projection it is the active version of.
        name: String,
    },
    /// A replay position beyond the end of the log.
    #[error("position {position} is past the head of the log ({head})")]
    PastHead {
        /// The position asked for.
        position: u64,
        /// The head of the log.
        head: u64,
    },
    /// The projection has no dead letter at that position.
    #[error("projection {projection} has no dead letter at position {position}")]
    NoDeadLetter {
        /// The projection.
        projection: String,
        /// The position asked for.
        position: u64,
    },
    /// No outbox row at that position is parked.
    #[error("no parked outbox row at position {position} (`publishing` lists the parked rows)")]
    NotParked {
        /// The position asked for.
        position: u64,
    },
    /// Some dead letters could not be retried (their projector still
    /// fails); the others were.
    #[error("{failed} of {total} dead letters of {projection} failed again and stay dead letters")]
    RetriesFailed {
        /// The projection.
        projection: String,
        /// Letters that failed again.
        failed: usize,
        /// Letters tried.
        total: usize,
    },
    /// Reading the event store failed.
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    /// A database query of es-admin's own failed.
    #[error("database: {operation}: {source}")]
    Database {
        /// What was being read.
        operation: &'static str,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// The projection runner failed (the projector, its checkpoint).
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// Reading the outbox failed.
    #[error(transparent)]
    Outbox(Box<es_kafka::OutboxError>),
    /// Reading the replication slot failed.
    #[error(transparent)]
    Cdc(Box<es_kafka::CdcError>),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl From<es_kafka::OutboxError> for AdminError {
    fn from(e: es_kafka::OutboxError) -> Self {
        Self::Outbox(Box::new(e))
    }
}

impl From<es_kafka::CdcError> for AdminError {
    fn from(e: es_kafka::CdcError) -> Self {
        Self::Cdc(Box::new(e))
    }
}

impl AdminError {
    /// A failed query of es-admin's own.
    pub(crate) fn database(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Database { operation, source }
    }

    /// Whether the output's reader went away (`es-admin tail | head`): not
    /// worth a message.
    pub(crate) fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}
