//! The [`Aggregate`] and [`DomainEvent`] traits: the user's domain model.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A domain event: a fact, named in the past tense, that an aggregate emits.
///
/// Events are serialized with serde through the [`EventCodec`](crate::EventCodec);
/// the serde form of the value is the stored payload. Change an event's
/// shape by bumping [`schema_version`](DomainEvent::schema_version) and
/// registering an [`Upcaster`](crate::Upcaster) from the old version.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static {
    /// The stable name of this event's type, e.g. `"MoneyDeposited"`.
    fn event_type(&self) -> &'static str;

    /// The schema version this code writes for this event type.
    fn schema_version(&self) -> u32 {
        1
    }
}

/// A consistency boundary rebuilt from its events.
///
/// [`handle`](Aggregate::handle) decides: it looks at the current state and a
/// command and returns the events to record, or a domain error. It must be
/// pure (no I/O, no clock, no randomness, no mutation) so that it can be
/// retried after a concurrency conflict and property-tested. Commands that
/// need outside services go through
/// [`Repository::execute_with`](crate::Repository::execute_with) instead.
///
/// [`apply`](Aggregate::apply) evolves the state by one event. It is
/// infallible: an event is a fact that already happened.
///
/// The state is serializable so that it can be snapshotted and cached; bump
/// [`SNAPSHOT_VERSION`](Aggregate::SNAPSHOT_VERSION) when its serde shape
/// changes and old snapshots are discarded instead of misread.
///
/// ```
/// use es_core::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Counter { value: u64 }
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Incremented { by: u64 } }
///
/// impl DomainEvent for CounterEvent {
///     fn event_type(&self) -> &'static str { "Incremented" }
/// }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot increment by zero")]
/// struct ZeroIncrement;
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Command = u64;
///     type Event = CounterEvent;
///     type Error = ZeroIncrement;
///
///     fn handle(&self, by: &u64) -> Result<Vec<CounterEvent>, ZeroIncrement> {
///         if *by == 0 { return Err(ZeroIncrement); }
///         Ok(vec![CounterEvent::Incremented { by: *by }])
///     }
///
///     fn apply(&mut self, event: &CounterEvent) {
///         match event { CounterEvent::Incremented { by } => self.value += by }
///     }
/// }
///
/// let mut c = Counter::default();
/// for e in c.handle(&3).unwrap() { c.apply(&e); }
/// assert_eq!(c.value, 3);
/// assert!(c.handle(&0).is_err());
/// ```
pub trait Aggregate: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stream type of this aggregate, e.g. `"account"`.
    const TYPE: &'static str;
    /// Version of the state's serde shape, checked when loading snapshots.
    const SNAPSHOT_VERSION: u32 = 1;

    /// The commands this aggregate decides on.
    type Command: Send + Sync + 'static;
    /// The events it records.
    type Event: DomainEvent;
    /// Why a command is rejected.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides which events a command produces. Pure.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event to the state. Infallible.
    fn apply(&mut self, event: &Self::Event);
}
