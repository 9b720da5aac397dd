//! The banking example server: `cargo run -p banking-example`.
//!
//! Configuration from the environment and an optional `.env` (see
//! `.env.example`); graceful shutdown on SIGINT/SIGTERM.
//!
//! `banking-example create-admin --username admin@example.com` creates an
//! admin user in the configured store (the SQLite file under `DATA_DIR` by
//! default, or `DATABASE_URL`); the password comes from `ADMIN_PASSWORD`
//! or, when unset, the first line of stdin.
//!
//! `banking-example reset-mails --email user@example.com` delivers the
//! password-reset mails waiting for that address in the outbox: one JSON
//! line each (`to`, `token`, `expires_at`) on stdout (needs the server's
//! `REFRESH_TOKEN_SECRET`).

use std::io::IsTerminal;
use std::process::ExitCode;

use banking_example::auth::{AuthService, Role};
use banking_example::logging::PlainFields;
use banking_example::{AppConfig, Backends};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// mimalloc: under load the system allocator took about a sixth of the
/// server's CPU time; see docs/benchmarks.md (the HTTP request path) for
/// the comparison with it and with jemalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The banking example server.
#[derive(Debug, Parser)]
#[command(name = "banking-example", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create an admin user; the password comes from ADMIN_PASSWORD or stdin.
    CreateAdmin {
        /// The admin's username (an email address).
        #[arg(long)]
        username: String,
    },
    /// Deliver the password-reset mails waiting for one address: print each
    /// as a JSON line (`to`, `token`, `expires_at`) on stdout and remove it
    /// from the outbox. The delivery step of a deployment without a
    /// mailer, and the way to try the reset flow locally.
    ResetMails {
        /// The address the reset was requested for.
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let dotenv = dotenvy::dotenv();
    let serving = matches!(cli.command, None | Some(Command::Serve));
    // A one-shot command logs warnings and errors only (unless RUST_LOG
    // says otherwise), on stderr: its stdout is its answer (the admin's id,
    // the mails).
    let default_filter = if serving { "info,tower_http=info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only on a terminal: a log file or collector gets plain text,
    // with its fields written without the colour styling.
    let terminal = if serving {
        std::io::stdout().is_terminal()
    } else {
        std::io::stderr().is_terminal()
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match (serving, terminal) {
        (true, true) => logs.init(),
        (true, false) => logs.with_ansi(false).fmt_fields(PlainFields).init(),
        (false, true) => logs.with_writer(std::io::stderr).init(),
        (false, false) => logs
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(PlainFields)
            .init(),
    }
    match dotenv {
        Ok(path) => tracing::info!(path = %path.display(), "loaded .env"),
        Err(e) if e.not_found() => {}
        Err(e) => tracing::warn!(error = %e, "could not read .env"),
    }
    let result = match cli.command {
        None | Some(Command::Serve) => run().await,
        Some(Command::CreateAdmin { username }) => create_admin(&username).await,
        Some(Command::ResetMails { email }) => reset_mails(&email).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if serving {
                tracing::error!(error = %e, "server failed");
            } else {
                tracing::error!(error = %e, "command failed");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = AppConfig::from_env()?;
    if config.database_url.is_none() && config.data_dir.is_none() {
        tracing::warn!("STORE=memory: using the in-memory event store; data is NOT persisted and is lost on exit");
    }
    if config.rate_limit.is_disabled() {
        tracing::warn!("rate limiting is disabled (RATE_LIMIT_REQUESTS_PER_MINUTE=0)");
    }
    let backends = Backends::from_config(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.bind_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, store = %backends.names.store, "banking example listening; API docs at /docs");
    let admin = match config.admin_bind_addr {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(admin) => {
                tracing::info!(addr = %admin.local_addr()?, "operations listener: /metrics, /health/ready with details");
                Some(admin)
            }
            Err(e) if !config.admin_bind_required => {
                tracing::warn!(
                    addr = %addr, error = %e,
                    "operations listener not started: its default address is taken (another server on this \
                     machine?); set ADMIN_BIND_ADDR to serve /metrics, or ADMIN_BIND_ADDR=off"
                );
                None
            }
            Err(e) => return Err(format!("ADMIN_BIND_ADDR {addr}: {e}").into()),
        },
        None => {
            tracing::info!("operations listener off (ADMIN_BIND_ADDR=off): no /metrics");
            None
        }
    };
    let app = banking_example::App::build(config, backends).await?;
    app.serve(listener, admin, shutdown_signal()).await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn create_admin(username: &str) -> Result<(), Box<dyn std::error::Error>> {
    let config = AppConfig::from_env()?;
    if config.database_url.is_none() && config.data_dir.is_none() {
        return Err(
            "create-admin needs a persistent store (the SQLite file, or DATABASE_URL): with STORE=memory the user \
             would be lost when this command exits"
                .into(),
        );
    }
    let password = match std::env::var("ADMIN_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprintln!("admin password (one line on stdin):");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let backends = Backends::from_config(&config).await?;
    let auth = AuthService::new(config.auth.clone(), backends.clock.clone(), backends.auth.clone())?;
    let id = auth.create_user(username, &password, &[Role::Admin]).await?;
    if let Some(store) = &backends.postgres {
        store.shutdown().await;
    }
    if let Some(store) = &backends.sqlite {
        store.shutdown().await;
        store.pool().close().await;
    }
    tracing::info!(user_id = %id, "admin created");
    println!("{id}");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; finishing in-flight requests"),
        () = terminate => tracing::info!("SIGTERM received; finishing in-flight requests"),
    }
}

async fn reset_mails(email: &str) -> Result<(), Box<dyn std::error::Error>> {
    let config = AppConfig::from_env()?;
    if config.database_url.is_none() && config.data_dir.is_none() {
        return Err(
            "reset-mails needs a persistent store (the SQLite file, or DATABASE_URL): with STORE=memory \
                    the server's outbox is in its own process"
                .into(),
        );
    }
    // Reset tokens are derived from this secret: one drawn at random here
    // would not match the server's.
    if std::env::var("REFRESH_TOKEN_SECRET").map_or(true, |v| v.trim().is_empty()) {
        return Err("reset-mails needs the server's REFRESH_TOKEN_SECRET: reset tokens are derived from it".into());
    }
    let backends = Backends::from_config(&config).await?;
    let auth = AuthService::new(config.auth.clone(), backends.clock.clone(), backends.auth.clone())?;
    let mails = auth.take_reset_mails(email).await;
    if let Some(store) = &backends.postgres {
        store.shutdown().await;
    }
    if let Some(store) = &backends.sqlite {
        store.shutdown().await;
        store.pool().close().await;
    }
    let mails = mails?;
    tracing::info!(mails = mails.len(), "reset mails delivered");
    for mail in mails {
        let line = serde_json::json!({"to": mail.to, "token": mail.token, "expires_at": mail.expires_at});
        println!("{line}");
    }
    Ok(())
}
