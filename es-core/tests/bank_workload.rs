//! The standard bank workload (`es_core::testing::bank`) on the in-memory
//! store: a run verifies, and the check finds what it must.

use std::sync::Arc;
use std::time::Duration;

use es_core::testing::bank::{self, BankAccount, BankEvent, Mix, Scenario, Workload};
use es_core::{DomainEvent, EventStore, ExpectedVersion, InMemoryEventStore, NewEvent, Repository, StreamId};

fn repo(store: &Arc<dyn EventStore>) -> Repository<BankAccount> {
    Repository::<BankAccount, dyn EventStore>::builder(Arc::clone(store)).build()
}

#[tokio::test]
async fn a_uniform_run_verifies_and_counts_every_command() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let repo = repo(&store);
    let workload = Workload {
        accounts: 20,
        concurrency: 8,
        ops_per_worker: 50,
        ..Workload::default()
    };
    bank::open_accounts(&repo, workload.account_count()).await.unwrap();
    let outcome = bank::run(&repo, &workload).await.unwrap();
    assert_eq!(outcome.ops(), 400);
    assert_eq!(outcome.accepted + outcome.rejected, 400);
    assert_eq!(outcome.net.len(), 20);
    assert!(outcome.latencies_us.windows(2).all(|w| w[0] <= w[1]), "sorted");
    let stored = 20 + outcome.accepted;
    assert_eq!(
        bank::verify(&*store, &outcome, stored).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_hot_deposit_run_for_a_duration_uses_one_account() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let repo = repo(&store);
    let workload = Workload {
        accounts: 1000,
        concurrency: 4,
        duration: Some(Duration::from_millis(100)),
        scenario: Scenario::Hot,
        mix: Mix::Deposit,
        ..Workload::default()
    };
    assert_eq!(workload.account_count(), 1);
    bank::open_accounts(&repo, 1).await.unwrap();
    let outcome = bank::run(&repo, &workload).await.unwrap();
    assert!(outcome.ops() > 0);
    assert_eq!(
        (outcome.rejected, outcome.accepted),
        (0, outcome.ops()),
        "deposits only"
    );
    assert!(outcome.expected_balance(0) > bank::INITIAL_BALANCE);
    assert!(bank::verify(&*store, &outcome, 1 + outcome.accepted)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_check_finds_an_unacknowledged_event_and_a_wrong_count() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let repo = repo(&store);
    let workload = Workload {
        accounts: 3,
        concurrency: 2,
        ops_per_worker: 10,
        ..Workload::default()
    };
    bank::open_accounts(&repo, 3).await.unwrap();
    let outcome = bank::run(&repo, &workload).await.unwrap();
    let id = bank::account_id(1);
    let version = repo.load(id.clone()).await.unwrap().version;
    let extra = BankEvent::MoneyDeposited { amount: 7 };
    store
        .append(
            "account",
            &id,
            ExpectedVersion::Exact(version),
            vec![NewEvent::new(extra.event_type(), serde_json::to_value(&extra).unwrap())],
        )
        .await
        .unwrap();
    let failures = bank::verify(&*store, &outcome, 3 + outcome.accepted + 1).await.unwrap();
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].starts_with("events in store"), "{failures:?}");
    assert!(failures[1].starts_with(&format!("{id}: balance")), "{failures:?}");
}

#[tokio::test]
async fn a_long_stream_loads_at_its_version_and_balance() {
    let store = Arc::new(InMemoryEventStore::new());
    let expected = bank::seed_stream(&*store, 2_500).await.unwrap();
    assert_eq!(expected, bank::INITIAL_BALANCE + (1..2_500).sum::<i64>());
    let dyn_store: Arc<dyn EventStore> = store.clone();
    let times = bank::time_loads(&repo(&dyn_store), 3, 2_500, expected).await.unwrap();
    assert_eq!(times.len(), 3);
    let wrong = bank::time_loads(&repo(&dyn_store), 1, 2_500, expected + 1).await;
    assert!(matches!(wrong, Err(bank::WorkloadError::Mismatch(_))), "{wrong:?}");
    let measured = bank::append_only(store.clone(), 3, 7).await.unwrap();
    assert_eq!(measured.latencies_us.len(), 21);
    let appended = store
        .read_stream_batch(&StreamId::from("appender-2"), 1, 100)
        .await
        .unwrap();
    assert_eq!(appended.len(), 7);
}

#[tokio::test]
async fn lags_are_kept_sorted_and_waited_for() {
    let lags = bank::Lags::default();
    assert!(
        !lags.wait_for(1, Duration::from_millis(30)).await,
        "nothing recorded yet"
    );
    let now = chrono::Utc::now();
    lags.record(now - chrono::Duration::milliseconds(50));
    lags.record(now - chrono::Duration::milliseconds(5));
    assert!(lags.wait_for(2, Duration::from_millis(30)).await);
    let sorted = lags.sorted();
    assert_eq!(sorted.len(), 2);
    assert!(
        sorted[0] >= 5_000 && sorted[1] >= 50_000 && sorted[0] < sorted[1],
        "{sorted:?}"
    );
    lags.clear();
    assert!(lags.is_empty());
}
