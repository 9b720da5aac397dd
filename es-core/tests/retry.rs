//! Retries: the repository decides again after a version conflict and
//! waits a growing, jittered delay between attempts, and
//! `RetryPolicy::run` (the backends' retry of transient failures) does the
//! same for any operation. A paused tokio clock makes the waits exact: it
//! moves only by the retries' sleeps.
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::counting::CountingStore;
use common::{Wallet, WalletCommand};
use es_core::{EventStore, Repository, RepositoryError, RetryPolicy};

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_delay: Duration::from_millis(100),
        multiplier: 2.0,
        max_delay: Duration::from_secs(5),
        jitter: 0.5,
    }
}

/// A store that answers three appends in a row with a conflict: the
/// command is decided four times and lands once; the waits between the
/// attempts double (100, 200, 400 ms before jitter), each shortened by a
/// random part of at most half, and differ from command to command.
#[tokio::test(start_paused = true)]
async fn conflicts_are_retried_with_growing_jittered_backoff() {
    let store = CountingStore::new();
    let r: Repository<Wallet, CountingStore> = Repository::builder(Arc::clone(&store)).retry(policy()).build();
    let mut first_waits = HashSet::new();
    for n in 0..20 {
        let id = format!("w{n}");
        store.inject_conflicts(3);
        let out = r.execute(id.as_str(), WalletCommand::Credit(1)).await.unwrap();
        assert_eq!((out.conflict_retries, out.version), (3, 1));
        let times = store.append_times(&id);
        assert_eq!(times.len(), 4, "three refused appends and the one that landed");
        let waits: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for (k, wait) in waits.iter().enumerate() {
            let full = Duration::from_millis(100 << k);
            // The timer's resolution is one millisecond.
            assert!(
                *wait >= full / 2 && *wait <= full + Duration::from_millis(1),
                "wait {k} of {id}: {wait:?}, not within [{:?}, {full:?}]",
                full / 2
            );
        }
        first_waits.insert(waits[0]);
    }
    assert_eq!(store.conflicts(), 60);
    assert!(first_waits.len() > 1, "the waits are jittered, not all {first_waits:?}");
}

/// Without jitter the waits are exactly the policy's.
#[tokio::test(start_paused = true)]
async fn without_jitter_the_waits_are_exact() {
    let store = CountingStore::new();
    let r: Repository<Wallet, CountingStore> = Repository::builder(Arc::clone(&store))
        .retry(RetryPolicy {
            jitter: 0.0,
            ..policy()
        })
        .build();
    store.inject_conflicts(3);
    r.execute("w", WalletCommand::Credit(1)).await.unwrap();
    let times = store.append_times("w");
    let waits: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        waits,
        [100, 200, 400].map(Duration::from_millis).to_vec(),
        "100 ms, doubled after each conflict"
    );
}

/// Once the attempts are used up the command fails with a conflict and
/// nothing of it is written.
#[tokio::test(start_paused = true)]
async fn exhausted_retries_fail_with_a_conflict_and_write_nothing() {
    let store = CountingStore::new();
    let r: Repository<Wallet, CountingStore> = Repository::builder(Arc::clone(&store)).retry(policy()).build();
    store.inject_conflicts(4);
    let err = r.execute("w", WalletCommand::Credit(1)).await.unwrap_err();
    assert!(matches!(err, RepositoryError::Conflict { .. }), "{err}");
    assert_eq!((store.appends(), store.conflicts()), (4, 4));
    assert_eq!(store.stream_version(&"w".into()).await.unwrap(), 0);
}

/// `RetryPolicy::run`, the backends' retry of transient failures: every
/// transient failure waits the policy's delay and is reported; the last
/// attempt's error comes back as it is; another error is not retried.
#[tokio::test(start_paused = true)]
async fn run_retries_transient_failures_until_the_attempts_are_spent() {
    let policy = RetryPolicy {
        jitter: 0.0,
        ..policy()
    };
    let calls = std::sync::atomic::AtomicU32::new(0);
    let mut reported = Vec::new();
    let started = tokio::time::Instant::now();
    let result: Result<(), String> = policy
        .run(
            || async {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Err(format!("busy {n}"))
            },
            |e| e.starts_with("busy"),
            |e, attempt| reported.push((e.clone(), attempt)),
        )
        .await;
    assert_eq!(result, Err("busy 4".to_owned()), "the last attempt's error");
    assert_eq!(
        reported,
        vec![
            ("busy 1".to_owned(), 1),
            ("busy 2".to_owned(), 2),
            ("busy 3".to_owned(), 3)
        ]
    );
    // 100 + 200 + 400 ms between the four attempts.
    assert_eq!(started.elapsed(), Duration::from_millis(700));

    let calls = std::sync::atomic::AtomicU32::new(0);
    let started = tokio::time::Instant::now();
    let result: Result<(), &str> = policy
        .run(
            || async {
                calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err("corrupt")
            },
            |e| e.starts_with("busy"),
            |_, _| panic!("a permanent error is not retried"),
        )
        .await;
    assert_eq!((result, calls.into_inner()), (Err("corrupt"), 1));
    assert_eq!(started.elapsed(), Duration::ZERO);
}
