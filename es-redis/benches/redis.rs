//! Cache hit paths and lock round trips against the real Redis
//! (`REDIS_URL`, default `redis://127.0.0.1:6379`).
//!
//! `cargo bench -p es-redis -- --quick`
// criterion_group! defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use es_core::{Aggregate, DomainEvent, LockManager, StateCache, StreamId, Versioned};
use es_redis::{CacheConfig, LockConfig, RedisConfig, RedisLockManager, RedisStateCache};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Account {
    balance: i64,
    owner: String,
    flags: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposited(i64);

impl DomainEvent for Deposited {
    fn event_type(&self) -> &'static str {
        "Deposited"
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "bench-account";
    type Command = i64;
    type Event = Deposited;
    type Error = std::convert::Infallible;
    fn handle(&self, n: &i64) -> Result<Vec<Deposited>, Self::Error> {
        Ok(vec![Deposited(*n)])
    }
    fn apply(&mut self, Deposited(n): &Deposited) {
        self.balance += n;
    }
}

fn redis() -> RedisConfig {
    RedisConfig {
        url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
        response_timeout: Duration::from_secs(2),
        ..RedisConfig::default()
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let prefix = format!("es-redis-bench:{}", uuid::Uuid::new_v4().simple());
    let cache = RedisStateCache::<Account>::new(CacheConfig {
        key_prefix: prefix.clone(),
        l2_ttl: Duration::from_secs(120),
        redis: redis(),
        ..CacheConfig::default()
    })
    .expect("cache");
    let id = StreamId::from("acct-1");
    let state = Versioned {
        state: Account {
            balance: 1234,
            owner: "alice".to_owned(),
            flags: 7,
        },
        version: 42,
    };
    rt.block_on(cache.put(&id, &state));
    assert!(
        rt.block_on(cache.get_from_redis(&id)).is_some(),
        "Redis must be reachable"
    );

    c.bench_function("cache/l1_hit_sync", |b| b.iter(|| cache.get_l1(&id)));
    c.bench_function("cache/l1_hit_state_cache_get", |b| {
        b.to_async(&rt).iter(|| cache.get(&id));
    });
    c.bench_function("cache/l2_hit_redis_round_trip", |b| {
        b.to_async(&rt).iter(|| cache.get_from_redis(&id));
    });

    let locks = RedisLockManager::new(LockConfig {
        lock_prefix: format!("{prefix}:lock:"),
        redis: redis(),
        ..LockConfig::default()
    })
    .expect("locks");
    c.bench_function("lock/acquire_release_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            let guard = locks
                .try_acquire("bench", Duration::from_secs(5))
                .await
                .expect("redis")
                .expect("free");
            assert!(guard.release().await.expect("redis"));
        });
    });

    rt.block_on(async {
        cache.invalidate(&id).await;
        if let Ok(client) = redis::Client::open(redis().url) {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                let _: Result<(), _> = redis::cmd("DEL")
                    .arg(format!("{prefix}:lock:__fencing_token"))
                    .arg(format!("{prefix}:recent:bench-account:s1"))
                    .query_async(&mut conn)
                    .await;
            }
        }
    });
}

criterion_group!(group, benches);
criterion_main!(group);
