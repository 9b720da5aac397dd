//! The transfer saga under crashes: random transfers, deposits,
//! withdrawals, closes and passing time over a few accounts, with the
//! process crashing before or after any append (a lost reply) and
//! restarting (new repositories, driver and runner over the same store,
//! checkpoints and deadlines). At every position of the log the accounts
//! read model shows `sum(balance + in_flight)` equal to opening balances
//! plus deposits minus withdrawals; in the end every transfer is
//! completed, or failed with its money back, and no step was applied
//! twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use banking_example::domain::{upcasters, Account, AccountCommand, AccountEvent, Money};
use banking_example::read_model::{arrival, AccountRow};
use banking_example::transfer::{Transfer, TransferCommand, TransferManager, TransferRequested, TransferStatus};
use chrono::Duration;
use es_core::testing::{crash_plan, Crash, CrashingStore};
use es_core::{
    Clock, CommandContext, EventCodec, EventEnvelope, EventFilter, EventStore, InMemoryCheckpointStore,
    InMemoryDeadlines, InMemoryEventStore, ManualClock, ProcessDriver, ProcessUnit, ProjectionConfig, ProjectionRunner,
    Repository, RepositoryError, RetryPolicy,
};
use proptest::prelude::*;
use uuid::Uuid;

const ACCOUNTS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Transfer {
        from: usize,
        to: usize,
        cents: u64,
    },
    Deposit {
        account: usize,
        cents: u64,
    },
    Withdraw {
        account: usize,
        cents: u64,
    },
    Close {
        account: usize,
    },
    /// Run the transfer runner until it is caught up.
    Drive,
    /// 40 s pass (past the 30 s deadline) and the timer looks.
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    let a = 0..ACCOUNTS;
    prop_oneof![
        4 => (a.clone(), a.clone(), 1u64..6_000).prop_map(|(from, to, cents)| Op::Transfer { from, to, cents }),
        1 => (a.clone(), 1u64..3_000).prop_map(|(account, cents)| Op::Deposit { account, cents }),
        1 => (a.clone(), 1u64..3_000).prop_map(|(account, cents)| Op::Withdraw { account, cents }),
        1 => a.prop_map(|account| Op::Close { account }),
        3 => Just(Op::Drive),
        1 => Just(Op::Tick),
    ]
}

/// What outlives a crash.
struct Durable {
    store: Arc<InMemoryEventStore>,
    crashing: Arc<CrashingStore>,
    checkpoints: Arc<InMemoryCheckpointStore>,
    deadlines: Arc<InMemoryDeadlines>,
    clock: ManualClock,
}

/// One incarnation of the server's transfer machinery.
struct Live {
    accounts: Repository<Account>,
    driver: Arc<ProcessDriver<TransferManager>>,
    runner: ProjectionRunner,
}

impl Durable {
    fn start(&self) -> Live {
        let store: Arc<dyn EventStore> = self.crashing.clone();
        let accounts = Repository::<Account>::builder(Arc::clone(&store))
            .upcasters(upcasters())
            .build();
        let driver = Arc::new(
            ProcessDriver::new(
                Arc::new(TransferManager::new(accounts.clone())),
                Repository::<Transfer>::builder(store).build(),
            )
            .with_deadlines(self.deadlines.clone())
            .with_clock(Arc::new(self.clock.clone())),
        );
        let runner = ProcessUnit::new(Arc::clone(&driver), self.checkpoints.clone())
            .runner()
            .with_config(ProjectionConfig {
                batch_size: 4,
                retry: RetryPolicy::never(),
                // As the server runs it: moves past events the runner does
                // not take stay in memory (here until the next transfer
                // step), and a crash loses them.
                skip_checkpoint_interval: std::time::Duration::from_secs(3600),
                ..ProjectionConfig::default()
            });
        Live {
            accounts,
            driver,
            runner,
        }
    }
}

fn account_ids() -> Vec<Uuid> {
    (0..ACCOUNTS).map(|i| Uuid::from_u128(0xacc0 + i as u128)).collect()
}

/// Retries `f` (a client retrying with the same command id) until it is
/// answered; a crash restarts the machinery first.
async fn until_answered<T, F, Fut>(d: &Durable, live: &mut Live, mut f: F) -> T
where
    F: FnMut(Live) -> Fut,
    Fut: std::future::Future<Output = (Live, Option<T>)>,
{
    for _ in 0..100 {
        let (back, answer) = f(std::mem::replace(live, d.start())).await;
        *live = back;
        if let Some(a) = answer {
            return a;
        }
        *live = d.start();
    }
    panic!("never answered");
}

async fn account_command(d: &Durable, live: &mut Live, account: Uuid, command: AccountCommand, id: Uuid) {
    until_answered(d, live, |l| {
        let command = command.clone();
        async move {
            let r = l
                .accounts
                .execute_in(account, command, CommandContext::default().with_command_id(id))
                .await;
            let answered = match r {
                Ok(_) | Err(RepositoryError::Rejected(_) | RepositoryError::Invalid(_)) => Some(()),
                Err(_) => None,
            };
            (l, answered)
        }
    })
    .await;
}

/// Folds the log into the read model's rows, checking the conservation
/// invariant after every event; returns the rows.
async fn check_every_prefix(store: &InMemoryEventStore) -> Result<HashMap<Uuid, AccountRow>, TestCaseError> {
    let codec = EventCodec::new(upcasters());
    let log = store
        .read_all(0, usize::MAX, &EventFilter::all().stream_types(["account"]))
        .await
        .unwrap();
    let mut rows: HashMap<Uuid, AccountRow> = HashMap::new();
    let mut paid_in: i128 = 0;
    let cents = |m: Money| {
        (m.value() * rust_decimal::Decimal::from(100))
            .try_into()
            .unwrap_or(i128::MAX)
    };
    for r in &log {
        let event: AccountEvent = codec.decode(r).unwrap();
        match &event {
            AccountEvent::AccountCreated(e) => paid_in += cents(e.initial_balance),
            AccountEvent::MoneyDeposited(e) => paid_in += cents(e.amount),
            AccountEvent::MoneyWithdrawn(e) => paid_in -= cents(e.amount),
            _ => {}
        }
        let e = EventEnvelope {
            stream_id: r.stream_id.clone(),
            version: r.version,
            global_position: r.global_position,
            event_id: r.event_id,
            metadata: r.metadata.clone(),
            recorded_at: r.recorded_at,
            event,
        };
        let id = Uuid::parse_str(r.stream_id.as_str()).unwrap();
        if rows.entry(id).or_insert_with(|| AccountRow::empty(id)).apply(&e) {
            if let Some((from, amount)) = arrival(&e) {
                rows.entry(from).or_insert_with(|| AccountRow::empty(from)).land(amount);
            }
        }
        let held: i128 = rows
            .values()
            .map(|row| cents(row.account.balance) + cents(row.in_flight))
            .sum();
        prop_assert_eq!(held, paid_in, "money conserved after position {}", r.global_position);
    }
    Ok(rows)
}

async fn run(ops: Vec<Op>, plan: BTreeMap<u64, Crash>) -> Result<(), TestCaseError> {
    let store = Arc::new(InMemoryEventStore::new());
    let d = Durable {
        crashing: Arc::new(CrashingStore::new(store.clone(), plan)),
        store,
        checkpoints: Arc::new(InMemoryCheckpointStore::new()),
        deadlines: Arc::new(InMemoryDeadlines::new()),
        clock: ManualClock::at("2026-01-01T00:00:00Z".parse().unwrap()),
    };
    let mut live = d.start();
    let ids = account_ids();
    for (i, id) in ids.iter().enumerate() {
        let open = AccountCommand::Open {
            owner_name: format!("owner {i}"),
            initial_balance: Money::from_cents(10_000),
            owner_id: None,
        };
        account_command(&d, &mut live, *id, open, Uuid::new_v4()).await;
    }
    let mut transfers = Vec::new();
    for (n, op) in ops.iter().enumerate() {
        let cid = Uuid::from_u128(n as u128 + 1);
        match *op {
            Op::Transfer { from, to, cents } => {
                let id = Uuid::from_u128(0x7000_0000 + n as u128);
                let request = TransferRequested {
                    id,
                    from: ids[from],
                    to: if from == to { Uuid::from_u128(0xdead) } else { ids[to] },
                    amount: Money::from_cents(cents),
                    requested_by: None,
                    from_owner: None,
                    deadline: d.clock.now() + Duration::seconds(30),
                };
                until_answered(&d, &mut live, |l| {
                    let request = request.clone();
                    async move {
                        let ctx = CommandContext::default().with_command_id(cid);
                        let ok = l
                            .driver
                            .repository()
                            .execute_in(id, TransferCommand::Request(request), ctx)
                            .await;
                        (l, ok.ok().map(|_| ()))
                    }
                })
                .await;
                transfers.push(id);
            }
            Op::Deposit { account, cents } => {
                let c = AccountCommand::Deposit {
                    amount: Money::from_cents(cents),
                };
                account_command(&d, &mut live, ids[account], c, cid).await;
            }
            Op::Withdraw { account, cents } => {
                let c = AccountCommand::Withdraw {
                    amount: Money::from_cents(cents),
                };
                account_command(&d, &mut live, ids[account], c, cid).await;
            }
            Op::Close { account } => {
                let c = AccountCommand::Close { reason: "done".into() };
                account_command(&d, &mut live, ids[account], c, cid).await;
            }
            Op::Drive => {
                if live.runner.catch_up().await.is_err() || d.crashing.take_crashed() {
                    live = d.start();
                }
            }
            Op::Tick => {
                d.clock.advance(Duration::seconds(40));
                if live.driver.record_due_deadlines().await.is_err() || d.crashing.take_crashed() {
                    live = d.start();
                }
            }
        }
        check_every_prefix(&d.store).await?;
    }
    // Restart until a catch-up runs clean: everything settles.
    let mut restarts = 0;
    loop {
        live = d.start();
        match live.runner.catch_up().await {
            Ok(_) if !d.crashing.take_crashed() => break,
            _ => restarts += 1,
        }
        prop_assert!(restarts < 100, "no progress");
    }
    let rows = check_every_prefix(&d.store).await?;
    for row in rows.values() {
        prop_assert!(row.in_flight.is_zero(), "money left in flight: {row:?}");
        prop_assert!(row.account.transfers_out.is_empty(), "unsettled: {row:?}");
    }
    // Each transfer's steps, from the accounts' logs.
    let codec = EventCodec::new(upcasters());
    let log = d
        .store
        .read_all(0, usize::MAX, &EventFilter::all().stream_types(["account"]))
        .await
        .unwrap();
    let mut steps: HashMap<(Uuid, &str), usize> = HashMap::new();
    for r in &log {
        let (t, step) = match codec.decode::<AccountEvent>(r).unwrap() {
            AccountEvent::TransferDebited(e) => (e.transfer, "debit"),
            AccountEvent::TransferCredited(e) => (e.transfer, "credit"),
            AccountEvent::TransferSettled(e) => (e.transfer, "settle"),
            AccountEvent::TransferRefunded(e) => (e.transfer, "refund"),
            _ => continue,
        };
        *steps.entry((t, step)).or_default() += 1;
    }
    let count = |t: Uuid, s: &'static str| steps.get(&(t, s)).copied().unwrap_or(0);
    for t in &transfers {
        let state = live.driver.repository().load(t.to_string()).await.unwrap().state;
        for s in ["debit", "credit", "settle", "refund"] {
            prop_assert!(count(*t, s) <= 1, "{s} of {t} applied {} times", count(*t, s));
        }
        match state.status() {
            TransferStatus::Completed => {
                prop_assert_eq!(
                    (count(*t, "debit"), count(*t, "credit"), count(*t, "refund")),
                    (1, 1, 0)
                );
            }
            TransferStatus::Failed => {
                prop_assert_eq!(count(*t, "credit"), 0, "failed but credited: {:?}", state);
                prop_assert_eq!(
                    count(*t, "debit"),
                    count(*t, "refund"),
                    "failed and not refunded: {:?}",
                    state
                );
            }
            TransferStatus::Pending => prop_assert!(false, "{t} still pending: {state:?}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn transfers_survive_crashes_between_any_two_steps(
        ops in proptest::collection::vec(op(), 1..30),
        plan in crash_plan(120, 10),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, plan))?;
    }
}
