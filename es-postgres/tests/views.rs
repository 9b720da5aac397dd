//! `PgViews`: serde views per stream in a table the library creates, kept
//! by the projection engine on the real PostgreSQL.
mod common;

use std::sync::Arc;

use es_core::{
    Aggregate, DomainEvent, EventEnvelope, OnFailure, ProjectionConfig, ReplayMode, Repository, StreamId, Versioned,
    View,
};
use es_postgres::{PgProjectionUnit, PgTyped, PgViews, PostgresEventStore};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added(u64),
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> &'static str {
        "Added"
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counter;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = u64;
    type Event = CounterEvent;
    type Error = std::convert::Infallible;
    fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, Self::Error> {
        Ok(vec![CounterEvent::Added(*n)])
    }
    fn apply(&mut self, _: &CounterEvent) {}
}

/// How many additions and their total; the list keeps the order seen, so
/// an event folded twice or out of order shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Summary {
    adds: Vec<u64>,
    total: u64,
}

impl View for Summary {
    type Aggregate = Counter;
    fn apply(&mut self, e: &EventEnvelope<CounterEvent>) {
        let CounterEvent::Added(n) = e.event;
        self.adds.push(n);
        self.total += n;
    }
}

/// What the views must hold: per counter, the additions in order.
fn expected(plan: &[(&str, u64)]) -> Vec<(StreamId, Versioned<Summary>)> {
    let mut by_id: std::collections::BTreeMap<&str, Summary> = std::collections::BTreeMap::new();
    for (id, n) in plan {
        let s = by_id.entry(id).or_default();
        s.adds.push(*n);
        s.total += n;
    }
    by_id
        .into_iter()
        .map(|(id, state)| {
            let version = state.adds.len() as u64;
            (StreamId::from(id), Versioned { state, version })
        })
        .collect()
}

async fn all(views: &PgViews<Summary>) -> Vec<(StreamId, Versioned<Summary>)> {
    views.list(None, 1000).await.unwrap()
}

async fn table_exists(store: &PostgresEventStore, name: &str) -> bool {
    sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{}.{name}", store.schema()))
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn views_are_created_kept_listed_and_rebuilt() {
    let store = common::store().await;
    let plan: Vec<(&str, u64)> = vec![
        ("c3", 1),
        ("c1", 5),
        ("c2", 2),
        ("c1", 7),
        ("c5", 4),
        ("c4", 9),
        ("c1", 1),
        ("c3", 3),
        ("c2", 8),
    ];
    let repo = Repository::<Counter, PostgresEventStore>::builder(Arc::new(store.clone())).build();
    let mut positions = Vec::new();
    for (id, n) in &plan {
        let out = repo.execute(*id, *n).await.unwrap();
        positions.push(out.append.unwrap().positions[0]);
    }
    common::settled_head(&store).await;

    let views = Arc::new(PgViews::<Summary>::new(&store, "counter_summary").unwrap());
    assert_eq!(views.table(), format!("{}.counter_summary", store.schema()));
    assert!(
        PgViews::<Summary>::new(&store, "Counter-Summary").is_err(),
        "not an identifier"
    );
    let unit = PgProjectionUnit::new(&store, Arc::new(PgTyped::new(Arc::clone(&views))));
    assert!(!table_exists(&store, "counter_summary").await);
    unit.setup().await.unwrap();
    assert!(table_exists(&store, "counter_summary").await, "setup creates the table");
    let runner = unit.runner().with_config(ProjectionConfig {
        batch_size: 3,
        on_failure: OnFailure::Stop,
        ..ProjectionConfig::default()
    });

    let report = runner.catch_up().await.unwrap();
    assert_eq!(
        (report.applied, report.position),
        (plan.len() as u64, positions[plan.len() - 1])
    );
    let want = expected(&plan);
    assert_eq!(all(&views).await, want);
    let c1 = views.get(&StreamId::from("c1")).await.unwrap().unwrap();
    assert_eq!(
        (c1.version, c1.state.adds.clone(), c1.state.total),
        (3, vec![5, 7, 1], 13)
    );
    assert!(views.get(&StreamId::from("nobody")).await.unwrap().is_none());

    // Pages by cursor.
    let mut listed = Vec::new();
    let mut after: Option<StreamId> = None;
    loop {
        let page = views.list(after.as_ref(), 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        listed.extend(page);
    }
    assert_eq!(listed, want, "the cursor visits every view once, in order");

    // Replaying from an earlier position meets versions already folded in:
    // they are not applied twice.
    let report = runner.replay(ReplayMode::From(positions[1])).await.unwrap();
    assert_eq!(report.applied, plan.len() as u64 - 2);
    assert_eq!(all(&views).await, want, "no event folded twice");

    // A damaged view survives an incremental replay (its version is ahead)
    // but not a full one.
    sqlx::query(&format!(
        "UPDATE {} SET view = '{{\"adds\":[],\"total\":0}}', version = 99 WHERE stream_id = 'c2'",
        views.table()
    ))
    .execute(store.pool())
    .await
    .unwrap();
    runner.replay(ReplayMode::From(0)).await.unwrap();
    assert_eq!(views.get(&StreamId::from("c2")).await.unwrap().unwrap().version, 99);
    let report = runner.replay(ReplayMode::Full).await.unwrap();
    assert_eq!(report.applied, plan.len() as u64);
    assert_eq!(all(&views).await, want, "the full replay rebuilt every view");

    // New events extend the views.
    repo.execute("c5", 6).await.unwrap();
    repo.execute("c6", 2).await.unwrap();
    common::settled_head(&store).await;
    assert_eq!(runner.catch_up().await.unwrap().applied, 2);
    let mut plan = plan;
    plan.extend([("c5", 6), ("c6", 2)]);
    assert_eq!(all(&views).await, expected(&plan));
}
