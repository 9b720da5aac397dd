//! Conflict retries: the repository decides again after a version conflict
//! and waits a growing, jittered delay between attempts. A paused tokio
//! clock makes the waits exact: it moves only by the repository's sleeps.
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
