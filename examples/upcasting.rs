//! Upcasting: events stored in an old shape are read in today's shape,
//! without rewriting the log.
//!
//! A profile's `EmailChanged` was first stored as `{"mail": "..."}`
//! (schema version 1); today's code writes version 2, `{"address": ...,
//! "verified": ...}`. An upcaster turns version 1 into version 2 on read.
//!
//! Run with `cargo run -p es-examples --example upcasting`.

use std::sync::Arc;

use es_core::{
    Aggregate, DomainEvent, EventStore, ExpectedVersion, FnUpcaster, InMemoryEventStore, NewEvent, Repository,
    StreamId, UpcastError, UpcasterRegistry,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Profile {
    email: Option<String>,
    verified: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, DomainEvent)]
enum ProfileEvent {
    /// Version 2: version 1 had `{"mail": ...}` only.
    #[event(version = 2)]
    EmailChanged { address: String, verified: bool },
}

impl Aggregate for Profile {
    const TYPE: &'static str = "profile";
    type Command = String;
    type Event = ProfileEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, address: &String) -> Result<Vec<ProfileEvent>, Self::Error> {
        Ok(vec![ProfileEvent::EmailChanged {
            address: address.clone(),
            verified: false,
        }])
    }
    fn apply(&mut self, ProfileEvent::EmailChanged { address, verified }: &ProfileEvent) {
        self.email = Some(address.clone());
        self.verified = *verified;
    }
}

/// Version 1 -> 2: rename `mail` to `address`; old addresses were verified
/// by the signup flow of the time.
fn email_changed_v1(payload: Value) -> Result<Value, UpcastError> {
    let mail = payload
        .get("mail")
        .and_then(Value::as_str)
        .ok_or_else(|| UpcastError("EmailChanged v1 without mail".into()))?;
    Ok(json!({ "EmailChanged": { "address": mail, "verified": true } }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(InMemoryEventStore::new());
    let id = StreamId::from("profile-1");
    // What an older release wrote.
    let mut old = NewEvent::new("EmailChanged", json!({ "mail": "ada@example.com" }));
    old.schema_version = 1;
    store
        .append(Profile::TYPE, &id, ExpectedVersion::NoStream, vec![old])
        .await?;

    let mut upcasters = UpcasterRegistry::new();
    upcasters.register(FnUpcaster::new("EmailChanged", 1, email_changed_v1));
    let profiles = Repository::<Profile>::builder(store.clone())
        .upcasters(upcasters)
        .build();

    let loaded = profiles.load(&id).await?;
    println!("read the v1 event as {:?}", loaded.state);
    assert_eq!(loaded.state.email.as_deref(), Some("ada@example.com"));
    assert!(loaded.state.verified);

    // New events are written in today's shape, after the old one.
    profiles.execute(&id, "ada@lovelace.example".to_string()).await?;
    let stored = store.read_stream_batch(&id, 1, 10).await?;
    let versions: Vec<u32> = stored.iter().map(|e| e.schema_version).collect();
    println!("stored schema versions: {versions:?}");
    assert_eq!(versions, [1, 2], "the old payload is never rewritten");
    assert_eq!(
        profiles.load(&id).await?.state.email.as_deref(),
        Some("ada@lovelace.example")
    );
    Ok(())
}
