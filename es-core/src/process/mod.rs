//! Process managers (sagas): long-running workflows across aggregates.
//!
//! A [`ProcessManager`] keeps each process's state as an event-sourced
//! stream of its own (an [`Aggregate`](crate::Aggregate) of type
//! `Process::TYPE`), wakes up on events of the global log, and issues
//! commands to other aggregates one [`Step`] at a time. The
//! [`ProcessDriver`] does the work, and it runs on the one projection
//! engine: [`ProcessUnit`] is a [`ProjectionUnit`](crate::ProjectionUnit)
//! (checkpointed, replay-safe, dead letters for a poison event) driven by
//! [`ProjectionRunner`](crate::ProjectionRunner); es-postgres runs the same
//! driver in its transactional unit.
//!
//! Guarantees:
//! - **a step is applied once**: its command id is derived from (process
//!   id, step name) by [`step_command_id`], so a step issued again after a
//!   crash (or a lost reply) is recognised by the store, not applied twice;
//! - **outcomes are facts**: what a step came to is recorded in the
//!   process stream (with an id derived from the step's), and the next
//!   step is chosen from the recorded facts only, so a restart continues
//!   exactly where the stream says;
//! - **deadlines survive restarts**: a process's deadline is part of its
//!   state, the [`DeadlineStore`] indexes waiting processes, and the
//!   driver's clock is injectable ([`Clock`](crate::Clock)); a passed
//!   deadline is recorded in the process stream (conditionally on its
//!   version) before anything is done about it, so it never overrides a
//!   fact recorded first; a step already issued when it passes still
//!   records its outcome after it, and the manager decides from both
//!   (the bank refunds a debit that lands as its transfer times out);
//! - **one driver issues commands**: only the runner's unit issues steps
//!   (in-process its operations are serialized; es-postgres's unit holds
//!   the projection's turn while it drives a page, so several instances
//!   take turns); the deadline timer only records facts.

mod deadline;
mod driver;
mod manager;
mod unit;

pub use deadline::{DeadlineStore, InMemoryDeadlines};
pub use driver::{ProcessConfig, ProcessDriver, ProcessError};
pub use manager::{step_command_id, ProcessManager, Step};
pub use unit::ProcessUnit;
