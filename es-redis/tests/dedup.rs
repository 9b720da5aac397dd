//! Command de-duplication against the real Redis.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use es_core::{CommandDeduplicator, DedupError, DedupStatus, InMemoryEventStore, Repository};
use es_redis::{DedupConfig, RedisDeduplicator, RunError};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_commands_apply_exactly_once() {
    let p = prefix();
    let store = Arc::new(InMemoryEventStore::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..50 {
        // Several "instances": each has its own de-duplicator and repository.
        let dedup = RedisDeduplicator::new(dedup_config(&p)).unwrap();
        let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store)).build();
        let runs = Arc::clone(&runs);
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                tokio::task::yield_now().await;
            }
            dedup
                .run("deposit-req-1", Duration::from_secs(60), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let out = repo.execute("acct-1", AccountCommand::Deposit(100)).await?;
                    Ok::<_, es_core::RepositoryError<InsufficientFunds>>(
                        json!({ "version": out.version, "balance": out.state.balance }),
                    )
                })
                .await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap().unwrap());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the command body ran once");
    assert!(outcomes.iter().all(|o| *o == json!({ "version": 1, "balance": 100 })));
    let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store)).build();
    let state = repo.load("acct-1").await.unwrap();
    assert_eq!((state.state.balance, state.version), (100, 1), "applied exactly once");
    cleanup(&p).await;
}

#[tokio::test]
async fn in_progress_then_completed() {
    let p = prefix();
    let dedup = RedisDeduplicator::new(dedup_config(&p)).unwrap();
    let claim = dedup.begin("k").await.unwrap().into_claim().expect("started");
    assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::InProgress);
    let err = dedup.begin_or_wait("k", Duration::from_millis(60)).await.unwrap_err();
    assert!(matches!(err, DedupError::InProgress { ref key } if key == "k"), "{err}");

    // A waiter gets the outcome once the owner completes (whether it
    // started waiting before or after).
    let waiter = {
        let dedup = dedup.clone();
        tokio::spawn(async move { dedup.begin_or_wait("k", Duration::from_secs(60)).await })
    };
    dedup.complete("k", &claim, &json!({ "ok": 1 })).await.unwrap();
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        DedupStatus::Completed(json!({ "ok": 1 }))
    );
    assert_eq!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Completed(json!({ "ok": 1 }))
    );

    // Abandon never drops a completed outcome.
    dedup.abandon("k", &claim).await.unwrap();
    assert_eq!(
        dedup.begin("k").await.unwrap(),
        DedupStatus::Completed(json!({ "ok": 1 }))
    );
    cleanup(&p).await;
}

#[tokio::test]
async fn failed_command_can_be_retried() {
    let p = prefix();
    let dedup = RedisDeduplicator::new(dedup_config(&p)).unwrap();
    let first = dedup
        .run("k", Duration::from_secs(1), || async {
            Err::<serde_json::Value, _>(std::io::Error::other("boom"))
        })
        .await;
    assert!(matches!(first, Err(RunError::Command(_))));
    let second = dedup
        .run("k", Duration::from_secs(1), || async {
            Ok::<_, std::io::Error>(json!("done"))
        })
        .await
        .unwrap();
    assert_eq!(second, json!("done"));
    let third = dedup
        .run("k", Duration::from_secs(1), || async {
            Ok::<_, std::io::Error>(json!("again"))
        })
        .await
        .unwrap();
    assert_eq!(third, json!("done"), "completed outcome is replayed");
    cleanup(&p).await;
}

#[tokio::test]
async fn abandoned_in_flight_mark_expires_and_window_ends() {
    let p = prefix();
    let config = DedupConfig {
        in_flight_ttl: Duration::from_millis(100),
        // Long enough that the completed outcome is seen however slow the
        // machine; the window is then ended by hand below.
        window: Duration::from_secs(3600),
        ..dedup_config(&p)
    };
    let dedup = RedisDeduplicator::new(config).unwrap();
    assert!(dedup.begin("k").await.unwrap().is_started());
    // The owner died: its in-flight mark expires in Redis. Asking again
    // while it lives changes nothing (in progress), so poll.
    let status = until_not(&dedup, |s| *s == DedupStatus::InProgress).await;
    let claim = status.into_claim().expect("owner died: mark expired");
    dedup.complete("k", &claim, &json!(1)).await.unwrap();
    assert_eq!(dedup.begin("k").await.unwrap(), DedupStatus::Completed(json!(1)));
    // The window runs out: Redis is made to expire the outcome now.
    let mut c = raw().await;
    let shortened: i64 = redis::cmd("PEXPIRE")
        .arg(format!("{p}:dedup:k"))
        .arg(50)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(shortened, 1, "the outcome's key is there to expire");
    let status = until_not(&dedup, |s| *s == DedupStatus::Completed(json!(1))).await;
    assert!(status.is_started(), "window ended");
    cleanup(&p).await;
}

#[tokio::test]
async fn claims_conform() {
    let p = prefix();
    let ttl = Duration::from_secs(1);
    let dedup = RedisDeduplicator::new(DedupConfig {
        in_flight_ttl: ttl,
        ..dedup_config(&p)
    })
    .unwrap();
    es_core::conformance::deduplicator_claims(&dedup, ttl).await;
    cleanup(&p).await;
}

/// `begin("k")` polled (a minute at most) until its answer is not `still`.
async fn until_not(dedup: &RedisDeduplicator, still: impl Fn(&DedupStatus) -> bool) -> DedupStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = dedup.begin("k").await.unwrap();
        if !still(&status) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "still {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
