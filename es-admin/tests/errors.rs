//! Bad input and unreachable databases: a clear message on stderr, a
//! non-zero exit code, never a panic.

mod common;

use common::{run, run_argv};

fn argv(args: &[&str]) -> Vec<String> {
    std::iter::once("es-admin")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn connection_problems_are_reported_with_exit_code_1() {
    let bad = run_argv(argv(&["--database-url", "not a url", "projections"])).await;
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.starts_with("error: invalid database URL"), "{bad:?}");
    assert!(!bad.stderr.contains("not a url"), "the URL is never printed: {bad:?}");

    // Nothing listens on port 1.
    let url = "postgres://postgres:secret-pw@127.0.0.1:1/es_test";
    let down = run_argv(argv(&["--database-url", url, "--connect-timeout", "2", "tail"])).await;
    assert_eq!(down.code, 1, "{down:?}");
    assert!(
        down.stderr.starts_with("error: cannot connect to the database"),
        "{down:?}"
    );
    assert!(!down.stderr.contains("secret-pw"), "{down:?}");
    assert!(down.stdout.is_empty());
}

#[tokio::test]
async fn a_schema_without_an_event_store_or_with_a_bad_name_is_refused() {
    let store = common::store().await;
    let url = es_postgres::testing::database_url();
    let missing = run_argv(argv(&[
        "--database-url",
        &url,
        "--schema",
        "no_such_schema_here",
        "projections",
    ]))
    .await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert_eq!(
        missing.stderr.trim(),
        "error: schema \"no_such_schema_here\" has no event store (no no_such_schema_here.events table): \
         check --schema / DATABASE_SCHEMA"
    );
    let bad = run_argv(argv(&["--database-url", &url, "--schema", "Bad-Name", "projections"])).await;
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(
        bad.stderr.starts_with("error: invalid schema name \"Bad-Name\""),
        "{bad:?}"
    );
    // The same command on the real schema works.
    assert_eq!(run(&store, &["projections"]).await.code, 0);
}

#[tokio::test]
async fn usage_errors_exit_with_2_and_help_with_0() {
    let store = common::store().await;
    let unknown = run(&store, &["frobnicate"]).await;
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(
        unknown.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{unknown:?}"
    );
    let limit = run(&store, &["stream", "a", "--limit", "many"]).await;
    assert_eq!(limit.code, 2, "{limit:?}");
    assert!(
        limit.stderr.contains("invalid value 'many' for '--limit <LIMIT>'"),
        "{limit:?}"
    );
    // A timeout too large for a deadline is a usage error, not a panic.
    for secs in ["18446744073709551615", "0"] {
        let timeout = run(&store, &["--connect-timeout", secs, "projections"]).await;
        assert_eq!(timeout.code, 2, "{timeout:?}");
        assert!(timeout.stderr.contains("--connect-timeout"), "{timeout:?}");
    }

    let help = run_argv(argv(&["--help"])).await;
    assert_eq!(help.code, 0, "{help:?}");
    for command in ["stream", "tail", "projections", "rebuild", "dead-letters", "publishing"] {
        assert!(help.stdout.contains(command), "{command} in {}", help.stdout);
    }
    let sub = run_argv(argv(&["rebuild", "--help"])).await;
    assert!(sub.ok().contains("--event-type <TYPE>"), "{sub:?}");
}
