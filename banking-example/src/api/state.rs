//! What every handler shares: the services the HTTP layer calls.

use std::sync::Arc;

use es_core::{EventStore, ProjectionRunner, Repository};
use metrics_exporter_prometheus::PrometheusHandle;

use super::idempotency::Idempotency;
use super::validation::ValidatorRegistry;
use crate::auth::AuthService;
use crate::backends::BackendNames;
use crate::config::AppConfig;
use crate::domain::Account;
use crate::rate_limit::RateLimiter;
use crate::read_model::AccountQueries;

/// Shared state of every handler: one reference-counted [`Services`], so
/// the copy each request and middleware takes is one counter increment.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Shares `services` with every handler.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What the handlers use: the services, the configuration and the probes
/// of the background tasks.
pub struct Services {
    /// Commands and history.
    pub repo: Repository<Account>,
    /// The account views.
    pub read_model: Arc<dyn AccountQueries>,
    /// The runner keeping the read model current.
    pub projection: ProjectionRunner,
    /// Where the read model lives: `postgres`, `sqlite` or `memory`.
    pub read_model_backend: &'static str,
    /// Why the projection stopped, if it did (an event it cannot apply).
    pub projection_failure: Arc<std::sync::RwLock<Option<String>>>,
    /// Authentication and users.
    pub auth: Arc<AuthService>,
    /// Request validation rules.
    pub validators: Arc<ValidatorRegistry>,
    /// The owners of accounts seen lately (authorization).
    pub owners: super::owners::Owners,
    /// Idempotency keys.
    pub idempotency: Idempotency,
    /// Rate limiting.
    pub limiter: Arc<dyn RateLimiter>,
    /// Prometheus rendering.
    pub metrics: PrometheusHandle,
    /// Backend names.
    pub backends: BackendNames,
    /// The configuration.
    pub config: Arc<AppConfig>,
    /// Health and backlog of Kafka publishing, when this process publishes.
    pub publishing: Option<crate::publishing::PublishingProbe>,
    /// This instance's part in the cluster, in cluster mode.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Transfers: their streams and the process driver moving them.
    pub transfers: crate::transfer::Transfers,
    /// Why the transfer runner stopped, if it did.
    pub transfers_failure: Arc<std::sync::RwLock<Option<String>>>,
    /// The write-behind store, with `WRITE_BEHIND=1` (its flusher's health
    /// is part of readiness).
    pub write_behind: Option<Arc<es_redis::WriteBehindStore<dyn EventStore>>>,
    /// The PostgreSQL store, when that is the store (readiness reports the
    /// events its log holds back behind an open transaction).
    pub postgres: Option<es_postgres::PostgresEventStore>,
}
