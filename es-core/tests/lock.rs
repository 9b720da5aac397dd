//! Locks: mutual exclusion under contention, expiry with older tokens,
//! release on drop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use es_core::{InMemoryLockManager, LockManager, LockRetry, ManualClock};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_exclusion_under_contention() {
    let locks = InMemoryLockManager::with_retry(LockRetry {
        attempts: 10_000,
        delay: Duration::from_millis(1),
    });
    let inside = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (locks, inside, done) = (locks.clone(), inside.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for _ in 0..10 {
                let guard = locks.acquire("k", Duration::from_secs(10)).await.unwrap();
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                tokens.push(guard.fencing_token());
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                assert!(guard.release().await.unwrap());
                done.fetch_add(1, Ordering::SeqCst);
            }
            tokens
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(done.load(Ordering::SeqCst), 160);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 160, "every acquisition has its own token");
}

#[tokio::test]
async fn expired_holder_loses_the_lock_and_its_token_is_older() {
    let clock = ManualClock::at("2026-01-01T00:00:00Z".parse().unwrap());
    let locks = InMemoryLockManager::with_retry_and_clock(LockRetry::default(), Arc::new(clock.clone()));
    let stale = locks.acquire("k", Duration::from_secs(30)).await.unwrap();
    clock.advance(chrono::Duration::seconds(29));
    assert!(
        locks.try_acquire("k", Duration::from_secs(5)).await.unwrap().is_none(),
        "held until its TTL ends"
    );
    clock.advance(chrono::Duration::seconds(1));
    let fresh = locks.acquire("k", Duration::from_secs(5)).await.unwrap();
    assert!(fresh.fencing_token() > stale.fencing_token());
    assert!(
        !stale.extend(Duration::from_secs(5)).await.unwrap(),
        "lost lease cannot be extended"
    );
    assert!(
        !locks.release(stale.lease()).await.unwrap(),
        "non-owner release refused"
    );
    assert!(
        locks.try_acquire("k", Duration::from_secs(1)).await.unwrap().is_none(),
        "fresh holder still holds it"
    );
    assert!(fresh.extend(Duration::from_secs(5)).await.unwrap());
    assert!(fresh.release().await.unwrap());
    assert!(locks.try_acquire("k", Duration::from_secs(1)).await.unwrap().is_some());
}

#[tokio::test]
async fn dropped_guard_releases_and_contention_errors() {
    let locks = InMemoryLockManager::with_retry(LockRetry {
        attempts: 3,
        delay: Duration::from_millis(1),
    });
    let held = locks.acquire("k", Duration::from_secs(5)).await.unwrap();
    assert!(locks.acquire("k", Duration::from_secs(5)).await.is_err());
    drop(held);
    // The release runs in a task of its own: poll (a minute at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(g) = locks.try_acquire("k", Duration::from_secs(1)).await.unwrap() {
            assert!(g.release().await.unwrap());
            return;
        }
        assert!(std::time::Instant::now() < deadline, "drop did not release the lock");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
