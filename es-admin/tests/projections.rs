//! `projections`, `rebuild` and `dead-letters` against the real
//! PostgreSQL, with a projection of the tests' own (`common::Totals`).

mod common;

use common::{append, append_added, cure, run, totals, totals_table};
use es_core::{CheckpointStore, EventStore, OnFailure, ProjectionConfig, ProjectionError};
use es_postgres::PostgresCheckpointStore;
use serde_json::{json, Value};

fn by_name<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc.as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {doc}"))
}

/// A writing transaction left open holds the log's head back, so the lag
/// reads 0 while events wait behind it: `projections` says so.
#[tokio::test]
async fn projections_notes_events_an_open_transaction_holds_back() {
    let store = common::store().await;
    append_added(&store, "a", 2).await;
    totals(&store).catch_up().await.unwrap();
    let mut open = store.pool().begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *open)
        .await
        .unwrap();
    // Committed, but not readable while `open` is.
    store
        .append(
            "counter",
            &es_core::StreamId::from("b"),
            es_core::ExpectedVersion::Any,
            vec![es_core::NewEvent::new("Added", json!({"n": 1}))],
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let text = run(&store, &["projections"]).await.ok().to_owned();
    assert!(
        text.contains("committed event(s) are not readable yet") && text.contains("holds the log back"),
        "{text}"
    );
    open.rollback().await.unwrap();
}

#[tokio::test]
async fn projections_lists_position_lag_and_state_also_of_registered_ones_without_a_checkpoint() {
    let store = common::store().await;
    let first = append_added(&store, "a", 10).await;
    totals(&store).catch_up().await.unwrap();
    append_added(&store, "b", 4).await;
    PostgresCheckpointStore::new(&store).save("retired", 5).await.unwrap();

    let doc = run(&store, &["projections", "--json"]).await.json();
    assert_eq!(doc.as_array().unwrap().len(), 3, "{doc}");
    let t = by_name(&doc, "totals");
    assert_eq!(
        (
            &t["registered"],
            &t["position"],
            &t["lag_events"],
            &t["state"],
            &t["dead_letters"]
        ),
        (
            &json!(true),
            &json!(first[9]),
            &json!(4),
            &json!("catching-up"),
            &json!(0)
        )
    );
    let lag = t["lag_seconds"].as_f64().unwrap();
    assert!((0.0..3600.0).contains(&lag), "{t}");
    assert!(t["updated_at"].is_string(), "{t}");
    let a = by_name(&doc, "audit");
    assert_eq!(
        (
            &a["registered"],
            &a["position"],
            &a["lag_events"],
            &a["state"],
            &a["updated_at"]
        ),
        (&json!(true), &json!(0), &json!(14), &json!("new"), &Value::Null),
        "registered, never ran: the whole log is its lag"
    );
    let r = by_name(&doc, "retired");
    assert_eq!((&r["registered"], &r["position"]), (&json!(false), &json!(5)));

    let text = run(&store, &["projections"]).await;
    let out = text.ok();
    assert!(out.lines().next().unwrap().starts_with("PROJECTION"), "{out}");
    let line = out.lines().find(|l| l.starts_with("totals ")).unwrap();
    assert!(
        line.contains(&first[9].to_string()) && line.contains("catching-up"),
        "{line}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("audit ") && l.contains(" new ") && l.ends_with("never")),
        "{out}"
    );
    assert!(out.contains("retired*") && out.contains("* a checkpoint only"), "{out}");

    // A runner that stops on a failing event: `failed`, with its error.
    let poison = append(&store, "p", &[("Poison", json!({"n": 1}))]).await[0];
    let stopping = totals(&store).with_config(ProjectionConfig {
        on_failure: OnFailure::Stop,
        retry: es_core::RetryPolicy {
            max_attempts: 1,
            ..es_core::RetryPolicy::default()
        },
        ..ProjectionConfig::default()
    });
    assert!(matches!(
        stopping.catch_up().await,
        Err(ProjectionError::Stopped { .. })
    ));
    let doc = run(&store, &["projections", "--json"]).await.json();
    let t = by_name(&doc, "totals");
    assert_eq!(t["state"], "failed", "{t}");
    assert!(t["last_error"].as_str().unwrap().contains("poison at"), "{t}");
    let text = run(&store, &["projections"]).await;
    assert!(
        text.ok().contains("stopped: projection totals stopped at position"),
        "{text:?}"
    );

    // Fixed (here: cured), a replay from the checkpoint resumes it.
    cure(&store, poison).await;
    let from = t["position"].as_u64().unwrap().to_string();
    let resumed = run(&store, &["rebuild", "totals", "--from", &from, "--json"])
        .await
        .json();
    assert_eq!(
        (&resumed["applied"], &resumed["dead_lettered"]),
        (&json!(1), &json!(0)),
        "the event it stopped on"
    );
    let doc = run(&store, &["projections", "--json"]).await.json();
    let t = by_name(&doc, "totals");
    assert_eq!(
        (&t["state"], &t["last_error"], &t["lag_events"]),
        (&json!("current"), &Value::Null, &json!(0))
    );
}

#[tokio::test]
async fn a_full_rebuild_resets_the_read_model_and_shows_progress_with_rate_and_eta() {
    let store = common::store().await;
    append_added(&store, "a", 1500).await;
    append_added(&store, "b", 1000).await;
    append(&store, "other", &[("Ignored", json!({}))]).await; // not in the filter
    totals(&store).catch_up().await.unwrap();
    sqlx::query(&format!("UPDATE {}.totals SET total = -1", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();

    let rebuilt = run(&store, &["rebuild", "totals", "--batch-size", "100"]).await;
    let out = rebuilt.ok();
    assert!(
        out.starts_with("rebuilt totals (full): 2500 event(s) applied, 0 dead-lettered, checkpoint "),
        "{rebuilt:?}"
    );
    let progress: Vec<&str> = rebuilt.stderr.lines().collect();
    let last = progress.last().unwrap_or_else(|| panic!("no progress: {rebuilt:?}"));
    assert!(
        last.starts_with("rebuild totals: 2,500/2,500 events (100%), "),
        "{rebuilt:?}"
    );
    assert!(last.contains("/s, ETA "), "events/s and ETA: {last}");
    assert!(
        progress
            .iter()
            .all(|l| l.starts_with("rebuild totals: ") && !l.contains('\u{1b}')),
        "plain progress lines only: {rebuilt:?}"
    );
    assert_eq!(
        totals_table(&store).await,
        vec![("a".into(), 1500, 1500), ("b".into(), 1000, 1000)],
        "reset, then every event once"
    );

    let doc = run(&store, &["rebuild", "totals", "--json"]).await.json();
    assert_eq!(
        (&doc["mode"], &doc["expected"], &doc["applied"], &doc["dead_lettered"]),
        (&json!("full"), &json!(2500), &json!(2500), &json!(0))
    );
    assert_eq!(doc["position"], json!(totals(&store).position().await.unwrap()));
    assert_eq!(totals_table(&store).await[0], ("a".into(), 1500, 1500));
}

#[tokio::test]
async fn a_rebuild_from_a_position_applies_again_only_what_follows_it() {
    let store = common::store().await;
    let positions = append_added(&store, "a", 10).await;
    totals(&store).catch_up().await.unwrap();

    let doc = run(
        &store,
        &["rebuild", "totals", "--from", &positions[4].to_string(), "--json"],
    )
    .await
    .json();
    assert_eq!(
        (
            &doc["mode"],
            &doc["from"],
            &doc["expected"],
            &doc["applied"],
            &doc["position"]
        ),
        (
            &json!("from"),
            &json!(positions[4]),
            &json!(5),
            &json!(5),
            &json!(positions[9])
        )
    );
    // Not reset: events 6..10 counted twice (the proof that only they ran).
    assert_eq!(totals_table(&store).await, vec![("a".into(), 15, 15)]);

    let text = run(&store, &["rebuild", "totals", "--from", &positions[8].to_string()]).await;
    assert!(
        text.ok().starts_with(&format!(
            "rebuilt totals (from after {}): 1 event(s) applied",
            positions[8]
        )),
        "{text:?}"
    );
    assert!(text.stderr.contains("rebuild totals: 1/1 events (100%)"), "{text:?}");
}

#[tokio::test]
async fn a_selective_replay_applies_only_the_named_types_and_leaves_the_checkpoint() {
    let store = common::store().await;
    let p = append(
        &store,
        "a",
        &[
            ("Added", json!({"n": 5})),
            ("Removed", json!({"n": 2})),
            ("Added", json!({"n": 3})),
            ("Removed", json!({"n": 1})),
        ],
    )
    .await;
    let runner = totals(&store);
    runner.catch_up().await.unwrap();
    assert_eq!(totals_table(&store).await, vec![("a".into(), 5, 4)]);
    let checkpoint = runner.position().await.unwrap();

    let doc = run(&store, &["rebuild", "totals", "--event-type", "Removed", "--json"])
        .await
        .json();
    assert_eq!(
        (&doc["mode"], &doc["expected"], &doc["applied"], &doc["position"]),
        (&json!("selective"), &json!(2), &json!(2), &json!(checkpoint))
    );
    assert_eq!(
        totals_table(&store).await,
        vec![("a".into(), 2, 6)],
        "both removals once more"
    );
    assert_eq!(
        runner.position().await.unwrap(),
        checkpoint,
        "the checkpoint did not move"
    );

    let text = run(
        &store,
        &[
            "rebuild",
            "totals",
            "--event-type",
            "Removed",
            "--event-type",
            "Added",
            "--from",
            &p[1].to_string(),
        ],
    )
    .await;
    assert!(
        text.ok().starts_with(&format!(
            "rebuilt totals (selective of Removed, Added after {}): 2 event(s) applied",
            p[1]
        )),
        "{text:?}"
    );
    assert_eq!(totals_table(&store).await, vec![("a".into(), 4, 8)], "+3 -1");
    // A type the projection does not read: nothing to do.
    let none = run(&store, &["rebuild", "totals", "--event-type", "Unknown", "--json"])
        .await
        .json();
    assert_eq!((&none["expected"], &none["applied"]), (&json!(0), &json!(0)));
}

#[tokio::test]
async fn rebuild_refuses_unknown_projections_and_bad_positions() {
    let store = common::store().await;
    let p = append_added(&store, "a", 3).await;

    let unknown = run(&store, &["rebuild", "nope"]).await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert_eq!(
        unknown.stderr.trim(),
        "error: unknown projection \"nope\"; registered: totals, audit"
    );
    assert!(unknown.stdout.is_empty(), "{unknown:?}");

    let past = run(
        &store,
        &["rebuild", "totals", "--from", &(p[2] + (1 << 30)).to_string()],
    )
    .await;
    assert_eq!(past.code, 1, "{past:?}");
    assert!(past.stderr.contains("is past the head of the log"), "{past:?}");

    for bad in ["abc", "-5", "1.5"] {
        let r = run(&store, &["rebuild", "totals", &format!("--from={bad}")]).await;
        assert_eq!(r.code, 2, "{bad}: {r:?}");
        assert!(r.stderr.contains("--from"), "{bad}: {r:?}");
    }
    let zero = run(&store, &["rebuild", "totals", "--batch-size", "0"]).await;
    assert_eq!(zero.code, 2, "{zero:?}");
    assert_eq!(totals(&store).position().await.unwrap(), 0, "nothing ran");
}

#[tokio::test]
async fn dead_letters_are_listed_retried_and_skipped() {
    let store = common::store().await;
    append(&store, "a", &[("Added", json!({"n": 1}))]).await;
    let p1 = append(&store, "a", &[("Poison", json!({"n": 10}))]).await[0];
    append(&store, "a", &[("Added", json!({"n": 2}))]).await;
    let p2 = append(&store, "b", &[("Poison", json!({"n": 20}))]).await[0];
    let p3 = append(&store, "c", &[("Poison", json!({"n": 30}))]).await[0];
    let report = totals(&store).catch_up().await.unwrap();
    assert_eq!((report.applied, report.dead_lettered), (2, 3));

    let letters = run(&store, &["dead-letters", "list", "totals", "--json"]).await.json();
    let listed: Vec<(u64, &str, &str)> = letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["global_position"].as_u64().unwrap(),
                l["event_type"].as_str().unwrap(),
                l["projection"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (p1, "Poison", "totals"),
            (p2, "Poison", "totals"),
            (p3, "Poison", "totals")
        ]
    );
    assert!(letters[0]["error"].as_str().unwrap().contains("poison at"), "{letters}");
    let text = run(&store, &["dead-letters", "list"]).await;
    assert_eq!(text.ok().lines().count(), 3, "{text:?}");
    assert!(
        text.stdout
            .contains(&format!("totals  {p2:>20}  b v1  Poison  1 attempt(s)")),
        "{text:?}"
    );
    assert!(run(&store, &["dead-letters", "list", "audit"])
        .await
        .ok()
        .contains("no dead letters for audit"));

    // Still failing: the letter stays, exit 1.
    let again = run(
        &store,
        &["dead-letters", "retry", "totals", "--position", &p1.to_string()],
    )
    .await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again.stdout.contains(&format!("dead letter at {p1} failed again")),
        "{again:?}"
    );
    assert!(
        again.stderr.contains("1 of 1 dead letters of totals failed again"),
        "{again:?}"
    );
    assert_eq!(totals(&store).dead_letters().await.unwrap().len(), 3);

    cure(&store, p1).await;
    let retried = run(
        &store,
        &["dead-letters", "retry", "totals", "--position", &p1.to_string()],
    )
    .await;
    assert_eq!(
        retried.ok().trim(),
        format!("totals: dead letter at {p1} applied again, letter removed")
    );
    assert_eq!(totals_table(&store).await[0], ("a".into(), 13, 3), "applied once");

    let skipped = run(
        &store,
        &[
            "dead-letters",
            "skip",
            "totals",
            "--position",
            &p2.to_string(),
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        skipped,
        json!({"projection": "totals", "action": "skip", "resolved": [p2], "failed": []})
    );
    assert!(
        !totals_table(&store).await.iter().any(|r| r.0 == "b"),
        "a skipped event is not applied"
    );
    let twice = run(
        &store,
        &["dead-letters", "skip", "totals", "--position", &p2.to_string()],
    )
    .await;
    assert_eq!(twice.code, 1, "{twice:?}");
    assert_eq!(
        twice.stderr.trim(),
        format!("error: projection totals has no dead letter at position {p2}")
    );

    cure(&store, p3).await;
    let all = run(&store, &["dead-letters", "retry", "totals", "--all", "--json"])
        .await
        .json();
    assert_eq!(
        all,
        json!({"projection": "totals", "action": "retry", "resolved": [p3], "failed": []})
    );
    assert_eq!(totals_table(&store).await[1], ("c".into(), 30, 1));
    assert_eq!(run(&store, &["dead-letters", "list", "--json"]).await.json(), json!([]));
    let nothing = run(&store, &["dead-letters", "retry", "totals", "--all"]).await;
    assert_eq!(nothing.ok().trim(), "totals: no dead letters");

    let neither = run(&store, &["dead-letters", "retry", "totals"]).await;
    assert_eq!(neither.code, 2, "--position or --all: {neither:?}");
    let unknown = run(&store, &["dead-letters", "list", "nope"]).await;
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("unknown projection \"nope\""), "{unknown:?}");
}
