//! Fencing tokens: a command decided under a lock that a newer holder has
//! since taken (and written under) is refused, and nothing of it is
//! written, even after it catches up on the version conflict.
mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::counting::CountingStore;
use common::{Wallet, WalletCommand, WalletError, WalletEvent};
use es_core::{
    CommandContext, Decide, InMemoryLockManager, LockManager, Repository, RepositoryError, FENCING_TOKEN_HEADER,
};

type Repo = Repository<Wallet, CountingStore>;

/// Two instances over one store, as two processes would be.
fn two_instances(store: &Arc<CountingStore>) -> (Repo, Repo) {
    (
        Repository::builder(Arc::clone(store)).build(),
        Repository::builder(Arc::clone(store)).build(),
    )
}

/// Two successive holders of one lock: the older token, then the newer.
async fn two_tokens() -> (u64, u64) {
    let locks = InMemoryLockManager::new();
    let old = locks.acquire("wallet:w", Duration::from_secs(60)).await.unwrap();
    let old_token = old.fencing_token();
    // Its lease ends (released here; expired in real life).
    old.release().await.unwrap();
    let new = locks.acquire("wallet:w", Duration::from_secs(60)).await.unwrap();
    assert!(new.fencing_token() > old_token);
    (old_token, new.fencing_token())
}

fn fenced(token: u64) -> CommandContext {
    CommandContext::default().with_fencing_token(token)
}

/// A decision that says it started, then waits until the test lets it go.
struct Stalled {
    started: Arc<tokio::sync::Notify>,
    go: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl Decide<Wallet> for Stalled {
    async fn decide(&self, state: &Wallet) -> Result<Vec<WalletEvent>, WalletError> {
        self.started.notify_one();
        let _go = self.go.acquire().await;
        WalletCommand::Debit(10).handle_on(state)
    }
}

trait HandleOn {
    fn handle_on(self, state: &Wallet) -> Result<Vec<WalletEvent>, WalletError>;
}

impl HandleOn for WalletCommand {
    fn handle_on(self, state: &Wallet) -> Result<Vec<WalletEvent>, WalletError> {
        es_core::Aggregate::handle(state, &self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_holder_is_refused_after_a_newer_holder_wrote() {
    let store = CountingStore::new();
    let (stale, fresh) = two_instances(&store);
    stale.execute("w", WalletCommand::Credit(10)).await.unwrap();
    let (old, new) = two_tokens().await;

    let started = Arc::new(tokio::sync::Notify::new());
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let decision = Stalled {
        started: Arc::clone(&started),
        go: Arc::clone(&go),
    };
    let stalled = tokio::spawn({
        let stale = stale.clone();
        async move { stale.execute_with("w", decision, fenced(old)).await }
    });
    started.notified().await; // decided on version 1, stalled before its append
    let out = fresh
        .execute_in("w", WalletCommand::Debit(10), fenced(new))
        .await
        .unwrap();
    assert_eq!(out.version, 2);
    go.add_permits(1_000);

    let err = stalled.await.unwrap().unwrap_err();
    match err {
        RepositoryError::Fenced { token, newer, .. } => assert_eq!((token, newer), (old, new)),
        other => panic!("expected Fenced, got {other}"),
    }
    let history = stale.history("w").await.unwrap();
    assert_eq!(history.len(), 2, "nothing of the stale holder was written");
    assert_eq!(history[1].metadata.headers[FENCING_TOKEN_HEADER], new.to_string());
    assert_eq!(stale.load("w").await.unwrap().state.balance, 0);
}

#[tokio::test]
async fn a_holder_that_loads_after_a_newer_holder_wrote_is_refused_without_appending() {
    let store = CountingStore::new();
    let (stale, fresh) = two_instances(&store);
    let (old, new) = two_tokens().await;
    fresh
        .execute_in("w", WalletCommand::Credit(10), fenced(new))
        .await
        .unwrap();
    let appends = store.appends();
    let err = stale
        .execute_in("w", WalletCommand::Debit(10), fenced(old))
        .await
        .unwrap_err();
    assert!(matches!(err, RepositoryError::Fenced { .. }), "{err}");
    assert_eq!(store.appends(), appends, "the stale command never reached the store");
}

/// An unfenced write after the newer holder's does not hide its token.
#[tokio::test]
async fn the_newest_token_is_found_behind_unfenced_events() {
    let store = CountingStore::new();
    let (stale, fresh) = two_instances(&store);
    let (old, new) = two_tokens().await;
    fresh
        .execute_in("w", WalletCommand::Credit(10), fenced(new))
        .await
        .unwrap();
    fresh.execute("w", WalletCommand::Credit(5)).await.unwrap();
    let err = stale
        .execute_in("w", WalletCommand::Debit(1), fenced(old))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RepositoryError::Fenced { newer, .. } if newer == new),
        "{err}"
    );
    assert_eq!(stale.load("w").await.unwrap().state.balance, 15);
}

/// Holders in token order all write; the same holder may write twice.
#[tokio::test]
async fn holders_in_token_order_all_write() {
    let store = CountingStore::new();
    let (a, b) = two_instances(&store);
    let (old, new) = two_tokens().await;
    a.execute_in("w", WalletCommand::Credit(1), fenced(old)).await.unwrap();
    a.execute_in("w", WalletCommand::Credit(1), fenced(old)).await.unwrap();
    b.execute_in("w", WalletCommand::Credit(1), fenced(new)).await.unwrap();
    let out = b.execute_in("w", WalletCommand::Credit(1), fenced(new)).await.unwrap();
    assert_eq!((out.version, out.state.balance), (4, 4));
}
