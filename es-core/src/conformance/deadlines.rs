//! The checks every [`DeadlineStore`](crate::DeadlineStore) passes.

use chrono::{DateTime, Duration, Utc};

use crate::{DeadlineStore, StreamId};

/// Set, replace, clear, order, limit and isolation by manager. Panics on
/// a failed check. Use a store no other test writes.
pub async fn deadline_store(store: &dyn DeadlineStore) {
    let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap_or_default();
    let at = |s: i64| t0 + Duration::seconds(s);
    let id = |s: &str| StreamId::from(s);
    store.set("m", &id("late"), Some(at(30))).await.expect("set");
    store.set("m", &id("early"), Some(at(10))).await.expect("set");
    store.set("m", &id("moved"), Some(at(5))).await.expect("set");
    store.set("m", &id("moved"), Some(at(20))).await.expect("replace");
    store.set("other", &id("early"), Some(at(0))).await.expect("set");
    store.set("m", &id("gone"), Some(at(1))).await.expect("set");
    store.set("m", &id("gone"), None).await.expect("clear");
    store.set("m", &id("never"), None).await.expect("clear a missing one");

    let due = |now: i64, limit: usize| async move {
        store
            .due("m", at(now), limit)
            .await
            .expect("due")
            .into_iter()
            .map(|(p, when)| (p.as_str().to_owned(), when))
            .collect::<Vec<_>>()
    };
    assert!(due(9, 10).await.is_empty(), "nothing due before the first deadline");
    assert_eq!(
        due(20, 10).await,
        vec![("early".into(), at(10)), ("moved".into(), at(20))],
        "earliest first, inclusive"
    );
    assert_eq!(due(60, 1).await, vec![("early".into(), at(10))], "limit");
    assert_eq!(due(60, 10).await.len(), 3);
    let other = store.due("other", at(0), 10).await.expect("due");
    assert_eq!(other, vec![(id("early"), at(0))], "managers apart");
}
