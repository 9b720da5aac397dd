//! The [`Repository`] over a backend: commands, rejections, concurrent
//! writers with caches of their own, and command ids, checked against what
//! the store then holds.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    Aggregate, CommandContext, DomainEvent, EventStore, InMemoryStateCache, Repository, RepositoryError, RetryPolicy,
    StreamId,
};

/// A counter that cannot go below zero: the aggregate of the check.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Tally {
    total: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum TallyEvent {
    Added { n: u64 },
    Taken { n: u64 },
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Added { .. } => "Added",
            Self::Taken { .. } => "Taken",
        }
    }
}

#[derive(Debug, Clone)]
enum TallyCommand {
    Add(u64),
    Take(u64),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("not enough")]
struct NotEnough;

impl Aggregate for Tally {
    const TYPE: &'static str = "conformance-tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = NotEnough;

    fn handle(&self, command: &TallyCommand) -> Result<Vec<TallyEvent>, NotEnough> {
        match *command {
            TallyCommand::Add(n) => Ok(vec![TallyEvent::Added { n }]),
            TallyCommand::Take(n) if n > self.total => Err(NotEnough),
            TallyCommand::Take(n) => Ok(vec![TallyEvent::Taken { n }]),
        }
    }

    fn apply(&mut self, event: &TallyEvent) {
        match *event {
            TallyEvent::Added { n } => self.total += n,
            TallyEvent::Taken { n } => self.total -= n,
        }
    }
}

/// A repository with its own state cache and a retry policy patient
/// enough for writers that keep conflicting with each other.
fn repository<S: EventStore + 'static>(store: &Arc<S>) -> Repository<Tally, S> {
    Repository::builder(Arc::clone(store))
        .cache(Arc::new(InMemoryStateCache::new(1_000)))
        .retry(RetryPolicy {
            max_attempts: 200,
            initial_delay: Duration::from_millis(1),
            ..RetryPolicy::default()
        })
        .build()
}

/// The repository over `store`:
/// - commands are decided on the state the stream holds, and a fresh
///   repository (no cache) loads the same state back;
/// - a rejected command appends nothing;
/// - two repositories with caches of their own, 16 commands at once on one
///   stream: every command applied exactly once, in a gapless stream;
/// - 10 sends of one command id at once through one repository: one send
///   applies it; 10 sends of another through two repositories: its events
///   are stored once; a later send from a fresh repository is recognised.
pub async fn repository_semantics<S: EventStore + 'static>(store: S) {
    let store = Arc::new(store);
    let one = repository(&store);
    let id = format!("tally-{}", Uuid::now_v7());
    for _ in 0..3 {
        one.execute(id.as_str(), TallyCommand::Add(5)).await.expect("add");
    }
    let loaded = repository(&store).load(id.as_str()).await.expect("load");
    assert_eq!((loaded.state.total, loaded.version), (15, 3), "state loaded back");
    let refused = one.execute(id.as_str(), TallyCommand::Take(100)).await;
    assert!(
        matches!(refused, Err(RepositoryError::Rejected(NotEnough))),
        "{refused:?}"
    );
    let version = store
        .stream_version(&StreamId::from(id.as_str()))
        .await
        .expect("version");
    assert_eq!(version, 3, "a rejection appends nothing");

    // Two writers, each with its own cache: they conflict and retry.
    let busy = format!("tally-{}", Uuid::now_v7());
    let two = repository(&store);
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let repo = if i % 2 == 0 { one.clone() } else { two.clone() };
        let busy = busy.clone();
        tasks.push(tokio::spawn(async move {
            repo.execute(busy.as_str(), TallyCommand::Add(1 << i)).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("every concurrent command applies");
    }
    let loaded = repository(&store).load(busy.as_str()).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        ((1 << 16) - 1, 16),
        "each of the 16 commands applied once"
    );

    // One command id sent ten times at once through one repository: one
    // send applies it. Another sent ten times at once through both: the
    // store holds it once (a send racing the other repository's may be
    // answered as the one that applied it too, when the store recognised
    // its append as the same append).
    let command = Uuid::now_v7();
    let applied = send_at_once(std::slice::from_ref(&one), &id, TallyCommand::Take(10), command).await;
    assert_eq!(applied, 1, "one command id, applied once");
    let raced = Uuid::now_v7();
    let applied = send_at_once(&[one.clone(), two.clone()], &id, TallyCommand::Take(1), raced).await;
    assert!(applied >= 1, "applied");
    let loaded = repository(&store).load(id.as_str()).await.expect("load");
    assert_eq!(
        (loaded.state.total, loaded.version),
        (4, 5),
        "each command id's events stored once"
    );
    let again = repository(&store)
        .execute_in(
            id.as_str(),
            TallyCommand::Take(10),
            CommandContext::default().with_command_id(command),
        )
        .await
        .expect("a later repeat");
    assert!(again.already_applied, "a later repeat is recognised by the store");
    let loaded = repository(&store).load(id.as_str()).await.expect("load");
    assert_eq!((loaded.state.total, loaded.version), (4, 5));
}

/// Sends `command` with `command_id` ten times at once, spread over
/// `repos`; how many sends were answered as the one that applied it.
async fn send_at_once<S: EventStore + 'static>(
    repos: &[Repository<Tally, S>],
    id: &str,
    command: TallyCommand,
    command_id: Uuid,
) -> usize {
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (repo, id, command) = (repos[i % repos.len()].clone(), id.to_owned(), command.clone());
        tasks.push(tokio::spawn(async move {
            repo.execute_in(
                id.as_str(),
                command,
                CommandContext::default().with_command_id(command_id),
            )
            .await
        }));
    }
    let mut applied = 0;
    for t in tasks {
        let outcome = t.await.expect("task").expect("a repeat is not an error");
        if !outcome.already_applied {
            applied += 1;
        }
    }
    applied
}
