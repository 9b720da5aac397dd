//! `es-admin` of the banking example: the operator CLI (the es-admin
//! crate) with the bank's projections registered, so `rebuild` runs their
//! own code. `cargo run -p banking-example --bin es-admin -- --help`.
//!
//! Reads `DATABASE_URL` and `DATABASE_SCHEMA` (default `bank`) like the
//! server, also from a `.env`; `RUST_LOG` shows the library's tracing on
//! stderr (off by default).

use std::process::ExitCode;

use banking_example::AppConfig;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off")))
        .init();
    es_admin::Admin::new()
        .default_schema(AppConfig::default().database_schema)
        .projections(banking_example::read_model::projection_runners)
        .run()
        .await
}
