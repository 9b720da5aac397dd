//! The backends a test body runs on: the same test, in memory, on the
//! embedded SQLite file (the server's default), on PostgreSQL, and on
//! PostgreSQL + Redis ([`on_every_backend!`]).

use std::sync::Arc;

use banking_example::auth::AuthStores;
use banking_example::{AppConfig, Backends, RunningServer};
use es_core::EventStore;

/// Which backends a server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Everything in process.
    Memory,
    /// The embedded SQLite file (events, read model, users), the rest in
    /// memory: the server's default store.
    Sqlite,
    /// PostgreSQL (events, users, idempotency keys; own schema per
    /// storage), the rest in memory.
    Postgres,
    /// PostgreSQL, and Redis for the cache, de-duplication and the token
    /// blacklist (the rate limiters stay as the config says; the test
    /// config disables them).
    PostgresRedis,
}

/// Data that outlives one server: a server started again on the same
/// storage sees what the previous one wrote (as a restarted process on the
/// same database would). In memory the store and the auth stores are
/// shared; on SQLite it is one file (in a directory of its own), on
/// PostgreSQL one schema.
#[derive(Clone)]
pub(crate) struct Storage {
    backend: Backend,
    schema: String,
    data_dir: std::path::PathBuf,
    memory: Option<(Arc<dyn EventStore>, AuthStores)>,
}

impl Backend {
    /// Fresh, empty storage of this kind.
    pub(crate) async fn storage(self) -> Storage {
        let memory = (self == Backend::Memory).then(|| {
            let b = Backends::in_memory(&super::config());
            (b.store, b.auth)
        });
        if matches!(self, Backend::Postgres | Backend::PostgresRedis) {
            super::pg::ensure_database().await;
        }
        Storage {
            backend: self,
            schema: super::pg::schema(),
            data_dir: std::env::temp_dir().join(format!("es-rs-test-sqlite-{}", uuid::Uuid::new_v4().simple())),
            memory,
        }
    }

    /// A server on fresh storage with the test config.
    pub(crate) async fn start(self) -> RunningServer {
        self.start_with(super::config()).await
    }

    /// A server on fresh storage with `config`.
    pub(crate) async fn start_with(self, config: AppConfig) -> RunningServer {
        self.storage().await.start(config).await
    }

    /// A server on fresh storage whose auth service tells time by `clock`.
    pub(crate) async fn start_with_clock(self, config: AppConfig, clock: es_core::ManualClock) -> RunningServer {
        self.storage().await.start_with_clock(config, clock).await
    }
}

impl Storage {
    /// The backend kind.
    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// `config` pointed at this storage.
    pub(crate) fn config(&self, config: AppConfig) -> AppConfig {
        match self.backend {
            Backend::Memory => config,
            Backend::Sqlite => AppConfig {
                database_url: None,
                data_dir: Some(self.data_dir.clone()),
                ..config
            },
            Backend::Postgres => AppConfig {
                database_url: Some(super::pg::database_url()),
                database_schema: self.schema.clone(),
                read_your_writes_wait: super::pg::READ_YOUR_WRITES_WAIT,
                ..config
            },
            Backend::PostgresRedis => AppConfig {
                database_url: Some(super::pg::database_url()),
                database_schema: self.schema.clone(),
                read_your_writes_wait: super::pg::READ_YOUR_WRITES_WAIT,
                redis_url: Some(super::redis::url()),
                ..config
            },
        }
    }

    /// The backends of a server on this storage (`config` as given to
    /// [`Storage::config`]).
    pub(crate) async fn backends(&self, config: &AppConfig) -> Backends {
        let mut backends = Backends::from_config(config).await.unwrap();
        if let Some((store, auth)) = &self.memory {
            backends.store = Arc::clone(store);
            // The data is shared; the auth limiter follows this config.
            let limiter = Arc::clone(&backends.auth.limiter);
            backends.auth = auth.clone();
            backends.auth.limiter = limiter;
        }
        let expected = match self.backend {
            Backend::Memory => ("memory", "memory"),
            Backend::Sqlite => ("sqlite", "sqlite"),
            Backend::Postgres => ("postgres", "postgres"),
            Backend::PostgresRedis => ("postgres", "redis"),
        };
        assert_eq!((backends.names.store.as_str(), backends.names.dedup.as_str()), expected);
        backends
    }

    /// A server on this storage.
    pub(crate) async fn start(&self, config: AppConfig) -> RunningServer {
        let config = self.config(config);
        let backends = self.backends(&config).await;
        banking_example::start(config, backends).await.unwrap()
    }

    /// A server on this storage whose auth service tells time by `clock`.
    pub(crate) async fn start_with_clock(&self, config: AppConfig, clock: es_core::ManualClock) -> RunningServer {
        let config = self.config(config);
        let mut backends = self.backends(&config).await;
        backends.clock = Arc::new(clock);
        banking_example::start(config, backends).await.unwrap()
    }
}

/// Runs each named `async fn(Backend)` of the calling file as four tests:
/// `memory::<name>`, `sqlite::<name>`, `postgres::<name>` and
/// `postgres_redis::<name>`.
/// Redis unreachable fails the Redis variant (see [`super::redis`]).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Memory).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if !$crate::common::redis::required().await {
                        return;
                    }
                    super::$name($crate::common::Backend::PostgresRedis).await
                }
            )*
        }
    };
}
