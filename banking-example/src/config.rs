//! Configuration: plain structs with defaults, and the environment loader
//! used by the binary (`.env.example` documents every variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{AuthConfig, Persistence};
use crate::domain::Money;
use crate::net::TrustedProxies;
use crate::rate_limit::RateLimitConfig;

/// The operations listener's default address: loopback, so metrics and
/// readiness details never reach the public network unless configured.
pub const DEFAULT_ADMIN_BIND_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9091);

/// librdkafka security properties (`security.protocol`, `ssl.*`,
/// `sasl.*`) for the Kafka producer. `Debug` shows the property names
/// only (values include passwords).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSecurity(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for KafkaSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Most group-commit writers `PG_BATCH_PROCESSORS` accepts: each keeps one
/// of the PostgreSQL store's 16 pooled connections while appends come.
pub const MAX_PG_BATCH_PROCESSORS: usize = 8;

/// The longest `TRANSFER_TIMEOUT_SECS`: 366 days.
pub const MAX_TRANSFER_TIMEOUT: Duration = Duration::from_secs(366 * 24 * 3600);

/// The server's group-commit writers when `PG_BATCH_PROCESSORS` is unset:
/// one, below es-postgres's default of two. A server's appends arrive one
/// by one as requests finish their HTTP work; one writer gathers twice as
/// many of them per statement, which costs PostgreSQL less per deposit
/// (measured in docs/benchmarks.md: about a tenth more deposits per second
/// at 16 connections, the same at 64).
pub const DEFAULT_PG_BATCH_PROCESSORS: usize = 1;

/// Everything the server needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    /// Address to listen on (`BIND_ADDR`, default `127.0.0.1:3000`).
    pub bind_addr: SocketAddr,
    /// Address of the operations listener serving `GET /metrics` and the
    /// detailed `GET /health/ready` (`ADMIN_BIND_ADDR`, default
    /// [`DEFAULT_ADMIN_BIND_ADDR`], loopback only; `off` disables it).
    /// The public listener serves neither: its `/health/ready` says only
    /// `ready` or `not_ready`.
    pub admin_bind_addr: Option<SocketAddr>,
    /// Whether the operations listener's address was configured
    /// (`ADMIN_BIND_ADDR` set). A configured address that cannot be bound
    /// stops the server; the default one, when another process holds it
    /// (a second server on the same machine, say), is skipped with a
    /// warning and the server runs without `/metrics`.
    pub admin_bind_required: bool,
    /// The database (`DATABASE_URL`): `postgres://…` for PostgreSQL,
    /// `sqlite://path` for a SQLite file. Unset: [`data_dir`](Self::data_dir).
    pub database_url: Option<String>,
    /// Without `DATABASE_URL`, the directory of the embedded SQLite
    /// database `bank.db` (`DATA_DIR`; the server's default is `./data`,
    /// and `STORE=memory` sets none). `None`: everything in memory,
    /// nothing persisted (the default of this struct, for tests and
    /// embedding).
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL schema holding the event store, the read model and the
    /// auth tables (`DATABASE_SCHEMA`, default `bank`).
    pub database_schema: String,
    /// Group-commit writers of the PostgreSQL event store, each with its
    /// own connection (`PG_BATCH_PROCESSORS`, 1-8, default
    /// [`DEFAULT_PG_BATCH_PROCESSORS`]; es-postgres's
    /// `EventStoreConfig::batch_processor_count`). Fewer writers gather more
    /// appends per statement (fewer commits for the same deposits); more
    /// keep appends moving while one statement waits on the disk. At most
    /// 8, so that the store's 16 pooled connections leave room for the
    /// projections and the reads.
    pub pg_batch_processors: usize,
    /// Redis for the state cache, de-duplication and the shared rate
    /// limiter (`REDIS_URL`).
    pub redis_url: Option<String>,
    /// Write-behind (`WRITE_BEHIND=1`, needs `REDIS_URL`): commands are
    /// acknowledged once Redis holds their events, which a flusher then
    /// writes to the store in big batches (es-redis's `WriteBehindStore`).
    /// Run Redis with `appendonly yes` and `appendfsync always`, or an
    /// acknowledged command can be lost when Redis restarts. Off by default.
    pub write_behind: bool,
    /// Kafka brokers to publish account events to (`KAFKA_BROKERS`).
    pub kafka_brokers: Option<String>,
    /// TLS and SASL settings of the Kafka producer (`KAFKA_SECURITY_PROTOCOL`,
    /// `KAFKA_SSL_CA_LOCATION`, `KAFKA_SASL_*`, ...: see
    /// [`es_kafka::SECURITY_SETTINGS`]).
    pub kafka_security: KafkaSecurity,
    /// How events reach Kafka (`DATA_CAPTURE_METHOD`: `cdc_debezium`,
    /// the default, or `outbox_poller`).
    pub data_capture_method: DataCaptureMethod,
    /// With `cdc_debezium`, who relays the changes (`CDC_RELAY`: `builtin`,
    /// the default, or `debezium`).
    pub cdc_relay: CdcRelayKind,
    /// How long a publishing round waits for Kafka's acknowledgements
    /// before it counts as failed and is retried later; its messages stay
    /// queued in the producer meanwhile and go out in order when the broker
    /// answers (`KAFKA_MESSAGE_TIMEOUT_MS`, default 10 s).
    pub kafka_message_timeout: Duration,
    /// Replication slot of the built-in CDC relay (`CDC_SLOT_NAME`);
    /// default `es_{database}_{schema}`, unique per database of the
    /// PostgreSQL cluster (slots belong to the cluster).
    pub cdc_slot_name: Option<String>,
    /// Consecutive publishing rounds without progress after which
    /// `/health/ready` reports Kafka publishing down
    /// (`PUBLISH_UNHEALTHY_AFTER_ROUNDS`, default 5).
    pub publish_unhealthy_after: u32,
    /// The grace of each of shutdown's two waits (`SHUTDOWN_GRACE_SECS`,
    /// default 10): in-flight requests get this long to finish, then (after
    /// the projection stops and the stores flush) the Kafka publisher's
    /// round in progress gets the same, so a SIGTERM is done within about
    /// twice the grace; whatever is not published then stays in the outbox
    /// or the replication slot for the next start.
    pub shutdown_grace: Duration,
    /// Rate limiting (`RATE_LIMIT_*`).
    pub rate_limit: RateLimitConfig,
    /// Largest amount one transaction may move (`MAX_TRANSACTION_AMOUNT`).
    pub max_transaction_amount: Money,
    /// How long an idempotency key's first response is kept
    /// (`IDEMPOTENCY_TTL_SECS`).
    pub idempotency_ttl: Duration,
    /// How long a request waits for another one with the same key.
    pub idempotency_wait: Duration,
    /// How long `GET /accounts` waits for the account read model to apply
    /// every committed event (`READ_YOUR_WRITES_WAIT_MS`, default 2000; 0
    /// turns the wait off). Past it the list is served as it is and
    /// `read_your_writes_timeouts_total` counts it. Commands never wait
    /// for the read model; `GET /accounts/{id}` never serves a row older
    /// than its stream.
    pub read_your_writes_wait: Duration,
    /// How long a transfer may wait for its debit before it fails with
    /// nothing moved (`TRANSFER_TIMEOUT_SECS`, default 30).
    pub transfer_timeout: Duration,
    /// Maximum accepted request body in bytes (64 KiB).
    pub max_body_bytes: usize,
    /// Per-request timeout (`REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// How long a connection may take to send its first bytes and a
    /// request's headers, and stay idle between requests
    /// (`HEADER_READ_TIMEOUT_SECS`, default 10): then it is closed.
    pub header_read_timeout: Duration,
    /// Conflict retries of commands without `expected_version`
    /// (`COMMAND_MAX_ATTEMPTS`).
    pub command_max_attempts: u32,
    /// Authentication (`JWT_SECRET`, ...; see [`AuthConfig`]).
    pub auth: AuthConfig,
    /// Cluster mode (`CLUSTER_SHARDS=1`; see
    /// [`ClusterConfig`](crate::cluster::ClusterConfig)): off by default.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// Proxies whose `X-Forwarded-For` names the client
    /// (`TRUSTED_PROXIES`: addresses or CIDR blocks, comma-separated;
    /// default none, so the TCP peer is the client). See
    /// [`peer`](crate::api::peer).
    pub trusted_proxies: TrustedProxies,
}

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            admin_bind_addr: Some(DEFAULT_ADMIN_BIND_ADDR),
            admin_bind_required: false,
            database_url: None,
            data_dir: None,
            database_schema: "bank".into(),
            pg_batch_processors: DEFAULT_PG_BATCH_PROCESSORS,
            redis_url: None,
            write_behind: false,
            kafka_brokers: None,
            kafka_security: KafkaSecurity::default(),
            data_capture_method: DataCaptureMethod::default(),
            cdc_relay: CdcRelayKind::default(),
            kafka_message_timeout: Duration::from_secs(10),
            cdc_slot_name: None,
            publish_unhealthy_after: es_kafka::health::DEFAULT_UNHEALTHY_AFTER,
            shutdown_grace: Duration::from_secs(10),
            rate_limit: RateLimitConfig::default(),
            max_transaction_amount: Money::from_cents(100_000_000),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            idempotency_wait: Duration::from_secs(5),
            read_your_writes_wait: Duration::from_secs(2),
            transfer_timeout: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            command_max_attempts: 20,
            auth: AuthConfig::default(),
            cluster: None,
            trusted_proxies: TrustedProxies::none(),
        }
    }
}

pub(crate) use crate::error::parse;
pub use crate::error::ConfigError;
pub use es_kafka::{CdcRelayKind, DataCaptureMethod};

/// Requests per minute when `RATE_LIMIT_REQUESTS_PER_MINUTE` is unset: a
/// generous local default (the library default, [`RateLimitConfig::default`],
/// is the stricter 60/min with a burst of 10).
pub const ENV_DEFAULT_REQUESTS_PER_MINUTE: u32 = 1200;
/// Burst when `RATE_LIMIT_BURST` is unset (and the rate is left at its
/// default: a rate set alone gets a burst of at most that rate, so
/// `RATE_LIMIT_REQUESTS_PER_MINUTE=5` lets 5 requests through at once, not
/// 200).
pub const ENV_DEFAULT_BURST: u32 = 200;

impl AppConfig {
    /// Reads the configuration from a variable lookup (the process
    /// environment in the binary; a map in tests). Empty values count as
    /// unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut c = AppConfig {
            rate_limit: RateLimitConfig {
                requests_per_minute: ENV_DEFAULT_REQUESTS_PER_MINUTE,
                burst_size: ENV_DEFAULT_BURST,
                ..RateLimitConfig::default()
            },
            ..AppConfig::default()
        };
        if let Some(v) = get("BIND_ADDR") {
            c.bind_addr = parse("BIND_ADDR", &v)?;
        }
        match get("ADMIN_BIND_ADDR").as_deref() {
            None => {}
            Some("off") => c.admin_bind_addr = None,
            Some(v) => {
                c.admin_bind_addr = Some(parse("ADMIN_BIND_ADDR", v)?);
                c.admin_bind_required = true;
            }
        }
        c.database_url = get("DATABASE_URL");
        c.data_dir = match get("STORE").as_deref() {
            None | Some("sqlite") => Some(get("DATA_DIR").map_or_else(|| PathBuf::from("data"), PathBuf::from)),
            Some("memory") => None,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "STORE",
                    reason: format!("{other:?} is not `sqlite` (the default) or `memory`"),
                })
            }
        };
        if let Some(v) = get("DATABASE_SCHEMA") {
            c.database_schema = v;
        }
        if let Some(v) = get("PG_BATCH_PROCESSORS") {
            c.pg_batch_processors = parse("PG_BATCH_PROCESSORS", &v)?;
            if !(1..=MAX_PG_BATCH_PROCESSORS).contains(&c.pg_batch_processors) {
                return Err(ConfigError::Invalid {
                    name: "PG_BATCH_PROCESSORS",
                    reason: format!("{v:?} is not 1-{MAX_PG_BATCH_PROCESSORS}"),
                });
            }
        }
        c.redis_url = get("REDIS_URL");
        if let Some(v) = get("WRITE_BEHIND") {
            c.write_behind = match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "WRITE_BEHIND",
                        reason: format!("{v:?} is not 1 or 0"),
                    })
                }
            };
            if c.write_behind && c.redis_url.is_none() {
                return Err(ConfigError::Invalid {
                    name: "WRITE_BEHIND",
                    reason: "write-behind needs REDIS_URL".into(),
                });
            }
        }
        c.kafka_brokers = get("KAFKA_BROKERS");
        c.kafka_security = KafkaSecurity(es_kafka::security_settings(get));
        if let Some(v) = get("CDC_RELAY") {
            c.cdc_relay = v.parse().map_err(|e: es_kafka::SetupError| ConfigError::Invalid {
                name: "CDC_RELAY",
                reason: e.to_string(),
            })?;
        }
        if let Some(v) = get("DATA_CAPTURE_METHOD") {
            c.data_capture_method = v.parse().map_err(|e: es_kafka::SetupError| ConfigError::Invalid {
                name: "DATA_CAPTURE_METHOD",
                reason: e.to_string(),
            })?;
        }
        c.cdc_slot_name = get("CDC_SLOT_NAME");
        if let Some(v) = get("KAFKA_MESSAGE_TIMEOUT_MS") {
            c.kafka_message_timeout = Duration::from_millis(parse("KAFKA_MESSAGE_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = get("PUBLISH_UNHEALTHY_AFTER_ROUNDS") {
            c.publish_unhealthy_after = parse("PUBLISH_UNHEALTHY_AFTER_ROUNDS", &v)?;
        }
        if let Some(v) = get("SHUTDOWN_GRACE_SECS") {
            c.shutdown_grace = Duration::from_secs(parse("SHUTDOWN_GRACE_SECS", &v)?);
        }
        if let Some(v) = get("READ_YOUR_WRITES_WAIT_MS") {
            c.read_your_writes_wait = Duration::from_millis(parse("READ_YOUR_WRITES_WAIT_MS", &v)?);
        }
        if let Some(v) = get("TRANSFER_TIMEOUT_SECS") {
            c.transfer_timeout = Duration::from_secs(parse("TRANSFER_TIMEOUT_SECS", &v)?);
            // A deadline is the request's time plus this: bounded, so the
            // sum stays a date (a larger value failed every transfer).
            if c.transfer_timeout.is_zero() || c.transfer_timeout > MAX_TRANSFER_TIMEOUT {
                return Err(ConfigError::Invalid {
                    name: "TRANSFER_TIMEOUT_SECS",
                    reason: format!("{v:?} is not 1-{}", MAX_TRANSFER_TIMEOUT.as_secs()),
                });
            }
        }
        if let Some(v) = get("RATE_LIMIT_REQUESTS_PER_MINUTE") {
            c.rate_limit.requests_per_minute = parse("RATE_LIMIT_REQUESTS_PER_MINUTE", &v)?;
        }
        match get("RATE_LIMIT_BURST") {
            Some(v) => c.rate_limit.burst_size = parse("RATE_LIMIT_BURST", &v)?,
            None if c.rate_limit.requests_per_minute > 0 => {
                c.rate_limit.burst_size = ENV_DEFAULT_BURST.min(c.rate_limit.requests_per_minute);
            }
            None => {}
        }
        if let Some(v) = get("RATE_LIMIT_WINDOW_SECS") {
            c.rate_limit.window_size = Duration::from_secs(parse("RATE_LIMIT_WINDOW_SECS", &v)?);
            if c.rate_limit.window_size > crate::rate_limit::MAX_EMISSION_INTERVAL {
                return Err(ConfigError::Invalid {
                    name: "RATE_LIMIT_WINDOW_SECS",
                    reason: format!(
                        "{v:?} is more than {} seconds (10 years)",
                        crate::rate_limit::MAX_EMISSION_INTERVAL.as_secs()
                    ),
                });
            }
        }
        if let Some(v) = get("RATE_LIMIT_MAX_CLIENTS") {
            c.rate_limit.max_clients = parse("RATE_LIMIT_MAX_CLIENTS", &v)?;
        }
        if let Some(v) = get("MAX_TRANSACTION_AMOUNT") {
            c.max_transaction_amount = v.parse().map_err(|e| ConfigError::Invalid {
                name: "MAX_TRANSACTION_AMOUNT",
                reason: format!("{v:?} {e}"),
            })?;
        }
        if let Some(v) = get("IDEMPOTENCY_TTL_SECS") {
            c.idempotency_ttl = Duration::from_secs(parse("IDEMPOTENCY_TTL_SECS", &v)?);
        }
        if let Some(v) = get("REQUEST_TIMEOUT_SECS") {
            c.request_timeout = Duration::from_secs(parse("REQUEST_TIMEOUT_SECS", &v)?);
        }
        if let Some(v) = get("HEADER_READ_TIMEOUT_SECS") {
            c.header_read_timeout = Duration::from_secs(parse("HEADER_READ_TIMEOUT_SECS", &v)?);
            if c.header_read_timeout.is_zero() {
                return Err(ConfigError::Invalid {
                    name: "HEADER_READ_TIMEOUT_SECS",
                    reason: "must be at least 1".into(),
                });
            }
        }
        if let Some(v) = get("COMMAND_MAX_ATTEMPTS") {
            c.command_max_attempts = parse("COMMAND_MAX_ATTEMPTS", &v)?;
        }
        c.cluster = crate::cluster::ClusterConfig::from_lookup(get, c.redis_url.as_deref(), c.database_url.as_deref())?;
        if let Some(v) = get("TRUSTED_PROXIES") {
            c.trusted_proxies = v.parse().map_err(|reason| ConfigError::Invalid {
                name: "TRUSTED_PROXIES",
                reason,
            })?;
        }
        let persistence = match (&c.database_url, &c.data_dir) {
            // A store configured by URL (a SQLite file elsewhere too) needs
            // its secrets set: only the one-command default draws them.
            (Some(_), _) => Persistence::Database,
            (None, Some(_)) => Persistence::EmbeddedFile,
            (None, None) => Persistence::Nothing,
        };
        c.auth = AuthConfig::from_lookup(get, persistence)?;
        Ok(c)
    }

    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn a_configured_store_needs_its_secrets_the_default_file_does_not() {
        for url in ["sqlite://data/x.db", "postgres://h/db"] {
            let configured = AppConfig::from_lookup(|k| (k == "DATABASE_URL").then(|| url.to_owned()));
            assert!(configured.unwrap_err().to_string().contains("JWT_SECRET"), "{url}");
        }
        let default = AppConfig::from_lookup(|_| None);
        assert!(default.is_ok(), "{default:?}");
    }

    #[test]
    fn a_rate_set_alone_gets_a_burst_no_larger_than_itself() {
        let rate = |v: &'static str| move |k: &str| (k == "RATE_LIMIT_REQUESTS_PER_MINUTE").then(|| v.to_owned());
        let c = AppConfig::from_lookup(rate("5")).unwrap();
        assert_eq!((c.rate_limit.requests_per_minute, c.rate_limit.burst_size), (5, 5));
        let c = AppConfig::from_lookup(rate("6000")).unwrap();
        assert_eq!(c.rate_limit.burst_size, ENV_DEFAULT_BURST);
        let c = AppConfig::from_lookup(|_| None).unwrap();
        assert_eq!(c.rate_limit.burst_size, ENV_DEFAULT_BURST);
        let both: HashMap<&str, &str> = [("RATE_LIMIT_REQUESTS_PER_MINUTE", "5"), ("RATE_LIMIT_BURST", "50")].into();
        let c = AppConfig::from_lookup(|k| both.get(k).map(std::string::ToString::to_string)).unwrap();
        assert_eq!(c.rate_limit.burst_size, 50);
    }

    #[test]
    fn reads_variables_with_defaults() {
        let vars: HashMap<&str, &str> = [
            ("BIND_ADDR", "0.0.0.0:8080"),
            ("RATE_LIMIT_REQUESTS_PER_MINUTE", "0"),
            ("DATA_CAPTURE_METHOD", "outbox_poller"),
            ("REDIS_URL", " "),
        ]
        .into();
        let c = AppConfig::from_lookup(|k| vars.get(k).map(std::string::ToString::to_string)).unwrap();
        assert_eq!(c.bind_addr.port(), 8080);
        assert_eq!(c.rate_limit.requests_per_minute, 0);
        assert_eq!(c.rate_limit.burst_size, ENV_DEFAULT_BURST);
        assert_eq!(c.data_capture_method, DataCaptureMethod::OutboxPoller);
        assert_eq!(c.redis_url, None);
        assert_eq!(
            c.data_dir,
            Some(PathBuf::from("data")),
            "the server persists by default"
        );
    }

    #[test]
    fn batch_processors_are_1_to_8() {
        let with =
            |v: &'static str| AppConfig::from_lookup(move |k| (k == "PG_BATCH_PROCESSORS").then(|| v.to_string()));
        assert_eq!(with("1").unwrap().pg_batch_processors, 1);
        assert_eq!(AppConfig::from_lookup(|_| None).unwrap().pg_batch_processors, 1);
        assert_eq!(AppConfig::default().pg_batch_processors, DEFAULT_PG_BATCH_PROCESSORS);
        assert_eq!(with("2").unwrap().pg_batch_processors, 2);
        assert_eq!(with("8").unwrap().pg_batch_processors, 8);
        for bad in ["0", "9", "two"] {
            let err = with(bad).unwrap_err();
            assert!(err.to_string().contains("PG_BATCH_PROCESSORS"), "{bad}: {err}");
        }
    }

    #[test]
    fn store_memory_and_data_dir() {
        let memory = AppConfig::from_lookup(|k| (k == "STORE").then(|| "memory".to_string())).unwrap();
        assert_eq!(memory.data_dir, None);
        let moved = AppConfig::from_lookup(|k| (k == "DATA_DIR").then(|| "/var/lib/bank".to_string())).unwrap();
        assert_eq!(moved.data_dir, Some(PathBuf::from("/var/lib/bank")));
        let err = AppConfig::from_lookup(|k| (k == "STORE").then(|| "disk".to_string())).unwrap_err();
        assert!(err.to_string().contains("STORE"), "{err}");
        assert_eq!(AppConfig::default().data_dir, None, "library default: nothing on disk");
    }

    #[test]
    fn write_behind_needs_redis() {
        let lookup = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let on = AppConfig::from_lookup(lookup(&[("WRITE_BEHIND", "1"), ("REDIS_URL", "redis://r:6379")])).unwrap();
        assert!(on.write_behind);
        assert!(
            !AppConfig::from_lookup(lookup(&[])).unwrap().write_behind,
            "off by default"
        );
        let err = AppConfig::from_lookup(lookup(&[("WRITE_BEHIND", "1")])).unwrap_err();
        assert!(err.to_string().contains("REDIS_URL"), "{err}");
        let err = AppConfig::from_lookup(lookup(&[("WRITE_BEHIND", "maybe"), ("REDIS_URL", "redis://r")])).unwrap_err();
        assert!(err.to_string().contains("WRITE_BEHIND"), "{err}");
    }

    #[test]
    fn the_admin_listener_is_loopback_by_default_and_can_be_moved_or_turned_off() {
        let default = AppConfig::from_lookup(|_| None).unwrap();
        assert_eq!(default.admin_bind_addr, Some(DEFAULT_ADMIN_BIND_ADDR));
        assert!(!default.admin_bind_required);
        assert!(DEFAULT_ADMIN_BIND_ADDR.ip().is_loopback());
        let moved = AppConfig::from_lookup(|k| (k == "ADMIN_BIND_ADDR").then(|| "10.0.0.5:9100".into())).unwrap();
        assert_eq!(moved.admin_bind_addr, Some("10.0.0.5:9100".parse().unwrap()));
        assert!(moved.admin_bind_required);
        let off = AppConfig::from_lookup(|k| (k == "ADMIN_BIND_ADDR").then(|| "off".into())).unwrap();
        assert_eq!(off.admin_bind_addr, None);
        assert!(AppConfig::from_lookup(|k| (k == "ADMIN_BIND_ADDR").then(|| "loopback".into())).is_err());
    }

    #[test]
    fn kafka_security_settings_come_from_the_environment_and_are_not_printed() {
        let c = AppConfig::from_lookup(|k| match k {
            "KAFKA_SECURITY_PROTOCOL" => Some("SASL_SSL".into()),
            "KAFKA_SASL_PASSWORD" => Some("hunter2-kafka".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.kafka_security.0["security.protocol"], "SASL_SSL");
        assert_eq!(c.kafka_security.0["sasl.password"], "hunter2-kafka");
        assert!(!format!("{c:?}").contains("hunter2-kafka"));
    }

    #[test]
    fn rejects_bad_values() {
        let err = AppConfig::from_lookup(|k| (k == "RATE_LIMIT_BURST").then(|| "many".to_string())).unwrap_err();
        assert!(err.to_string().contains("RATE_LIMIT_BURST"));
        assert!(AppConfig::from_lookup(|k| (k == "MAX_TRANSACTION_AMOUNT").then(|| "1.001".into())).is_err());
        for bad in ["0", "31622401", "18446744073709551615"] {
            let err = AppConfig::from_lookup(|k| (k == "TRANSFER_TIMEOUT_SECS").then(|| bad.into())).unwrap_err();
            assert!(err.to_string().contains("TRANSFER_TIMEOUT_SECS"), "{bad}: {err}");
        }
        let year = AppConfig::from_lookup(|k| (k == "TRANSFER_TIMEOUT_SECS").then(|| "31622400".into())).unwrap();
        assert_eq!(year.transfer_timeout, MAX_TRANSFER_TIMEOUT);
    }

    #[test]
    fn a_rate_limit_window_beyond_ten_years_is_refused() {
        let err = AppConfig::from_lookup(|k| (k == "RATE_LIMIT_WINDOW_SECS").then(|| u64::MAX.to_string()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("RATE_LIMIT_WINDOW_SECS"), "{err}");
        let ten = crate::rate_limit::MAX_EMISSION_INTERVAL.as_secs().to_string();
        let ok = AppConfig::from_lookup(|k| (k == "RATE_LIMIT_WINDOW_SECS").then(|| ten.clone())).unwrap();
        assert_eq!(ok.rate_limit.window_size, crate::rate_limit::MAX_EMISSION_INTERVAL);
    }
}
