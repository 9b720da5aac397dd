//! Test kit for your aggregates (feature `testing`).
//!
//! - [`AggregateTest`]: given events, when a command (or a [`Decide`]
//!   that uses outside services), then expect events, an error, or a state.
//! - [`ProcessTest`]: given a process's facts, when an outcome or a
//!   deadline, then expect the next step (a process manager's commands).
//! - [`CrashingStore`] and [`crash_plan`]: crashes before or after any
//!   append, for proptests that restart a process manager between steps.
//! - [`bank`]: the standard bank workload, for benchmarking an event
//!   store through the repository.
//! - [`GaugeRecorder`]: keeps the gauges a backend records, for tests of
//!   its metrics.
//! - [`PausableUnit`]: one runner's handle on a projection unit several
//!   runners share, whose pages can be held back and which counts what it
//!   applied, for tests that every runner works and none applies twice.
//! - [`Properties`]: checks, for any command sequence proptest generates,
//!   that `handle` is deterministic, a state restored from a snapshot
//!   decides like the live one, events survive the codec (and apply alike
//!   after it), replaying the stored events reproduces the state, and your
//!   invariants hold after every step.
//!
//! ```
//! use es_core::testing::{AggregateTest, Properties};
//! # use es_core::{Aggregate, DomainEvent};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Default, Clone, Serialize, Deserialize)]
//! # struct Counter { value: u64 }
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! # enum Ev { Added(u64) }
//! # impl DomainEvent for Ev { fn event_type(&self) -> &'static str { "Added" } }
//! # #[derive(Debug, thiserror::Error)] #[error("zero")] struct Zero;
//! # impl Aggregate for Counter {
//! #     const TYPE: &'static str = "counter";
//! #     type Command = u64; type Event = Ev; type Error = Zero;
//! #     fn handle(&self, n: &u64) -> Result<Vec<Ev>, Zero> { if *n == 0 { Err(Zero) } else { Ok(vec![Ev::Added(*n)]) } }
//! #     fn apply(&mut self, Ev::Added(n): &Ev) { self.value += n }
//! # }
//! AggregateTest::<Counter>::given([Ev::Added(2)])
//!     .when(3)
//!     .then_expect_events(vec![Ev::Added(3)]);
//! AggregateTest::<Counter>::given_no_events().when(0).then_expect_error_message("zero");
//!
//! // In a proptest: `cmds in proptest::collection::vec(0u64..10, 0..40)`.
//! let outcome = Properties::<Counter>::new()
//!     .invariant("value only grows", |c| if c.value < 1_000 { Ok(()) } else { Err("too big".into()) })
//!     .check(&[1, 0, 5])
//!     .unwrap();
//! assert_eq!((outcome.accepted, outcome.rejected, outcome.state.value), (2, 1, 6));
//! ```

pub mod bank;
mod crash;
mod gauges;
mod pausable_unit;
mod process;

pub use crash::{crash_plan, Crash, CrashingStore};
pub use gauges::GaugeRecorder;
pub use pausable_unit::PausableUnit;
pub use process::ProcessTest;
/// The property-testing crate the kit is built on (strategies,
/// `proptest!`), so a test of your own needs no version of its own.
pub use proptest;

use std::fmt::Debug;

use proptest::test_runner::TestCaseError;

use crate::{Aggregate, Decide, DomainEvent, EventCodec};

/// Given/when/then for one aggregate.
pub struct AggregateTest<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> AggregateTest<A> {
    /// Starts from the state the events produce.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for e in events {
            state.apply(&e);
        }
        Self { state }
    }

    /// Starts from the default state.
    pub fn given_no_events() -> Self {
        Self { state: A::default() }
    }

    /// Handles a command.
    pub fn when(self, command: A::Command) -> AggregateTestResult<A> {
        let result = self.state.handle(&command);
        AggregateTestResult {
            state: self.state,
            result,
        }
    }

    /// Decides with a [`Decide`]: a command that needs outside services
    /// (an exchange rate, a fraud check), as
    /// [`Repository::execute_with`](crate::Repository::execute_with) runs
    /// it. Give the decider the services the test needs (a fixed rate, a
    /// failing service) and assert on the result as after [`when`](Self::when).
    ///
    /// ```
    /// # use es_core::{Aggregate, DomainEvent, Decide};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    /// # struct Wallet { cents: i64 }
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # enum Ev { Credited(i64) }
    /// # impl DomainEvent for Ev { fn event_type(&self) -> &'static str { "Credited" } }
    /// # #[derive(Debug, thiserror::Error)] #[error("no rate")] struct NoRate;
    /// # impl Aggregate for Wallet {
    /// #     const TYPE: &'static str = "wallet";
    /// #     type Command = i64; type Event = Ev; type Error = NoRate;
    /// #     fn handle(&self, n: &i64) -> Result<Vec<Ev>, NoRate> { Ok(vec![Ev::Credited(*n)]) }
    /// #     fn apply(&mut self, Ev::Credited(n): &Ev) { self.cents += n }
    /// # }
    /// use std::sync::Arc;
    /// use es_core::testing::AggregateTest;
    ///
    /// /// The outside service the decision needs.
    /// trait Rates: Send + Sync { fn usd_cents_per_eur(&self) -> Option<i64>; }
    /// struct Fixed(Option<i64>);
    /// impl Rates for Fixed { fn usd_cents_per_eur(&self) -> Option<i64> { self.0 } }
    ///
    /// /// Credit euros, converted at today's rate.
    /// struct CreditEuros { euros: i64, rates: Arc<dyn Rates> }
    ///
    /// #[es_core::async_trait]
    /// impl Decide<Wallet> for CreditEuros {
    ///     async fn decide(&self, _: &Wallet) -> Result<Vec<Ev>, NoRate> {
    ///         let rate = self.rates.usd_cents_per_eur().ok_or(NoRate)?;
    ///         Ok(vec![Ev::Credited(self.euros * rate)])
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// AggregateTest::<Wallet>::given_no_events()
    ///     .when_with(CreditEuros { euros: 2, rates: Arc::new(Fixed(Some(108))) })
    ///     .await
    ///     .then_expect_events(vec![Ev::Credited(216)]);
    /// AggregateTest::<Wallet>::given_no_events()
    ///     .when_with(CreditEuros { euros: 2, rates: Arc::new(Fixed(None)) })
    ///     .await
    ///     .then_expect_error_message("no rate");
    /// # });
    /// ```
    pub async fn when_with(self, decider: impl Decide<A>) -> AggregateTestResult<A> {
        let result = decider.decide(&self.state).await;
        AggregateTestResult {
            state: self.state,
            result,
        }
    }
}

/// The result of [`AggregateTest::when`], to assert on.
pub struct AggregateTestResult<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> AggregateTestResult<A> {
    /// Asserts the command produced exactly these events.
    ///
    /// # Panics
    /// When it did not (this is a test assertion).
    #[track_caller]
    pub fn then_expect_events(self, expected: Vec<A::Event>)
    where
        A::Event: PartialEq,
    {
        match self.result {
            Ok(events) => assert_eq!(events, expected, "unexpected events"),
            Err(e) => panic!("expected events {expected:?}, got error: {e}"),
        }
    }

    /// Asserts the command was rejected with an error that passes `check`.
    ///
    /// # Panics
    /// When it was accepted or the error does not pass.
    #[track_caller]
    pub fn then_expect_error(self, check: impl FnOnce(&A::Error) -> bool) {
        match self.result {
            Ok(events) => panic!("expected an error, got events {events:?}"),
            Err(e) => assert!(check(&e), "unexpected error: {e}"),
        }
    }

    /// Asserts the command was rejected with this message.
    ///
    /// # Panics
    /// When it was accepted or the message differs.
    #[track_caller]
    pub fn then_expect_error_message(self, message: &str) {
        match self.result {
            Ok(events) => panic!("expected error {message:?}, got events {events:?}"),
            Err(e) => assert_eq!(e.to_string(), message),
        }
    }

    /// Asserts on the state after applying the produced events.
    ///
    /// # Panics
    /// When the command was rejected, or when `check` panics.
    #[track_caller]
    pub fn then_expect_state(self, check: impl FnOnce(&A)) {
        match self.result {
            Ok(events) => {
                let mut state = self.state;
                for e in &events {
                    state.apply(e);
                }
                check(&state);
            }
            Err(e) => panic!("expected a new state, got error: {e}"),
        }
    }

    /// The raw result, for custom assertions.
    pub fn result(&self) -> &Result<Vec<A::Event>, A::Error> {
        &self.result
    }
}

type Invariant<A> = Box<dyn Fn(&A) -> Result<(), String>>;
type HistoryInvariant<A> = Box<dyn Fn(&A, &[<A as Aggregate>::Event]) -> Result<(), String>>;

/// Property checks over a command sequence (use inside `proptest!`).
pub struct Properties<A: Aggregate> {
    invariants: Vec<(String, Invariant<A>)>,
    history_invariants: Vec<(String, HistoryInvariant<A>)>,
    codec: EventCodec,
}

impl<A: Aggregate> Default for Properties<A> {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Properties::check`] saw.
#[derive(Debug)]
pub struct SequenceOutcome<A: Aggregate> {
    /// The final state.
    pub state: A,
    /// Every event produced, in order.
    pub events: Vec<A::Event>,
    /// Commands accepted.
    pub accepted: usize,
    /// Commands rejected.
    pub rejected: usize,
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

fn json<T: serde::Serialize + Debug>(value: &T) -> Result<serde_json::Value, TestCaseError> {
    serde_json::to_value(value).map_err(|e| fail(format!("{value:?} does not serialize: {e}")))
}

/// Compares two decisions: the same events (as JSON) or the same error
/// message.
fn same_decision<A: Aggregate>(
    a: &Result<Vec<A::Event>, A::Error>,
    b: &Result<Vec<A::Event>, A::Error>,
) -> Result<bool, TestCaseError> {
    Ok(match (a, b) {
        (Ok(a), Ok(b)) => json(a)? == json(b)?,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    })
}

impl<A: Aggregate> Properties<A> {
    /// No invariants yet; the built-in properties always run.
    pub fn new() -> Self {
        Self {
            invariants: Vec::new(),
            history_invariants: Vec::new(),
            codec: EventCodec::default(),
        }
    }

    /// Uses a codec with upcasters for the round-trip check.
    #[must_use]
    pub fn codec(mut self, codec: EventCodec) -> Self {
        self.codec = codec;
        self
    }

    /// Adds an invariant that must hold after every step.
    #[must_use]
    pub fn invariant(mut self, name: impl Into<String>, check: impl Fn(&A) -> Result<(), String> + 'static) -> Self {
        self.invariants.push((name.into(), Box::new(check)));
        self
    }

    /// Adds an invariant relating the state to every event recorded so far
    /// (a model of what `apply` must do), checked after every step: for
    /// example "the balance is the sum of the amounts". It catches an
    /// `apply` that drops what an event says, which replaying cannot (the
    /// replay runs the same `apply`).
    #[must_use]
    pub fn history_invariant(
        mut self,
        name: impl Into<String>,
        check: impl Fn(&A, &[A::Event]) -> Result<(), String> + 'static,
    ) -> Self {
        self.history_invariants.push((name.into(), Box::new(check)));
        self
    }

    /// Runs the commands from the default state, checking after each:
    /// `handle` gives the same answer twice; a state restored from a
    /// snapshot (serde) gives the same answer as the live one; each event
    /// survives the codec, and applying the decoded event has the same
    /// effect as applying the original; every invariant holds. At the end,
    /// replaying the decoded events (what a load from the store sees) from
    /// the default state gives the same state, and the state survives
    /// serde (snapshots).
    ///
    /// Broken aggregates this catches: a nondeterministic `handle`; a state
    /// field lost by snapshots (`#[serde(skip)]`) that decisions depend on;
    /// an event field lost by the codec even when both sides serialize
    /// alike; with invariants, an `apply` that drops part of an event.
    pub fn check(&self, commands: &[A::Command]) -> Result<SequenceOutcome<A>, TestCaseError>
    where
        A: Debug,
    {
        let mut state = A::default();
        let mut all = Vec::new();
        let mut decoded_all = Vec::new();
        let (mut accepted, mut rejected) = (0, 0);
        self.check_invariants(&state, &all, 0)?;
        for (step, command) in commands.iter().enumerate() {
            let first = state.handle(command);
            let second = state.handle(command);
            if !same_decision::<A>(&first, &second)? {
                return Err(fail(format!("step {step}: handle is not deterministic")));
            }
            let restored = self.restore(&state)?;
            if !same_decision::<A>(&first, &restored.handle(command))? {
                return Err(fail(format!(
                    "step {step}: a state restored from a snapshot decides differently (a field lost by serde?): \
                     live {state:?}, restored {restored:?}"
                )));
            }
            match first {
                Ok(events) => {
                    accepted += 1;
                    for event in events {
                        let decoded = self.check_codec(&event, step)?;
                        let mut via_store = state.clone();
                        via_store.apply(&decoded);
                        state.apply(&event);
                        if json(&via_store)? != json(&state)? {
                            return Err(fail(format!(
                                "step {step}: {event:?} decoded from the store applies differently \
                                 (a field lost by serde?): {via_store:?}, not {state:?}"
                            )));
                        }
                        all.push(event);
                        decoded_all.push(decoded);
                    }
                }
                Err(_) => rejected += 1,
            }
            self.check_invariants(&state, &all, step + 1)?;
        }
        let mut replayed = A::default();
        for e in &decoded_all {
            replayed.apply(e);
        }
        if json(&replayed)? != json(&state)? {
            return Err(fail(format!(
                "replaying {} events gives {replayed:?}, not {state:?}",
                all.len()
            )));
        }
        let restored = self.restore(&state)?;
        if json(&restored)? != json(&state)? {
            return Err(fail("state changes through serde (snapshots would drift)".into()));
        }
        Ok(SequenceOutcome {
            state,
            events: all,
            accepted,
            rejected,
        })
    }

    /// The state as a snapshot would bring it back.
    #[allow(
        clippy::unused_self,
        reason = "a method of the configured checks, beside the ones that use the codec"
    )]
    fn restore(&self, state: &A) -> Result<A, TestCaseError>
    where
        A: Debug,
    {
        serde_json::from_value(json(state)?)
            .map_err(|e| fail(format!("state does not deserialize (snapshots would fail): {e}")))
    }

    fn check_invariants(&self, state: &A, events: &[A::Event], step: usize) -> Result<(), TestCaseError>
    where
        A: Debug,
    {
        let broken = |name: &str, why: String| {
            fail(format!(
                "after step {step}: invariant {name:?} broken: {why}; state {state:?}"
            ))
        };
        for (name, check) in &self.invariants {
            check(state).map_err(|why| broken(name, why))?;
        }
        for (name, check) in &self.history_invariants {
            check(state, events).map_err(|why| broken(name, why))?;
        }
        Ok(())
    }

    fn check_codec(&self, event: &A::Event, step: usize) -> Result<A::Event, TestCaseError> {
        let payload = self
            .codec
            .encode(event)
            .map_err(|e| fail(format!("step {step}: {e}")))?;
        let back: A::Event = self
            .codec
            .decode_payload(event.event_type(), event.schema_version(), payload)
            .map_err(|e| fail(format!("step {step}: {e}")))?;
        if json(&back)? != json(event)? {
            return Err(fail(format!(
                "step {step}: {event:?} changes through the codec: {back:?}"
            )));
        }
        Ok(back)
    }
}
