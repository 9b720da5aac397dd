//! Admission: concurrent appends gathered into batches, each admitted by
//! one script call (one Redis round trip, one fsync with `appendfsync
//! always`), several calls in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use es_core::backend::check_replay;
use es_core::{AppendResult, EventStore, ExpectedVersion, NewEvent, ShardFence, SharedError, StoreError, StreamId};
use redis::Value;
use tokio::sync::{mpsc, oneshot, Mutex};
use tracing::Instrument;

use super::record::PendingBodyRef;
use super::redis_io::{eval, int, text};
use super::scripts::scripts;
use super::WriteBehindConfig;
use crate::RedisBackend;

/// One caller's append, waiting for its answer.
pub(crate) struct Job {
    pub(crate) stream_type: String,
    pub(crate) stream_id: StreamId,
    pub(crate) expected: ExpectedVersion,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) fence: Option<ShardFence>,
    pub(crate) reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// What the admitting side shares between its processors.
pub(crate) struct Admission<S: ?Sized> {
    pub(crate) inner: Arc<S>,
    pub(crate) backend: Arc<RedisBackend>,
    pub(crate) config: WriteBehindConfig,
}

/// Starts the processors; appends sent to the returned channel are
/// answered through their `reply`.
pub(crate) fn spawn<S: EventStore + ?Sized>(admission: Arc<Admission<S>>) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel(admission.config.max_queued_appends.max(1));
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..admission.config.admission_pipelines.max(1) {
        let rx = Arc::clone(&rx);
        let admission = Arc::clone(&admission);
        tokio::spawn(async move {
            loop {
                let mut batch = Vec::new();
                {
                    let mut rx = rx.lock().await;
                    let Some(first) = rx.recv().await else { return };
                    batch.push(first);
                    while batch.len() < admission.config.max_admission_batch.max(1) {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                }
                let span = tracing::debug_span!("es.write_behind.admit", appends = batch.len());
                admission.admit(batch).instrument(span).await;
            }
        });
    }
    tx
}

/// A job's answer from the admission script.
enum Verdict {
    Done(Result<AppendResult, StoreError>),
    Uninitialised,
}

impl<S: EventStore + ?Sized> Admission<S> {
    /// Admits a batch and answers every job of it.
    async fn admit(&self, jobs: Vec<Job>) {
        let mut jobs = jobs;
        // Rounds: ids checked against the store, then the script; streams
        // Redis has no version of yet are initialised from the store and
        // go round again. A round that took longer than half the id grace
        // period checks the ids again.
        for _round in 0..4 {
            let checked_at = Instant::now();
            jobs = match self.answer_replays_from_store(jobs).await {
                Some(rest) => rest,
                None => return,
            };
            if jobs.is_empty() {
                return;
            }
            if checked_at.elapsed() > self.config.id_grace / 2 {
                continue;
            }
            let verdicts = match self.run_script(&jobs).await {
                Ok(v) => v,
                Err(e) => {
                    fail_all(jobs, e);
                    return;
                }
            };
            let mut uninit = Vec::new();
            for (job, verdict) in jobs.into_iter().zip(verdicts) {
                match verdict {
                    Verdict::Done(answer) => {
                        let _ = job.reply.send(answer);
                    }
                    Verdict::Uninitialised => uninit.push(job),
                }
            }
            if uninit.is_empty() {
                return;
            }
            if let Err(e) = self.initialise(&uninit).await {
                fail_all(uninit, e);
                return;
            }
            jobs = uninit;
        }
        for job in jobs {
            let _ = job.reply.send(Err(StoreError::Unavailable {
                operation: "write-behind admission",
                reason: "the append could not be admitted in four rounds".into(),
            }));
        }
    }

    /// Answers the jobs whose event ids the store already holds (replays
    /// or duplicates) and returns the others; `None` when the store could
    /// not be asked (every job answered with the error).
    async fn answer_replays_from_store(&self, jobs: Vec<Job>) -> Option<Vec<Job>> {
        // Appends whose ids are all fresh UUIDv7s need no store lookup:
        // if they were admitted before, Redis still knows them (see
        // `is_fresh`). The others are looked up in one query.
        let now_ms = chrono::Utc::now().timestamp_millis();
        let window_ms = (self.config.id_grace.as_millis() / 2) as i64;
        let (fresh, jobs): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| j.events.iter().all(|e| is_fresh(e.event_id, now_ms, window_ms)));
        if jobs.is_empty() {
            return Some(fresh);
        }
        let ids: Vec<uuid::Uuid> = jobs.iter().flat_map(|j| j.events.iter().map(|e| e.event_id)).collect();
        let stored = match located(&ids, self.inner.locate_events(&ids).await) {
            Ok(s) => s,
            Err(e) => {
                fail_all(jobs, e);
                return None;
            }
        };
        let mut rest = Vec::with_capacity(jobs.len());
        let mut at = 0;
        for job in jobs {
            let slots = &stored[at..at + job.events.len()];
            at += job.events.len();
            if slots.iter().all(Option::is_none) {
                rest.push(job);
                continue;
            }
            let answer = check_replay(&job.stream_id, job.expected, &job.events, slots).and_then(|r| {
                r.ok_or_else(|| StoreError::Corrupt {
                    stream_id: job.stream_id.clone(),
                    version: 0,
                    reason: "stored ids vanished".into(),
                })
            });
            let _ = job.reply.send(answer);
        }
        rest.extend(fresh);
        Some(rest)
    }

    /// One admission script call for the jobs.
    async fn run_script(&self, jobs: &[Job]) -> Result<Vec<Verdict>, StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(2 + jobs.len() * 9);
        args.push(self.config.key_prefix.clone().into_bytes());
        args.push(now.to_string().into_bytes());
        for job in jobs {
            let body = PendingBodyRef {
                stream_type: &job.stream_type,
                events: &job.events,
            }
            .encode()?;
            args.push(job.stream_id.as_str().as_bytes().to_vec());
            args.push(
                match job.expected {
                    ExpectedVersion::Any => "a".to_owned(),
                    ExpectedVersion::NoStream => "n".to_owned(),
                    ExpectedVersion::StreamExists => "e".to_owned(),
                    ExpectedVersion::Exact(v) => v.to_string(),
                }
                .into_bytes(),
            );
            args.push(
                es_core::shard_of(&job.stream_id, self.config.shards.max(1))
                    .to_string()
                    .into_bytes(),
            );
            if let Some(f) = job.fence {
                args.push(f.shard.to_string().into_bytes());
                args.push(f.token.to_string().into_bytes());
            } else {
                args.push(Vec::new());
                args.push(b"0".to_vec());
            }
            args.push(body.into_bytes());
            args.push(job.events.len().to_string().into_bytes());
            for e in &job.events {
                args.push(e.event_id.to_string().into_bytes());
            }
        }
        let reply = eval(&self.backend, "write-behind admit", &scripts().admit, args).await?;
        let Value::Array(replies) = reply else {
            return Err(protocol("admit", "not an array"));
        };
        if replies.len() != jobs.len() {
            return Err(protocol("admit", "one reply per append expected"));
        }
        replies.into_iter().zip(jobs).map(|(r, job)| verdict(r, job)).collect()
    }

    /// Records the store's version of each stream of `jobs` in Redis (where
    /// Redis has none).
    async fn initialise(&self, jobs: &[Job]) -> Result<(), StoreError> {
        let mut versions: HashMap<&StreamId, u64> = HashMap::new();
        for job in jobs {
            if !versions.contains_key(&job.stream_id) {
                let v = self.inner.stream_version(&job.stream_id).await?;
                versions.insert(&job.stream_id, v);
            }
        }
        let mut args = vec![self.config.key_prefix.clone().into_bytes()];
        for (stream, version) in versions {
            args.push(stream.as_str().as_bytes().to_vec());
            args.push(version.to_string().into_bytes());
        }
        eval(&self.backend, "write-behind init versions", &scripts().init, args).await?;
        Ok(())
    }
}

/// Whether an event id is a UUIDv7 minted less than `window_ms` ago (by
/// its embedded time; up to `window_ms` in the future is tolerated as
/// clock skew).
///
/// Such an id cannot have reached the store so long ago that Redis forgot
/// it: an append is admitted after its ids are minted, Redis keeps the ids
/// while the append is pending and for `id_grace` after it was flushed,
/// and admission checks within `id_grace / 2` of this test (the caller
/// re-checks a batch that took longer). So Redis alone answers whether it
/// is a replay; clocks of the processes must agree within `id_grace / 2`.
fn is_fresh(id: uuid::Uuid, now_ms: i64, window_ms: i64) -> bool {
    if id.get_version() != Some(uuid::Version::SortRand) {
        return false;
    }
    let Some(ts) = id.get_timestamp() else { return false };
    let (secs, nanos) = ts.to_unix();
    let minted_ms = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
    (now_ms - minted_ms).abs() < window_ms
}

fn protocol(op: &str, what: &str) -> StoreError {
    StoreError::Backend {
        operation: "write-behind admit",
        source: format!("unexpected reply to {op}: {what}").into(),
    }
}

/// Decodes the script's reply for one job.
fn verdict(reply: Value, job: &Job) -> Result<Verdict, StoreError> {
    let Value::Array(fields) = reply else {
        return Err(protocol("admit", "an append's reply is not an array"));
    };
    let kind = fields.first().and_then(text).unwrap_or_default();
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(int)
            .ok_or_else(|| protocol("admit", "missing number"))
    };
    Ok(match kind.as_str() {
        "ok" | "replay" => Verdict::Done(Ok(AppendResult {
            first_version: num(1)?,
            new_version: num(2)?,
            positions: Vec::new(),
        })),
        "conflict" => Verdict::Done(Err(StoreError::Conflict {
            stream_id: job.stream_id.clone(),
            expected: job.expected,
            actual: num(1)?,
        })),
        "dup" => {
            let id = fields.get(1).and_then(text).unwrap_or_default();
            let stream = fields.get(2).and_then(text).unwrap_or_default();
            Verdict::Done(Err(StoreError::DuplicateEventId {
                event_id: id.parse().map_err(|_| protocol("admit", "bad event id"))?,
                stored_stream_id: StreamId::from(stream),
                stored_version: num(3)?,
            }))
        }
        "fenced" => {
            let fence = job.fence.ok_or_else(|| protocol("admit", "fenced without a fence"))?;
            Verdict::Done(Err(StoreError::Fenced {
                shard: fence.shard,
                token: fence.token,
                current: num(1)?,
            }))
        }
        "diverged" => Verdict::Done(Err(StoreError::Diverged {
            stream_id: job.stream_id.clone(),
            reason: "an earlier append of the stream was refused by the store; see the dead list".into(),
        })),
        "uninit" => Verdict::Uninitialised,
        other => return Err(protocol("admit", &format!("unknown verdict {other:?}"))),
    })
}

/// Sends `e` to every job of a failed batch (each its own copy).
fn fail_all(jobs: Vec<Job>, e: StoreError) {
    let e = shareable(e);
    for job in jobs {
        let _ = job.reply.send(Err(copy_error(&e)));
    }
}

/// `e` in a form [`copy_error`] copies without losing its type.
fn shareable(e: StoreError) -> StoreError {
    match e {
        StoreError::Backend { operation, source } if !source.is::<SharedError>() => StoreError::Backend {
            operation,
            source: Box::new(SharedError::new(source)),
        },
        other => other,
    }
}

/// A copy of a batch's error (made [`shareable`] first).
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable { operation, reason } => StoreError::Unavailable {
            operation,
            reason: reason.clone(),
        },
        StoreError::Backend { operation, source } => StoreError::Backend {
            operation,
            source: match source.downcast_ref::<SharedError>() {
                Some(shared) => Box::new(shared.clone()),
                None => source.to_string().into(),
            },
        },
        other => StoreError::Unavailable {
            operation: "write-behind admission",
            reason: other.to_string(),
        },
    }
}

/// Where each of some event ids is stored, as
/// [`EventStore::locate_events`] answers.
pub(super) type Slots = Vec<Option<(StreamId, u64, u64)>>;

/// The inner store's [`EventStore::locate_events`] answer, checked to hold
/// one slot per id as the trait promises (a store that breaks the promise
/// fails the admission instead of panicking it).
pub(super) fn located(ids: &[uuid::Uuid], answer: Result<Slots, StoreError>) -> Result<Slots, StoreError> {
    let found = answer?;
    if found.len() != ids.len() {
        return Err(StoreError::backend(
            "locate events",
            format!("the store answered {} slots for {} event ids", found.len(), ids.len()),
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::{copy_error, is_fresh, located, shareable};
    use es_core::StoreError;

    #[test]
    fn a_store_answering_too_few_slots_is_an_error() {
        let ids = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
        let short = located(&ids, Ok(vec![None]));
        assert!(
            matches!(&short, Err(StoreError::Backend { source, .. }) if source.to_string().contains("1 slots for 2")),
            "{short:?}"
        );
        assert_eq!(located(&ids, Ok(vec![None, None])).ok().map(|v| v.len()), Some(2));
    }

    /// Every job of a failed batch gets the batch's error with its type
    /// intact: a caller finds the Redis error (here a refused connection)
    /// by walking the sources, as it would on the error itself.
    #[test]
    fn each_copy_of_a_batch_error_keeps_the_typed_error() {
        let refused = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let original = crate::RedisError::Redis {
            operation: "write-behind admit",
            source: refused,
        };
        let text = original.to_string();
        let batch = shareable(StoreError::Backend {
            operation: "write-behind admit",
            source: Box::new(original),
        });
        for _ in 0..2 {
            let copy = copy_error(&batch);
            let StoreError::Backend { source, .. } = &copy else {
                panic!("{copy:?}")
            };
            assert_eq!(source.to_string(), text);
            let mut next: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            let mut found = None;
            while let Some(e) = next {
                if let Some(r) = e.downcast_ref::<crate::RedisError>() {
                    found = Some(r.is_unreachable());
                }
                next = e.source();
            }
            assert_eq!(found, Some(true), "{copy:?}");
        }
        let unavailable = StoreError::Unavailable {
            operation: "x",
            reason: "circuit open".into(),
        };
        assert!(matches!(
            copy_error(&shareable(unavailable)),
            StoreError::Unavailable { .. }
        ));
    }

    #[test]
    fn only_recent_uuid_v7_ids_are_fresh() {
        let now = chrono::Utc::now().timestamp_millis();
        assert!(is_fresh(uuid::Uuid::now_v7(), now, 30_000));
        assert!(!is_fresh(uuid::Uuid::new_v4(), now, 30_000), "no time in a v4 id");
        let old = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, (now / 1000 - 60) as u64, 0));
        assert!(!is_fresh(old, now, 30_000), "a minute old");
        let ahead = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, (now / 1000 + 60) as u64, 0));
        assert!(!is_fresh(ahead, now, 30_000), "a minute in the future");
    }
}
