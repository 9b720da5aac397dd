//! Deciding and appending one batch of queued commands of one stream.

use std::collections::HashSet;
use std::sync::Arc;

use uuid::Uuid;

use super::fence::Fence;
use super::mailbox::Pending;
use super::{CommandOutcome, Inner, RepositoryError};
use crate::{
    Aggregate, AppendResult, CommittedEvent, DomainEvent, EventStore, ExpectedVersion, NewEvent, Snapshot, StoreError,
    StreamId, Versioned,
};

/// What one command of the batch came to on the working state.
enum Decision<A: Aggregate> {
    /// Events to append; `first` indexes the batch's event list.
    Accepted {
        events: Vec<A::Event>,
        first: usize,
        state_after: A,
    },
    /// Accepted, but nothing to record.
    NoOp {
        state: A,
        version: u64,
    },
    Rejected(A::Error),
    Invalid(String),
    Mismatch {
        expected: u64,
        actual: u64,
    },
    AlreadyApplied {
        state: A,
        version: u64,
        /// The command's events are past `version`: the state decided on
        /// is older than they are (a cache behind the stream).
        behind: bool,
    },
    /// Decided under a lock whose token is older than one in the stream.
    Fenced {
        token: u64,
        newer: u64,
    },
}

impl<A: Aggregate> Decision<A> {
    /// Whether the answer rests on the state being current, which only an
    /// append or a read of the tail can prove.
    fn needs_current_state(&self) -> bool {
        !matches!(
            self,
            Self::Accepted { .. } | Self::AlreadyApplied { behind: false, .. } | Self::Fenced { .. }
        )
    }
}

/// Decides the batch on the stream's state, appends, retries on conflict,
/// answers every command. Returns the state to keep for the next batch
/// (`None` when it is unknown after a failure).
pub(crate) async fn process<A: Aggregate, S: EventStore + ?Sized>(
    inner: &Inner<A, S>,
    id: &StreamId,
    batch: Vec<Pending<A>>,
    hot: Option<Versioned<A>>,
) -> Option<Versioned<A>> {
    let (mut state, mut verified) = match starting_point(inner, id, hot).await {
        Ok(start) => start,
        Err(e) => {
            fail_all(batch, &e);
            return None;
        }
    };
    let mut attempt = 1;
    let mut conflicts = 0u32;
    loop {
        let (decisions, new_events, stamps) = match decide_all(inner, id, &batch, &state).await {
            Ok(d) => d,
            Err(e) => {
                fail_all(batch, &e);
                return None;
            }
        };
        if new_events.is_empty() {
            if !verified && decisions.iter().any(Decision::needs_current_state) {
                verified = true;
                match inner.complete(id, &mut state).await {
                    Ok(0) => {}
                    Ok(_) => continue,
                    Err(e) => {
                        fail_all(batch, &e);
                        return None;
                    }
                }
            }
            answer(batch, decisions, id, conflicts);
            return Some(state);
        }
        let expected = state.version;
        match inner
            .store
            .append(A::TYPE, id, ExpectedVersion::Exact(expected), new_events)
            .await
        {
            Ok(result) => return Some(commit(inner, id, batch, (decisions, stamps), state, result, conflicts).await),
            Err(StoreError::Conflict { actual, .. }) => {
                conflicts += 1;
                if let Some(cache) = &inner.cache {
                    cache.invalidate(id).await;
                }
                // A stale starting state is not a race: catch up and go
                // again at once. A conflict on a proven-current state is.
                let raced = verified;
                verified = true;
                if let Err(e) = inner.complete(id, &mut state).await {
                    fail_all(batch, &e);
                    return None;
                }
                if raced {
                    if !inner.retry.should_retry(attempt) {
                        tracing::warn!(stream_id = %id, expected, actual, attempts = attempt, "conflict retries exhausted");
                        let e = RepositoryError::Conflict {
                            stream_id: id.clone(),
                            expected,
                            actual,
                        };
                        fail_all(batch, &e);
                        return Some(state);
                    }
                    tracing::debug!(stream_id = %id, expected, actual, attempt, "version conflict; retrying");
                    tokio::time::sleep(inner.retry.delay_after(attempt)).await;
                    attempt += 1;
                }
            }
            Err(e) => {
                if let Some(cache) = &inner.cache {
                    cache.invalidate(id).await;
                }
                fail_all(batch, &RepositoryError::from(e));
                return None;
            }
        }
    }
}

async fn starting_point<A: Aggregate, S: EventStore + ?Sized>(
    inner: &Inner<A, S>,
    id: &StreamId,
    hot: Option<Versioned<A>>,
) -> Result<(Versioned<A>, bool), RepositoryError<A::Error>> {
    if let Some(state) = hot {
        return Ok((state, false));
    }
    if let Some(cache) = &inner.cache {
        if let Some(state) = cache.get(id).await {
            return Ok((state, false));
        }
    }
    let mut state = inner.starting_state(id).await?;
    inner.complete(id, &mut state).await?;
    Ok((state, true))
}

async fn decide_all<A: Aggregate, S: EventStore + ?Sized>(
    inner: &Inner<A, S>,
    id: &StreamId,
    batch: &[Pending<A>],
    state: &Versioned<A>,
) -> Result<(Vec<Decision<A>>, Vec<NewEvent>, Vec<Stamp>), RepositoryError<A::Error>> {
    let mut working = state.clone();
    let mut stamps = Vec::new();
    let mut decisions = Vec::with_capacity(batch.len());
    let mut new_events = Vec::new();
    let mut command_ids: HashSet<Uuid> = HashSet::new();
    let mut fence = Fence::default();
    for p in batch {
        if let Some(cid) = p.ctx.command_id {
            let seen_here = !command_ids.insert(cid);
            let stored = if seen_here {
                None
            } else {
                inner
                    .store
                    .find_event(p.ctx.event_id(id, 0))
                    .await?
                    .filter(|e| &e.stream_id == id)
            };
            if seen_here || stored.is_some() {
                decisions.push(Decision::AlreadyApplied {
                    state: working.state.clone(),
                    version: working.version,
                    behind: stored.is_some_and(|e| e.version > working.version),
                });
                continue;
            }
        }
        if let Some(expected) = p.ctx.expected_version {
            if expected != working.version {
                decisions.push(Decision::Mismatch {
                    expected,
                    actual: working.version,
                });
                continue;
            }
        }
        let token = p.ctx.fencing_token();
        if let Some(token) = token {
            if let Some(newer) = fence.newer_than(&*inner.store, id, state.version, token).await? {
                decisions.push(Decision::Fenced { token, newer });
                continue;
            }
        }
        let events = match p.decide.decide(&working.state).await {
            Ok(events) => events,
            Err(e) => {
                decisions.push(Decision::Rejected(e));
                continue;
            }
        };
        if events.is_empty() {
            decisions.push(Decision::NoOp {
                state: working.state.clone(),
                version: working.version,
            });
            continue;
        }
        if let Some(reason) = inner
            .validators
            .iter()
            .find_map(|v| v.validate(&working.state, &events).err())
        {
            decisions.push(Decision::Invalid(reason));
            continue;
        }
        let first = new_events.len();
        let mut encoded = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let payload = match inner.codec.encode(event) {
                Ok(p) => p,
                Err(e) => return Err(RepositoryError::Invalid(e.to_string())),
            };
            let mut metadata = p.ctx.metadata.clone();
            if metadata.causation_id.is_none() {
                metadata.causation_id = p.ctx.command_id;
            }
            let stamp = Stamp {
                event_id: p.ctx.event_id(id, i),
                metadata,
                recorded_at: inner.clock.now(),
            };
            encoded.push(NewEvent {
                event_id: stamp.event_id,
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                payload,
                metadata: stamp.metadata.clone(),
                recorded_at: stamp.recorded_at,
            });
            stamps.push(stamp);
        }
        for event in &events {
            working.state.apply(event);
        }
        working.version += events.len() as u64;
        new_events.extend(encoded);
        fence.accepted(token);
        decisions.push(Decision::Accepted {
            events,
            first,
            state_after: working.state.clone(),
        });
    }
    Ok((decisions, new_events, stamps))
}

/// The envelope fields chosen for an event before its append, kept to
/// describe the committed event exactly as stored.
struct Stamp {
    event_id: uuid::Uuid,
    metadata: crate::Metadata,
    recorded_at: chrono::DateTime<chrono::Utc>,
}

/// After a successful append: update the cache, snapshot, run handlers,
/// answer. Returns the new state.
async fn commit<A: Aggregate, S: EventStore + ?Sized>(
    inner: &Inner<A, S>,
    id: &StreamId,
    batch: Vec<Pending<A>>,
    (decisions, stamps): (Vec<Decision<A>>, Vec<Stamp>),
    before: Versioned<A>,
    result: AppendResult,
    conflicts: u32,
) -> Versioned<A> {
    let mut after = Versioned {
        state: before.state,
        version: result.new_version,
    };
    // The state after the last accepted command is the batch's end state.
    if let Some(Decision::Accepted { state_after, .. }) =
        decisions.iter().rev().find(|d| matches!(d, Decision::Accepted { .. }))
    {
        after.state = state_after.clone();
    }
    if let Some(cache) = &inner.cache {
        cache.put(id, &after).await;
    }
    if let Some(store) = &inner.snapshots {
        if inner.snapshot_policy.should_snapshot(before.version, after.version) {
            save_snapshot(Arc::clone(store), id, &after, inner.clock.now());
        }
    }
    let committed = committed_events(&decisions, stamps, &result, before.version);
    if !inner.handlers.is_empty() {
        let all: Vec<_> = committed.iter().flatten().cloned().collect();
        for handler in &inner.handlers {
            if let Err(e) = handler.on_committed(id, &after.state, &all).await {
                tracing::warn!(stream_id = %id, error = %e, "post-commit handler failed");
            }
        }
    }
    let mut per_command = committed.into_iter();
    for (p, d) in batch.into_iter().zip(decisions) {
        let events = per_command.next().unwrap_or_default();
        let reply = match d {
            Decision::Accepted { state_after, .. } => {
                let version = events.last().map_or(after.version, |e| e.version);
                Ok(CommandOutcome {
                    state: state_after,
                    version,
                    events,
                    append: Some(result.clone()),
                    already_applied: false,
                    conflict_retries: conflicts,
                })
            }
            other => settle(other, id, conflicts),
        };
        let _ = p.reply.send(reply);
    }
    after
}

/// The committed events of each command of the batch (empty for commands
/// that appended nothing), with the ids, metadata and times they were
/// stored with.
fn committed_events<A: Aggregate>(
    decisions: &[Decision<A>],
    stamps: Vec<Stamp>,
    result: &AppendResult,
    base_version: u64,
) -> Vec<Vec<CommittedEvent<A::Event>>> {
    // Each stamp describes exactly one event: its metadata moves into it.
    let mut stamps = stamps.into_iter().enumerate();
    decisions
        .iter()
        .map(|d| match d {
            Decision::Accepted { events, first, .. } => events
                .iter()
                .zip(stamps.by_ref().skip_while(|(k, _)| k < first))
                .map(|(event, (k, stamp))| CommittedEvent {
                    event: event.clone(),
                    event_id: stamp.event_id,
                    version: base_version + 1 + k as u64,
                    global_position: result.positions.get(k).copied().unwrap_or_default(),
                    metadata: stamp.metadata,
                    recorded_at: stamp.recorded_at,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn save_snapshot<A: Aggregate>(
    store: Arc<dyn crate::SnapshotStore>,
    id: &StreamId,
    state: &Versioned<A>,
    now: chrono::DateTime<chrono::Utc>,
) {
    let value = match serde_json::to_value(&state.state) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(stream_id = %id, error = %e, "state does not serialize; no snapshot");
            return;
        }
    };
    let snapshot = Snapshot {
        stream_id: id.clone(),
        stream_type: A::TYPE.to_owned(),
        version: state.version,
        schema_version: A::SNAPSHOT_VERSION,
        state: value,
        taken_at: now,
    };
    tokio::spawn(async move {
        let (stream_id, version) = (snapshot.stream_id.clone(), snapshot.version);
        match store.save(snapshot).await {
            Ok(()) => tracing::debug!(%stream_id, version, "snapshot saved"),
            Err(e) => tracing::warn!(%stream_id, version, error = %e, "snapshot save failed"),
        }
    });
}

/// The answer of a command that appended nothing.
fn settle<A: Aggregate>(
    decision: Decision<A>,
    id: &StreamId,
    conflicts: u32,
) -> Result<CommandOutcome<A>, RepositoryError<A::Error>> {
    match decision {
        Decision::NoOp { state, version } => Ok(CommandOutcome {
            state,
            version,
            events: Vec::new(),
            append: None,
            already_applied: false,
            conflict_retries: conflicts,
        }),
        Decision::AlreadyApplied { state, version, .. } => Ok(CommandOutcome {
            state,
            version,
            events: Vec::new(),
            append: None,
            already_applied: true,
            conflict_retries: conflicts,
        }),
        Decision::Rejected(e) => Err(RepositoryError::Rejected(e)),
        Decision::Invalid(reason) => Err(RepositoryError::Invalid(reason)),
        Decision::Mismatch { expected, actual } => Err(RepositoryError::Conflict {
            stream_id: id.clone(),
            expected,
            actual,
        }),
        Decision::Fenced { token, newer } => Err(RepositoryError::Fenced {
            stream_id: id.clone(),
            token,
            newer,
        }),
        Decision::Accepted { .. } => Err(RepositoryError::Aborted("accepted command was not committed".into())),
    }
}

/// Answers a batch in which nothing was appended.
fn answer<A: Aggregate>(batch: Vec<Pending<A>>, decisions: Vec<Decision<A>>, id: &StreamId, conflicts: u32) {
    for (p, d) in batch.into_iter().zip(decisions) {
        let _ = p.reply.send(settle(d, id, conflicts));
    }
}

/// Answers every command of the batch with the same failure.
fn fail_all<A: Aggregate>(batch: Vec<Pending<A>>, error: &RepositoryError<A::Error>) {
    for p in batch {
        let _ = p.reply.send(Err(error.duplicate()));
    }
}
