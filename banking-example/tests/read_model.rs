//! The durable account read model on PostgreSQL: the `accounts` table kept
//! by the transactional projection, read-your-writes across instances,
//! start-up without reading the log, the owner upcaster, paging, net
//! amounts added in place.

mod common;

use std::sync::Arc;

use banking_example::domain::{AccountClosed, AccountCreated, AccountEvent, Money, MoneyDeposited, MoneyWithdrawn};
use banking_example::read_model::{
    self, projection_runners, AccountQueries, PgAccounts, ReadSide, ACCOUNTS, ACCOUNTS_VERSION,
};
use banking_example::{Backends, RunningServer};
use common::{pg, read, Api};
use es_core::{DomainEvent, EventStore, ExpectedVersion, Metadata, NewEvent, ProjectionRunner, ReplayMode, StreamId};
use es_postgres::{EventStoreConfig, PostgresEventStore};
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

async fn start_pg(schema: &str) -> RunningServer {
    let config = pg::config(schema).await;
    let backends = Backends::from_config(&config).await.unwrap();
    banking_example::start(config, backends).await.unwrap()
}

/// An event store in `schema`, migrated.
async fn migrated_store(schema: &str) -> PostgresEventStore {
    pg::ensure_database().await;
    let store = PostgresEventStore::connect(&pg::database_url(), EventStoreConfig::with_schema(schema.to_owned()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

async fn pool() -> sqlx::PgPool {
    sqlx::PgPool::connect(&pg::database_url()).await.unwrap()
}

#[tokio::test]
async fn accounts_live_in_a_postgres_table_and_a_restart_reads_no_log() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let api = Api::new(&server, "rm-table").await;
    let id = api.open("Ada", json!(100)).await;
    let (status, _) = read(api.post(&format!("/accounts/{id}/deposit"), json!({"amount": 5})).await).await;
    assert_eq!(status, StatusCode::OK);
    // A list waits until the projection has every committed event.
    let (status, _) = read(api.get("/accounts").await).await;
    assert_eq!(status, StatusCode::OK);
    let db = pool().await;
    let row: (String, String, i64, Option<uuid::Uuid>) = sqlx::query_as(&format!(
        "SELECT owner_name, balance::text, version, owner_id FROM {schema}.{ACCOUNTS} WHERE id = $1::uuid"
    ))
    .bind(&id)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((row.0.as_str(), row.1.as_str(), row.2), ("Ada", "105.00", 2));
    assert_eq!(row.3.map(|u| u.to_string()), Some(api.user_id().await));
    let active: i32 = sqlx::query_scalar(&format!(
        "SELECT active FROM {schema}.projection_versions WHERE name = $1"
    ))
    .bind(ACCOUNTS)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(active as u32, ACCOUNTS_VERSION);
    server.stop().await.unwrap();

    // Change the row behind the projection's back: a server that rebuilt
    // from the log at start would undo it; one that resumes from its
    // checkpoint serves it as it is.
    sqlx::query(&format!(
        "UPDATE {schema}.accounts_v{ACCOUNTS_VERSION} SET owner_name = 'kept' WHERE id = $1::uuid"
    ))
    .bind(&id)
    .execute(&db)
    .await
    .unwrap();
    let server = start_pg(&schema).await;
    let api = api.on(&server);
    let (status, view) = read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["owner_name"], "kept", "start-up did not rebuild from the log");
    // New events still reach the table.
    let (status, _) = read(
        api.post(&format!("/accounts/{id}/withdraw"), json!({"amount": 5}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, view) = read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(
        (view["version"].as_u64(), view["balance"].to_string()),
        (Some(3), "100.00".into())
    );
    let (_, page) = read(api.get("/accounts").await).await;
    assert_eq!(page["accounts"][0]["version"].as_u64(), Some(3), "{page}");
    server.stop().await.unwrap();
}

/// Two instances on one schema: both run the projection (each page is
/// applied once, by whichever commits first); a command answered by one is
/// visible to a `GET` and to a list on the other right after. Commands do
/// not wait for the projection: the `GET` folds the account from the log
/// when the row is behind, the list waits for the committed events.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_on_another_instance_see_the_write_that_was_answered() {
    let schema = pg::schema();
    let a = start_pg(&schema).await;
    let b = start_pg(&schema).await;
    let on_a = Api::new(&a, "rm-a").await;
    let on_b = on_a.on(&b);
    let id = on_a.open("Bo", json!(0)).await;
    for round in 1..=15u64 {
        let (writer, reader) = if round % 2 == 0 { (&on_a, &on_b) } else { (&on_b, &on_a) };
        let (status, answer) = read(
            writer
                .post(&format!("/accounts/{id}/deposit"), json!({"amount": 1}))
                .await,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let version = answer["version"].as_u64().unwrap();
        let (status, view) = read(reader.get(&format!("/accounts/{id}")).await).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert!(
            view["version"].as_u64().unwrap() >= version,
            "round {round}: {view} older than {answer}"
        );
        let (status, page) = read(reader.get("/accounts").await).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let listed = page["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == json!(id))
            .unwrap_or_else(|| panic!("round {round}: {id} not listed in {page}"));
        assert!(
            listed["version"].as_u64().unwrap() >= version,
            "round {round}: listed {listed} older than {answer}"
        );
        // Straight from the table the list was served from.
        let db_version: i64 =
            sqlx::query_scalar(&format!("SELECT version FROM {schema}.{ACCOUNTS} WHERE id = $1::uuid"))
                .bind(&id)
                .fetch_one(&pool().await)
                .await
                .unwrap();
        assert!(db_version as u64 >= version);
    }
    // Each event applied exactly once although both instances project.
    let (_, view) = read(on_a.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(
        (view["version"].as_u64(), view["balance"].to_string()),
        (Some(16), "15.00".into())
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Accounts opened before the owner became a field of `AccountCreated`
/// (schema version 1, owner in a metadata header) get it from the upcaster.
#[tokio::test]
async fn version_1_account_created_events_keep_their_owner() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let owner = Api::new(&server, "rm-old-owner").await;
    let other = Api::new(&server, "rm-old-other").await;
    let id = uuid::Uuid::now_v7();
    let mut created = NewEvent::new(
        "AccountCreated",
        json!({"AccountCreated": {"owner_name": "Old", "initial_balance": 7.00}}),
    )
    .with_metadata(Metadata::default().with_header("owner_id", owner.user_id().await));
    created.schema_version = 1;
    let store = server.state.repo.store();
    let appended = store
        .append("account", &StreamId::from(id), ExpectedVersion::NoStream, vec![created])
        .await
        .unwrap();
    assert!(
        server
            .state
            .projection
            .wait_for(appended.positions[0], std::time::Duration::from_secs(30))
            .await
    );
    let (status, view) = read(owner.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["owner_id"].as_str(), Some(owner.user_id().await.as_str()));
    assert_eq!(
        other.get(&format!("/accounts/{id}")).await.status(),
        StatusCode::NOT_FOUND
    );
    // The aggregate sees it too: the owner may deposit.
    let (status, after) = read(
        owner
            .post(&format!("/accounts/{id}/deposit"), json!({"amount": 1}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after["balance"].to_string(), "8.00");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn listing_pages_through_the_table_by_id() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let mine = Api::new(&server, "rm-list").await;
    let theirs = Api::new(&server, "rm-list-other").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(mine.open(&format!("Mine {i}"), json!(i)).await);
        theirs.open(&format!("Theirs {i}"), json!(i)).await;
    }
    ids.sort();
    let mut seen = Vec::new();
    for offset in (0..8).step_by(3) {
        let (status, page) = read(mine.get(&format!("/accounts?limit=3&offset={offset}")).await).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], 7);
        seen.extend(
            page["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(seen, ids, "each of mine once, in id order, none of theirs");
    // The listing can use the (owner_id, id) index for order: with scans
    // that would need a sort ruled out (the table is tiny, so the planner
    // would pick one), the plan has no Sort.
    let db = pool().await;
    let mut conn = db.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SET enable_bitmapscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN SELECT id FROM {schema}.{ACCOUNTS} WHERE owner_id = $1::uuid ORDER BY id LIMIT 3"
    ))
    .bind(mine.user_id().await)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Index"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    server.stop().await.unwrap();
}

/// `es-admin`'s registry: the accounts projection of this build's version,
/// sharing the server's checkpoint.
#[tokio::test]
async fn the_projection_registry_names_the_serving_projection() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let api = Api::new(&server, "rm-registry").await;
    api.open("Reg", json!(1)).await;
    let config = pg::config(&schema).await;
    let backends = Backends::from_config(&config).await.unwrap();
    let runners = projection_runners(backends.postgres.as_ref().unwrap());
    assert_eq!(runners.len(), 1);
    assert_eq!(runners[0].name(), format!("{ACCOUNTS}_v{ACCOUNTS_VERSION}"));
    let report = runners[0].catch_up().await.unwrap();
    assert_eq!(report.applied, 0, "the server already applied everything");
    server.stop().await.unwrap();
}

/// The stored form of `event`, as the aggregate would append it.
fn stored(event: &AccountEvent) -> NewEvent {
    let mut e = NewEvent::new(event.event_type(), serde_json::to_value(event).unwrap());
    e.schema_version = event.schema_version();
    e
}

async fn append(store: &PostgresEventStore, id: Uuid, after: u64, events: &[AccountEvent]) -> u64 {
    let expected = if after == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(after)
    };
    let appended = store
        .append(
            "account",
            &StreamId::from(id),
            expected,
            events.iter().map(stored).collect(),
        )
        .await
        .unwrap();
    appended.positions.into_iter().max().unwrap()
}

/// Catches `runner` up until it has applied `position`. On the shared
/// PostgreSQL another test's open transaction can keep newer events from
/// readers of the log for a while, so one catch-up may stop short.
async fn caught_up(runner: &ProjectionRunner, position: u64) {
    let deadline = std::time::Instant::now() + pg::READ_YOUR_WRITES_WAIT;
    while runner.catch_up().await.unwrap().position < position {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never reached {position}",
            runner.name()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn created(cents: u64) -> AccountEvent {
    AccountEvent::AccountCreated(AccountCreated {
        owner_name: "Net".into(),
        initial_balance: Money::from_cents(cents),
        owner_id: None,
    })
}

fn deposited(cents: u64) -> AccountEvent {
    AccountEvent::MoneyDeposited(MoneyDeposited {
        amount: Money::from_cents(cents),
    })
}

fn withdrawn(cents: u64) -> AccountEvent {
    AccountEvent::MoneyWithdrawn(MoneyWithdrawn {
        amount: Money::from_cents(cents),
    })
}

/// Once both have applied `position`, every account's row in PostgreSQL
/// equals the in-memory read model's, built by the same fold over the
/// same log.
async fn assert_rows_equal_the_fold(store: &PostgresEventStore, pg: &ReadSide, ids: &[Uuid], position: u64) {
    caught_up(&pg.runner, position).await;
    let memory = read_model::in_memory(Arc::new(store.clone())).await.unwrap();
    caught_up(&memory.runner, position).await;
    for id in ids {
        let want = memory.queries.get(*id).await.unwrap();
        assert!(want.is_some(), "{id} is in the log");
        assert_eq!(pg.queries.get(*id).await.unwrap(), want, "account {id}");
    }
}

/// Accounts that only deposit and withdraw within a page get their net
/// amount added in place. The rows still equal the fold's, also where the
/// fold saturates at zero (a history the aggregate would never write, so
/// appended here directly), and applying pages again over rows already past
/// them (a replay from an earlier position) changes nothing.
#[tokio::test]
async fn net_amounts_added_in_place_equal_the_fold() {
    let store = migrated_store(&pg::schema()).await;
    let pg = read_model::postgres(&store).await.unwrap();
    let (only_in, only_moves, below_zero, closes) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let ids = [only_in, only_moves, below_zero, closes];
    let mut last = 0;
    for id in ids {
        last = append(&store, id, 0, &[created(10_00)]).await;
    }
    // The first page creates the rows; the next ones move money.
    assert_rows_equal_the_fold(&store, &pg, &ids, last).await;
    let opened = last;
    append(&store, only_in, 1, &[deposited(1_00), deposited(2_00)]).await;
    append(&store, only_moves, 1, &[deposited(5_00), withdrawn(12_00)]).await;
    append(&store, below_zero, 1, &[withdrawn(25_00), deposited(2_00)]).await;
    last = append(&store, closes, 1, &[withdrawn(10_00)]).await;
    assert_rows_equal_the_fold(&store, &pg, &ids, last).await;
    let view = pg.queries.get(only_moves).await.unwrap().unwrap();
    assert_eq!((view.balance.to_string(), view.version), ("3.00".to_owned(), 3));
    let view = pg.queries.get(below_zero).await.unwrap().unwrap();
    assert_eq!(view.balance.to_string(), "2.00", "the fold stops at zero, then adds");
    append(&store, only_moves, 3, &[deposited(1)]).await;
    let close = AccountEvent::AccountClosed(AccountClosed { reason: "done".into() });
    last = append(&store, closes, 2, &[close]).await;
    assert_rows_equal_the_fold(&store, &pg, &ids, last).await;
    // The pages after the openings again, over rows that already include
    // them: the money moves alone in their page this time.
    pg.runner.replay(ReplayMode::From(opened)).await.unwrap();
    assert_rows_equal_the_fold(&store, &pg, &ids, last).await;
    let view = pg.queries.get(only_moves).await.unwrap().unwrap();
    assert_eq!((view.balance.to_string(), view.version), ("3.01".to_owned(), 4));
    let view = pg.queries.get(only_in).await.unwrap().unwrap();
    assert_eq!((view.balance.to_string(), view.version), ("13.00".to_owned(), 3));
}

/// While version 1 of the table (from before `in_flight`) still serves
/// readers, as it does during the rebuild that upgrades it, reads and
/// lists keep working.
#[tokio::test]
async fn reads_keep_working_while_version_1_serves() {
    let schema = pg::schema();
    let store = migrated_store(&schema).await;
    let db = pool().await;
    sqlx::query(&format!(
        "CREATE TABLE {schema}.{ACCOUNTS}_v1 (id UUID PRIMARY KEY, owner_id UUID, owner_name TEXT NOT NULL, \
         balance NUMERIC NOT NULL, status TEXT NOT NULL, version BIGINT NOT NULL, \
         updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ))
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE VIEW {schema}.{ACCOUNTS} AS SELECT * FROM {schema}.{ACCOUNTS}_v1"
    ))
    .execute(&db)
    .await
    .unwrap();
    let (id, owner) = (Uuid::now_v7(), Uuid::now_v7());
    sqlx::query(&format!(
        "INSERT INTO {schema}.{ACCOUNTS}_v1 (id, owner_id, owner_name, balance, status, version) \
         VALUES ($1, $2, 'Ada', 12.50, 'open', 3)"
    ))
    .bind(id)
    .bind(owner)
    .execute(&db)
    .await
    .unwrap();
    let queries = PgAccounts::new(&store, format!("{schema}.{ACCOUNTS}"));
    let one = queries.get(id).await.unwrap().expect("the account");
    assert_eq!(
        (one.owner_name.as_str(), one.balance.to_string().as_str(), one.version),
        ("Ada", "12.50", 3)
    );
    for owner in [None, Some(owner)] {
        let (page, total) = queries.list(owner, 0, 10).await.unwrap();
        assert_eq!((page.len(), total), (1, 1));
        assert_eq!(page[0].id, id);
    }
    store.shutdown().await;
}

/// While this build's version is rebuilt beside an older one that still
/// serves readers (and that no upgraded process keeps current), a list
/// after a command shows it as soon as the new version has passed it,
/// although readers are not switched yet: the switch is held back here by
/// taking its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_list_during_a_rebuild_shows_the_commands_answered_before_it() {
    let schema = pg::schema();
    let store = migrated_store(&schema).await;
    // An older version serves: version 1, built by the same fold.
    let id = Uuid::now_v7();
    let opened = append(&store, id, 0, &[created(10_00)]).await;
    let old = read_model::postgres_runner(&store, 1).unwrap();
    caught_up(&old, opened).await;
    let bg = es_postgres::BlueGreen::new(&store, ACCOUNTS, &[ACCOUNTS]).unwrap();
    assert!(matches!(
        bg.switch(1).await.unwrap(),
        es_postgres::SwitchOutcome::Switched { .. }
    ));
    // The switch to this build's version waits for this lock.
    let db = pool().await;
    let mut held = db.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
        .bind(format!("es-blue-green-{schema}-{ACCOUNTS}"))
        .execute(&mut *held)
        .await
        .unwrap();

    let side = read_model::postgres(&store).await.unwrap();
    let deposit = append(&store, id, 1, &[deposited(2_50)]).await;
    caught_up(&side.runner, deposit).await;
    assert_eq!(bg.active().await.unwrap(), Some(1), "readers not switched yet");
    let (page, total) = side.queries.list(None, 0, 10).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(
        (page[0].balance.to_string(), page[0].version),
        ("12.50".to_owned(), 2),
        "the list shows the deposit answered before it"
    );

    // Released, the switch happens; lists read the view again.
    held.rollback().await.unwrap();
    let deadline = std::time::Instant::now() + pg::READ_YOUR_WRITES_WAIT;
    while bg.active().await.unwrap() != Some(ACCOUNTS_VERSION) {
        assert!(std::time::Instant::now() < deadline, "never switched");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (page, _) = side.queries.list(None, 0, 10).await.unwrap();
    assert_eq!(page[0].balance.to_string(), "12.50");
    store.shutdown().await;
}

/// The log can hold a transfer's credit before its debit (write-behind
/// flushes its shards each in its own order). Once both are in, the
/// source has no money in flight, whether they were in one page or two,
/// in PostgreSQL as in memory; a transfer in order still shows its money
/// in flight between its debit and its credit.
#[tokio::test]
async fn a_credit_in_the_log_before_its_debit_leaves_no_money_in_flight() {
    use banking_example::domain::{TransferCredited, TransferDebited};
    let store = migrated_store(&pg::schema()).await;
    let pg = read_model::postgres(&store).await.unwrap();
    let (from, to) = (Uuid::now_v7(), Uuid::now_v7());
    let debited = |transfer, cents| {
        AccountEvent::TransferDebited(TransferDebited {
            transfer,
            to,
            amount: Money::from_cents(cents),
        })
    };
    let credited = |transfer, cents| {
        AccountEvent::TransferCredited(TransferCredited {
            transfer,
            from,
            amount: Money::from_cents(cents),
        })
    };
    let in_flight = |pg: &ReadSide, id| {
        let queries = Arc::clone(&pg.queries);
        async move {
            let view = queries.get(id).await.unwrap().unwrap();
            (view.balance.to_string(), view.in_flight.to_string())
        }
    };
    append(&store, from, 0, &[created(10_00)]).await;
    append(&store, to, 0, &[created(0)]).await;

    // Two pages: the credit, then the debit.
    let early = Uuid::now_v7();
    let last = append(&store, to, 1, &[credited(early, 4_00)]).await;
    caught_up(&pg.runner, last).await;
    assert_eq!(in_flight(&pg, from).await, ("10.00".to_owned(), "0.00".to_owned()));
    let last = append(&store, from, 1, &[debited(early, 4_00)]).await;
    assert_rows_equal_the_fold(&store, &pg, &[from, to], last).await;
    assert_eq!(in_flight(&pg, from).await, ("6.00".to_owned(), "0.00".to_owned()));

    // One page: the credit and then the debit.
    let early = Uuid::now_v7();
    append(&store, to, 2, &[credited(early, 1_00)]).await;
    let last = append(&store, from, 2, &[debited(early, 1_00)]).await;
    assert_rows_equal_the_fold(&store, &pg, &[from, to], last).await;
    assert_eq!(in_flight(&pg, from).await, ("5.00".to_owned(), "0.00".to_owned()));

    // In order: in flight between the two.
    let on_time = Uuid::now_v7();
    let last = append(&store, from, 3, &[debited(on_time, 2_00)]).await;
    assert_rows_equal_the_fold(&store, &pg, &[from, to], last).await;
    assert_eq!(in_flight(&pg, from).await, ("3.00".to_owned(), "2.00".to_owned()));
    let last = append(&store, to, 3, &[credited(on_time, 2_00)]).await;
    assert_rows_equal_the_fold(&store, &pg, &[from, to], last).await;
    assert_eq!(in_flight(&pg, from).await, ("3.00".to_owned(), "0.00".to_owned()));
    assert_eq!(in_flight(&pg, to).await.0, "7.00");
    store.shutdown().await;
}
