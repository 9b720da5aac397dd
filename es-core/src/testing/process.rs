//! Given/when/then for process managers.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

use crate::{Aggregate, ProcessManager, Step};

/// Given the process's facts, when an outcome is recorded (or time
/// passes), then expect the next step.
///
/// ```
/// use es_core::testing::ProcessTest;
/// # use es_core::{Aggregate, DomainEvent, ProcessManager, Step, StreamId, BoxError};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// # struct Order { placed: bool, paid: bool }
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum Ev { Placed, Paid }
/// # impl DomainEvent for Ev { fn event_type(&self) -> &'static str { match self { Ev::Placed => "Placed", Ev::Paid => "Paid" } } }
/// # impl Aggregate for Order {
/// #     const TYPE: &'static str = "order";
/// #     type Command = Ev; type Event = Ev; type Error = std::convert::Infallible;
/// #     fn handle(&self, c: &Ev) -> Result<Vec<Ev>, Self::Error> { Ok(vec![c.clone()]) }
/// #     fn apply(&mut self, e: &Ev) { match e { Ev::Placed => self.placed = true, Ev::Paid => self.paid = true } }
/// # }
/// # struct Checkout;
/// # #[async_trait::async_trait]
/// # impl ProcessManager for Checkout {
/// #     type Process = Order;
/// #     type Command = &'static str;
/// #     fn name(&self) -> &str { "checkout" }
/// #     fn next_step(&self, o: &Order) -> Option<Step<&'static str>> {
/// #         (o.placed && !o.paid).then(|| Step::new("charge", "charge card"))
/// #     }
/// #     async fn issue(&self, _: &StreamId, _: &Step<&'static str>, _: uuid::Uuid) -> Result<Ev, BoxError> { Ok(Ev::Paid) }
/// # }
/// ProcessTest::new(Checkout).given([Ev::Placed]).then_expect_step("charge", "charge card");
/// ProcessTest::new(Checkout).given([Ev::Placed]).when(Ev::Paid).then_expect_no_step();
/// ```
pub struct ProcessTest<M: ProcessManager> {
    manager: M,
    state: M::Process,
    now: DateTime<Utc>,
}

impl<M: ProcessManager> ProcessTest<M> {
    /// A process with no facts yet, at the current time.
    pub fn new(manager: M) -> Self {
        Self {
            manager,
            state: M::Process::default(),
            now: Utc::now(),
        }
    }

    /// Applies the given facts.
    #[must_use]
    pub fn given(mut self, events: impl IntoIterator<Item = <M::Process as Aggregate>::Event>) -> Self {
        for e in events {
            self.state.apply(&e);
        }
        self
    }

    /// Sets the time the next step and deadline are decided at.
    #[must_use]
    pub fn at(mut self, now: DateTime<Utc>) -> Self {
        self.now = now;
        self
    }

    /// Records an outcome (a process command), as the driver does after a
    /// step; panics when the process refuses it.
    #[must_use]
    pub fn when(mut self, outcome: <M::Process as Aggregate>::Command) -> Self {
        match self.state.handle(&outcome) {
            Ok(events) => {
                for e in &events {
                    self.state.apply(e);
                }
            }
            Err(e) => panic!("the process refused the outcome: {e}"),
        }
        self
    }

    /// Lets the deadline pass if it has at the set time: records the
    /// manager's deadline fact, as the driver does.
    #[must_use]
    pub fn when_deadline_checked(self) -> Self {
        let due = self.manager.deadline(&self.state).is_some_and(|at| at <= self.now);
        match due.then(|| self.manager.on_deadline(&self.state, self.now)).flatten() {
            Some(record) => self.when(record),
            None => self,
        }
    }

    /// The process state.
    pub fn state(&self) -> &M::Process {
        &self.state
    }

    /// The step the driver would issue now.
    pub fn next_step(&self) -> Option<Step<M::Command>> {
        self.manager.next_step(&self.state)
    }

    /// Asserts the next step.
    pub fn then_expect_step(&self, name: &str, command: M::Command)
    where
        M::Command: PartialEq + Debug,
    {
        match self.next_step() {
            Some(step) => assert_eq!((step.name.as_str(), &step.command), (name, &command), "next step"),
            None => panic!("expected step {name} ({command:?}), the process issues nothing"),
        }
    }

    /// Asserts that the process issues nothing (finished or waiting).
    pub fn then_expect_no_step(&self)
    where
        M::Command: Debug,
    {
        if let Some(step) = self.next_step() {
            panic!("expected no step, got {} ({:?})", step.name, step.command);
        }
    }

    /// Asserts the process's deadline.
    pub fn then_expect_deadline(&self, at: Option<DateTime<Utc>>) {
        assert_eq!(self.manager.deadline(&self.state), at, "deadline");
    }
}
