//! The [`ProcessManager`] trait, its [`Step`]s and their command ids.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::BoxError;
use crate::{Aggregate, EventFilter, RecordedEvent, StreamId};

/// Namespace of step command ids.
const STEP_NAMESPACE: Uuid = Uuid::from_u128(0x5a6f_11c2_8d3e_4b7a_9e21_3c4d_5e6f_7a8b);

/// The command id of step `step` of process `process_id`: a UUIDv5, the
/// same on every attempt and every instance, so the store recognises a
/// step issued again.
///
/// ```
/// use es_core::{step_command_id, StreamId};
/// let p = StreamId::from("transfer-1");
/// assert_eq!(step_command_id(&p, "debit"), step_command_id(&p, "debit"));
/// assert_ne!(step_command_id(&p, "debit"), step_command_id(&p, "credit"));
/// assert_ne!(step_command_id(&p, "debit"), step_command_id(&StreamId::from("transfer-2"), "debit"));
/// ```
pub fn step_command_id(process_id: impl Into<StreamId>, step: &str) -> Uuid {
    let process_id: StreamId = process_id.into();
    let mut name = Vec::with_capacity(process_id.as_str().len() + step.len() + 1);
    name.extend_from_slice(process_id.as_str().as_bytes());
    name.push(0);
    name.extend_from_slice(step.as_bytes());
    Uuid::new_v5(&STEP_NAMESPACE, &name)
}

/// One thing a process asks of the world: a named step (the name keys its
/// command id, so it must be unique within the process) and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<C> {
    /// The step's name, unique within one process (`"debit"`, `"refund"`).
    pub name: String,
    /// What to ask.
    pub command: C,
}

impl<C> Step<C> {
    /// A step.
    pub fn new(name: impl Into<String>, command: C) -> Self {
        Self {
            name: name.into(),
            command,
        }
    }
}

/// A workflow across aggregates, one process per stream of type
/// `Process::TYPE`.
///
/// The process's own events are facts: "asked", "the debit was accepted",
/// "the credit was refused: closed". [`next_step`](Self::next_step) reads
/// them and says what to do next; [`issue`](Self::issue) does it (with the
/// given command id) and answers with the process command that records
/// the outcome. Keep `next_step` a pure function of the state: the driver
/// calls it again after every recorded outcome and after every restart.
#[async_trait]
pub trait ProcessManager: Send + Sync + 'static {
    /// The process state, event-sourced in its own stream; its commands
    /// record what happened.
    type Process: Aggregate;
    /// What the process asks of other aggregates.
    type Command: Send + Sync + 'static;

    /// Unique name: the key of the checkpoint, dead letters and deadlines.
    fn name(&self) -> &str;

    /// The events that wake a process (default: those of its own streams).
    fn filter(&self) -> EventFilter {
        EventFilter::all().stream_types([<Self::Process as Aggregate>::TYPE])
    }

    /// The process an event wakes, if any (default: the event's own stream
    /// when it is a process stream).
    fn correlate(&self, event: &RecordedEvent) -> Option<StreamId> {
        (event.stream_type == <Self::Process as Aggregate>::TYPE).then(|| event.stream_id.clone())
    }

    /// The next step, or `None` when the process is finished or waiting.
    fn next_step(&self, process: &Self::Process) -> Option<Step<Self::Command>>;

    /// When the process must act if nothing else happens (`None`: no
    /// deadline).
    fn deadline(&self, process: &Self::Process) -> Option<DateTime<Utc>> {
        let _ = process;
        None
    }

    /// The process command recording that the deadline passed (at `now`);
    /// `None` when there is nothing to record. The next step then decides
    /// the compensation. It must be right whether or not a step issued
    /// before the deadline reached its target: make the target the arbiter
    /// (it refuses the late step, or the compensation undoes it).
    fn on_deadline(
        &self,
        process: &Self::Process,
        now: DateTime<Utc>,
    ) -> Option<<Self::Process as Aggregate>::Command> {
        let _ = (process, now);
        None
    }

    /// Issues `step` under `command_id` and returns the process command
    /// recording its outcome (accepted, or refused and why). An `Err` is a
    /// transient failure: the step is issued again later, with the same
    /// command id.
    async fn issue(
        &self,
        process_id: &StreamId,
        step: &Step<Self::Command>,
        command_id: Uuid,
    ) -> Result<<Self::Process as Aggregate>::Command, BoxError>;
}
