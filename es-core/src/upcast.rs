//! Upcasting: turning stored payloads of old schema versions into today's.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::Metadata;

/// Why an upcaster could not transform a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpcastError(pub String);

/// Transforms the stored payload of one event type from `from_version` to
/// `from_version + 1`.
///
/// Upcasters run on read, before deserialization, and chain: a v1 payload
/// passes through the v1 and then the v2 upcaster to load as v3.
pub trait Upcaster: Send + Sync {
    /// The event type this upcaster applies to.
    fn event_type(&self) -> &str;
    /// The schema version it reads (it produces `from_version + 1`).
    fn source_version(&self) -> u32;
    /// Transforms the payload.
    fn upcast(&self, payload: Value) -> Result<Value, UpcastError>;
    /// Transforms the payload of a stored event, which may need the
    /// event's metadata (a field that older versions kept in a header).
    /// Defaults to [`upcast`](Upcaster::upcast).
    fn upcast_event(&self, payload: Value, metadata: &Metadata) -> Result<Value, UpcastError> {
        let _ = metadata;
        self.upcast(payload)
    }
}

/// An [`Upcaster`] made of a closure.
///
/// ```
/// use es_core::{FnUpcaster, UpcasterRegistry};
/// use serde_json::json;
///
/// let mut registry = UpcasterRegistry::new();
/// // v1 stored {"Renamed": {"name": "x"}}; v2 splits the name.
/// registry.register(FnUpcaster::new("Renamed", 1, |mut v| {
///     let name = v["Renamed"]["name"].take();
///     Ok(json!({"Renamed": {"first": name, "last": ""}}))
/// }));
/// let (payload, version) = registry
///     .upcast("Renamed", 1, json!({"Renamed": {"name": "Ada"}}))
///     .unwrap();
/// assert_eq!(version, 2);
/// assert_eq!(payload, json!({"Renamed": {"first": "Ada", "last": ""}}));
/// ```
pub struct FnUpcaster<F> {
    event_type: String,
    from_version: u32,
    f: F,
}

impl<F> FnUpcaster<F>
where
    F: Fn(Value) -> Result<Value, UpcastError> + Send + Sync,
{
    /// An upcaster for `event_type` from `from_version` to the next version.
    pub fn new(event_type: impl Into<String>, from_version: u32, f: F) -> Self {
        Self {
            event_type: event_type.into(),
            from_version,
            f,
        }
    }
}

impl<F> Upcaster for FnUpcaster<F>
where
    F: Fn(Value) -> Result<Value, UpcastError> + Send + Sync,
{
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn source_version(&self) -> u32 {
        self.from_version
    }
    fn upcast(&self, payload: Value) -> Result<Value, UpcastError> {
        (self.f)(payload)
    }
}

/// Upcasters keyed by (event type, schema version), applied in a chain.
///
/// Kept by event type, then by version, so a lookup takes the event type
/// as a `&str` (no key is built per event read).
#[derive(Clone, Default)]
pub struct UpcasterRegistry {
    by_type: HashMap<String, HashMap<u32, Arc<dyn Upcaster>>>,
}

impl fmt::Debug for UpcasterRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<(&str, u32)> = self
            .by_type
            .iter()
            .flat_map(|(t, versions)| versions.keys().map(move |v| (t.as_str(), *v)))
            .collect();
        keys.sort_unstable();
        f.debug_struct("UpcasterRegistry").field("upcasters", &keys).finish()
    }
}

impl UpcasterRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an upcaster, replacing any other for the same key.
    pub fn register(&mut self, upcaster: impl Upcaster + 'static) -> &mut Self {
        let versions = self.by_type.entry(upcaster.event_type().to_owned()).or_default();
        versions.insert(upcaster.source_version(), Arc::new(upcaster));
        self
    }

    /// Whether no upcaster is registered.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    /// Whether a payload of `event_type` stored at `schema_version` would
    /// be changed by the chain.
    pub fn applies_to(&self, event_type: &str, schema_version: u32) -> bool {
        self.by_type
            .get(event_type)
            .is_some_and(|versions| versions.contains_key(&schema_version))
    }

    /// Runs the chain for a payload stored at `schema_version`; returns the
    /// payload and the version it ends at.
    pub fn upcast(&self, event_type: &str, schema_version: u32, payload: Value) -> Result<(Value, u32), UpcastError> {
        self.chain(event_type, schema_version, payload, None)
    }

    /// Runs the chain for a stored event's payload, giving each upcaster
    /// the event's metadata ([`Upcaster::upcast_event`]).
    pub fn upcast_event(
        &self,
        event_type: &str,
        schema_version: u32,
        payload: Value,
        metadata: &Metadata,
    ) -> Result<(Value, u32), UpcastError> {
        self.chain(event_type, schema_version, payload, Some(metadata))
    }

    fn chain(
        &self,
        event_type: &str,
        schema_version: u32,
        mut payload: Value,
        metadata: Option<&Metadata>,
    ) -> Result<(Value, u32), UpcastError> {
        let mut version = schema_version;
        let Some(versions) = self.by_type.get(event_type) else {
            return Ok((payload, version));
        };
        while let Some(upcaster) = versions.get(&version) {
            let upcast = match metadata {
                Some(m) => upcaster.upcast_event(payload, m),
                None => upcaster.upcast(payload),
            };
            payload = upcast.map_err(|e| UpcastError(format!("{event_type} v{version} -> v{}: {e}", version + 1)))?;
            version += 1;
        }
        Ok((payload, version))
    }
}
