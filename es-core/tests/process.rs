//! Process managers: steps applied once across crashes, deadlines by an
//! injected clock that survive a restart, a poison event dead-lettered,
//! the given/when/then kit.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use es_core::testing::{crash_plan, Crash, CrashingStore, ProcessTest};
use es_core::*;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

// A wallet: the target of the process's commands.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Wallet {
    balance: i64,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum WalletEvent {
    Changed(i64),
}
#[derive(Debug, thiserror::Error)]
#[error("insufficient funds")]
struct Insufficient;
impl Aggregate for Wallet {
    const TYPE: &'static str = "wallet";
    type Command = i64;
    type Event = WalletEvent;
    type Error = Insufficient;
    fn handle(&self, delta: &i64) -> Result<Vec<WalletEvent>, Insufficient> {
        if self.balance + delta < 0 {
            return Err(Insufficient);
        }
        Ok(vec![WalletEvent::Changed(*delta)])
    }
    fn apply(&mut self, WalletEvent::Changed(d): &WalletEvent) {
        self.balance += d;
    }
}

// The process: move `amount` from one wallet to another.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Payment {
    from: String,
    to: String,
    amount: i64,
    due: Option<DateTime<Utc>>,
    debited: bool,
    refused: bool,
    credited: bool,
    timed_out: bool,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum PaymentEvent {
    Requested {
        from: String,
        to: String,
        amount: i64,
        due: DateTime<Utc>,
    },
    Debited,
    Refused,
    Credited,
    TimedOut,
}
impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Command = PaymentEvent;
    type Event = PaymentEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, c: &PaymentEvent) -> Result<Vec<PaymentEvent>, Self::Error> {
        Ok(vec![c.clone()])
    }
    fn apply(&mut self, e: &PaymentEvent) {
        match e {
            PaymentEvent::Requested { from, to, amount, due } => {
                (self.from, self.to, self.amount, self.due) = (from.clone(), to.clone(), *amount, Some(*due));
            }
            PaymentEvent::Debited => self.debited = true,
            PaymentEvent::Refused => self.refused = true,
            PaymentEvent::Credited => self.credited = true,
            PaymentEvent::TimedOut => self.timed_out = true,
        }
    }
}

struct Payments {
    wallets: Repository<Wallet>,
}

#[async_trait::async_trait]
impl ProcessManager for Payments {
    type Process = Payment;
    type Command = (String, i64);
    fn name(&self) -> &str {
        "payments"
    }
    fn next_step(&self, p: &Payment) -> Option<Step<(String, i64)>> {
        if p.from.is_empty() || p.refused || (p.timed_out && !p.debited) {
            None
        } else if !p.debited {
            Some(Step::new("debit", (p.from.clone(), -p.amount)))
        } else if !p.credited {
            Some(Step::new("credit", (p.to.clone(), p.amount)))
        } else {
            None
        }
    }
    fn deadline(&self, p: &Payment) -> Option<DateTime<Utc>> {
        p.due.filter(|_| !p.debited && !p.refused && !p.timed_out)
    }
    fn on_deadline(&self, _: &Payment, _: DateTime<Utc>) -> Option<PaymentEvent> {
        Some(PaymentEvent::TimedOut)
    }
    async fn issue(&self, _: &StreamId, step: &Step<(String, i64)>, id: uuid::Uuid) -> Result<PaymentEvent, BoxError> {
        let (wallet, delta) = &step.command;
        let ctx = CommandContext::default().with_command_id(id);
        match self.wallets.execute_in(wallet.as_str(), *delta, ctx).await {
            Ok(_) => Ok(if *delta < 0 {
                PaymentEvent::Debited
            } else {
                PaymentEvent::Credited
            }),
            Err(RepositoryError::Rejected(_)) => Ok(PaymentEvent::Refused),
            Err(e) => Err(Box::new(e)),
        }
    }
}

fn t0() -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn request(amount: i64) -> PaymentEvent {
    PaymentEvent::Requested {
        from: "a".into(),
        to: "b".into(),
        amount,
        due: t0() + Duration::seconds(10),
    }
}

/// Everything that survives a crash.
struct Durable {
    store: Arc<InMemoryEventStore>,
    checkpoints: Arc<InMemoryCheckpointStore>,
    deadlines: Arc<InMemoryDeadlines>,
    clock: ManualClock,
}

impl Durable {
    fn new() -> Self {
        Self {
            store: Arc::new(InMemoryEventStore::new()),
            checkpoints: Arc::new(InMemoryCheckpointStore::new()),
            deadlines: Arc::new(InMemoryDeadlines::new()),
            clock: ManualClock::at(t0()),
        }
    }

    /// A fresh "process" over the durable state, through `store`.
    fn start(&self, store: Arc<dyn EventStore>) -> (Arc<ProcessDriver<Payments>>, ProjectionRunner) {
        let wallets = Repository::<Wallet>::builder(Arc::clone(&store)).build();
        let driver = Arc::new(
            ProcessDriver::new(Arc::new(Payments { wallets }), Repository::builder(store).build())
                .with_deadlines(self.deadlines.clone())
                .with_clock(Arc::new(self.clock.clone())),
        );
        let runner = ProcessUnit::new(Arc::clone(&driver), self.checkpoints.clone())
            .runner()
            .with_config(ProjectionConfig {
                batch_size: 3,
                retry: RetryPolicy::never(),
                ..ProjectionConfig::default()
            });
        (driver, runner)
    }

    async fn balance(&self, wallet: &str) -> i64 {
        Repository::<Wallet>::builder(self.store.clone())
            .build()
            .load(wallet)
            .await
            .unwrap()
            .state
            .balance
    }
}

#[tokio::test]
async fn a_payment_moves_the_money_once_and_replays_issue_nothing() {
    let d = Durable::new();
    let (driver, runner) = d.start(d.store.clone());
    let wallets = Repository::<Wallet>::builder(d.store.clone()).build();
    wallets.execute("a", 100).await.unwrap();
    driver.repository().execute("p1", request(30)).await.unwrap();
    driver.repository().execute("p2", request(500)).await.unwrap();
    runner.catch_up().await.unwrap();
    assert_eq!((d.balance("a").await, d.balance("b").await), (70, 30));
    let p2 = driver.repository().load("p2").await.unwrap().state;
    assert!(p2.refused && !p2.debited);
    // A full replay drives every process again: nothing moves.
    runner.replay(ReplayMode::Full).await.unwrap();
    assert_eq!((d.balance("a").await, d.balance("b").await), (70, 30));
    assert_eq!(d.store.stream_version(&"a".into()).await.unwrap(), 2);
}

#[tokio::test]
async fn a_deadline_recorded_by_the_timer_survives_a_restart() {
    let d = Durable::new();
    let (driver, _) = d.start(d.store.clone());
    driver.repository().execute("p1", request(30)).await.unwrap();
    // The process is known to the deadline index (a drive that failed
    // midway leaves it there); no runner drives it.
    d.deadlines
        .set("payments", &"p1".into(), Some(t0() + Duration::seconds(10)))
        .await
        .unwrap();
    drop(driver);
    // Restart: a new driver, the same durable deadlines.
    let (driver, runner) = d.start(d.store.clone());
    assert_eq!(driver.record_due_deadlines().await.unwrap(), 0, "not due yet");
    d.clock.advance(Duration::seconds(11));
    assert_eq!(driver.record_due_deadlines().await.unwrap(), 1);
    assert_eq!(driver.record_due_deadlines().await.unwrap(), 0, "recorded once");
    runner.catch_up().await.unwrap();
    let p1 = driver.repository().load("p1").await.unwrap().state;
    assert!(p1.timed_out && !p1.debited);
    assert_eq!(d.balance("b").await, 0);
}

#[tokio::test]
async fn a_process_that_cannot_be_loaded_does_not_hold_back_the_deadlines_after_it() {
    let d = Durable::new();
    let (driver, _) = d.start(d.store.clone());
    driver.repository().execute("p2", request(30)).await.unwrap();
    // "p1" is due first, but its stream is not a payment's.
    d.store
        .append(
            "payment",
            &"p1".into(),
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Garbage", serde_json::json!(1))],
        )
        .await
        .unwrap();
    for (id, secs) in [("p1", 5), ("p2", 10)] {
        d.deadlines
            .set("payments", &id.into(), Some(t0() + Duration::seconds(secs)))
            .await
            .unwrap();
    }
    d.clock.advance(Duration::seconds(11));
    let failed = driver.record_due_deadlines().await;
    assert!(
        matches!(&failed, Err(ProcessError::Store { process_id, .. }) if process_id.as_str() == "p1"),
        "{failed:?}"
    );
    let p2 = driver.repository().load("p2").await.unwrap().state;
    assert!(p2.timed_out, "p2's deadline was recorded all the same");
}

/// A drive that fails after its step was issued (the outcome could not be
/// recorded) leaves the process's deadline indexed all the same, so that
/// the timer still sees the process if it is dead-lettered.
#[tokio::test]
async fn a_drive_that_fails_to_record_an_outcome_leaves_its_deadline_indexed() {
    let d = Durable::new();
    Repository::<Wallet>::builder(d.store.clone())
        .build()
        .execute("a", 100)
        .await
        .unwrap();
    Repository::<Payment>::builder(d.store.clone())
        .build()
        .execute("p1", request(30))
        .await
        .unwrap();
    // Append 1 is the debit of wallet "a", append 2 the process's record of it.
    let crashing = Arc::new(CrashingStore::new(d.store.clone(), [(2, Crash::Before)].into()));
    let (driver, _) = d.start(crashing.clone());
    let failed = driver.drive("p1").await;
    assert!(matches!(failed, Err(ProcessError::Store { .. })), "{failed:?}");
    assert!(crashing.take_crashed());
    assert_eq!(d.balance("a").await, 70, "the step was issued");
    let due = d
        .deadlines
        .due("payments", t0() + Duration::seconds(10), 10)
        .await
        .unwrap();
    assert_eq!(due, vec![(StreamId::from("p1"), t0() + Duration::seconds(10))]);
}

// An errand whose deadline goes away after its first step and comes back
// after its second (it then waits for something outside, until `due2`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Errand {
    due1: Option<DateTime<Utc>>,
    due2: Option<DateTime<Utc>>,
    one: bool,
    two: bool,
    timed_out: bool,
}
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ErrandEvent {
    Started { due1: DateTime<Utc>, due2: DateTime<Utc> },
    OneDone,
    TwoDone,
    TimedOut,
}
impl Aggregate for Errand {
    const TYPE: &'static str = "errand";
    type Command = ErrandEvent;
    type Event = ErrandEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, c: &ErrandEvent) -> Result<Vec<ErrandEvent>, Self::Error> {
        Ok(vec![c.clone()])
    }
    fn apply(&mut self, e: &ErrandEvent) {
        match e {
            ErrandEvent::Started { due1, due2 } => (self.due1, self.due2) = (Some(*due1), Some(*due2)),
            ErrandEvent::OneDone => self.one = true,
            ErrandEvent::TwoDone => self.two = true,
            ErrandEvent::TimedOut => self.timed_out = true,
        }
    }
}

struct Errands;

#[async_trait::async_trait]
impl ProcessManager for Errands {
    type Process = Errand;
    type Command = ();
    fn name(&self) -> &str {
        "errands"
    }
    fn next_step(&self, e: &Errand) -> Option<Step<()>> {
        match (e.one, e.two) {
            _ if e.due1.is_none() || e.timed_out => None,
            (false, _) => Some(Step::new("one", ())),
            (true, false) => Some(Step::new("two", ())),
            (true, true) => None,
        }
    }
    fn deadline(&self, e: &Errand) -> Option<DateTime<Utc>> {
        match (e.one, e.two) {
            _ if e.timed_out => None,
            (false, _) => e.due1,
            (true, false) => None,
            (true, true) => e.due2,
        }
    }
    fn on_deadline(&self, _: &Errand, _: DateTime<Utc>) -> Option<ErrandEvent> {
        Some(ErrandEvent::TimedOut)
    }
    async fn issue(&self, _: &StreamId, step: &Step<()>, _: uuid::Uuid) -> Result<ErrandEvent, BoxError> {
        Ok(if step.name == "one" {
            ErrandEvent::OneDone
        } else {
            ErrandEvent::TwoDone
        })
    }
}

/// A drive fails after its last load saw no deadline, though the fact it
/// recorded brought one back: the deadline entry stays, so the timer
/// still finds the errand and times it out.
#[tokio::test]
async fn a_failed_drive_never_clears_a_deadline_it_may_not_have_seen() {
    let store = Arc::new(InMemoryEventStore::new());
    let deadlines = Arc::new(InMemoryDeadlines::new());
    let clock = ManualClock::at(t0());
    let (due1, due2) = (t0() + Duration::seconds(10), t0() + Duration::seconds(20));
    let errands = Repository::<Errand>::builder(store.clone()).build();
    errands
        .execute("e1", ErrandEvent::Started { due1, due2 })
        .await
        .unwrap();
    deadlines.set("errands", &"e1".into(), Some(due1)).await.unwrap();
    // Append 1 records the first step; append 2, the second, is stored but
    // its answer lost, after the last load (which saw no deadline).
    let crashing: Arc<dyn EventStore> = Arc::new(CrashingStore::new(store.clone(), [(2, Crash::After)].into()));
    let driver = ProcessDriver::new(Arc::new(Errands), Repository::builder(crashing).build())
        .with_deadlines(deadlines.clone())
        .with_clock(Arc::new(clock.clone()));
    let failed = driver.drive("e1").await;
    assert!(matches!(failed, Err(ProcessError::Store { .. })), "{failed:?}");
    assert!(
        errands.load("e1").await.unwrap().state.two,
        "the second step was recorded"
    );
    let indexed = deadlines.due("errands", t0() + Duration::days(1), 10).await.unwrap();
    assert_eq!(indexed.len(), 1, "the entry stays: {indexed:?}");
    clock.advance(Duration::seconds(21));
    assert_eq!(driver.record_due_deadlines().await.unwrap(), 1);
    assert!(errands.load("e1").await.unwrap().state.timed_out);
}

#[tokio::test]
async fn a_late_runner_records_the_deadline_before_issuing_anything() {
    let d = Durable::new();
    let (driver, runner) = d.start(d.store.clone());
    Repository::<Wallet>::builder(d.store.clone())
        .build()
        .execute("a", 100)
        .await
        .unwrap();
    driver.repository().execute("p1", request(30)).await.unwrap();
    d.clock.advance(Duration::seconds(60));
    runner.catch_up().await.unwrap();
    assert!(driver.repository().load("p1").await.unwrap().state.timed_out);
    assert_eq!(d.balance("a").await, 100);
}

#[tokio::test]
async fn a_poison_process_is_dead_lettered_and_the_rest_go_on() {
    let d = Durable::new();
    let (driver, runner) = d.start(d.store.clone());
    let runner = runner.with_config(ProjectionConfig {
        on_failure: OnFailure::DeadLetter,
        retry: RetryPolicy::never(),
        ..ProjectionConfig::default()
    });
    // "w" is not a wallet stream the repository can decode.
    d.store
        .append(
            "wallet",
            &"w".into(),
            ExpectedVersion::Any,
            vec![NewEvent::new("Changed", serde_json::json!("x"))],
        )
        .await
        .unwrap();
    let bad = PaymentEvent::Requested {
        from: "w".into(),
        to: "b".into(),
        amount: 1,
        due: t0() + Duration::hours(1),
    };
    driver.repository().execute("bad", bad).await.unwrap();
    Repository::<Wallet>::builder(d.store.clone())
        .build()
        .execute("a", 10)
        .await
        .unwrap();
    driver.repository().execute("good", request(10)).await.unwrap();
    let report = runner.catch_up().await.unwrap();
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(runner.dead_letters().await.unwrap()[0].stream_id.as_str(), "bad");
    assert_eq!(d.balance("b").await, 10);
}

#[test]
fn given_when_then() {
    let pm = || {
        let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        Payments {
            wallets: Repository::builder(store).build(),
        }
    };
    ProcessTest::new(pm())
        .given([request(5)])
        .then_expect_step("debit", ("a".into(), -5));
    ProcessTest::new(pm())
        .given([request(5)])
        .when(PaymentEvent::Debited)
        .then_expect_step("credit", ("b".into(), 5));
    ProcessTest::new(pm())
        .given([request(5), PaymentEvent::Refused])
        .then_expect_no_step();
    let late = ProcessTest::new(pm())
        .given([request(5)])
        .at(t0() + Duration::seconds(10))
        .when_deadline_checked();
    late.then_expect_no_step();
    late.then_expect_deadline(None);
    ProcessTest::new(pm())
        .given([request(5)])
        .at(t0())
        .when_deadline_checked()
        .then_expect_deadline(Some(t0() + Duration::seconds(10)));
}

/// Runs payments with crashes before or after any append, restarting
/// after each: every payment ends debited-and-credited or refused, and
/// money is neither made nor lost.
async fn run_with_crashes(amounts: Vec<i64>, plan: BTreeMap<u64, Crash>) -> Result<(), TestCaseError> {
    let d = Durable::new();
    Repository::<Wallet>::builder(d.store.clone())
        .build()
        .execute("a", 100)
        .await
        .unwrap();
    let crashing = Arc::new(CrashingStore::new(d.store.clone(), plan));
    let mut requested = Vec::new();
    for (i, amount) in amounts.iter().enumerate() {
        let id = format!("p{i}");
        let (driver, _) = d.start(crashing.clone());
        let ctx = CommandContext::default().with_command_id(uuid::Uuid::new_v5(&uuid::Uuid::nil(), id.as_bytes()));
        // A client retries its request until it is answered.
        while driver
            .repository()
            .execute_in(id.as_str(), request(*amount), ctx.clone())
            .await
            .is_err()
        {}
        requested.push(id);
    }
    let mut restarts = 0;
    loop {
        let (_, runner) = d.start(crashing.clone());
        match runner.catch_up().await {
            Ok(_) if !crashing.take_crashed() => break,
            _ => restarts += 1,
        }
        prop_assert!(restarts < 100, "no progress");
    }
    let (a, b) = (d.balance("a").await, d.balance("b").await);
    prop_assert_eq!(a + b, 100, "money conserved");
    let repo = Repository::<Payment>::builder(d.store.clone()).build();
    let mut moved = 0;
    for id in &requested {
        let p = repo.load(id.as_str()).await.unwrap().state;
        prop_assert!(
            (p.debited && p.credited) || (p.refused && !p.debited),
            "{id} settled: {p:?}"
        );
        if p.credited {
            moved += p.amount;
        }
    }
    prop_assert_eq!(b, moved, "each credit applied once");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn crashes_between_any_two_steps_apply_each_step_once(
        amounts in proptest::collection::vec(1i64..60, 1..5),
        plan in crash_plan(40, 6),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_with_crashes(amounts, plan))?;
    }
}

#[tokio::test]
async fn in_memory_deadlines_pass_the_conformance_checks() {
    es_core::conformance::deadline_store(&InMemoryDeadlines::new()).await;
}
