//! `stream` and `tail` against the real PostgreSQL.

mod common;

use common::{append, append_added, argv, eventually, run, Buf, PATIENCE};
use es_core::{EventFilter, EventStore};
use serde_json::{json, Value};

#[tokio::test]
async fn stream_prints_one_streams_events_from_a_version_up_to_a_limit() {
    let store = common::store().await;
    let c1 = append(
        &store,
        "c1",
        &[
            ("Added", json!({"n": 1})),
            ("Added", json!({"n": 2})),
            ("Removed", json!({"n": 3})),
            ("Added", json!({"n": 4})),
        ],
    )
    .await;
    append(&store, "c2", &[("Added", json!({"n": 9}))]).await;

    let doc = run(
        &store,
        &["stream", "c1", "--from-version", "2", "--limit", "2", "--json"],
    )
    .await
    .json();
    assert_eq!(
        (doc["stream_id"].clone(), doc["version"].clone()),
        (json!("c1"), json!(4))
    );
    let events = doc["events"].as_array().unwrap();
    let summary: Vec<(u64, u64, &str, i64)> = events
        .iter()
        .map(|e| {
            (
                e["version"].as_u64().unwrap(),
                e["global_position"].as_u64().unwrap(),
                e["event_type"].as_str().unwrap(),
                e["payload"]["n"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, vec![(2, c1[1], "Added", 2), (3, c1[2], "Removed", 3)]);

    let text = run(&store, &["stream", "c1", "--from-version", "3"]).await;
    let lines: Vec<&str> = text.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert!(
        lines[0].contains("c1 at version 4; 2 event(s) from version 3"),
        "{text:?}"
    );
    assert!(
        lines[1].contains(&c1[2].to_string()) && lines[1].contains("counter/c1 v3  Removed  {\"n\":3}"),
        "{text:?}"
    );
    assert!(lines[2].contains("counter/c1 v4  Added"), "{text:?}");

    // The `type/id` form the lines print is taken too.
    let typed = run(&store, &["stream", "counter/c1", "--json"]).await.json();
    assert_eq!(
        (typed["stream_id"].clone(), typed["version"].clone()),
        (json!("c1"), json!(4))
    );

    let none = run(&store, &["stream", "nobody"]).await;
    assert!(none.ok().contains("stream nobody has no events"), "{none:?}");
    let none = run(&store, &["stream", "counter/nobody"]).await;
    assert!(none.ok().contains("stream counter/nobody has no events"), "{none:?}");
    let none = run(&store, &["stream", "nobody", "--json"]).await.json();
    assert_eq!((none["version"].clone(), none["events"].clone()), (json!(0), json!([])));
}

#[tokio::test]
async fn tail_prints_the_last_events_of_the_log_in_order() {
    let store = common::store().await;
    let mut positions = append_added(&store, "a", 12).await;
    positions.extend(append(&store, "b", &[("Removed", json!({"n": 1}))]).await);

    let doc = run(&store, &["tail", "-n", "5", "--json"]).await.json();
    let got: Vec<u64> = doc
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["global_position"].as_u64().unwrap())
        .collect();
    assert_eq!(got, positions[positions.len() - 5..].to_vec());

    let text = run(&store, &["tail", "--last", "3"]).await;
    let lines: Vec<&str> = text.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert!(lines[2].contains("counter/b v1  Removed"), "{text:?}");
    assert!(
        lines[0].trim_start().starts_with(&positions[10].to_string()),
        "{text:?}"
    );

    // More than the log holds: all of it.
    let all = run(&store, &["tail", "-n", "100", "--json"]).await.json();
    assert_eq!(all.as_array().unwrap().len(), 13);
    let empty = common::store().await;
    assert_eq!(run(&empty, &["tail", "--json"]).await.json(), json!([]));
}

#[tokio::test]
async fn tail_follow_prints_new_events_as_json_lines_until_shut_down() {
    let store = common::store().await;
    append_added(&store, "a", 4).await;
    let (out, err) = (Buf::default(), Buf::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let follow = tokio::spawn({
        let (out, err) = (out.clone(), err.clone());
        let args = argv(&store, &["tail", "-n", "2", "--follow", "--json"]);
        async move {
            common::admin()
                .run_until(args, out, err, async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    let lines = |buf: &Buf| -> Vec<Value> {
        buf.text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    };
    eventually("the last two events", || async {
        (lines(&out).len() == 2).then_some(())
    })
    .await;

    let new = append(&store, "b", &[("Added", json!({"n": 7})), ("Removed", json!({"n": 8}))]).await;
    let more = append(&store, "c", &[("Added", json!({"n": 9}))]).await;
    let printed = eventually("the new events", || async {
        let l = lines(&out);
        (l.len() >= 5).then_some(l)
    })
    .await;
    stop.send(()).unwrap();
    let code = tokio::time::timeout(PATIENCE, follow).await.unwrap().unwrap();
    assert_eq!(code, 0, "{}", err.text());

    let all = store.read_all(0, 100, &EventFilter::all()).await.unwrap();
    let expected: Vec<u64> = all[2..].iter().map(|e| e.global_position).collect();
    let got: Vec<u64> = printed.iter().map(|e| e["global_position"].as_u64().unwrap()).collect();
    assert_eq!(got, expected, "each event once, in order");
    assert_eq!(&got[2..], &[new[0], new[1], more[0]]);
    assert_eq!(printed[3]["event_type"], "Removed");
    assert_eq!(lines(&out).len(), 5, "nothing after the shutdown");
}
