//! The checks every [`CommandDeduplicator`](crate::CommandDeduplicator)
//! passes: one holder per key, and claims that a late holder cannot misuse.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::{CommandDeduplicator, DedupClaim, DedupError, DedupStatus};

async fn begin(dedup: &dyn CommandDeduplicator, key: &str) -> DedupStatus {
    dedup.begin(key).await.expect("begin")
}

async fn started(dedup: &dyn CommandDeduplicator, key: &str) -> DedupClaim {
    match begin(dedup, key).await {
        DedupStatus::Started(claim) => claim,
        other => panic!("{key}: Started expected, got {other:?}"),
    }
}

fn lost(result: Result<(), DedupError>, what: &str) {
    assert!(
        matches!(result, Err(DedupError::ClaimLost { .. })),
        "{what}: ClaimLost expected, got {result:?}"
    );
}

/// Claims: a stranger's or a late holder's `complete`, `abandon` and
/// `renew` change nothing, the holder's do (a renewed mark outlives its
/// TTL), and a holder whose mark expired unclaimed may still store its
/// outcome. `dedup` must keep outcomes for longer than the
/// check runs and mark keys in flight for `in_flight_ttl`: long enough for
/// a dozen calls to finish well within it, short because the check waits
/// for two marks to expire (1 s suits every backend on an idle machine;
/// give a database shared with other tests 3 s).
/// Keys are new, so the deduplicator may be shared. Panics on a failed
/// check.
pub async fn deduplicator_claims(dedup: &dyn CommandDeduplicator, in_flight_ttl: Duration) {
    let key = |name: &str| format!("conformance:{name}:{}", Uuid::now_v7());
    let expired = in_flight_ttl + in_flight_ttl / 2 + Duration::from_millis(100);
    let stranger = DedupClaim::new();

    // The holder and a stranger.
    let k = key("held");
    let a = started(dedup, &k).await;
    assert_eq!(begin(dedup, &k).await, DedupStatus::InProgress, "one holder per key");
    dedup.abandon(&k, &stranger).await.expect("a stranger's abandon");
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::InProgress,
        "a stranger's abandon releases nothing"
    );
    lost(
        dedup.complete(&k, &stranger, &json!("stranger")).await,
        "a stranger's complete",
    );
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::InProgress,
        "a stranger's complete stores nothing"
    );
    dedup.complete(&k, &a, &json!({ "n": 1 })).await.expect("complete");
    assert_eq!(begin(dedup, &k).await, DedupStatus::Completed(json!({ "n": 1 })));
    dedup
        .complete(&k, &a, &json!({ "n": 1 }))
        .await
        .expect("the holder's repeated complete");
    lost(
        dedup.complete(&k, &a, &json!({ "n": 2 })).await,
        "another outcome over a completed key",
    );
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::Completed(json!({ "n": 1 })),
        "a completed outcome is never replaced"
    );
    dedup.abandon(&k, &a).await.expect("abandon after complete");
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::Completed(json!({ "n": 1 })),
        "abandon never drops an outcome"
    );

    // The holder abandons: a retry may start.
    let k = key("abandoned");
    let a = started(dedup, &k).await;
    dedup.abandon(&k, &a).await.expect("abandon");
    assert!(begin(dedup, &k).await.is_started(), "an abandoned key starts again");

    // A late holder: its mark expired and a retry took the key.
    let k = key("taken");
    let late = started(dedup, &k).await;
    tokio::time::sleep(expired).await;
    let retry_started = std::time::Instant::now();
    let retry = started(dedup, &k).await;
    assert_ne!(late, retry, "every start has its own claim");
    dedup.abandon(&k, &late).await.expect("the late holder's abandon");
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::InProgress,
        "the late holder's abandon leaves the retry's mark ({:?} after the retry began, in-flight TTL {in_flight_ttl:?})",
        retry_started.elapsed()
    );
    lost(
        dedup.complete(&k, &late, &json!("late")).await,
        "the late holder's complete",
    );
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::InProgress,
        "the late holder's complete leaves the retry's mark"
    );
    dedup
        .complete(&k, &retry, &json!("retry"))
        .await
        .expect("the retry's complete");
    lost(
        dedup.complete(&k, &late, &json!("late")).await,
        "the late holder's complete after the retry's",
    );
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::Completed(json!("retry")),
        "the retry's outcome stands"
    );

    // Renewal: the holder's keeps its mark past the TTL; a stranger's
    // renews nothing; once the mark expired and a retry took the key, or
    // once the key completed, the late holder's renewal says so.
    let k = key("renewed");
    let a = started(dedup, &k).await;
    let half = in_flight_ttl / 2;
    for _ in 0..3 {
        tokio::time::sleep(half).await;
        assert!(dedup.renew(&k, &a).await.expect("renew"), "the holder renews its mark");
    }
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::InProgress,
        "a renewed mark outlives its first TTL"
    );
    assert!(
        !dedup.renew(&k, &stranger).await.expect("a stranger's renew"),
        "a stranger holds nothing"
    );
    tokio::time::sleep(expired).await;
    let retry = started(dedup, &k).await;
    assert!(
        !dedup.renew(&k, &a).await.expect("the late holder's renew"),
        "the late holder's claim is gone"
    );
    assert_eq!(
        begin(dedup, &k).await,
        DedupStatus::InProgress,
        "the retry's mark stands"
    );
    dedup.complete(&k, &retry, &json!("renewed")).await.expect("complete");
    assert!(
        !dedup.renew(&k, &retry).await.expect("renew after complete"),
        "a completed key is not in flight"
    );
    assert_eq!(begin(dedup, &k).await, DedupStatus::Completed(json!("renewed")));

    // A late holder whose mark expired unclaimed: its outcome is stored.
    let k = key("free");
    let late = started(dedup, &k).await;
    tokio::time::sleep(expired).await;
    dedup
        .complete(&k, &late, &json!("late"))
        .await
        .expect("a complete after the mark expired unclaimed");
    assert_eq!(begin(dedup, &k).await, DedupStatus::Completed(json!("late")));
}
