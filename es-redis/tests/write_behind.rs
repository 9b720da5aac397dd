//! Write-behind through Redis into PostgreSQL: the es-core conformance
//! suite, flushers killed (kill -9, as processes) between their steps,
//! Redis (AOF, `appendfsync always`) killed and restarted under load, two
//! processes appending to one stream, and a diverged stream detected.
//!
//! The multi-process tests run this test binary again as the child
//! process (`child_*` tests, which do nothing unless their environment
//! variable is set).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use es_core::{EventFilter, EventStore, ExpectedVersion, StoreError, StreamId};
use es_postgres::{testing, PostgresEventStore};
use es_redis::{Flusher, RedisBackend, ResilienceConfig, WriteBehindConfig, WriteBehindStore};
use futures::TryStreamExt;

use common::write_behind::{config, event, pg, redis, write_behind};
use common::{prefix, redis_url, OwnRedis};

/// Processes splitting one log into different numbers of pending lists
/// would flush one stream's appends from two lists, out of order: the
/// second is refused at build.
#[tokio::test]
async fn a_process_with_another_shard_count_is_refused() {
    let inner = pg(&testing::fresh_schema("wbshards")).await;
    let shared = prefix();
    let first = write_behind(Arc::clone(&inner), &redis_url(), config(&shared)).await;
    let other = WriteBehindConfig {
        shards: 8,
        ..config(&shared)
    };
    let refused = WriteBehindStore::builder(Arc::clone(&inner))
        .redis(redis(&redis_url()))
        .config(other)
        .build()
        .await;
    let err = refused.expect_err("a second shard count is refused").to_string();
    assert!(err.contains("8 shards") && err.contains("into 4"), "{err}");
    let same = write_behind(inner, &redis_url(), config(&shared)).await;
    same.shutdown().await;
    first.shutdown().await;
}

async fn conformance_store() -> WriteBehindStore<PostgresEventStore> {
    let inner = pg(&testing::fresh_schema("wbconf")).await;
    write_behind(inner, &redis_url(), config(&prefix())).await
}

es_core::event_store_conformance!(conformance_store, fencing);

/// Every event of the schema's log, checked: each event id once, each
/// stream's versions 1..=n in global-position order. Returns stream ->
/// event ids in version order.
/// The log is gap-safe: it may hold events back while an older
/// transaction of the shared database (another test's) is in flight, so
/// it is read until it has `expected` events (30 s at most).
async fn verified_log(store: &PostgresEventStore, expected: usize) -> BTreeMap<StreamId, Vec<uuid::Uuid>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all: Vec<_> = store
            .read_all_stream(0, &EventFilter::all())
            .try_collect()
            .await
            .expect("read the log");
        if all.len() >= expected || tokio::time::Instant::now() >= deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut ids = HashSet::new();
    let mut streams: BTreeMap<StreamId, Vec<uuid::Uuid>> = BTreeMap::new();
    for e in &all {
        assert!(ids.insert(e.event_id), "event {} stored twice", e.event_id);
        let list = streams.entry(e.stream_id.clone()).or_default();
        assert_eq!(
            e.version,
            list.len() as u64 + 1,
            "stream {} in order, no gap",
            e.stream_id
        );
        list.push(e.event_id);
    }
    streams
}

/// Runs flush rounds until nothing is left (or 30 s pass).
async fn drain(flusher: &Flusher<PostgresEventStore>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let taken = flusher.take().await.expect("take");
        if taken.appends.is_empty() && taken.still_pending == 0 && !taken.shards.is_empty() {
            return;
        }
        if !taken.appends.is_empty() {
            flusher.write(&taken).await.expect("write");
            flusher.acknowledge(&taken).await.expect("acknowledge");
        }
        assert!(tokio::time::Instant::now() < deadline, "the log drained in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A write-behind store over a fresh schema, flushed only by the test
/// (no flusher task), with `shards` shard lists; its key prefix and the
/// store under it.
async fn flushed_by_hand(
    schema_prefix: &str,
    shards: u32,
) -> (String, Arc<PostgresEventStore>, WriteBehindStore<PostgresEventStore>) {
    let prefix = prefix();
    let inner = pg(&testing::fresh_schema(schema_prefix)).await;
    let store = write_behind(
        Arc::clone(&inner),
        &redis_url(),
        WriteBehindConfig {
            spawn_flusher: false,
            shards,
            ..config(&prefix)
        },
    )
    .await;
    (prefix, inner, store)
}

/// The dead list under `prefix`.
async fn dead_list(c: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(format!("{prefix}:dead"))
        .arg(0)
        .arg(-1)
        .query_async(c)
        .await
        .expect("dead list")
}

fn backend(url: &str) -> Arc<RedisBackend> {
    Arc::new(RedisBackend::new("wb-test", &redis(url), &ResilienceConfig::default()).expect("backend"))
}

/// Runs one of this binary's `child_*` tests as a separate process.
fn child(test: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", test, "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("child process")
}

/// Waits for a line starting with `marker` on the child's stdout.
fn wait_for_line(child: &mut Child, marker: &str) -> String {
    let out = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("child output");
        assert!(n > 0, "child ended before printing {marker}");
        // libtest prints `test <name> ... ` before the test's first line.
        if let Some(at) = line.find(marker) {
            return line[at..].trim_end().to_owned();
        }
    }
}

/// The flusher process of `a_flusher_killed_between_its_steps_loses_and_doubles_nothing`:
/// takes a batch, optionally writes it, says so, and waits to be killed.
#[tokio::test]
#[ignore = "the child process of a_flusher_killed_between_its_steps_loses_and_doubles_nothing"]
async fn child_flusher() {
    let stage = std::env::var("WB_CHILD_FLUSHER").expect("WB_CHILD_FLUSHER: the stage to stop at");
    let schema = std::env::var("WB_SCHEMA").expect("schema");
    let prefix = std::env::var("WB_PREFIX").expect("prefix");
    let inner = pg(&schema).await;
    let flusher = Flusher::new(inner, backend(&redis_url()), config(&prefix));
    let taken = flusher.take().await.expect("take");
    assert!(!taken.appends.is_empty(), "the child found appends to flush");
    if stage == "written" {
        flusher.write(&taken).await.expect("write");
    }
    println!("STAGE {stage} {}", taken.appends.len());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flusher_killed_between_its_steps_loses_and_doubles_nothing() {
    for stage in ["taken", "written"] {
        let schema = testing::fresh_schema("wbkill");
        let prefix = prefix();
        let inner = pg(&schema).await;
        let store = write_behind(
            Arc::clone(&inner),
            &redis_url(),
            WriteBehindConfig {
                spawn_flusher: false,
                ..config(&prefix)
            },
        )
        .await;
        let mut acknowledged: HashMap<StreamId, Vec<uuid::Uuid>> = HashMap::new();
        for s in 0..20 {
            let id = StreamId::from(format!("acct-{s}"));
            for round in 0..5u64 {
                let events = vec![event(round), event(round + 100)];
                let ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
                store
                    .append("account", &id, ExpectedVersion::Exact(round * 2), events)
                    .await
                    .expect("admitted");
                acknowledged.entry(id.clone()).or_default().extend(ids);
            }
        }
        // The child takes everything (moved to the processing lists),
        // maybe writes it, and is killed there.
        let mut flusher = child(
            "child_flusher",
            &[
                ("WB_CHILD_FLUSHER", stage.to_owned()),
                ("WB_SCHEMA", schema.clone()),
                ("WB_PREFIX", prefix.clone()),
            ],
        );
        let line = wait_for_line(&mut flusher, "STAGE");
        assert_eq!(line, format!("STAGE {stage} 100"), "the child took all 100 appends");
        flusher.kill().expect("kill -9");
        flusher.wait().expect("reaped");
        // Committed, not visible: another test's open transaction on the
        // shared server may hold the gap-safe head back.
        let in_store = inner.committed_position().await.expect("committed position") > 0;
        assert_eq!(
            in_store,
            stage == "written",
            "killed {stage}: the store holds the batch or not"
        );
        // Readers still see every acknowledged event, whatever the stage.
        for (id, ids) in &acknowledged {
            let read: Vec<_> = store.read_stream(id, 1).try_collect().await.expect("read");
            assert_eq!(&read.iter().map(|e| e.event_id).collect::<Vec<_>>(), ids);
        }
        // A new flusher takes the dead one's lists over once its lease ran
        // out, and writes them once.
        let recovery = Flusher::new(Arc::clone(&inner), backend(&redis_url()), config(&prefix));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        drain(&recovery).await;
        let log = verified_log(&inner, 200).await;
        assert_eq!(log.len(), acknowledged.len());
        for (id, ids) in &acknowledged {
            assert!(&log[id] == ids, "stream {id}: every event once, in order");
        }
        store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_under_load_keeps_every_acknowledged_event() {
    let mut own = OwnRedis::start_aof().await;
    let inner = pg(&testing::fresh_schema("wbaof")).await;
    let url = own.url();
    let store = Arc::new(
        WriteBehindStore::builder(Arc::clone(&inner))
            .redis(redis(&url))
            .resilience(common::fast_resilience())
            .config(config(&prefix()))
            .build()
            .await
            .expect("store"),
    );
    assert_eq!(store.durability(), es_redis::Durability::EveryAppend);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        writers.push(tokio::spawn(async move {
            let id = StreamId::from(format!("acct-{w}"));
            let mut acked = Vec::new();
            let mut version = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let e = event(version);
                // Unknown outcomes are retried with the same event until
                // answered: a replay is acknowledged like the first time.
                loop {
                    match store
                        .append("account", &id, ExpectedVersion::Exact(version), vec![e.clone()])
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.new_version, version + 1);
                            break;
                        }
                        Err(StoreError::Unavailable { .. } | StoreError::Backend { .. }) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(other) => panic!("unexpected answer: {other}"),
                    }
                }
                version += 1;
                acked.push(e.event_id);
            }
            (id, acked)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    own.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    own.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acknowledged = HashMap::new();
    for w in writers {
        let (id, acked) = w.await.expect("writer");
        assert!(acked.len() > 5, "the writer made progress on both sides of the restart");
        acknowledged.insert(id, acked);
    }
    store.shutdown().await;
    let log = verified_log(&inner, acknowledged.values().map(Vec::len).sum()).await;
    for (id, ids) in &acknowledged {
        let stored = log.get(id).map_or(0, Vec::len);
        assert!(
            log.get(id) == Some(ids),
            "stream {id}: {} acknowledged, {stored} in the store; every acknowledged event once, in order",
            ids.len()
        );
    }
}

/// One of the two writer processes of
/// `two_processes_appending_to_one_stream_get_gapless_versions`: appends
/// at the version it last saw; prints `WON <version>` or `LOST <expected>
/// <actual>` per attempt, then `DONE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of two_processes_appending_to_one_stream_get_gapless_versions"]
async fn child_writer() {
    let stream = std::env::var("WB_CHILD_WRITER").expect("WB_CHILD_WRITER: the stream to append to");
    let schema = std::env::var("WB_SCHEMA").expect("schema");
    let prefix = std::env::var("WB_PREFIX").expect("prefix");
    let store = write_behind(pg(&schema).await, &redis_url(), config(&prefix)).await;
    // Both writers start together (on a loaded machine one could
    // otherwise finish before the other starts, and nothing contends).
    let mut c = common::raw().await;
    let ready = format!("{prefix}:ready");
    redis::cmd("INCR")
        .arg(&ready)
        .query_async::<()>(&mut c)
        .await
        .expect("incr");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: Option<u32> = redis::cmd("GET").arg(&ready).query_async(&mut c).await.expect("get");
        if n >= Some(2) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the other writer never started");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let id = StreamId::from(stream);
    let mut won = 0;
    let mut seen = store.stream_version(&id).await.expect("version");
    while won < 100 {
        match store
            .append("account", &id, ExpectedVersion::Exact(seen), vec![event(seen)])
            .await
        {
            Ok(r) => {
                println!("WON {}", r.new_version);
                seen = r.new_version;
                won += 1;
            }
            Err(StoreError::Conflict { actual, .. }) => {
                println!("LOST {seen} {actual}");
                seen = actual;
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    store.shutdown().await;
    println!("DONE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_appending_to_one_stream_get_gapless_versions() {
    let schema = testing::fresh_schema("wbtwo");
    let prefix = prefix();
    let inner = pg(&schema).await;
    let env = [
        ("WB_CHILD_WRITER", "shared-account".to_owned()),
        ("WB_SCHEMA", schema.clone()),
        ("WB_PREFIX", prefix.clone()),
    ];
    let children: Vec<Child> = (0..2).map(|_| child("child_writer", &env)).collect();
    let mut won = Vec::new();
    let mut lost = 0;
    for mut c in children {
        let out = c.stdout.take().expect("stdout");
        for line in BufReader::new(out).lines() {
            let line = line.expect("line");
            // libtest prints `test <name> ... ` before the test's first line.
            let line = match (line.find("WON "), line.find("LOST ")) {
                (Some(at), _) | (None, Some(at)) => line[at..].to_owned(),
                _ => line,
            };
            if let Some(v) = line.strip_prefix("WON ") {
                won.push(v.parse::<u64>().expect("version"));
            } else if let Some(rest) = line.strip_prefix("LOST ") {
                let (expected, actual) = rest.split_once(' ').expect("two numbers");
                let (expected, actual): (u64, u64) = (expected.parse().unwrap(), actual.parse().unwrap());
                assert!(actual > expected, "a loser is told a newer version");
                lost += 1;
            }
        }
        assert!(c.wait().expect("child").success(), "writer process succeeded");
    }
    won.sort_unstable();
    assert_eq!(
        won,
        (1..=200).collect::<Vec<_>>(),
        "every version won exactly once, no gap"
    );
    assert!(lost > 0, "the two processes did contend");
    // And the store ends with the same 200 events in order.
    let flusher = Flusher::new(Arc::clone(&inner), backend(&redis_url()), config(&prefix));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drain(&flusher).await;
    let log = verified_log(&inner, 200).await;
    assert_eq!(log[&StreamId::from("shared-account")].len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_stream_is_reported_and_nothing_is_overwritten() {
    let (prefix, inner, store) = flushed_by_hand("wbdiv", 4).await;
    let id = StreamId::from("acct");
    for v in 0..3 {
        store
            .append("account", &id, ExpectedVersion::Exact(v), vec![event(v)])
            .await
            .expect("admitted");
    }
    drain(store.flusher()).await;
    let before = verified_log(&inner, 3).await;
    // Redis goes back in time (restarted from an old snapshot, say): it
    // believes the stream is at version 2 while the store holds 3.
    let mut c = common::raw().await;
    redis::cmd("SET")
        .arg(format!("{prefix}:v:acct"))
        .arg(2)
        .query_async::<()>(&mut c)
        .await
        .expect("set");
    let ghost = event(99);
    store
        .append("account", &id, ExpectedVersion::Exact(2), vec![ghost.clone()])
        .await
        .expect("admitted by the stale version");
    drain(store.flusher()).await;
    assert_eq!(verified_log(&inner, 3).await, before, "the store is unchanged");
    assert!(
        matches!(store.stream_version(&id).await, Err(StoreError::Diverged { .. })),
        "the stream is reported diverged"
    );
    let refused = store
        .append("account", &id, ExpectedVersion::Any, vec![event(100)])
        .await;
    assert!(matches!(refused, Err(StoreError::Diverged { .. })), "got {refused:?}");
    let dead = dead_list(&mut c, &prefix).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].contains(&ghost.event_id.to_string()),
        "the refused append is kept: {}",
        dead[0]
    );
    store.shutdown().await;
}

/// The version key of a stream with appends still pending is lost (evicted
/// under an `allkeys-*` policy, deleted by hand): the version read again
/// is past those appends, not the store's, so an append decided on the
/// store's version conflicts instead of taking their versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_version_key_never_lets_an_append_take_a_pending_ones_versions() {
    let (prefix, inner, store) = flushed_by_hand("wbvkey", 4).await;
    let id = StreamId::from("acct");
    let pending = [event(1), event(2), event(3)];
    store
        .append("account", &id, ExpectedVersion::Exact(0), vec![pending[0].clone()])
        .await
        .expect("admitted");
    store
        .append("account", &id, ExpectedVersion::Exact(1), pending[1..].to_vec())
        .await
        .expect("admitted");
    let mut c = common::raw().await;
    redis::cmd("DEL")
        .arg(format!("{prefix}:v:acct"))
        .query_async::<()>(&mut c)
        .await
        .expect("del");
    // Decided on the store's version (nothing flushed yet).
    let late = store
        .append("account", &id, ExpectedVersion::Exact(0), vec![event(9)])
        .await;
    assert!(
        matches!(late, Err(StoreError::Conflict { actual: 3, .. })),
        "got {late:?}"
    );
    store
        .append("account", &id, ExpectedVersion::Exact(3), vec![event(4)])
        .await
        .expect("admitted after the pending ones");
    drain(store.flusher()).await;
    let log = verified_log(&inner, 4).await;
    let ids: Vec<uuid::Uuid> = pending.iter().map(|e| e.event_id).collect();
    assert_eq!(log[&id].len(), 4, "{log:?}");
    assert_eq!(log[&id][..3], ids[..], "the pending appends kept their versions");
    store.shutdown().await;
}

/// A late copy of an acknowledgement (a retried script whose first send
/// ran after all, once the next round had taken its batch) leaves the next
/// round's batch alone: that round fails before its write, and the batch
/// is still there for the round after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_acknowledgement_leaves_the_next_rounds_batch_alone() {
    let (_, inner, store) = flushed_by_hand("wback", 1).await;
    let id = StreamId::from("acct");
    store
        .append("account", &id, ExpectedVersion::Exact(0), vec![event(1)])
        .await
        .expect("admitted");
    let flusher = store.flusher();
    let first = flusher.take().await.expect("take");
    assert_eq!(first.appends.len(), 1);
    flusher.write(&first).await.expect("write");
    flusher.acknowledge(&first).await.expect("acknowledge");

    store
        .append("account", &id, ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .expect("admitted");
    let second = flusher.take().await.expect("take");
    assert_eq!(second.appends.len(), 1);
    // The first round's acknowledgement again, now; then the second round
    // ends before its write (a store error, a crash).
    flusher.acknowledge(&first).await.expect("late acknowledge");
    drop(second);
    drain(flusher).await;
    assert_eq!(
        verified_log(&inner, 2).await[&id].len(),
        2,
        "the second append is stored"
    );
    store.shutdown().await;
}

/// A round in which one stream's append is refused for good and another
/// stream's write fails (the store down for a moment): the round is taken
/// again whole, and the refused append is in the dead list once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_append_is_dead_lettered_once_when_its_round_is_repeated() {
    use es_core::testing::{Crash, CrashingStore};
    let schema = testing::fresh_schema("wbdead");
    let prefix = prefix();
    let pg: Arc<dyn EventStore> = pg(&schema).await;
    // Store appends: #1 the first flush; in the next round #2 the refused
    // append, #3 the other stream's, which fails.
    let inner = Arc::new(CrashingStore::new(
        Arc::clone(&pg),
        [(3, Crash::Before)].into_iter().collect(),
    ));
    let store = WriteBehindStore::builder(Arc::clone(&inner))
        .redis(redis(&redis_url()))
        .config(WriteBehindConfig {
            spawn_flusher: false,
            shards: 1,
            ..config(&prefix)
        })
        .build()
        .await
        .expect("write-behind store");
    let bad = StreamId::from("bad");
    for v in 0..3 {
        store
            .append("account", &bad, ExpectedVersion::Exact(v), vec![event(v)])
            .await
            .expect("admitted");
    }
    let flusher = store.flusher();
    let first = flusher.take().await.expect("take");
    flusher.write(&first).await.expect("write");
    flusher.acknowledge(&first).await.expect("acknowledge");
    // Redis goes back in time for "bad" (as in the divergence test).
    let mut c = common::raw().await;
    redis::cmd("SET")
        .arg(format!("{prefix}:v:bad"))
        .arg(2)
        .query_async::<()>(&mut c)
        .await
        .expect("set");
    store
        .append("account", &bad, ExpectedVersion::Exact(2), vec![event(99)])
        .await
        .expect("admitted by the stale version");
    store
        .append(
            "account",
            &StreamId::from("ok"),
            ExpectedVersion::Exact(0),
            vec![event(1)],
        )
        .await
        .expect("admitted");
    let round = flusher.take().await.expect("take");
    assert!(flusher.write(&round).await.is_err(), "the round fails");
    let again = flusher.take().await.expect("take again");
    assert_eq!(again.appends.len(), 2, "the same two appends");
    let written = flusher.write(&again).await.expect("write");
    assert_eq!(written.diverged, 1);
    flusher.acknowledge(&again).await.expect("acknowledge");
    let dead = dead_list(&mut c, &prefix).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    store.shutdown().await;
}
