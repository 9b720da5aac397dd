//! Redis going away: the cache degrades to the store and recovers; the
//! de-duplicator fails closed (or open when configured); locks report
//! backend errors; excess load is shed. The real Redis is never stopped:
//! clients point at a dead port or at a proxy that is stopped.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use es_core::{
    CommandDeduplicator, DedupError, DedupStatus, InMemoryEventStore, LockError, LockManager, ManualClock, Repository,
    StateCache, StreamId,
};
use es_redis::{
    CacheConfig, CircuitState, DedupConfig, Idempotency, LockConfig, LockedError, LockedRepository, RedisBackend,
    RedisDeduplicator, RedisError, RedisLockManager, RedisStateCache, ResilienceConfig, WhenUnavailable,
};

fn config_at(url: String, prefix: &str) -> CacheConfig {
    CacheConfig {
        redis: redis_config(url),
        resilience: fast_resilience(),
        ..cache_config(prefix)
    }
}

/// A circuit that, once open, stays open for longer than any test runs:
/// a test that sees it open does not race its cool-down.
fn stays_open() -> ResilienceConfig {
    ResilienceConfig {
        open_for: Duration::from_secs(3600),
        ..fast_resilience()
    }
}

#[tokio::test]
async fn unreachable_redis_degrades_to_the_store() {
    let p = prefix();
    let cache = RedisStateCache::<Account>::new(CacheConfig {
        resilience: stays_open(),
        ..config_at(dead_url().await, &p)
    })
    .unwrap();
    let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::new(InMemoryEventStore::new()))
        .cache(Arc::new(cache.clone()))
        .build();
    for _ in 0..20 {
        repo.execute("a", AccountCommand::Deposit(5)).await.unwrap();
    }
    assert_eq!(repo.load("a").await.unwrap().state.balance, 100);
    assert_eq!(
        cache.circuit_state(),
        CircuitState::Open,
        "repeated failures opened the circuit"
    );
    cache.clear_l1();
    assert_eq!(
        cache.get(&StreamId::from("a")).await,
        None,
        "Redis down is a miss, not an error"
    );
}

#[tokio::test]
async fn cache_degrades_when_redis_goes_away_and_resumes_when_it_returns() {
    let p = prefix();
    let proxy = Proxy::start().await;
    // The breaker's cool-down runs on a clock of the test's: the circuit
    // is seen open for as long as the test needs, and cools down when the
    // test moves the clock on.
    let clock = ManualClock::at("2026-01-01T00:00:00Z".parse().unwrap());
    let config = config_at(proxy.url(), &p);
    let backend = RedisBackend::with_clock(
        "state_cache",
        &config.redis,
        &config.resilience,
        Arc::new(clock.clone()),
    )
    .unwrap();
    let cache = RedisStateCache::<Account>::with_backend(config, Arc::new(backend));
    let direct = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store))
        .cache(Arc::new(cache.clone()))
        .build();
    let id = StreamId::from("b");

    repo.execute(&id, AccountCommand::Deposit(10)).await.unwrap();
    assert_eq!(
        direct.get(&id).await.map(|v| v.version),
        Some(1),
        "write-through via the proxy"
    );

    proxy.stop();
    for _ in 0..10 {
        repo.execute(&id, AccountCommand::Deposit(10)).await.unwrap();
    }
    assert_eq!(
        repo.load(id.as_str()).await.unwrap().state.balance,
        110,
        "store keeps serving"
    );
    assert_eq!(cache.circuit_state(), CircuitState::Open);
    direct.clear_l1();
    assert_eq!(
        direct.get(&id).await.map(|v| v.version),
        Some(1),
        "nothing reached Redis while down"
    );

    proxy.restart().await;
    // The circuit stays open for `open_for`, Redis back or not...
    repo.execute(&id, AccountCommand::Deposit(1)).await.unwrap();
    assert_eq!(cache.circuit_state(), CircuitState::Open, "still cooling down");
    direct.clear_l1();
    assert_eq!(
        direct.get(&id).await.map(|v| v.version),
        Some(1),
        "no call while the circuit is open"
    );
    // ...then a probe closes it: let `open_for` pass (again after each
    // round, in case a probe fails while the proxy comes back) and poll
    // until the cache writes through again.
    let open_for = chrono::Duration::from_std(fast_resilience().open_for).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        clock.advance(open_for);
        repo.execute(&id, AccountCommand::Deposit(1)).await.unwrap();
        direct.clear_l1();
        let seen = direct.get(&id).await.map_or(0, |v| v.version);
        if seen >= 13 && cache.circuit_state() == CircuitState::Closed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cache did not resume (L2 at v{seen}, {:?})",
            cache.circuit_state()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cache.clear_l1();
    let from_l2 = cache.get(&id).await.expect("L2 serves again");
    assert_eq!(from_l2.version, store_version(&store, &id).await);
    cleanup(&p).await;
}

async fn store_version(store: &InMemoryEventStore, id: &StreamId) -> u64 {
    es_core::EventStore::stream_version(store, id).await.unwrap()
}

#[tokio::test]
async fn dedup_fails_closed_by_default_and_open_when_configured() {
    let p = prefix();
    let url = dead_url().await;
    let closed = RedisDeduplicator::new(DedupConfig {
        redis: redis_config(url.clone()),
        resilience: fast_resilience(),
        ..dedup_config(&p)
    })
    .unwrap();
    let err = closed.begin("k").await.unwrap_err();
    assert!(
        matches!(err, DedupError::Unavailable { operation: "begin", .. }),
        "{err}"
    );
    let claim = es_core::DedupClaim::new();
    assert!(closed.complete("k", &claim, &serde_json::json!(1)).await.is_err());
    let body_ran = AtomicBool::new(false);
    let ran = closed
        .run("k", Duration::from_secs(1), || async {
            body_ran.store(true, Ordering::SeqCst);
            Ok::<_, std::io::Error>(serde_json::json!("ran"))
        })
        .await;
    assert!(ran.is_err(), "fail closed: the call is refused");
    assert!(
        !body_ran.load(Ordering::SeqCst),
        "fail closed: the command body never ran"
    );

    let open = RedisDeduplicator::new(DedupConfig {
        redis: redis_config(url),
        resilience: fast_resilience(),
        when_unavailable: WhenUnavailable::FailOpen,
        ..dedup_config(&p)
    })
    .unwrap();
    let claim = open.begin("k").await.unwrap().into_claim().expect("started");
    open.complete("k", &claim, &serde_json::json!(1)).await.unwrap();
}

/// Redis goes away while the command runs: the command ran, so `run`
/// answers its outcome rather than "did not run" (which would invite a
/// second run).
#[tokio::test]
async fn a_command_that_ran_is_answered_even_if_its_outcome_cannot_be_stored() {
    let p = prefix();
    let proxy = Proxy::start().await;
    let dedup = RedisDeduplicator::new(DedupConfig {
        redis: redis_config(proxy.url()),
        resilience: fast_resilience(),
        ..dedup_config(&p)
    })
    .unwrap();
    let runs = AtomicUsize::new(0);
    let answer = dedup
        .run("k", Duration::from_secs(1), || async {
            runs.fetch_add(1, Ordering::SeqCst);
            proxy.stop();
            Ok::<_, std::io::Error>(serde_json::json!("ran"))
        })
        .await;
    assert_eq!(answer.unwrap(), serde_json::json!("ran"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    proxy.restart().await;
    // The outcome really went unstored (else this test proved nothing).
    assert_ne!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Completed(serde_json::json!("ran"))
    );
    cleanup(&p).await;
}

#[tokio::test]
async fn locks_report_backend_errors_when_redis_is_down() {
    let p = prefix();
    let locks = RedisLockManager::new(LockConfig {
        redis: redis_config(dead_url().await),
        resilience: fast_resilience(),
        ..lock_config(&p)
    })
    .unwrap();
    let err = locks.try_acquire("k", Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            LockError::Backend {
                operation: "acquire",
                ..
            }
        ),
        "{err}"
    );
    let err = locks.acquire("k", Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(err, LockError::Backend { .. }),
        "backend errors are not retried as contention: {err}"
    );
}

/// Two calls hold the two slots (each waits inside its call until the
/// test lets it go); every call made meanwhile is shed at once, and
/// shedding does not count as a Redis failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_calls_are_shed() {
    let backend = Arc::new(
        RedisBackend::new(
            "shed-test",
            &redis_config(redis_url()),
            &ResilienceConfig {
                max_in_flight: 2,
                ..ResilienceConfig::default()
            },
        )
        .unwrap(),
    );
    let inside = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let call = |backend: Arc<RedisBackend>| {
        let (inside, entered, release) = (Arc::clone(&inside), Arc::clone(&entered), Arc::clone(&release));
        async move {
            backend
                .run("slow", Idempotency::Once, move |mut c| {
                    let (inside, entered, release) = (Arc::clone(&inside), Arc::clone(&entered), Arc::clone(&release));
                    async move {
                        redis::cmd("PING").query_async::<String>(&mut c).await?;
                        inside.fetch_add(1, Ordering::SeqCst);
                        entered.notify_one();
                        let _go = release.acquire().await;
                        Ok(())
                    }
                })
                .await
        }
    };
    let holders: Vec<_> = (0..2).map(|_| tokio::spawn(call(Arc::clone(&backend)))).collect();
    while inside.load(Ordering::SeqCst) < 2 {
        entered.notified().await;
    }
    for _ in 0..10 {
        match call(Arc::clone(&backend)).await {
            Err(RedisError::Shed { max_in_flight: 2, .. }) => {}
            other => panic!("expected the call to be shed, got {other:?}"),
        }
    }
    release.add_permits(2);
    for h in holders {
        h.await.unwrap().unwrap();
    }
    assert_eq!(inside.load(Ordering::SeqCst), 2, "shed calls never ran");
    assert_eq!(
        backend.circuit_state(),
        CircuitState::Closed,
        "shedding is not a Redis failure"
    );
    call(Arc::clone(&backend))
        .await
        .unwrap_or_else(|e| panic!("a free slot serves again: {e}"));
}

/// A locked repository whose Redis dies: commands fail with the typed lock
/// error, the command never runs, and nothing is written.
#[tokio::test]
async fn locked_repository_refuses_commands_when_redis_is_down() {
    let p = prefix();
    let mut server = OwnRedis::start().await;
    let locks = RedisLockManager::new(LockConfig {
        redis: redis_config(server.url()),
        resilience: fast_resilience(),
        ..lock_config(&p)
    })
    .unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store)).build();
    let locked = LockedRepository::new(repo, Arc::new(locks), Duration::from_secs(30));
    locked.execute("a", AccountCommand::Deposit(10)).await.unwrap();

    server.kill();
    for _ in 0..5 {
        match locked.execute("a", AccountCommand::Deposit(10)).await {
            Err(LockedError::Lock {
                source: LockError::Backend { .. },
                ..
            }) => {}
            other => panic!("expected a lock backend error, got {other:?}"),
        }
    }
    assert_eq!(store_version(&store, &StreamId::from("a")).await, 1, "nothing written");
    assert_eq!(locked.repository().load("a").await.unwrap().state.balance, 10);
}

/// Redis killed and started again (a server of the test's own): once the
/// circuit lets a probe through, the probe and the calls after it go
/// through, whichever pooled connection they take. A connection that
/// failed is replaced, not asked again: its own reconnection, tried while
/// Redis was down, failed, and would answer the next call with that
/// failure (reopening the circuit once per pooled connection).
#[tokio::test]
async fn after_a_restart_the_first_probe_closes_the_circuit_whatever_connection_it_takes() {
    let mut redis = OwnRedis::start().await;
    let clock = ManualClock::at("2026-01-01T00:00:00Z".parse().unwrap());
    let resilience = ResilienceConfig {
        failure_threshold: 1,
        open_for: Duration::from_secs(1),
        retry_attempts: 1,
        ..ResilienceConfig::default()
    };
    let config = es_redis::RedisConfig {
        pool_size: 4,
        ..redis_config(redis.url())
    };
    let backend = RedisBackend::with_clock("probe", &config, &resilience, Arc::new(clock.clone())).unwrap();
    let ping = || {
        backend.run("ping", Idempotency::Idempotent, |mut c| async move {
            redis::cmd("PING").query_async::<String>(&mut c).await
        })
    };
    // Every pooled connection made.
    for _ in 0..8 {
        assert_eq!(ping().await.unwrap(), "PONG");
    }

    redis.kill();
    // Each connection fails at least once while Redis is down (the clock
    // moved on each time so that the circuit lets the call through).
    for _ in 0..12 {
        clock.advance(chrono::Duration::seconds(2));
        let e = ping().await.unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend.circuit_state(), CircuitState::Open);
    // Long enough for every connection's own reconnection (started by
    // its last failure, one retry after a backoff of up to a second or so)
    // to have given up while Redis is still down.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    redis.restart().await;
    for i in 0..8 {
        clock.advance(chrono::Duration::seconds(2));
        let answer = ping().await;
        assert!(answer.is_ok(), "call {i} after the restart: {answer:?}");
        assert_eq!(backend.circuit_state(), CircuitState::Closed, "call {i}");
    }
}
