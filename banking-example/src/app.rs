//! Wiring: choose the backends, build the repository, the read side (the
//! account read model and its projection runner), the validators, the
//! router; serve.
//!
//! Every backend sits behind a trait object chosen here, so PostgreSQL and
//! Redis are configuration switches: see [`Backends::from_config`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use es_core::{EventStore, FencedStore, ProjectionRunner, Repository, RetryPolicy};
use es_postgres::PostgresEventStore;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::idempotency::Idempotency;
use crate::api::validation::{
    AccountCreationValidator, CloseRequestValidator, TransactionValidator, ValidatorRegistry,
};
pub use crate::api::{AppState, Services};
use crate::api::{CloseAccountRequest, CreateAccountRequest};
use crate::auth::AuthService;
pub use crate::backends::{BackendNames, Backends};
use crate::config::AppConfig;
use crate::domain::{upcasters, Account, MaxTransactionAmount};
pub use crate::error::AppError;
use crate::read_model::ReadSide;

/// Counters and histograms not updated for this long leave `/metrics`
/// (and the recorder's memory) until they are updated again.
pub const METRICS_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The process-wide Prometheus recorder (installed once; later calls, as in
/// tests that start several servers, share it). Every label of the
/// application has a bounded set of values; on top of that, idle counters
/// and histograms are dropped after [`METRICS_IDLE_TIMEOUT`].
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .idle_timeout(
                    metrics_util::MetricKindMask::COUNTER | metrics_util::MetricKindMask::HISTOGRAM,
                    Some(METRICS_IDLE_TIMEOUT),
                )
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// A built application: its state and the background projection.
pub struct App {
    /// Handler state.
    pub state: AppState,
    stop_projection: watch::Sender<bool>,
    projection_task: JoinHandle<()>,
    transfer_tasks: Vec<JoinHandle<()>>,
    postgres: Option<PostgresEventStore>,
    sqlite: Option<es_sqlite::SqliteEventStore>,
    write_behind: Option<Arc<es_redis::WriteBehindStore<dyn EventStore>>>,
    publishing: Option<crate::publishing::EventPublishing>,
}

impl App {
    /// Builds the application on `backends`: repository (with the
    /// per-transaction limit, the account upcasters and a conflict retry
    /// policy for multi-instance deployments), the read side (see
    /// [`read_model`](crate::read_model); followed in the background), the
    /// validators.
    pub async fn build(config: AppConfig, backends: Backends) -> Result<Self, AppError> {
        let retry = RetryPolicy {
            max_attempts: config.command_max_attempts.max(1),
            initial_delay: Duration::from_millis(5),
            multiplier: 2.0,
            max_delay: Duration::from_millis(500),
            jitter: 0.5,
        };
        if backends.write_behind.is_some() {
            // The recorder first; then the flusher's counters are listed
            // in /metrics from the start, at zero.
            let _ = metrics_handle();
            for name in [es_redis::telemetry::WB_DIVERGED, es_redis::telemetry::WB_FLUSH_ERRORS] {
                metrics::counter!(name).increment(0);
            }
        }
        // In cluster mode the repository appends under the shard owner's
        // fencing token.
        let cluster = match (&config.cluster, &backends.postgres) {
            (None, _) => None,
            (Some(cluster), Some(_)) => {
                // The recorder first: joining registers the cluster's metrics.
                let _ = metrics_handle();
                let advertise = match &cluster.advertise_url {
                    Some(url) => url.clone(),
                    // Every instance would forward to itself.
                    None if config.bind_addr.ip().is_unspecified() => {
                        return Err(AppError::Unsupported(format!(
                            "cluster mode: BIND_ADDR {} is no address other instances can reach; \
                             set CLUSTER_ADVERTISE_URL",
                            config.bind_addr
                        )))
                    }
                    None => format!("http://{}", config.bind_addr),
                };
                Some(
                    crate::cluster::Cluster::join(cluster, advertise, Arc::clone(&backends.store))
                        .await
                        .map_err(|e| AppError::Connect {
                            backend: "cluster (redis)",
                            reason: e.to_string(),
                        })?,
                )
            }
            (Some(_), None) => {
                return Err(AppError::Unsupported(
                    "cluster mode needs a PostgreSQL DATABASE_URL (the store fences stale shard owners)".into(),
                ))
            }
        };
        let accounts_on = |store: Arc<dyn EventStore>| {
            let mut builder = Repository::<Account>::builder(store)
                .retry(retry)
                .upcasters(upcasters())
                .validator(MaxTransactionAmount {
                    max: config.max_transaction_amount,
                });
            if let Some(cache) = &backends.cache {
                builder = builder.cache(Arc::clone(cache));
            }
            if let Some(snapshots) = &backends.snapshots {
                builder = builder.snapshots(Arc::clone(snapshots), crate::backends::SNAPSHOT_POLICY);
            }
            builder.build()
        };
        let (repo, transfer_accounts) = if let Some(c) = &cluster {
            (
                accounts_on(Arc::new(FencedStore::new(
                    Arc::clone(&backends.store),
                    Arc::new(c.manager.clone()),
                ))),
                // The transfer runner (driven by one instance at a time)
                // issues account steps for accounts of every shard: through
                // the unfenced store, under command ids derived from the
                // transfer and step, so each applies once, ordered with the
                // owners' commands by the stream's version check.
                accounts_on(Arc::clone(&backends.store)),
            )
        } else {
            let repo = accounts_on(Arc::clone(&backends.store));
            (repo.clone(), repo)
        };

        // Publishing starts before anything can append (the transfer runner
        // and its deadlines included): the CDC relay publishes only what
        // commits after its replication slot exists.
        let publishing = match &backends.postgres {
            Some(store) => crate::publishing::EventPublishing::start(&config, store)
                .await
                .map_err(|e| AppError::Connect {
                    backend: "kafka",
                    reason: e.to_string(),
                })?,
            None => None,
        };

        let read_side: ReadSide = match (&backends.postgres, &backends.sqlite) {
            (Some(store), _) => crate::read_model::postgres(store).await?,
            (None, Some(store)) => crate::read_model::sqlite(store).await?,
            (None, None) => crate::read_model::in_memory(Arc::clone(&backends.store)).await?,
        };
        let projection_failure = Arc::new(std::sync::RwLock::new(None));
        let (stop_projection, stop_rx) = watch::channel(false);
        let projection_task = tokio::spawn(follow(
            read_side.runner.clone(),
            Arc::clone(&projection_failure),
            stop_rx,
        ));

        let transfers = crate::transfer::Transfers::new(
            crate::transfer::TransferStores {
                store: Arc::clone(&backends.store),
                postgres: backends.postgres.clone(),
                sqlite: backends.sqlite.clone(),
                clock: Arc::clone(&backends.clock),
            },
            transfer_accounts,
            config.transfer_timeout,
        );
        let transfers_failure = Arc::new(std::sync::RwLock::new(None));
        let transfer_tasks = vec![
            tokio::spawn(follow(
                transfers.runner.clone(),
                Arc::clone(&transfers_failure),
                stop_projection.subscribe(),
            )),
            tokio::spawn({
                let driver = Arc::clone(&transfers.driver);
                let mut stop = stop_projection.subscribe();
                async move {
                    driver
                        .run_deadlines(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await;
                }
            }),
        ];

        let mut validators = ValidatorRegistry::new();
        validators.register::<CreateAccountRequest>(AccountCreationValidator {
            max_amount: config.max_transaction_amount,
        });
        validators.register(TransactionValidator {
            max_amount: config.max_transaction_amount,
            ..TransactionValidator::default()
        });
        validators.register::<CloseAccountRequest>(CloseRequestValidator);

        let auth = AuthService::new(config.auth.clone(), Arc::clone(&backends.clock), backends.auth.clone())
            .map_err(|e| AppError::Unsupported(format!("auth setup: {e}")))?;
        let state = AppState::new(Services {
            auth: Arc::new(auth),
            repo,
            read_model: read_side.queries,
            projection: read_side.runner,
            read_model_backend: read_side.backend,
            projection_failure,
            validators: Arc::new(validators),
            owners: crate::api::owners::Owners::new(100_000),
            idempotency: Idempotency::new(Arc::clone(&backends.dedup), config.idempotency_wait),
            limiter: Arc::clone(&backends.limiter),
            metrics: metrics_handle(),
            backends: backends.names.clone(),
            config: Arc::new(config),
            publishing: publishing.as_ref().map(super::publishing::EventPublishing::probe),
            cluster,
            transfers,
            transfers_failure,
            write_behind: backends.write_behind.clone(),
            postgres: backends.postgres.clone(),
        });
        Ok(Self {
            state,
            stop_projection,
            projection_task,
            transfer_tasks,
            postgres: backends.postgres.clone(),
            sqlite: backends.sqlite.clone(),
            write_behind: backends.write_behind.clone(),
            publishing,
        })
    }

    /// Serves on `listener` until `shutdown` completes, then finishes the
    /// in-flight requests (for at most `shutdown_grace`), stops the
    /// projection after a last catch-up, flushes the PostgreSQL append
    /// batcher and stops Kafka publishing (its round in progress gets
    /// `shutdown_grace` too).
    ///
    /// `admin`, when given, serves the operations routes (`/metrics`, the
    /// detailed `/health/ready`) until the same shutdown.
    pub async fn serve(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let router = crate::api::router(self.state.clone());
        let header_read_timeout = self.state.config.header_read_timeout;
        let (signalled_tx, mut signalled) = watch::channel(false);
        let admin_task = admin.map(|admin| {
            let router = crate::api::admin_router(self.state.clone());
            let mut stop = signalled.clone();
            tokio::spawn(crate::api::listener::serve(
                admin,
                router,
                header_read_timeout,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ))
        });
        let serving = crate::api::listener::serve(listener, router, header_read_timeout, async move {
            shutdown.await;
            let _ = signalled_tx.send(true);
        });
        let grace = self.state.config.shutdown_grace;
        tokio::select! {
            () = serving => {}
            () = async {
                let _ = signalled.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(?grace, "requests still in flight after the shutdown grace period; closing them");
            }
        }
        if let Some(task) = admin_task {
            task.abort();
        }
        if let Some(cluster) = &self.state.cluster {
            // Hand the shards over now that no request is in flight.
            cluster.manager.shutdown().await;
            tracing::info!("shards handed over");
        }
        let _ = self.stop_projection.send(true);
        if let Err(e) = self.projection_task.await {
            tracing::warn!(error = %e, "projection task ended abnormally");
        }
        for task in self.transfer_tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "transfer task ended abnormally");
            }
        }
        if let Some(store) = &self.write_behind {
            // Write what this instance's flusher holds, and hand its lists
            // over, before the store below stops.
            store.shutdown().await;
            tracing::info!("write-behind log flushed");
        }
        if let Some(store) = &self.sqlite {
            store.shutdown().await;
            tracing::info!("SQLite event store flushed");
        }
        if let Some(store) = &self.postgres {
            store.shutdown().await;
            tracing::info!("PostgreSQL event store flushed");
        }
        if let Some(publishing) = self.publishing {
            publishing.stop().await;
        }
        Ok(())
    }
}

/// Runs the projection until told to stop. The runner rides out store
/// outages itself; it returns only when the projector fails on an event
/// (it stops rather than skip a fact): that is recorded for
/// `/health/ready`, and the runner tries again every 5 s, so a fixed
/// cause (a restored table, say) resumes it.
async fn follow(
    projection: ProjectionRunner,
    failure: Arc<std::sync::RwLock<Option<String>>>,
    mut stop: watch::Receiver<bool>,
) {
    let set = |value: Option<String>| {
        *failure.write().unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    };
    loop {
        // A catch-up first, so a resumed projection clears its failure.
        let result = match projection.catch_up().await {
            Ok(_) => {
                set(None);
                let mut stop_signal = stop.clone();
                projection
                    .run(async move {
                        let _ = stop_signal.wait_for(|s| *s).await;
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(projection = projection.name(), error = %e, "projection stopped; retrying in 5 s");
                set(Some(e.to_string()));
            }
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// A server running in the background (for tests and embedding).
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The operations listener's address, when it has one.
    pub admin_addr: Option<SocketAddr>,
    /// Handler state (read model, repository) for inspection.
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AppError>>,
}

impl RunningServer {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base URL of the operations listener (`/metrics`, the detailed
    /// `/health/ready`). Panics when it was turned off.
    pub fn admin_url(&self) -> String {
        match self.admin_addr {
            Some(addr) => format!("http://{addr}"),
            None => panic!("this server has no operations listener (admin_bind_addr is None)"),
        }
    }

    /// Shuts down gracefully and waits for the server to finish.
    pub async fn stop(mut self) -> Result<(), AppError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(AppError::Io(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Builds the app on `backends` and serves it on `config.bind_addr`, and
/// the operations routes on `config.admin_bind_addr` (use port 0 for
/// ephemeral ports), in a background task.
pub async fn start(mut config: AppConfig, backends: Backends) -> Result<RunningServer, AppError> {
    let listener = TcpListener::bind(config.bind_addr).await?;
    let addr = listener.local_addr()?;
    // The address actually bound (port 0 picks one), as others reach it.
    config.bind_addr = addr;
    let admin = match config.admin_bind_addr {
        Some(a) => Some(TcpListener::bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    config.admin_bind_addr = admin_addr;
    let app = App::build(config, backends).await?;
    let state = app.state.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(app.serve(listener, admin, async move {
        let _ = rx.await;
    }));
    Ok(RunningServer {
        addr,
        admin_addr,
        state,
        shutdown: Some(tx),
        task,
    })
}
