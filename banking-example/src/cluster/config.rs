//! [`ClusterConfig`]: the shard-ownership settings of the server
//! (`CLUSTER_SHARDS=1` and the `SHARD_*` variables).

use std::time::Duration;

use es_redis::ShardConfig;

use crate::error::{parse, ConfigError};

/// Cluster mode: several server instances share PostgreSQL and Redis and
/// split the accounts between them by shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// The shard protocol (`SHARD_COUNT` default 16, `SHARD_LEASE_TTL_MS`
    /// default 5000, `SHARD_REBALANCE_INTERVAL_MS` default 1000,
    /// `SHARD_REBALANCE_THRESHOLD` default 0.2,
    /// `SHARD_LOCK_RETRY_INTERVAL_MS` default 100, `SHARD_MAX_RETRIES`
    /// default 3, `SHARD_MIN_PER_INSTANCE` default 0,
    /// `SHARD_MAX_PER_INSTANCE` default unlimited, `SHARD_KEY_PREFIX`
    /// default `bank:shards:`; the last three and the lease TTL are also
    /// read under their fields' names, `SHARD_MIN_SHARDS_PER_INSTANCE`,
    /// `SHARD_MAX_SHARDS_PER_INSTANCE` and `SHARD_LOCK_TIMEOUT_MS`). Its
    /// Redis URL is `REDIS_URL`.
    pub shards: ShardConfig,
    /// The base URL other instances reach this one at
    /// (`CLUSTER_ADVERTISE_URL`; default `http://` + the bound address,
    /// which is only right when binding a routable address: bound to
    /// `0.0.0.0` or `[::]` without it, the server refuses to start).
    pub advertise_url: Option<String>,
}

impl ClusterConfig {
    /// Reads the settings when `CLUSTER_SHARDS=1` (`None` otherwise).
    /// Cluster mode needs `REDIS_URL` and a PostgreSQL `DATABASE_URL`: the
    /// leases live in Redis and the fences in PostgreSQL.
    pub fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        redis_url: Option<&str>,
        database_url: Option<&str>,
    ) -> Result<Option<Self>, ConfigError> {
        match get("CLUSTER_SHARDS").as_deref() {
            None | Some("0" | "false") => return Ok(None),
            Some("1" | "true") => {}
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CLUSTER_SHARDS",
                    reason: format!("{other:?} is not 1 or 0"),
                })
            }
        }
        let Some(redis_url) = redis_url else {
            return Err(ConfigError::Invalid {
                name: "CLUSTER_SHARDS",
                reason: "cluster mode needs REDIS_URL (shard leases live in Redis)".into(),
            });
        };
        if !database_url.is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid {
                name: "CLUSTER_SHARDS",
                reason: "cluster mode needs a PostgreSQL DATABASE_URL (the store fences stale shard owners)".into(),
            });
        }
        let mut shards = ShardConfig {
            key_prefix: "bank:shards:".into(),
            ..ShardConfig::default()
        };
        shards.redis.url = redis_url.to_owned();
        let millis = |name: &'static str| -> Result<Option<Duration>, ConfigError> {
            get(name)
                .map(|v| parse(name, &v).map(Duration::from_millis))
                .transpose()
        };
        if let Some(v) = get("SHARD_COUNT") {
            shards.shard_count = parse("SHARD_COUNT", &v)?;
        }
        for name in ["SHARD_LOCK_TIMEOUT_MS", "SHARD_LEASE_TTL_MS"] {
            if let Some(d) = millis(name)? {
                shards.lock_timeout = d;
            }
        }
        if let Some(d) = millis("SHARD_REBALANCE_INTERVAL_MS")? {
            shards.rebalance_interval = d;
        }
        if let Some(v) = get("SHARD_REBALANCE_THRESHOLD") {
            shards.rebalance_threshold = parse("SHARD_REBALANCE_THRESHOLD", &v)?;
        }
        if let Some(d) = millis("SHARD_LOCK_RETRY_INTERVAL_MS")? {
            shards.lock_retry_interval = d;
        }
        if let Some(v) = get("SHARD_MAX_RETRIES") {
            shards.max_retries = parse("SHARD_MAX_RETRIES", &v)?;
        }
        // Each also under the name of its `ShardConfig` field.
        for name in ["SHARD_MIN_PER_INSTANCE", "SHARD_MIN_SHARDS_PER_INSTANCE"] {
            if let Some(v) = get(name) {
                shards.min_shards_per_instance = parse(name, &v)?;
            }
        }
        for name in ["SHARD_MAX_PER_INSTANCE", "SHARD_MAX_SHARDS_PER_INSTANCE"] {
            if let Some(v) = get(name) {
                shards.max_shards_per_instance = parse(name, &v)?;
            }
        }
        if let Some(v) = get("SHARD_KEY_PREFIX") {
            shards.key_prefix = v;
        }
        if let Err(e) = shards.validate() {
            // The reason names other fields too: by their settings here.
            let reason = SETTINGS
                .iter()
                .fold(e.reason, |reason, (field, setting)| reason.replace(field, setting));
            return Err(ConfigError::Invalid {
                name: setting_of(e.field),
                reason,
            });
        }
        Ok(Some(Self {
            shards,
            advertise_url: get("CLUSTER_ADVERTISE_URL").map(|u| u.trim_end_matches('/').to_owned()),
        }))
    }
}

/// Each validated [`ShardConfig`] field and its setting.
const SETTINGS: [(&str, &str); 6] = [
    ("shard_count", "SHARD_COUNT"),
    ("rebalance_interval", "SHARD_REBALANCE_INTERVAL_MS"),
    ("lock_timeout", "SHARD_LEASE_TTL_MS"),
    ("rebalance_threshold", "SHARD_REBALANCE_THRESHOLD"),
    ("min_shards_per_instance", "SHARD_MIN_PER_INSTANCE"),
    ("max_shards_per_instance", "SHARD_MAX_PER_INSTANCE"),
];

/// The setting of a [`ShardConfig`] field.
fn setting_of(field: &str) -> &'static str {
    SETTINGS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or("SHARD_*", |(_, setting)| setting)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        vars: &[(&str, &str)],
        redis: Option<&str>,
        db: Option<&str>,
    ) -> Result<Option<ClusterConfig>, ConfigError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        ClusterConfig::from_lookup(|n| vars.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()), redis, db)
    }

    #[test]
    fn off_unless_asked() {
        assert_eq!(read(&[], None, None).unwrap(), None);
        assert_eq!(read(&[("CLUSTER_SHARDS", "0")], None, None).unwrap(), None);
    }

    #[test]
    fn refuses_to_start_without_redis_or_postgres() {
        let on = [("CLUSTER_SHARDS", "1")];
        let e = read(&on, None, Some("postgres://x")).unwrap_err().to_string();
        assert!(e.contains("REDIS_URL"), "{e}");
        let e = read(&on, Some("redis://x"), None).unwrap_err().to_string();
        assert!(e.contains("DATABASE_URL"), "{e}");
        let e = read(&on, Some("redis://x"), Some("sqlite://bank.db"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("PostgreSQL"), "{e}");
    }

    #[test]
    fn reads_every_shard_setting() {
        let c = read(
            &[
                ("CLUSTER_SHARDS", "1"),
                ("SHARD_COUNT", "32"),
                ("SHARD_LEASE_TTL_MS", "3000"),
                ("SHARD_REBALANCE_INTERVAL_MS", "500"),
                ("SHARD_REBALANCE_THRESHOLD", "0.5"),
                ("SHARD_LOCK_RETRY_INTERVAL_MS", "50"),
                ("SHARD_MAX_RETRIES", "5"),
                ("SHARD_MIN_PER_INSTANCE", "1"),
                ("SHARD_MAX_PER_INSTANCE", "20"),
                ("CLUSTER_ADVERTISE_URL", "http://10.0.0.5:3000/"),
            ],
            Some("redis://r"),
            Some("postgres://p"),
        )
        .unwrap()
        .unwrap();
        let s = &c.shards;
        assert_eq!(
            (
                s.shard_count,
                s.lock_timeout,
                s.rebalance_interval,
                s.rebalance_threshold
            ),
            (32, Duration::from_secs(3), Duration::from_millis(500), 0.5)
        );
        assert_eq!(
            (s.max_retries, s.min_shards_per_instance, s.max_shards_per_instance),
            (5, 1, 20)
        );
        assert_eq!(s.lock_retry_interval, Duration::from_millis(50));
        assert_eq!(s.redis.url, "redis://r");
        assert_eq!(c.advertise_url.as_deref(), Some("http://10.0.0.5:3000"));
        // The names of the `ShardConfig` fields are read too.
        let c = read(
            &[
                ("CLUSTER_SHARDS", "1"),
                ("SHARD_LOCK_TIMEOUT_MS", "4000"),
                ("SHARD_MIN_SHARDS_PER_INSTANCE", "2"),
                ("SHARD_MAX_SHARDS_PER_INSTANCE", "9"),
            ],
            Some("redis://r"),
            Some("postgres://p"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                c.shards.lock_timeout,
                c.shards.min_shards_per_instance,
                c.shards.max_shards_per_instance
            ),
            (Duration::from_secs(4), 2, 9)
        );
        assert!(read(
            &[("CLUSTER_SHARDS", "1"), ("SHARD_COUNT", "0")],
            Some("r"),
            Some("postgres://p")
        )
        .is_err());
        let refusal = |vars: &[(&str, &str)]| match read(vars, Some("r"), Some("postgres://p")) {
            Err(ConfigError::Invalid { name, reason }) => (name, reason),
            other => panic!("{vars:?} accepted: {other:?}"),
        };
        let refused = |vars: &[(&str, &str)]| refusal(vars).0;
        let on = ("CLUSTER_SHARDS", "1");
        assert_eq!(refused(&[on, ("SHARD_LEASE_TTL_MS", "100")]), "SHARD_LEASE_TTL_MS");
        assert_eq!(
            refused(&[on, ("SHARD_REBALANCE_INTERVAL_MS", "0")]),
            "SHARD_REBALANCE_INTERVAL_MS"
        );
        assert_eq!(
            refused(&[on, ("SHARD_REBALANCE_THRESHOLD", "-1")]),
            "SHARD_REBALANCE_THRESHOLD"
        );
        assert_eq!(
            refused(&[on, ("SHARD_MIN_PER_INSTANCE", "5"), ("SHARD_MAX_PER_INSTANCE", "2")]),
            "SHARD_MIN_PER_INSTANCE"
        );
        assert_eq!(
            refused(&[on, ("SHARD_MAX_PER_INSTANCE", "0")]),
            "SHARD_MAX_PER_INSTANCE"
        );
        // The reason speaks of settings, not of the library's fields.
        let (name, reason) = refusal(&[on, ("SHARD_MIN_PER_INSTANCE", "5"), ("SHARD_MAX_PER_INSTANCE", "2")]);
        assert_eq!(name, "SHARD_MIN_PER_INSTANCE");
        assert!(reason.contains("SHARD_MAX_PER_INSTANCE (2)"), "{reason}");
        let (name, reason) = refusal(&[on, ("SHARD_COUNT", "4"), ("SHARD_MIN_PER_INSTANCE", "5")]);
        assert_eq!(name, "SHARD_MIN_PER_INSTANCE");
        assert!(reason.contains("SHARD_COUNT (4)"), "{reason}");
        let (_, reason) = refusal(&[on, ("SHARD_LEASE_TTL_MS", "100")]);
        assert!(reason.contains("SHARD_REBALANCE_INTERVAL_MS"), "{reason}");
        assert!(!reason.contains("rebalance_interval"), "{reason}");
    }
}
