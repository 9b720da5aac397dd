//! Distributed locks and the locked repository against the real Redis.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use es_core::{InMemoryEventStore, Lease, LockManager, Repository};
use es_redis::{LockConfig, LockedRepository, RedisLockManager, FENCING_TOKEN_HEADER};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_exclusion_under_contention() {
    let p = prefix();
    let inside = Arc::new(AtomicUsize::new(0));
    let max_inside = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..16 {
        // One manager per task: as many "processes" as tasks.
        let locks = RedisLockManager::new(LockConfig {
            retry_attempts: 2000,
            retry_delay: Duration::from_millis(2),
            ..lock_config(&p)
        })
        .unwrap();
        let (inside, max_inside, tokens) = (Arc::clone(&inside), Arc::clone(&max_inside), Arc::clone(&tokens));
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let guard = locks.acquire("hot", Duration::from_secs(5)).await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
                tokens.lock().unwrap().push(guard.fencing_token());
                if t % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    tokio::task::yield_now().await;
                }
                inside.fetch_sub(1, Ordering::SeqCst);
                assert!(guard.release().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(max_inside.load(Ordering::SeqCst), 1, "never two holders at once");
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 160);
    assert!(
        tokens.windows(2).all(|w| w[0] < w[1]),
        "tokens increase in acquisition order"
    );
    cleanup(&p).await;
}

/// Polls (a minute at most) until the lock is free and takes it.
async fn until_free(locks: &RedisLockManager, key: &str) -> es_core::LockGuard {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(guard) = locks.try_acquire(key, Duration::from_secs(60)).await.unwrap() {
            return guard;
        }
        assert!(std::time::Instant::now() < deadline, "the lease of {key} never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Milliseconds to live of a lock's key in Redis.
async fn lease_ttl_ms(prefix: &str, key: &str) -> i64 {
    let mut c = raw().await;
    redis::cmd("PTTL")
        .arg(format!("{prefix}:lock:{key}"))
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn stalled_holder_loses_the_lock_and_its_token_is_older() {
    let p = prefix();
    let locks = RedisLockManager::new(lock_config(&p)).unwrap();
    // A lease long enough to be seen held however slow the machine...
    let stale = locks.acquire("k", Duration::from_secs(60)).await.unwrap();
    assert!(locks.try_acquire("k", Duration::from_secs(60)).await.unwrap().is_none());
    // ...then the holder stalls past its TTL: Redis is made to expire the
    // lease now (as if its time had run out), and we poll until it did.
    let mut c = raw().await;
    let shortened: i64 = redis::cmd("PEXPIRE")
        .arg(format!("{p}:lock:k"))
        .arg(50)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(shortened, 1, "the lease's key is there to expire");
    let fresh = until_free(&locks, "k").await;
    assert!(
        fresh.fencing_token() > stale.fencing_token(),
        "stale token is detectably older"
    );
    assert!(
        !stale.extend(Duration::from_secs(60)).await.unwrap(),
        "stale holder cannot extend"
    );
    assert!(!stale.release().await.unwrap(), "stale holder cannot release");
    assert!(
        locks.try_acquire("k", Duration::from_secs(60)).await.unwrap().is_none(),
        "fresh holder still holds"
    );
    assert!(fresh.release().await.unwrap());
    cleanup(&p).await;
}

#[tokio::test]
async fn release_by_non_owner_is_refused_and_extend_works() {
    let p = prefix();
    let locks = RedisLockManager::new(lock_config(&p)).unwrap();
    let guard = locks.acquire("k", Duration::from_secs(60)).await.unwrap();
    let forged = Lease {
        owner: uuid::Uuid::new_v4(),
        ..guard.lease().clone()
    };
    assert!(!locks.release(&forged).await.unwrap(), "non-owner release refused");
    assert!(
        !locks.extend(&forged, Duration::from_secs(5)).await.unwrap(),
        "non-owner extend refused"
    );
    assert!(
        locks.try_acquire("k", Duration::from_secs(1)).await.unwrap().is_none(),
        "still held"
    );

    // Extending sets the lease's time to live anew (seen on the key in
    // Redis), without waiting for the old one to run out.
    assert!(guard.extend(Duration::from_secs(600)).await.unwrap());
    let ttl = lease_ttl_ms(&p, "k").await;
    assert!(ttl > 60_000, "the lease was extended to 600 s, {ttl} ms left");
    assert!(
        locks.try_acquire("k", Duration::from_secs(1)).await.unwrap().is_none(),
        "extended lease holds"
    );
    assert!(guard.release().await.unwrap());
    assert!(
        locks.try_acquire("k", Duration::from_secs(1)).await.unwrap().is_some(),
        "released"
    );

    // Contended acquire gives up after the configured attempts.
    let few = RedisLockManager::new(LockConfig {
        retry_attempts: 3,
        retry_delay: Duration::from_millis(5),
        ..lock_config(&p)
    })
    .unwrap();
    let _held = few.acquire("busy", Duration::from_secs(5)).await.unwrap();
    let err = few.acquire("busy", Duration::from_secs(5)).await.unwrap_err();
    assert!(
        matches!(err, es_core::LockError::Contended { attempts: 3, .. }),
        "{err}"
    );
    cleanup(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn locked_repositories_serialize_a_hot_stream_and_record_tokens() {
    let p = prefix();
    let store = Arc::new(InMemoryEventStore::new());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        // Four instances: own repository (own in-process queue), own locks.
        let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store))
            .retry(es_core::RetryPolicy::never())
            .build();
        let locks = Arc::new(
            RedisLockManager::new(LockConfig {
                retry_attempts: 2000,
                retry_delay: Duration::from_millis(2),
                ..lock_config(&p)
            })
            .unwrap(),
        );
        let locked = LockedRepository::new(repo, locks, Duration::from_secs(5));
        for _ in 0..3 {
            let locked = locked.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..10 {
                    locked.execute("hot", AccountCommand::Deposit(1)).await.unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store)).build();
    let history = repo.history("hot").await.unwrap();
    assert_eq!(
        history.len(),
        120,
        "all accepted without conflict retries (retry policy: never)"
    );
    let tokens: Vec<u64> = history
        .iter()
        .map(|e| e.metadata.headers[FENCING_TOKEN_HEADER].parse().unwrap())
        .collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "token order is version order");
    cleanup(&p).await;
}

/// The token counter lost (a Redis restarted without persistence): the
/// first locked command on a stream written before is fenced off and
/// raises the counter past the stream's token; the next one goes through.
#[tokio::test]
async fn a_lost_token_counter_fences_off_one_command_then_heals() {
    let p = prefix();
    let store = Arc::new(InMemoryEventStore::new());
    let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store)).build();
    let locks = Arc::new(RedisLockManager::new(lock_config(&p)).unwrap());
    let locked = LockedRepository::new(repo, locks, Duration::from_secs(5));
    for _ in 0..5 {
        locked.execute("x", AccountCommand::Deposit(1)).await.unwrap();
    }
    let mut c = raw().await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}:lock:__fencing_token"))
        .query_async(&mut c)
        .await
        .unwrap();
    let fenced = locked.execute("x", AccountCommand::Deposit(1)).await;
    assert!(
        matches!(
            fenced,
            Err(es_redis::LockedError::Repository(
                es_core::RepositoryError::Fenced { .. }
            ))
        ),
        "{fenced:?}"
    );
    let out = locked.execute("x", AccountCommand::Deposit(1)).await.unwrap();
    assert_eq!(out.version, 6, "the retry is appended after the five");
    cleanup(&p).await;
}
