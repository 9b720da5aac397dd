//! The book's tutorial, step by step, against the real backends:
//! PostgreSQL at `ES_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/es_test`, a fresh schema per test),
//! SQLite in a temporary file, Redis at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`, a fresh key prefix per test).
//!
//! Step 2 of the tutorial (testing the aggregate) is this file's first two
//! tests; the book includes them from here.

use std::sync::Arc;
use std::time::Duration;

use es_core::{EventStore, InMemoryDeduplicator, InMemoryEventStore, RepositoryError, StreamId};
use es_examples::tutorial::step1_account::{Account, AccountCommand, AccountError, AccountEvent};
use es_examples::tutorial::step3_repository::{in_memory_accounts, open_and_deposit};
use es_examples::tutorial::step4_postgres::postgres_accounts;
use es_examples::tutorial::step4_sqlite::sqlite_accounts;
use es_examples::tutorial::step5_read_model::{account_summaries, execute_and_wait, summary, AccountSummary};
use es_examples::tutorial::step6_idempotency::{deposit_once, deposit_request};
use es_examples::tutorial::step7_redis::cached_accounts;
use es_postgres::testing;

type TestResult = Result<(), es_core::BoxError>;

// ANCHOR: given_when_then
use es_core::testing::AggregateTest;

fn opened(cents: i64) -> AccountEvent {
    AccountEvent::Opened {
        owner: "Ada".into(),
        initial_balance: cents,
    }
}

#[test]
fn a_withdrawal_beyond_the_balance_is_refused() {
    AggregateTest::<Account>::given([opened(10_000)])
        .when(AccountCommand::Withdraw { amount: 15_000 })
        .then_expect_error(|e| matches!(e, AccountError::InsufficientFunds { .. }));

    AggregateTest::<Account>::given([opened(10_000)])
        .when(AccountCommand::Withdraw { amount: 3_000 })
        .then_expect_events(vec![AccountEvent::Withdrawn { amount: 3_000 }]);

    AggregateTest::<Account>::given([opened(10_000), AccountEvent::Withdrawn { amount: 10_000 }])
        .when(AccountCommand::Close)
        .then_expect_state(|a| assert!(a.closed && a.balance == 0));
}
// ANCHOR_END: given_when_then

// ANCHOR: properties
use es_core::testing::proptest::prelude::*;
use es_core::testing::Properties;

fn command() -> impl Strategy<Value = AccountCommand> {
    prop_oneof![
        1 => (0i64..1000).prop_map(|c| AccountCommand::Open { owner: "Ada".into(), initial_balance: c }),
        4 => (-10i64..1000).prop_map(|amount| AccountCommand::Deposit { amount }),
        4 => (-10i64..2000).prop_map(|amount| AccountCommand::Withdraw { amount }),
        1 => Just(AccountCommand::Close),
    ]
}

proptest! {
    #[test]
    fn the_balance_is_never_negative(commands in prop::collection::vec(command(), 0..60)) {
        // Besides these invariants, `check` verifies after every command that
        // `handle` is deterministic, that a state restored from a snapshot
        // decides alike, that events survive the codec, and that replaying
        // the stored events gives the same state.
        Properties::<Account>::new()
            .invariant("balance >= 0", |a| {
                if a.balance >= 0 { Ok(()) } else { Err(format!("balance {}", a.balance)) }
            })
            .history_invariant("balance = opening + deposits - withdrawals", |a, events| {
                let sum: i64 = events.iter().map(|e| match e {
                    AccountEvent::Opened { initial_balance, .. } => *initial_balance,
                    AccountEvent::Deposited { amount } => *amount,
                    AccountEvent::Withdrawn { amount } => -amount,
                    AccountEvent::Closed => 0,
                }).sum();
                if sum == a.balance { Ok(()) } else { Err(format!("events say {sum}, state says {}", a.balance)) }
            })
            .check(&commands)?;
    }
}
// ANCHOR_END: properties

#[tokio::test]
async fn step3_commands_run_in_memory_and_a_stale_version_conflicts() -> TestResult {
    let accounts = in_memory_accounts();
    let out = open_and_deposit(&accounts, "acc-1").await?;
    assert_eq!((out.version, out.state.balance), (2, 11_025));
    // The caller saw version 1, the account is at 2: a conflict, nothing stored.
    match open_and_deposit(&accounts, "acc-1").await {
        Err(RepositoryError::Rejected(AccountError::AlreadyOpen)) => {}
        other => panic!("expected the second open to be refused, got {other:?}"),
    }
    let stale = accounts
        .execute_in(
            "acc-1",
            AccountCommand::Deposit { amount: 1 },
            es_core::CommandContext::default().expect_version(1),
        )
        .await;
    assert!(
        matches!(stale, Err(RepositoryError::Conflict { actual: 2, .. })),
        "{stale:?}"
    );
    assert_eq!(accounts.load("acc-1").await?.state.balance, 11_025);
    Ok(())
}

#[tokio::test]
async fn step3_concurrent_deposits_to_one_account_never_conflict() -> TestResult {
    let accounts = in_memory_accounts();
    accounts
        .execute(
            "hot",
            AccountCommand::Open {
                owner: "Ada".into(),
                initial_balance: 0,
            },
        )
        .await?;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            accounts.execute("hot", AccountCommand::Deposit { amount: 5 }).await
        }));
    }
    for task in tasks {
        let out = task.await??;
        assert_eq!(out.conflict_retries, 0);
    }
    let state = accounts.load("hot").await?;
    assert_eq!((state.version, state.state.balance), (21, 100));
    Ok(())
}

#[tokio::test]
async fn step4_postgres_keeps_the_accounts_across_a_restart() -> TestResult {
    testing::ensure_database().await?;
    let schema = testing::fresh_schema("tutorial");
    let (pg, accounts) = postgres_accounts(&testing::database_url(), &schema).await?;
    open_and_deposit(&accounts, "acc-1").await?;
    pg.shutdown().await;
    drop(accounts);

    let (pg, accounts) = postgres_accounts(&testing::database_url(), &schema).await?;
    let state = accounts.load("acc-1").await?;
    assert_eq!((state.version, state.state.balance), (2, 11_025));
    pg.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn step4_sqlite_keeps_the_accounts_across_a_restart() -> TestResult {
    let dir = std::env::temp_dir().join(format!("es-tutorial-{}", uuid::Uuid::new_v4().simple()));
    let path = dir.join("bank.db");
    let path = path.to_str().ok_or("temporary path is not UTF-8")?;
    let (db, accounts) = sqlite_accounts(path).await?;
    open_and_deposit(&accounts, "acc-1").await?;
    db.shutdown().await;
    drop((db, accounts));

    let (db, accounts) = sqlite_accounts(path).await?;
    let state = accounts.load("acc-1").await?;
    assert_eq!((state.version, state.state.balance), (2, 11_025));
    db.shutdown().await;
    db.pool().close().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn step5_the_read_model_follows_and_reads_its_own_writes() -> TestResult {
    testing::ensure_database().await?;
    let schema = testing::fresh_schema("tutorial");
    let (pg, accounts) = postgres_accounts(&testing::database_url(), &schema).await?;
    open_and_deposit(&accounts, "acc-1").await?;

    let (views, runner) = account_summaries(&pg)?;
    // ANCHOR: follow
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follower = runner.clone();
    let following = tokio::spawn(async move {
        follower
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    // ANCHOR_END: follow

    let out = execute_and_wait(&accounts, &runner, "acc-1", AccountCommand::Withdraw { amount: 25 }).await?;
    assert_eq!(out.version, 3);
    let expected = AccountSummary {
        owner: "Ada".into(),
        balance: 11_000,
        movements: 2,
        closed: false,
    };
    assert_eq!(summary(&views, "acc-1").await?, Some(expected));
    assert_eq!(summary(&views, "nobody").await?, None);

    let _ = stop.send(());
    following.await??;
    pg.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn step6_a_retried_command_applies_once() -> TestResult {
    let accounts = in_memory_accounts();
    open_and_deposit(&accounts, "acc-1").await?;
    let command_id = uuid::Uuid::now_v7();
    let first = deposit_once(&accounts, "acc-1", 500, command_id).await?;
    let again = deposit_once(&accounts, "acc-1", 500, command_id).await?;
    assert!(!first.already_applied && again.already_applied);
    assert_eq!(accounts.load("acc-1").await?.state.balance, 11_525);
    Ok(())
}

#[tokio::test]
async fn step6_a_repeated_request_gets_the_first_answer() -> TestResult {
    let accounts = in_memory_accounts();
    open_and_deposit(&accounts, "acc-1").await?;
    let dedup = InMemoryDeduplicator::new(Duration::from_mins(1), Duration::from_secs(5));
    let first = deposit_request(&dedup, &accounts, "acc-1", 100, "key-1").await?;
    // Another deposit moves the balance; the repeat still answers as the first did.
    deposit_request(&dedup, &accounts, "acc-1", 100, "key-2").await?;
    let repeat = deposit_request(&dedup, &accounts, "acc-1", 100, "key-1").await?;
    assert_eq!(first, repeat);
    assert_eq!(first["balance"], 11_125);
    assert_eq!(accounts.load("acc-1").await?.state.balance, 11_225);
    // A refused command leaves the key free: the same key may try again.
    assert!(deposit_request(&dedup, &accounts, "acc-1", -1, "key-3").await.is_err());
    assert!(deposit_request(&dedup, &accounts, "acc-1", 1, "key-3").await.is_ok());
    Ok(())
}

#[tokio::test]
async fn step7_two_instances_share_the_redis_cache_and_stay_correct() -> TestResult {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("es-tutorial-{}", uuid::Uuid::new_v4().simple());
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let a = cached_accounts(Arc::clone(&store), &redis_url, &prefix)?;
    let b = cached_accounts(Arc::clone(&store), &redis_url, &prefix)?;
    open_and_deposit(&a, "acc-1").await?;
    b.execute("acc-1", AccountCommand::Withdraw { amount: 1_025 }).await?;
    // `a` has the state of version 2 cached; its append at version 2
    // conflicts, the state is completed from the store and decided again.
    let out = a.execute("acc-1", AccountCommand::Withdraw { amount: 10_000 }).await?;
    assert_eq!((out.version, out.state.balance), (4, 0));
    assert_eq!(store.stream_version(&StreamId::from("acc-1")).await?, 4);
    // A refusal decided on a stale cached state is checked against the store.
    match b.execute("acc-1", AccountCommand::Withdraw { amount: 1 }).await {
        Err(RepositoryError::Rejected(AccountError::InsufficientFunds { balance: 0, .. })) => {}
        other => panic!("expected insufficient funds at balance 0, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn projections_sql_balances_survive_replays() -> TestResult {
    use es_examples::tutorial::projections::{balances_runner, rebuild, replay_from, Balances};

    testing::ensure_database().await?;
    let schema = testing::fresh_schema("tutorial");
    let (pg, accounts) = postgres_accounts(&testing::database_url(), &schema).await?;
    open_and_deposit(&accounts, "acc-1").await?;
    open_and_deposit(&accounts, "acc-2").await?;
    let last = accounts
        .execute("acc-2", AccountCommand::Withdraw { amount: 1_025 })
        .await?
        .append
        .and_then(|a| a.positions.last().copied())
        .ok_or("the withdrawal has no position")?;

    let balances = Arc::new(Balances::new(&pg));
    let runner = balances_runner(&pg, Arc::clone(&balances));
    // The log shows an event once every older transaction of the cluster
    // has ended (other tests write meanwhile): catch up until it is there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (mut applied, mut report) = (0, runner.catch_up().await?);
    applied += report.applied;
    while report.position < last {
        assert!(tokio::time::Instant::now() < deadline, "the log never reached {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        report = runner.catch_up().await?;
        applied += report.applied;
    }
    assert_eq!((applied, report.dead_lettered), (5, 0));
    let read = |id: &'static str| {
        let (balances, pg) = (Arc::clone(&balances), pg.clone());
        async move { balances.balance(&pg, id).await }
    };
    assert_eq!(
        (read("acc-1").await?, read("acc-2").await?),
        (Some(11_025), Some(10_000))
    );

    // Applying everything again changes nothing: each row skips the
    // versions it holds.
    let again = replay_from(&runner, 0).await?;
    assert_eq!(again.applied, 5);
    assert_eq!(
        (read("acc-1").await?, read("acc-2").await?),
        (Some(11_025), Some(10_000))
    );

    // A full rebuild empties the table first, then applies the log.
    let rebuilt = rebuild(&runner).await?;
    assert_eq!((rebuilt.applied, rebuilt.position), (5, report.position));
    assert_eq!(
        (read("acc-1").await?, read("acc-2").await?),
        (Some(11_025), Some(10_000))
    );
    assert!(runner.dead_letters().await?.is_empty());
    pg.shutdown().await;
    Ok(())
}
