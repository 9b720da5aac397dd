//! The backends the application runs on, chosen from the configuration:
//! a SQLite file in `data_dir` (the server's default), PostgreSQL or SQLite
//! by `DATABASE_URL`, or in memory; and with
//! `REDIS_URL` the two-level state cache, the de-duplicator, the shared
//! rate limiters and the token blacklist in Redis.

use std::sync::Arc;
use std::time::Duration;

use es_core::{
    Clock, CommandDeduplicator, EventStore, InMemoryDeduplicator, InMemoryEventStore, InMemoryStateCache,
    SnapshotPolicy, SnapshotStore, StateCache, SystemClock,
};
use es_postgres::{EventStoreConfig, PostgresDeduplicator, PostgresEventStore, PostgresSnapshotStore};
use es_redis::{
    CacheConfig, DedupConfig, RedisConfig, RedisDeduplicator, RedisStateCache, ResilienceConfig, WriteBehindConfig,
    WriteBehindStore,
};
use es_sqlite::{SqliteConfig, SqliteDeduplicator, SqliteEventStore, SqliteSnapshotStore};

use crate::auth::blacklist::RedisBlacklist;
use crate::auth::pg::PgAuthStore;
use crate::auth::sqlite::SqliteAuthStore;
use crate::auth::AuthStores;
use crate::config::AppConfig;
use crate::domain::Account;
use crate::error::AppError;
use crate::rate_limit::{InMemoryRateLimiter, NoRateLimit, RateLimiter, RedisRateLimiter};

/// How long a keyed request's in-flight mark lives without renewal, in
/// every de-duplicator: a process that dies with requests in flight frees
/// their keys this soon, so a client's retry (through another instance,
/// or after a restart) runs instead of waiting out a long mark. A running
/// request renews its mark every second (and a mark that lapses anyway is
/// safe: the command id keeps a command from applying twice).
pub const IN_FLIGHT_TTL: Duration = Duration::from_secs(5);

/// Names of the chosen backends, for logs and the readiness report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendNames {
    /// Event store backend.
    pub store: String,
    /// De-duplicator backend.
    pub dedup: String,
}

/// The backends the application runs on.
#[derive(Clone)]
pub struct Backends {
    /// The event store.
    pub store: Arc<dyn EventStore>,
    /// Idempotency-key de-duplication.
    pub dedup: Arc<dyn CommandDeduplicator>,
    /// The rate limiter.
    pub limiter: Arc<dyn RateLimiter>,
    /// The aggregate-state cache of the repository.
    pub cache: Option<Arc<dyn StateCache<Account>>>,
    /// Snapshots of the repository (PostgreSQL and SQLite).
    pub snapshots: Option<Arc<dyn SnapshotStore>>,
    /// The PostgreSQL event store when configured: its pool and schema
    /// also hold the auth tables, and shutdown flushes its batcher.
    pub postgres: Option<PostgresEventStore>,
    /// The SQLite event store when configured (the server's default): the
    /// same file holds the read model and the auth tables, and shutdown
    /// flushes its writer.
    pub sqlite: Option<SqliteEventStore>,
    /// The write-behind store in front of the event store
    /// (`WRITE_BEHIND=1`): [`store`](Self::store) is this one then; kept
    /// here for the readiness report and the drain at shutdown.
    pub write_behind: Option<Arc<WriteBehindStore<dyn EventStore>>>,
    /// The auth stores (users, tokens, blacklist, auth rate limiter).
    pub auth: AuthStores,
    /// The clock of the auth service (tests inject a manual one).
    pub clock: Arc<dyn Clock>,
    /// Names for the readiness report.
    pub names: BackendNames,
}

/// The snapshot policy used with a snapshot store.
pub const SNAPSHOT_POLICY: SnapshotPolicy = SnapshotPolicy::EveryNEvents(100);

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Backends {
    /// Everything in process: nothing is persisted.
    pub fn in_memory(config: &AppConfig) -> Self {
        let limiter: Arc<dyn RateLimiter> = if config.rate_limit.is_disabled() {
            Arc::new(NoRateLimit)
        } else {
            Arc::new(InMemoryRateLimiter::new(config.rate_limit.clone()))
        };
        Self {
            store: Arc::new(InMemoryEventStore::new()),
            dedup: Arc::new(InMemoryDeduplicator::new(config.idempotency_ttl, IN_FLIGHT_TTL)),
            limiter,
            cache: Some(Arc::new(InMemoryStateCache::<Account>::new(100_000))),
            snapshots: None,
            postgres: None,
            sqlite: None,
            write_behind: None,
            auth: AuthStores::in_memory(&config.auth),
            clock: Arc::new(SystemClock),
            names: BackendNames {
                store: "memory".into(),
                dedup: "memory".into(),
            },
        }
    }

    /// PostgreSQL as the event store (schema `config.database_schema`,
    /// migrated here) with snapshots every 100 events, and the idempotency
    /// keys and the auth tables in the same schema; the rest as
    /// [`Backends::in_memory`].
    pub async fn postgres(config: &AppConfig, url: &str) -> Result<Self, AppError> {
        let connect = |e: es_postgres::SetupError| AppError::Connect {
            backend: "postgres",
            reason: e.to_string(),
        };
        let store_config = EventStoreConfig {
            outbox: crate::publishing::needs_outbox(config),
            batch_processor_count: config.pg_batch_processors,
            ..EventStoreConfig::with_schema(config.database_schema.clone())
        };
        let store = PostgresEventStore::connect(url, store_config).await.map_err(connect)?;
        store.migrate().await.map_err(connect)?;
        tracing::info!(schema = %config.database_schema, "PostgreSQL event store ready (migrations applied)");
        let mut backends = Self::in_memory(config);
        backends.snapshots = Some(Arc::new(PostgresSnapshotStore::new(&store)));
        backends.store = Arc::new(store.clone());
        let auth = PgAuthStore::new(store.pool().clone(), store.schema());
        auth.migrate().await.map_err(|e| AppError::Connect {
            backend: "postgres",
            reason: format!("auth migration: {e}"),
        })?;
        backends.auth = AuthStores::postgres(&config.auth, auth);
        // Idempotency keys in the database: every instance shares them
        // without Redis, and memory does not grow with the keys.
        let dedup = PostgresDeduplicator::new(&store, config.idempotency_ttl, IN_FLIGHT_TTL)
            .await
            .map_err(|e| AppError::Connect {
                backend: "postgres",
                reason: e.to_string(),
            })?;
        backends.dedup = Arc::new(dedup);
        backends.names.dedup = "postgres".into();
        backends.postgres = Some(store);
        backends.names.store = "postgres".into();
        Ok(backends)
    }

    /// The SQLite file at `url` (`sqlite://path`, a plain path, or
    /// `sqlite::memory:`) as the event store, created and migrated here,
    /// with snapshots every 100 events, and the idempotency keys and the
    /// auth tables in the same file; the rest as [`Backends::in_memory`].
    pub async fn sqlite(config: &AppConfig, url: &str) -> Result<Self, AppError> {
        let connect = |e: es_sqlite::SetupError| AppError::Connect {
            backend: "sqlite",
            reason: e.to_string(),
        };
        let store = SqliteEventStore::connect(url, SqliteConfig::default())
            .await
            .map_err(connect)?;
        store.migrate().await.map_err(connect)?;
        let mut backends = Self::in_memory(config);
        backends.snapshots = Some(Arc::new(SqliteSnapshotStore::new(&store)));
        let dedup = SqliteDeduplicator::new(&store, config.idempotency_ttl, IN_FLIGHT_TTL)
            .await
            .map_err(|e| AppError::Connect {
                backend: "sqlite",
                reason: e.to_string(),
            })?;
        backends.dedup = Arc::new(dedup);
        backends.names.dedup = "sqlite".into();
        let auth = SqliteAuthStore::new(store.pool().clone());
        auth.migrate().await.map_err(|e| AppError::Connect {
            backend: "sqlite",
            reason: format!("auth migration: {e}"),
        })?;
        backends.auth = AuthStores::sqlite(&config.auth, auth);
        backends.store = Arc::new(store.clone());
        backends.sqlite = Some(store);
        backends.names.store = "sqlite".into();
        Ok(backends)
    }

    /// The backends the configuration asks for: by `DATABASE_URL`
    /// ([`Backends::postgres`] for `postgres://…`, [`Backends::sqlite`] for
    /// `sqlite://…`), else the SQLite file `bank.db` in `data_dir`, else
    /// [`Backends::in_memory`]; with `REDIS_URL`
    /// es-redis's two-level [`RedisStateCache`] and [`RedisDeduplicator`]
    /// (fails closed when Redis is down), the shared [`RedisRateLimiter`]s
    /// and the Redis token blacklist.
    pub async fn from_config(config: &AppConfig) -> Result<Self, AppError> {
        let mut backends = match (&config.database_url, &config.data_dir) {
            (Some(url), _) if url.starts_with("sqlite:") => Self::sqlite(config, url).await?,
            (Some(url), _) => Self::postgres(config, url).await?,
            (None, Some(dir)) => {
                let path = dir.join("bank.db");
                tracing::info!(path = %path.display(), "events, accounts and users are kept in this SQLite file (set STORE=memory to keep nothing)");
                Self::sqlite(config, &path.to_string_lossy()).await?
            }
            (None, None) => Self::in_memory(config),
        };
        if let Some(url) = &config.redis_url {
            let redis_err = |e: es_redis::RedisError| AppError::Connect {
                backend: "redis",
                reason: e.to_string(),
            };
            let redis = RedisConfig {
                url: url.clone(),
                ..RedisConfig::default()
            };
            // States and replies belong to one store: keyed by its schema, so
            // deployments on different schemas sharing a Redis never answer
            // from each other's (same schema names: give them their own Redis
            // database in REDIS_URL).
            let scope = format!("banking:{}", config.database_schema);
            let cache = RedisStateCache::<Account>::new(CacheConfig {
                key_prefix: scope.clone(),
                redis: redis.clone(),
                ..CacheConfig::default()
            })
            .map_err(redis_err)?;
            backends.cache = Some(Arc::new(cache));
            let dedup = RedisDeduplicator::new(DedupConfig {
                key_prefix: scope,
                window: config.idempotency_ttl,
                in_flight_ttl: IN_FLIGHT_TTL,
                redis,
                ..DedupConfig::default()
            })
            .map_err(redis_err)?;
            backends.dedup = Arc::new(dedup);
            backends.names.dedup = "redis".into();
            if !config.rate_limit.is_disabled() {
                let limiter = RedisRateLimiter::connect(url, "banking:rl:", config.rate_limit.clone())
                    .await
                    .map_err(|e| AppError::Connect {
                        backend: "redis",
                        reason: e.to_string(),
                    })?;
                backends.limiter = Arc::new(limiter);
            }
            backends.auth.blacklist =
                Arc::new(
                    RedisBlacklist::connect(url, "banking:jti:")
                        .await
                        .map_err(|e| AppError::Connect {
                            backend: "redis",
                            reason: e.to_string(),
                        })?,
                );
            let auth_limits = AuthStores::rate_limit_config(&config.auth);
            if !auth_limits.is_disabled() {
                let limiter = RedisRateLimiter::connect(url, "banking:auth-rl:", auth_limits)
                    .await
                    .map_err(|e| AppError::Connect {
                        backend: "redis",
                        reason: e.to_string(),
                    })?;
                backends.auth.limiter = Arc::new(limiter);
            }
            tracing::info!("Redis: state cache (L1 + L2), de-duplication, rate limits and token blacklist are shared");
        }
        if config.write_behind {
            let url = config.redis_url.clone().ok_or_else(|| {
                AppError::Unsupported("WRITE_BEHIND=1 needs REDIS_URL (the write-behind log lives in Redis)".into())
            })?;
            let store = WriteBehindStore::builder(Arc::clone(&backends.store))
                .redis(RedisConfig {
                    url,
                    pool_size: 4,
                    response_timeout: Duration::from_secs(2),
                    ..RedisConfig::default()
                })
                .resilience(ResilienceConfig {
                    max_in_flight: 4096,
                    ..ResilienceConfig::default()
                })
                .config(WriteBehindConfig {
                    // One log per schema, like the store it writes to.
                    key_prefix: format!("banking:wb:{}", config.database_schema),
                    ..WriteBehindConfig::default()
                })
                .build()
                .await
                .map_err(|e| AppError::Connect {
                    backend: "redis (write-behind)",
                    reason: e.to_string(),
                })?;
            let store = Arc::new(store);
            tracing::info!(durability = ?store.durability(), "write-behind: commands are acknowledged once Redis holds their events");
            backends.store = Arc::clone(&store) as Arc<dyn EventStore>;
            backends.write_behind = Some(store);
            backends.names.store = format!("{}+write-behind", backends.names.store);
        }
        if config.kafka_brokers.is_some() && backends.postgres.is_none() {
            tracing::warn!("KAFKA_BROKERS is set, but publishing needs DATABASE_URL (the outbox or the WAL of PostgreSQL); events are not published");
        }
        Ok(backends)
    }
}
