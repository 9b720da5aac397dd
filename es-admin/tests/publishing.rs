//! `publishing`: the outbox backlog and the replication slot, read through
//! es-kafka's status readers on the real PostgreSQL.

mod common;

use common::{append, append_added, run};
use serde_json::{json, Value};

#[tokio::test]
async fn publishing_shows_pending_and_parked_outbox_rows_and_a_missing_slot() {
    let store = common::store_with(true).await;
    append_added(&store, "a", 3).await;
    append(&store, "m", &[("Added", json!({"n": 1}))]).await;
    sqlx::query(&format!(
        "UPDATE {}.outbox SET parked_at = now(), attempts = 5, last_error = 'message too large' \
         WHERE stream_id = 'm'",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .unwrap();
    // A row behind the parked one, held by a poller that saw it.
    append(&store, "m", &[("Added", json!({"n": 2}))]).await;
    sqlx::query(&format!(
        "UPDATE {}.outbox SET held_at = now() WHERE stream_id = 'm' AND version = 2",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .unwrap();
    // The oldest pending row, written 90 s ago.
    sqlx::query(&format!(
        "UPDATE {}.outbox SET created_at = now() - interval '90 seconds' WHERE stream_id = 'a' AND version = 1",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(store.pool())
        .await
        .unwrap();

    let doc = run(&store, &["publishing", "--json"]).await.json();
    let outbox = &doc["outbox"];
    assert_eq!(
        (&outbox["pending"], &outbox["parked"], &outbox["held"]),
        (&json!(4), &json!(1), &json!(1)),
        "{doc}"
    );
    let oldest = outbox["oldest_pending_seconds"].as_f64().unwrap();
    assert!((90.0..600.0).contains(&oldest), "{doc}");
    let parked = &outbox["parked_rows"][0];
    assert_eq!(
        (
            &parked["stream_id"],
            &parked["version"],
            &parked["attempts"],
            &parked["last_error"]
        ),
        (&json!("m"), &json!(1), &json!(5), &json!("message too large"))
    );
    assert_eq!(
        doc["slot"],
        json!({
            "name": es_kafka::cdc::default_slot_name(&database, store.schema()),
            "exists": false,
            "confirmed_flush_lsn": null,
            "lag_bytes": null,
            "retained_bytes": null,
        })
    );

    let text = run(&store, &["publishing"]).await;
    let out = text.ok();
    assert!(
        out.starts_with(&format!("outbox ({}.outbox): 4 pending (oldest ", store.schema())),
        "{out}"
    );
    assert!(
        out.contains(" ago), 1 of them held behind parked rows, 1 parked"),
        "{out}"
    );
    assert!(out.contains(", 1 parked"), "{out}");
    assert!(out.contains("  m v1  Added  5 attempt(s), since "), "{out}");
    assert!(out.contains(": none in this database"), "{out}");

    sqlx::query(&format!("UPDATE {}.outbox SET published_at = now()", store.schema()))
        .execute(store.pool())
        .await
        .unwrap();
    let drained = run(&store, &["publishing", "--json"]).await.json();
    assert_eq!(
        (
            &drained["outbox"]["pending"],
            &drained["outbox"]["parked"],
            &drained["outbox"]["oldest_pending_seconds"]
        ),
        (&json!(0), &json!(0), &Value::Null)
    );
}

#[tokio::test]
async fn publishing_shows_the_lag_of_an_existing_replication_slot() {
    let store = common::store().await;
    let wal_level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(store.pool())
        .await
        .unwrap();
    if wal_level != "logical" {
        // scripts/test.sh sets wal_level = logical; without it no slot can exist.
        eprintln!("skipped: wal_level is {wal_level}, logical decoding is off");
        return;
    }
    let slot = format!("{}_slot", store.schema());
    sqlx::query("SELECT pg_create_logical_replication_slot($1, 'test_decoding')")
        .bind(&slot)
        .execute(store.pool())
        .await
        .unwrap();
    append_added(&store, "a", 20).await;
    let doc = run(&store, &["publishing", "--slot", &slot, "--json"]).await;
    sqlx::query("SELECT pg_drop_replication_slot($1)")
        .bind(&slot)
        .execute(store.pool())
        .await
        .unwrap();
    let doc = doc.json();
    let s = &doc["slot"];
    assert_eq!((&s["name"], &s["exists"]), (&json!(slot), &json!(true)), "{doc}");
    assert!(s["confirmed_flush_lsn"].is_string(), "{doc}");
    assert!(s["lag_bytes"].as_i64().unwrap() > 0, "20 events not relayed: {doc}");
    assert!(s["retained_bytes"].as_i64().unwrap() > 0, "{doc}");
}

/// `publishing`'s outbox counts: pending, parked, held.
async fn counts(store: &es_postgres::PostgresEventStore) -> [u64; 3] {
    let doc = run(store, &["publishing", "--json"]).await.json();
    ["pending", "parked", "held"].map(|k| doc["outbox"][k].as_u64().unwrap_or_else(|| panic!("{doc}")))
}

#[tokio::test]
async fn unpark_releases_a_parked_row_and_the_rows_held_behind_it() {
    let store = common::store_with(true).await;
    append(&store, "m", &[("Added", json!({"n": 1}))]).await;
    append(&store, "m", &[("Added", json!({"n": 2})), ("Added", json!({"n": 3}))]).await;
    append_added(&store, "a", 1).await;
    let s = store.schema();
    // m v1 parked, v2 and v3 held behind it, as a poller leaves them.
    for statement in [
        format!("UPDATE {s}.outbox SET parked_at = now(), attempts = 5, last_error = 'too large' WHERE stream_id = 'm' AND version = 1"),
        format!("UPDATE {s}.outbox SET held_at = now() WHERE stream_id = 'm' AND version > 1"),
    ] {
        sqlx::query(&statement).execute(store.pool()).await.unwrap();
    }
    let before = run(&store, &["publishing", "--json"]).await.json();
    let position = before["outbox"]["parked_rows"][0]["global_position"].as_u64().unwrap();
    assert_eq!(
        (&before["outbox"]["pending"], &before["outbox"]["held"]),
        (&json!(3), &json!(2)),
        "{before}"
    );

    let done = run(&store, &["unpark", &position.to_string(), "--json"]).await.json();
    assert_eq!(
        done,
        json!({"global_position": position, "stream_id": "m", "released": 2})
    );
    assert_eq!(counts(&store).await, [4, 0, 0], "pending, parked, held");
    let attempts: i32 = sqlx::query_scalar(&format!("SELECT attempts FROM {s}.outbox WHERE global_position = $1"))
        .bind(position as i64)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 0, "a fresh attempt count");

    // Nothing parked there any more: a clear error, exit 1, nothing changed.
    let again = run(&store, &["unpark", &position.to_string()]).await;
    assert_eq!(again.code, 1, "{again:?}");
    assert!(
        again
            .stderr
            .contains(&format!("no parked outbox row at position {position}")),
        "{again:?}"
    );
    let text = run(&store, &["unpark", "12"]).await;
    assert_eq!(text.code, 1, "{text:?}");
    assert_eq!(counts(&store).await, [4, 0, 0], "pending, parked, held");
}
