//! The real `es-admin` binary of the banking example against a PostgreSQL
//! schema the real server filled: projections listed, the accounts
//! projection rebuilt with its progress on stderr, `--json` parsed.

mod common;

use std::time::Duration;

use banking_example::{Backends, RunningServer};
use common::{pg, Api};
use es_core::{EventFilter, EventStore};
use es_postgres::EventStoreConfig;
use serde_json::{json, Value};

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:?}");
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }
}

/// Runs `es-admin args` on `schema` with the environment an operator
/// would set, in an empty directory (no `.env`).
async fn es_admin(schema: &str, args: &[&str], env_url: bool) -> Run {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("es-admin");
    cmd.current_dir(std::env::temp_dir())
        .env_remove("DATABASE_URL")
        .env_remove("CDC_SLOT_NAME")
        .env_remove("RUST_LOG")
        .env("DATABASE_SCHEMA", schema)
        .args(args)
        .timeout(Duration::from_secs(120));
    if env_url {
        cmd.env("DATABASE_URL", pg::database_url());
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("es-admin runs"))
        .await
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

async fn start_pg(schema: &str) -> RunningServer {
    let config = pg::config(schema).await;
    let backends = Backends::from_config(&config).await.unwrap();
    banking_example::start(config, backends).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es_admin_lists_and_rebuilds_the_bank_projections_with_progress() {
    let schema = pg::schema();
    let server = start_pg(&schema).await;
    let api = Api::new(&server, "es-admin").await;
    let mut accounts = Vec::new();
    for (owner, amount) in [("Ada", 10), ("Bob", 20), ("Cy", 30)] {
        let id = api.open(owner, json!(100)).await;
        let r = api
            .post(&format!("/accounts/{id}/deposit"), json!({"amount": amount}))
            .await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        accounts.push(id);
    }
    server.stop().await.unwrap();
    // The six account events, once readers of the log see them (an open
    // transaction elsewhere in the cluster may hold the log back a moment).
    let store = es_postgres::testing::store(EventStoreConfig::with_schema(&schema))
        .await
        .unwrap();
    let account_events = EventFilter::all().stream_types(["account"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while store.read_all(0, 100, &account_events).await.unwrap().len() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the account events never became readable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The accounts projection of this build (its name carries its
    // blue/green version).
    let runners = banking_example::read_model::projection_runners(&store);
    let accounts_projection = runners
        .iter()
        .map(es_core::ProjectionRunner::name)
        .find(|n| n.starts_with("accounts"))
        .expect("an accounts projection");

    let listed = es_admin(&schema, &["projections", "--json"], true).await.json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["registered"] == json!(true))
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&accounts_projection), "{listed}");

    // Readers are served from this version: a full replay in place is
    // refused unless asked for.
    let refused = es_admin(&schema, &["rebuild", accounts_projection], true).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("readers are served from"), "{refused:?}");
    // The blue/green name stands for its active version; `replay` is
    // `rebuild`.
    let name = accounts_projection.rsplit_once("_v").map(|(n, _)| n).unwrap();
    let refused = es_admin(&schema, &["replay", name], true).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(&format!("readers are served from {accounts_projection}")),
        "{refused:?}"
    );
    // es-admin reads PostgreSQL only, and says so for a SQLite file.
    let sqlite = es_admin(
        &schema,
        &["--database-url", "sqlite://data/bank.db", "projections"],
        false,
    )
    .await;
    assert_eq!(sqlite.code, Some(1), "{sqlite:?}");
    assert!(sqlite.stderr.contains("PostgreSQL event stores only"), "{sqlite:?}");

    let rebuilt = es_admin(&schema, &["rebuild", accounts_projection, "--serving"], true).await;
    let out = rebuilt.ok();
    let applied: u64 = out
        .strip_prefix(&format!("rebuilt {accounts_projection} (full): "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{rebuilt:?}"));
    assert!(applied >= 6, "every account event: {rebuilt:?}");
    let last = rebuilt.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "rebuild {accounts_projection}: {applied}/{applied} events (100%), "
        )),
        "progress in events: {rebuilt:?}"
    );
    assert!(last.contains("/s, ETA "), "events/s and ETA: {rebuilt:?}");

    let doc = es_admin(&schema, &["rebuild", accounts_projection, "--serving", "--json"], true)
        .await
        .json();
    assert_eq!(
        (&doc["mode"], &doc["applied"], &doc["expected"], &doc["dead_lettered"]),
        (&json!("full"), &json!(applied), &json!(applied), &json!(0))
    );
    let listed = es_admin(&schema, &["projections", "--json"], true).await.json();
    let accounts_row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == accounts_projection)
        .unwrap();
    assert_eq!(
        (
            &accounts_row["position"],
            &accounts_row["lag_events"],
            &accounts_row["state"]
        ),
        (&doc["position"], &json!(0), &json!("current")),
        "{listed}"
    );

    let stream = es_admin(&schema, &["stream", &accounts[1], "--json"], true)
        .await
        .json();
    let types: Vec<&str> = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["AccountCreated", "MoneyDeposited"], "{stream}");

    let unknown = es_admin(&schema, &["rebuild", "nope"], true).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown
            .stderr
            .starts_with("error: unknown projection \"nope\"; registered: ")
            && unknown.stderr.contains(accounts_projection),
        "{unknown:?}"
    );
    let no_url = es_admin(&schema, &["projections"], false).await;
    assert_eq!(no_url.code, Some(2), "{no_url:?}");
    assert_eq!(
        no_url.stderr.trim(),
        "error: no database URL: pass --database-url or set DATABASE_URL"
    );
}
