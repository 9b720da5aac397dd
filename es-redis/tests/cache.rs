//! Two-level cache against the real Redis.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use es_core::{InMemoryEventStore, Repository, StateCache, StreamId, Versioned};
use es_redis::{CacheConfig, EvictionPolicy, InvalidateOnEvents, QueryCache, RedisStateCache};

fn acct(balance: i64, version: u64) -> Versioned<Account> {
    Versioned {
        state: Account { balance },
        version,
    }
}

type AccountRepository = Repository<Account, InMemoryEventStore>;

/// An in-memory store, a Redis cache under `prefix` and a repository
/// writing through that cache.
fn cached_repository(prefix: &str) -> (Arc<InMemoryEventStore>, RedisStateCache<Account>, AccountRepository) {
    let store = Arc::new(InMemoryEventStore::new());
    let cache = RedisStateCache::<Account>::new(cache_config(prefix)).unwrap();
    let repo = AccountRepository::builder(Arc::clone(&store))
        .cache(Arc::new(cache.clone()))
        .build();
    (store, cache, repo)
}

async fn l2_version(cache: &RedisStateCache<Account>, id: &StreamId) -> Option<u64> {
    let mut c = raw().await;
    redis::cmd("HGET")
        .arg(cache.redis_key(id))
        .arg("v")
        .query_async(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn l1_hit_then_l2_hit_then_miss() {
    let p = prefix();
    let cache = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    let id = StreamId::from("a-1");
    assert_eq!(cache.get(&id).await, None, "empty cache misses");

    cache.put(&id, &acct(70, 3)).await;
    assert_eq!(cache.get_l1(&id), Some(acct(70, 3)), "put fills L1");
    assert_eq!(l2_version(&cache, &id).await, Some(3), "put writes through to Redis");

    cache.clear_l1();
    assert_eq!(cache.get_l1(&id), None);
    assert_eq!(cache.get(&id).await, Some(acct(70, 3)), "L1 miss is served by L2");
    assert_eq!(cache.get_l1(&id), Some(acct(70, 3)), "an L2 hit fills L1");

    // A second process (own L1) sees the entry through L2.
    let other = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    assert_eq!(other.get_l1(&id), None);
    assert_eq!(other.get(&id).await, Some(acct(70, 3)));

    assert_eq!(cache.get(&StreamId::from("a-unknown")).await, None);
    cleanup(&p).await;
}

#[tokio::test]
async fn put_never_replaces_a_newer_version() {
    let p = prefix();
    let cache = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    let other = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    let id = StreamId::from("a-2");
    cache.put(&id, &acct(50, 5)).await;
    other.put(&id, &acct(30, 3)).await;
    cache.put(&id, &acct(30, 3)).await;
    assert_eq!(cache.get(&id).await, Some(acct(50, 5)), "L1 kept the newer version");
    assert_eq!(l2_version(&cache, &id).await, Some(5), "L2 kept the newer version");
    assert_eq!(other.get_l1(&id), Some(acct(30, 3)));
    other.clear_l1();
    assert_eq!(other.get(&id).await, Some(acct(50, 5)));
    cleanup(&p).await;
}

#[tokio::test]
async fn repository_writes_through_and_invalidates_on_conflict() {
    let p = prefix();
    let (store, cache, repo) = cached_repository(&p);
    let id = StreamId::from("a-3");
    for _ in 0..3 {
        repo.execute(&id, AccountCommand::Deposit(10)).await.unwrap();
    }
    assert_eq!(l2_version(&cache, &id).await, Some(3));
    assert_eq!(cache.get_l1(&id), Some(acct(30, 3)));

    // Another writer without the cache moves the stream on: the cached
    // state is stale. The next command conflicts, invalidates, re-reads.
    let bare = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store)).build();
    bare.execute(&id, AccountCommand::Deposit(5)).await.unwrap();
    let out = repo.execute(&id, AccountCommand::Withdraw(35)).await.unwrap();
    assert_eq!((out.state.balance, out.version), (0, 5));
    assert_eq!(cache.get(&id).await, Some(acct(0, 5)));
    assert_eq!(l2_version(&cache, &id).await, Some(5));
    cleanup(&p).await;
}

/// Two app instances (own repository, own cache, one Redis, one store):
/// neither ever starts from a state older than its own last write, even
/// when the shared L2 holds an older entry (a reordered or lost write).
#[tokio::test]
async fn two_repositories_never_older_than_own_last_write() {
    let p = prefix();
    let store = Arc::new(InMemoryEventStore::new());
    let caches: Vec<RedisStateCache<Account>> = (0..2)
        .map(|_| RedisStateCache::new(cache_config(&p)).unwrap())
        .collect();
    let repos: Vec<_> = caches
        .iter()
        .map(|c| {
            Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store))
                .cache(Arc::new(c.clone()))
                .build()
        })
        .collect();
    let id = StreamId::from("shared");
    let mut last_written = [0u64; 2];
    let mut expected_balance = 0;
    for i in 0..40usize {
        let who = (i * 7 + i / 3) % 2;
        let out = repos[who].execute(&id, AccountCommand::Deposit(1)).await.unwrap();
        expected_balance += 1;
        assert_eq!(
            out.state.balance, expected_balance,
            "every command decided on the current state"
        );
        last_written[who] = out.version;
        // Sometimes simulate an older entry landing in L2 after ours, and a
        // restart of this instance's L1.
        if i % 5 == 4 {
            let stale = caches[who].redis_key(&id);
            let mut c = raw().await;
            let _: () = redis::cmd("HSET")
                .arg(&stale)
                .arg("v")
                .arg(1)
                .arg("s")
                .arg(r#"{"balance":1}"#)
                .query_async(&mut c)
                .await
                .unwrap();
            caches[who].clear_l1();
        }
        for k in 0..2 {
            if let Some(seen) = caches[k].get(&id).await {
                assert!(
                    seen.version >= last_written[k],
                    "instance {k} served v{} after writing v{}",
                    seen.version,
                    last_written[k]
                );
            }
            let loaded = repos[k].load(id.as_str()).await.unwrap();
            assert_eq!(
                (loaded.state.balance, loaded.version),
                (expected_balance, (i + 1) as u64)
            );
        }
    }
    assert!(last_written.iter().all(|v| *v > 0), "both instances wrote");
    cleanup(&p).await;
}

/// An L2 entry whose version no store can hold (written by hand, say) is
/// a miss: the repository folds the stream from the log instead of
/// reading from version `u64::MAX + 1`.
#[tokio::test]
async fn an_entry_with_an_impossible_version_is_a_miss() {
    let p = prefix();
    let (_store, cache, repo) = cached_repository(&p);
    let id = StreamId::from("impossible");
    for _ in 0..3 {
        repo.execute(&id, AccountCommand::Deposit(2)).await.unwrap();
    }
    let mut c = raw().await;
    for (round, version) in [u64::MAX, i64::MAX as u64 + 1].into_iter().enumerate() {
        let _: () = redis::cmd("HSET")
            .arg(cache.redis_key(&id))
            .arg("v")
            .arg(version)
            .arg("s")
            .arg(r#"{"balance":99}"#)
            .query_async(&mut c)
            .await
            .unwrap();
        cache.clear_l1();
        assert!(cache.get_from_redis(id.clone()).await.is_none(), "v{version} served");
        let loaded = repo.load(id.as_str()).await.unwrap();
        // Three deposits, then a deposit and a withdrawal per round.
        assert_eq!(
            (loaded.state.balance, loaded.version),
            (6, 3 + 2 * round as u64),
            "v{version}"
        );
        let out = repo.execute(&id, AccountCommand::Deposit(1)).await.unwrap();
        assert_eq!(out.state.balance, 7);
        repo.execute(&id, AccountCommand::Withdraw(1)).await.unwrap();
    }
    cleanup(&p).await;
}

#[tokio::test]
async fn ttl_policy_expires_l1_entries() {
    let p = prefix();
    let config = CacheConfig {
        ttl: Duration::from_millis(50),
        eviction_policy: EvictionPolicy::Ttl,
        ..cache_config(&p)
    };
    let cache = RedisStateCache::<Account>::new(config).unwrap();
    let id = StreamId::from("a-ttl");
    cache.put(&id, &acct(1, 1)).await;
    assert!(cache.get_l1(&id).is_some());
    // Expiry runs on real time: poll (a minute at most) until it happened.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cache.get_l1(&id).is_some() {
        assert!(std::time::Instant::now() < deadline, "the L1 entry never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cache.get(&id).await, Some(acct(1, 1)), "L2 still serves");
    cleanup(&p).await;
}

#[tokio::test]
async fn warming_fills_l1_from_redis_and_from_a_loader() {
    let p = prefix();
    let writer = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    for i in 0..20 {
        writer.put(&StreamId::from(format!("w-{i}")), &acct(i, 1)).await;
    }
    let fresh = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    let report = fresh.warm_recent(10).await.unwrap();
    assert_eq!((report.requested, report.from_cache), (10, 10));
    let warmed = (0..20)
        .filter(|i| fresh.get_l1(StreamId::from(format!("w-{i}"))).is_some())
        .count();
    assert_eq!(warmed, 10, "exactly the 10 most recent keys are in L1");
    assert!(fresh.get_l1(StreamId::from("w-19")).is_some(), "newest first");

    let keys = vec![
        StreamId::from("w-0"),
        StreamId::from("absent-1"),
        StreamId::from("absent-2"),
    ];
    let report = fresh
        .warm_with(keys, |id| async move {
            if id.as_str() == "absent-1" {
                Ok(Some(acct(99, 4)))
            } else {
                Ok::<_, std::io::Error>(None)
            }
        })
        .await
        .unwrap();
    assert_eq!((report.from_cache, report.from_source, report.missing), (1, 1, 1));
    assert_eq!(
        writer.get(&StreamId::from("absent-1")).await,
        Some(acct(99, 4)),
        "loaded keys reach L2"
    );
    cleanup(&p).await;
}

#[tokio::test]
async fn query_cache_loads_once_and_invalidates_on_events() {
    let p = prefix();
    let views = QueryCache::<serde_json::Value>::new("account-view", cache_config(&p)).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(InMemoryEventStore::new());
    let handler = InvalidateOnEvents::<Account, _, _>::new(views.clone(), |id: &StreamId, _events: &[_]| {
        vec![format!("view:{id}")]
    });
    let repo = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store))
        .handler(Arc::new(handler))
        .build();
    repo.execute("q-1", AccountCommand::Deposit(10)).await.unwrap();

    let view = |repo: Repository<Account, InMemoryEventStore>, loads: Arc<AtomicUsize>| async move {
        loads.fetch_add(1, Ordering::SeqCst);
        let s = repo.load("q-1").await?;
        Ok::<_, es_core::RepositoryError<InsufficientFunds>>(serde_json::json!({ "balance": s.state.balance }))
    };
    for _ in 0..3 {
        let v = views
            .get_or_load("view:q-1", || view(repo.clone(), Arc::clone(&loads)))
            .await
            .unwrap();
        assert_eq!(v["balance"], 10);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "loaded once, then cached");

    // Another instance sees the cached view through L2.
    let other = QueryCache::<serde_json::Value>::new("account-view", cache_config(&p)).unwrap();
    assert_eq!(other.get("view:q-1").await.unwrap()["balance"], 10);

    repo.execute("q-1", AccountCommand::Deposit(5)).await.unwrap();
    let v = views
        .get_or_load("view:q-1", || view(repo.clone(), Arc::clone(&loads)))
        .await
        .unwrap();
    assert_eq!(v["balance"], 15, "the commit invalidated the view");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    cleanup(&p).await;
}

/// A `get_or_load` of `key` on `cache` whose loader has read its view
/// (`"old"`) and waits until `go` is sent.
async fn held_load(
    cache: &QueryCache<serde_json::Value>,
    key: &'static str,
) -> (
    tokio::task::JoinHandle<serde_json::Value>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (loading, loading_seen) = tokio::sync::oneshot::channel();
    let (go, go_seen) = tokio::sync::oneshot::channel::<()>();
    let load = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .get_or_load(key, || async move {
                    loading.send(()).unwrap();
                    go_seen.await.unwrap();
                    Ok::<_, std::io::Error>(serde_json::json!("old"))
                })
                .await
                .unwrap()
        }
    });
    loading_seen.await.unwrap();
    (load, go)
}

/// A view loaded in one process while another invalidates its key (new
/// events committed there) is not stored: it would hide the invalidation
/// from every process until its TTL.
#[tokio::test]
async fn a_view_loaded_while_another_process_invalidates_it_is_not_stored() {
    let p = prefix();
    let a = QueryCache::<serde_json::Value>::new("views", cache_config(&p)).unwrap();
    let b = QueryCache::<serde_json::Value>::new("views", cache_config(&p)).unwrap();
    let (load, go) = held_load(&a, "v").await;
    b.invalidate(&["v".to_owned()]).await;
    go.send(()).unwrap();
    assert_eq!(
        load.await.unwrap(),
        serde_json::json!("old"),
        "the caller gets what it read"
    );
    let c = QueryCache::<serde_json::Value>::new("views", cache_config(&p)).unwrap();
    assert_eq!(c.get("v").await, None, "not stored in Redis");
    assert_eq!(a.get("v").await, None, "nor in the loader's process");
    // Without an invalidation under way, a loaded view is stored.
    a.get_or_load("v", || async { Ok::<_, std::io::Error>(serde_json::json!("new")) })
        .await
        .unwrap();
    assert_eq!(c.get("v").await, Some(serde_json::json!("new")));
    cleanup(&p).await;
}

/// The generation a load started under lapses (Redis evicted it, or the
/// load outlived its TTL) after another process invalidated the key, and
/// a new read starts the generation again: the older load's view does not
/// overwrite the newer one.
#[tokio::test]
async fn a_view_loaded_under_a_lapsed_generation_is_not_stored() {
    let p = prefix();
    let a = QueryCache::<serde_json::Value>::new("views", cache_config(&p)).unwrap();
    let b = QueryCache::<serde_json::Value>::new("views", cache_config(&p)).unwrap();
    let (load, go) = held_load(&a, "v").await;
    b.invalidate(&["v".to_owned()]).await;
    let _: () = redis::cmd("DEL")
        .arg(format!("{p}:query-generation:views:v"))
        .query_async(&mut common::raw().await)
        .await
        .unwrap();
    // Another process reads the view afresh, starting the generation again.
    let fresh = b
        .get_or_load("v", || async { Ok::<_, std::io::Error>(serde_json::json!("fresh")) })
        .await
        .unwrap();
    assert_eq!(fresh, serde_json::json!("fresh"));
    go.send(()).unwrap();
    assert_eq!(load.await.unwrap(), serde_json::json!("old"));
    let c = QueryCache::<serde_json::Value>::new("views", cache_config(&p)).unwrap();
    assert_eq!(
        c.get("v").await,
        Some(serde_json::json!("fresh")),
        "the older load did not overwrite the fresh view"
    );
    cleanup(&p).await;
}

#[tokio::test]
async fn l1_can_be_disabled() {
    let p = prefix();
    let cache = RedisStateCache::<Account>::new(CacheConfig {
        l1_enabled: false,
        ..cache_config(&p)
    })
    .unwrap();
    let writer = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    let id = StreamId::from("no-l1");
    cache.put(&id, &acct(1, 1)).await;
    assert_eq!(cache.get_l1(&id), None, "nothing kept in process");
    writer.put(&id, &acct(2, 2)).await;
    assert_eq!(
        cache.get(&id).await,
        Some(acct(2, 2)),
        "every read sees the latest L2 entry"
    );
    cleanup(&p).await;
}

/// The account's state under a new `SNAPSHOT_VERSION` (same stream type,
/// same fields, so an old entry would even decode).
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct AccountV2 {
    balance: i64,
}

impl es_core::Aggregate for AccountV2 {
    const TYPE: &'static str = Account::TYPE;
    const SNAPSHOT_VERSION: u32 = Account::SNAPSHOT_VERSION + 1;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = InsufficientFunds;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, InsufficientFunds> {
        Account { balance: self.balance }.handle(command)
    }

    fn apply(&mut self, event: &AccountEvent) {
        let mut a = Account { balance: self.balance };
        a.apply(event);
        self.balance = a.balance;
    }
}

/// A state cached under one `SNAPSHOT_VERSION` is never served to the
/// aggregate under another, neither from Redis nor from a shared prefix's
/// L1; each version has its own keys.
#[tokio::test]
async fn states_are_cached_per_snapshot_version() {
    let p = prefix();
    let old = RedisStateCache::<Account>::new(cache_config(&p)).unwrap();
    let new = RedisStateCache::<AccountV2>::new(cache_config(&p)).unwrap();
    let id = StreamId::from("versioned");
    old.put(&id, &acct(7, 3)).await;
    assert_ne!(old.redis_key(&id), new.redis_key(&id));
    assert!(l2_version(&old, &id).await.is_some(), "the old state is in Redis");
    assert_eq!(new.get(&id).await, None, "not served under another snapshot version");

    // Through repositories: the new version rebuilds from the events.
    let store = Arc::new(InMemoryEventStore::new());
    let v1 = Repository::<Account, InMemoryEventStore>::builder(Arc::clone(&store))
        .cache(Arc::new(old.clone()))
        .build();
    v1.execute("r", AccountCommand::Deposit(5)).await.unwrap();
    // A wrong state planted under the old version's key is not seen by v2.
    old.put(&StreamId::from("r"), &acct(1_000, 2)).await;
    let v2 = Repository::<AccountV2, InMemoryEventStore>::builder(Arc::clone(&store))
        .cache(Arc::new(new.clone()))
        .build();
    let loaded = v2.load("r").await.unwrap();
    assert_eq!((loaded.state.balance, loaded.version), (5, 1));
    cleanup(&p).await;
}

/// A full L1 evicts; an evicted state is still served from Redis, and
/// every state served is the one put.
#[tokio::test]
async fn evicted_l1_entries_are_served_from_redis() {
    let p = prefix();
    let cache = RedisStateCache::<Account>::new(CacheConfig {
        max_size: 4,
        ..cache_config(&p)
    })
    .unwrap();
    let ids: Vec<StreamId> = (0..64).map(|i| StreamId::from(format!("e{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        cache.put(id, &acct(i as i64, 1)).await;
    }
    // Eviction runs in the cache's housekeeping: poll until L1 is within
    // its bound (a minute at most).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let in_l1 = ids.iter().filter(|id| cache.get_l1(*id).is_some()).count();
        if in_l1 <= 4 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{in_l1} entries in an L1 of 4");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(cache.get(id).await, Some(acct(i as i64, 1)), "{id}");
    }
    cleanup(&p).await;
}
