//! The conformance suite every [`EventStore`] backend runs against itself
//! (feature `conformance`).
//!
//! Each check takes a fresh, empty store and panics (fails the test) when
//! the store breaks the contract documented on [`EventStore`]. Generate one
//! test per check with [`event_store_conformance!`](crate::event_store_conformance):
//!
//! ```ignore
//! async fn fresh_store() -> MyStore { MyStore::connect_to_new_schema().await }
//! es_core::event_store_conformance!(fresh_store);
//! // A store that implements shard fences also runs the fencing check:
//! // es_core::event_store_conformance!(fresh_store, fencing);
//! ```

mod deadlines;
mod dedup;
mod repository;
pub use deadlines::deadline_store;
pub use dedup::deduplicator_claims;
pub use repository::repository_semantics;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, ShardFence, StoreError, StreamId};

fn event(kind: &str, n: u64) -> NewEvent {
    let mut e = NewEvent::new(kind, json!({ "n": n, "text": "héllo \"quoted\" ✓" }));
    e.metadata = Metadata {
        correlation_id: Some(Uuid::now_v7()),
        causation_id: Some(Uuid::now_v7()),
        actor_id: Some("user-1".into()),
        headers: BTreeMap::from([("tenant".to_owned(), "acme".to_owned())]),
    };
    e.schema_version = 2;
    // Stores keep microseconds at least; compare at that precision.
    e.recorded_at = chrono::DateTime::from_timestamp_micros(e.recorded_at.timestamp_micros()).unwrap_or_default();
    e
}

fn stream(name: &str) -> StreamId {
    StreamId::from(format!("{name}-{}", Uuid::now_v7()))
}

/// Appended events read back with every envelope field intact.
pub async fn append_and_read_back<S: EventStore>(store: S) {
    let id = stream("rb");
    let events: Vec<_> = (1..=3).map(|n| event("Happened", n)).collect();
    let res = store
        .append("thing", &id, ExpectedVersion::NoStream, events.clone())
        .await
        .expect("append to a new stream");
    assert_eq!((res.first_version, res.new_version), (1, 3));
    assert_eq!(store.stream_version(&id).await.expect("version"), 3);
    // The writer reads its own write at once, whatever the store.
    let read: Vec<_> = store.read_stream(&id, 1).try_collect().await.expect("read");
    assert_eq!(read.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    let positions = if store.defers_global_positions() {
        assert!(res.positions.is_empty(), "positions are not known at acknowledgement");
        settled_positions(&store, &id, 3).await
    } else {
        res.positions.clone()
    };
    assert_eq!(positions.len(), 3);
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions increase");
    let read: Vec<_> = store.read_stream(&id, 1).try_collect().await.expect("read");
    assert_eq!(read.len(), 3);
    for (i, (r, e)) in read.iter().zip(&events).enumerate() {
        assert_eq!(r.version, i as u64 + 1);
        assert_eq!(r.global_position, positions[i]);
        assert_eq!(r.stream_id, id);
        assert_eq!(r.stream_type, "thing");
        assert_eq!(r.event_id, e.event_id);
        assert_eq!(r.event_type, e.event_type);
        assert_eq!(r.schema_version, 2);
        assert_eq!(r.payload, e.payload);
        assert_eq!(r.metadata, e.metadata);
        assert_eq!(r.recorded_at, e.recorded_at);
    }
    let found = store.find_event(events[1].event_id).await.expect("find");
    assert_eq!(found.map(|f| f.version), Some(2));
    assert!(store.find_event(Uuid::now_v7()).await.expect("find").is_none());
    let tail: Vec<_> = store.read_stream(&id, 3).try_collect().await.expect("read");
    assert_eq!(tail.iter().map(|e| e.version).collect::<Vec<_>>(), vec![3]);
    assert_eq!(store.stream_version(&stream("none")).await.expect("version"), 0);
    let none: Vec<_> = store.read_stream(&stream("none"), 1).try_collect().await.expect("read");
    assert!(none.is_empty());
}

/// A replay's answer is the original one. A store that defers positions
/// may answer without them first and with them once flushed: only the
/// versions are compared then (and any positions given must agree).
fn assert_same_result<S: EventStore + ?Sized>(store: &S, original: &crate::AppendResult, replay: &crate::AppendResult) {
    if store.defers_global_positions() {
        assert_eq!(
            (original.first_version, original.new_version),
            (replay.first_version, replay.new_version),
            "a replay answers with the original versions"
        );
        if !original.positions.is_empty() && !replay.positions.is_empty() {
            assert_eq!(original.positions, replay.positions);
        }
    } else {
        assert_eq!(original, replay, "a replay answers with the original result");
    }
}

fn assert_conflict(r: Result<crate::AppendResult, StoreError>, expect_actual: u64) {
    match r {
        Err(StoreError::Conflict { actual, .. }) => {
            assert_eq!(actual, expect_actual, "conflict reports the real version");
        }
        other => panic!("expected a conflict at actual {expect_actual}, got {other:?}"),
    }
}

/// `NoStream`, `StreamExists`, `Exact` and `Any` hold or conflict with the
/// real version, and a conflicting append stores nothing.
pub async fn expected_version_semantics<S: EventStore>(store: S) {
    let id = stream("ev");
    assert_conflict(
        store
            .append("t", &id, ExpectedVersion::StreamExists, vec![event("A", 1)])
            .await,
        0,
    );
    assert_conflict(
        store
            .append("t", &id, ExpectedVersion::Exact(1), vec![event("A", 1)])
            .await,
        0,
    );
    store
        .append("t", &id, ExpectedVersion::Exact(0), vec![event("A", 1)])
        .await
        .expect("Exact(0) on a new stream");
    assert_conflict(
        store
            .append("t", &id, ExpectedVersion::NoStream, vec![event("A", 2)])
            .await,
        1,
    );
    assert_conflict(
        store
            .append("t", &id, ExpectedVersion::Exact(0), vec![event("A", 2)])
            .await,
        1,
    );
    assert_conflict(
        store
            .append("t", &id, ExpectedVersion::Exact(5), vec![event("A", 2)])
            .await,
        1,
    );
    store
        .append("t", &id, ExpectedVersion::StreamExists, vec![event("A", 2)])
        .await
        .expect("StreamExists");
    store
        .append("t", &id, ExpectedVersion::Exact(2), vec![event("A", 3)])
        .await
        .expect("Exact(2)");
    let r = store
        .append("t", &id, ExpectedVersion::Any, vec![event("A", 4), event("A", 5)])
        .await
        .expect("Any");
    assert_eq!((r.first_version, r.new_version), (4, 5));
    assert_eq!(store.stream_version(&id).await.expect("version"), 5);
    let any_new = stream("any");
    let r = store
        .append("t", &any_new, ExpectedVersion::Any, vec![event("A", 1)])
        .await
        .expect("Any on new");
    assert_eq!(r.new_version, 1);
}

/// Re-sending an append is acknowledged with the original result and
/// stores nothing; an id reused elsewhere is a duplicate.
pub async fn idempotent_appends<S: EventStore>(store: S) {
    let id = stream("idem");
    let batch = vec![event("A", 1), event("A", 2)];
    let first = store
        .append("t", &id, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first append");
    let again = store
        .append("t", &id, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("replayed append is success");
    assert_same_result(&store, &first, &again);
    let again_any = store
        .append("t", &id, ExpectedVersion::Any, batch.clone())
        .await
        .expect("replayed append with Any");
    assert_same_result(&store, &first, &again_any);
    assert_eq!(store.stream_version(&id).await.expect("version"), 2);
    let before = count_all(&store, 2).await;

    // The same id at another place (the stream moved on) is not a replay.
    let second = vec![event("A", 3)];
    store
        .append("t", &id, ExpectedVersion::Exact(2), second.clone())
        .await
        .expect("next append");
    let dup = store.append("t", &id, ExpectedVersion::Exact(3), second.clone()).await;
    assert!(matches!(dup, Err(StoreError::DuplicateEventId { .. })), "got {dup:?}");
    // ... nor is the same id in another stream.
    let other = stream("other");
    let dup = store.append("t", &other, ExpectedVersion::Any, second).await;
    assert!(matches!(dup, Err(StoreError::DuplicateEventId { .. })), "got {dup:?}");
    assert_eq!(store.stream_version(&other).await.expect("version"), 0);
    assert_eq!(
        count_all(&store, before + 1).await,
        before + 1,
        "only the one legitimate append was stored"
    );
}

/// The global positions of a stream's first `count` events once they all
/// reached the global log (a store that defers positions gives them out
/// when it flushes; polled for up to 10 s).
async fn settled_positions<S: EventStore + ?Sized>(store: &S, id: &StreamId, count: usize) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read: Vec<_> = store.read_stream(id, 1).try_collect().await.expect("read");
        let positions: Vec<u64> = read.iter().take(count).map(|e| e.global_position).collect();
        if (positions.len() == count && positions.iter().all(|p| *p > 0)) || tokio::time::Instant::now() >= deadline {
            return positions;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn count_all<S: EventStore>(store: &S, at_least: usize) -> usize {
    settled_read_all(store, 0, 100_000, &EventFilter::all(), at_least)
        .await
        .len()
}

/// Reads the global log, retrying for up to 10 s until at least
/// `at_least` events are visible. A gap-safe log may hold back committed
/// events while an older writing transaction is still in flight (in a
/// shared database, possibly another test's); the contract is that they
/// appear once it ends.
pub async fn settled_read_all<S: EventStore + ?Sized>(
    store: &S,
    after: u64,
    max: usize,
    filter: &EventFilter,
    at_least: usize,
) -> Vec<crate::RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = store.read_all(after, max, filter).await.expect("read all");
        if got.len() >= at_least || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An append with one bad event stores none of its events.
pub async fn atomic_appends<S: EventStore>(store: S) {
    let a = stream("atomic-a");
    let taken = event("A", 1);
    store
        .append("t", &a, ExpectedVersion::NoStream, vec![taken.clone()])
        .await
        .expect("append");
    let b = stream("atomic-b");
    let r = store
        .append(
            "t",
            &b,
            ExpectedVersion::NoStream,
            vec![event("B", 1), taken, event("B", 3)],
        )
        .await;
    assert!(r.is_err(), "an append containing a stored id must fail, got {r:?}");
    assert_eq!(
        store.stream_version(&b).await.expect("version"),
        0,
        "nothing of a failed append is stored"
    );
    let r = store
        .append("t", &a, ExpectedVersion::Exact(7), vec![event("A", 2), event("A", 3)])
        .await;
    assert!(r.is_err());
    assert_eq!(store.stream_version(&a).await.expect("version"), 1);
    let empty = store.append("t", &a, ExpectedVersion::Any, Vec::new()).await;
    assert!(matches!(empty, Err(StoreError::InvalidAppend { .. })), "got {empty:?}");
    // Stream ids every backend can store, and only those.
    let longest = StreamId::from(
        format!("{}-{}", a.as_str(), "x".repeat(crate::store::MAX_STREAM_ID_BYTES))
            .chars()
            .take(crate::store::MAX_STREAM_ID_BYTES)
            .collect::<String>(),
    );
    store
        .append("t", &longest, ExpectedVersion::NoStream, vec![event("L", 1)])
        .await
        .expect("a stream id of the longest length");
    for bad in [
        StreamId::from(format!("{}x", longest.as_str())),
        StreamId::from(""),
        StreamId::from(format!("{}-nul\0", a.as_str())),
    ] {
        let r = store.append("t", &bad, ExpectedVersion::Any, vec![event("L", 2)]).await;
        assert!(
            matches!(r, Err(StoreError::InvalidAppend { .. })),
            "stream id of {} bytes: {r:?}",
            bad.as_str().len()
        );
    }
    // Events every backend can store, and only those: no NUL character
    // (PostgreSQL's jsonb cannot hold one), wherever it hides.
    let mut in_header = event("N", 5);
    in_header.metadata.headers.insert("h".into(), "nul\0".into());
    for bad in [
        NewEvent::new("N\0", json!({})),
        NewEvent::new("N", json!({ "deep": [{ "s": "nul\0" }] })),
        NewEvent::new("N", json!({ "key\0": 1 })),
        in_header,
    ] {
        let r = store
            .append("t", &a, ExpectedVersion::Any, vec![event("A", 8), bad])
            .await;
        assert!(matches!(r, Err(StoreError::InvalidAppend { .. })), "got {r:?}");
    }
    let e = event("A", 9);
    let twice = store.append("t", &a, ExpectedVersion::Any, vec![e.clone(), e]).await;
    assert!(twice.is_err(), "an id twice in one append is refused");
    assert_eq!(store.stream_version(&a).await.expect("version"), 1);
}

/// The global log is in position order, readable from any position, with
/// working filters and page limits.
pub async fn global_log_order_and_filters<S: EventStore>(store: S) {
    let streams = [stream("g1"), stream("g2"), stream("g3")];
    let types = ["order", "order", "invoice"];
    for round in 0..4u64 {
        for (i, id) in streams.iter().enumerate() {
            let kind = if round % 2 == 0 { "Created" } else { "Updated" };
            store
                .append(types[i], id, ExpectedVersion::Exact(round), vec![event(kind, round)])
                .await
                .expect("append");
        }
    }
    let all = settled_read_all(&store, 0, 1000, &EventFilter::all(), 12).await;
    assert_eq!(all.len(), 12);
    assert!(all.windows(2).all(|w| w[0].global_position < w[1].global_position));
    assert_eq!(store.head_position().await.expect("head"), all[11].global_position);
    assert_eq!(
        store.committed_position().await.expect("committed position"),
        all[11].global_position,
        "with nothing in flight the committed position is the head"
    );
    // Per stream, the log preserves version order.
    for id in &streams {
        let versions: Vec<_> = all.iter().filter(|e| &e.stream_id == id).map(|e| e.version).collect();
        assert_eq!(versions, vec![1, 2, 3, 4]);
    }
    for k in [0usize, 1, 5, 11] {
        let from = all[k].global_position;
        let rest = settled_read_all(&store, from, 1000, &EventFilter::all(), 11 - k).await;
        assert_eq!(rest.len(), 11 - k, "reading after position {from}");
        assert!(rest.iter().all(|e| e.global_position > from));
    }
    let page = store.read_all(0, 5, &EventFilter::all()).await.expect("read");
    assert_eq!(page, all[..5].to_vec());
    let updated = store
        .read_all(0, 1000, &EventFilter::all().event_types(["Updated"]))
        .await
        .expect("read");
    assert_eq!(updated.len(), 6);
    assert!(updated.iter().all(|e| e.event_type == "Updated"));
    let invoices = store
        .read_all(0, 1000, &EventFilter::all().stream_types(["invoice"]))
        .await
        .expect("read");
    assert_eq!(invoices.len(), 4);
    let both = store
        .read_all(
            0,
            1000,
            &EventFilter::all().stream_types(["order"]).event_types(["Created"]),
        )
        .await
        .expect("read");
    assert_eq!(both.len(), 4);
    let all_paged: Vec<_> = store
        .read_all_stream(0, &EventFilter::all())
        .try_collect()
        .await
        .expect("read");
    assert_eq!(all_paged, all);
}

/// Long streams read completely through the paging reader.
pub async fn long_stream_paging<S: EventStore>(store: S) {
    let id = stream("long");
    let page = store.read_page_size() as u64;
    let total = page * 2 + 37;
    let mut version = 0;
    while version < total {
        let n = 250.min(total - version);
        let batch = (0..n).map(|i| event("Tick", version + i)).collect();
        store
            .append("t", &id, ExpectedVersion::Exact(version), batch)
            .await
            .expect("append");
        version += n;
    }
    let read: Vec<_> = store.read_stream(&id, 1).try_collect().await.expect("read");
    assert_eq!(read.len() as u64, total);
    assert!(read.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1));
    let from: Vec<_> = store.read_stream(&id, page + 1).try_collect().await.expect("read");
    assert_eq!(from.len() as u64, total - page);
    assert_eq!(from[0].version, page + 1);
}

/// Many tasks append at the same expected version at once: exactly one
/// wins each version, every loser is told the real version, and the
/// stream ends gapless.
pub async fn concurrent_appends_one_winner_per_version<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let id = stream("race");
    let tasks = 16;
    let rounds = 8;
    for round in 0..rounds {
        let mut handles = Vec::new();
        for t in 0..tasks {
            let store = Arc::clone(&store);
            let id = id.clone();
            handles.push(tokio::spawn(async move {
                store
                    .append("t", &id, ExpectedVersion::Exact(round), vec![event("Won", t)])
                    .await
            }));
        }
        let mut winners = 0;
        for h in handles {
            match h.await.expect("task") {
                Ok(r) => {
                    winners += 1;
                    assert_eq!(r.new_version, round + 1);
                }
                Err(StoreError::Conflict { actual, expected, .. }) => {
                    assert_eq!(expected, ExpectedVersion::Exact(round));
                    assert_eq!(actual, round + 1, "loser told the real version");
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert_eq!(winners, 1, "exactly one winner at version {}", round + 1);
    }
    let read: Vec<_> = store.read_stream(&id, 1).try_collect().await.expect("read");
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=rounds).collect::<Vec<_>>()
    );

    // Free-for-all: tasks retry until each has appended once.
    let id = stream("race-retry");
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        let id = id.clone();
        handles.push(tokio::spawn(async move {
            let e = event("Retry", t);
            loop {
                let v = store.stream_version(&id).await.expect("version");
                match store.append("t", &id, ExpectedVersion::Exact(v), vec![e.clone()]).await {
                    Ok(r) => return r.new_version,
                    Err(StoreError::Conflict { .. }) => {}
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
        }));
    }
    let mut versions = HashSet::new();
    for h in handles {
        assert!(versions.insert(h.await.expect("task")), "two winners at one version");
    }
    assert_eq!(versions.len(), tasks as usize);
    let read: Vec<_> = store.read_stream(&id, 1).try_collect().await.expect("read");
    assert_eq!(read.len(), tasks as usize);
    assert!(read.iter().enumerate().all(|(i, e)| e.version == i as u64 + 1));
}

/// A reader waiting for new events is woken by an append from another
/// task, long before its timeout, and then reads them. Its wait lasts
/// far longer than the check allows, so a store that only sleeps out the
/// timeout fails; one that returns at once while nothing came (more than
/// a few spurious wake-ups before the append) fails too.
pub async fn wait_for_events_wakes<S: EventStore>(store: S) {
    const SPURIOUS_WAKE_UPS: u32 = 10;
    let store = Arc::new(store);
    let head = store.head_position().await.expect("head");
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut waits = 0u32;
            loop {
                store
                    .wait_for_events(head, Duration::from_secs(60))
                    .await
                    .expect("wait");
                waits += 1;
                let got = store.read_all(head, 10, &EventFilter::all()).await.expect("read");
                if !got.is_empty() {
                    return (got, waits);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .append("t", &stream("wake"), ExpectedVersion::NoStream, vec![event("W", 1)])
        .await
        .expect("append");
    let (got, waits) = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the append wakes the waiter long before its 60 s timeout")
        .expect("task");
    assert_eq!(got.len(), 1);
    assert!(
        waits <= SPURIOUS_WAKE_UPS + 1,
        "wait_for_events returned {waits} times before the event was read: it must wait, not return at once"
    );
}

/// Shard fences (for stores that implement them; generate this check with
/// `event_store_conformance!(factory, fencing)`): an append under a token
/// below the shard's fence is refused with [`StoreError::Fenced`] and
/// stores nothing, also when it raced the raise; unfenced appends and other
/// shards are unaffected; a stored append replayed after the raise still
/// gets its original result.
pub async fn shard_fencing<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let shard = 3;
    let fence = move |token| ShardFence::new(shard, token);
    let id = stream("fenced");
    store.raise_fence(fence(1)).await.expect("raise to 1");
    let first = event("F", 1);
    let stored = store
        .append_fenced("t", &id, ExpectedVersion::NoStream, vec![first.clone()], fence(1))
        .await
        .expect("append under the current token");
    store
        .append("t", &id, ExpectedVersion::Exact(1), vec![event("Unfenced", 2)])
        .await
        .expect("an unfenced append behaves as without fences");

    store.raise_fence(fence(2)).await.expect("raise to 2");
    store
        .raise_fence(fence(2))
        .await
        .expect("raising to the same token again is a no-op");
    match store.raise_fence(fence(1)).await {
        Err(StoreError::Fenced {
            shard: s,
            token: 1,
            current: 2,
        }) if s == shard => {}
        other => panic!("lowering a fence must be refused, got {other:?}"),
    }
    match store
        .append_fenced("t", &id, ExpectedVersion::Exact(2), vec![event("Stale", 3)], fence(1))
        .await
    {
        Err(StoreError::Fenced {
            shard: s,
            token: 1,
            current: 2,
        }) if s == shard => {}
        other => panic!("a stale token must be fenced off, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&id).await.expect("version"),
        2,
        "nothing of the stale writer stored"
    );
    let replay = store
        .append_fenced("t", &id, ExpectedVersion::NoStream, vec![first], fence(1))
        .await
        .expect("a stored append replayed after the raise");
    assert_same_result(&*store, &stored, &replay);
    store
        .append_fenced("t", &id, ExpectedVersion::Exact(2), vec![event("New", 3)], fence(2))
        .await
        .expect("the new owner appends");
    store
        .append_fenced(
            "t",
            &stream("other-shard"),
            ExpectedVersion::NoStream,
            vec![event("O", 1)],
            ShardFence::new(shard + 1, 1),
        )
        .await
        .expect("other shards keep their own fences");

    // Appends under token 2 race a raise to 3: each is stored exactly when
    // it was acknowledged, and none that starts after the raise returned is.
    let raised = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let store = Arc::clone(&store);
        let raised = Arc::clone(&raised);
        writers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            // Until refused after the raise (bounded, in case it never is).
            for n in 0..100_000u64 {
                if outcomes.last().is_some_and(|(_, acknowledged)| !acknowledged)
                    && raised.load(std::sync::atomic::Ordering::SeqCst)
                {
                    break;
                }
                let id = stream("race-fence");
                let after_raise = raised.load(std::sync::atomic::Ordering::SeqCst);
                let result = store
                    .append_fenced(
                        "t",
                        &id,
                        ExpectedVersion::NoStream,
                        vec![event("R", w * 100 + n)],
                        fence(2),
                    )
                    .await;
                match result {
                    Ok(_) => {
                        assert!(
                            !after_raise,
                            "an append under token 2 was stored after the fence reached 3"
                        );
                        outcomes.push((id, true));
                    }
                    Err(StoreError::Fenced { current: 3, .. }) => outcomes.push((id, false)),
                    Err(e) => panic!("unexpected error: {e}"),
                }
                tokio::task::yield_now().await;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    store.raise_fence(fence(3)).await.expect("raise to 3");
    raised.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut refused = 0;
    for w in writers {
        for (id, acknowledged) in w.await.expect("writer") {
            let version = store.stream_version(&id).await.expect("version");
            assert_eq!(
                version,
                u64::from(acknowledged),
                "stored exactly when acknowledged: {id}"
            );
            refused += usize::from(!acknowledged);
        }
    }
    assert!(refused > 0, "the writers ran past the raise");
}

/// Generates one `#[tokio::test]` per conformance check, each on a fresh
/// store from the given async factory function.
#[macro_export]
macro_rules! event_store_conformance {
    ($factory:ident) => {
        mod event_store_conformance {
            $crate::event_store_conformance!(@tests $factory;
                append_and_read_back,
                expected_version_semantics,
                idempotent_appends,
                atomic_appends,
                global_log_order_and_filters,
                long_stream_paging,
                concurrent_appends_one_winner_per_version,
                wait_for_events_wakes,
                repository_semantics,
            );
        }
    };
    ($factory:ident, fencing) => {
        $crate::event_store_conformance!($factory);
        mod event_store_fencing_conformance {
            $crate::event_store_conformance!(@tests $factory; shard_fencing);
        }
    };
    (@tests $factory:ident; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let store = super::$factory().await;
                $crate::conformance::$name(store).await;
            }
        )*
    };
}
