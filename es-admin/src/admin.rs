//! [`Admin`]: the application's es-admin — its projections registered,
//! the command line parsed and run.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use es_core::ProjectionRunner;
use es_postgres::PostgresEventStore;

use crate::cli::{Cli, Command};
use crate::commands;
use crate::output::{Output, SharedWriter};
use crate::progress::ProgressTarget;
use crate::session::Session;
use crate::AdminError;

/// Builds the application's projection runners over the connected store.
pub(crate) type Registrar = dyn Fn(&PostgresEventStore) -> Vec<ProjectionRunner> + Send + Sync;

/// Exit code of a command that did what was asked.
pub const EXIT_OK: i32 = 0;
/// Exit code of a command that failed (the message is on stderr).
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a command line that does not parse or lacks the database URL.
pub const EXIT_USAGE: i32 = 2;

/// The es-admin of an application: the application registers its
/// projections (rebuilding runs the projection's own code), then runs the
/// command line.
///
/// ```no_run
/// use std::sync::Arc;
/// use es_postgres::{PgProjectionUnit, TransactionalProjector};
///
/// # struct Balances;
/// # #[async_trait::async_trait]
/// # impl TransactionalProjector for Balances {
/// #     fn name(&self) -> &str { "balances" }
/// #     async fn apply(&self, _: &mut sqlx::PgConnection, _: &es_core::RecordedEvent) -> Result<(), es_core::BoxError> { Ok(()) }
/// #     async fn reset(&self, _: &mut sqlx::PgConnection) -> Result<(), es_core::BoxError> { Ok(()) }
/// # }
/// #[tokio::main]
/// async fn main() -> std::process::ExitCode {
///     es_admin::Admin::new()
///         .default_schema("bank")
///         .projections(|store| vec![PgProjectionUnit::new(store, Arc::new(Balances)).runner()])
///         .run()
///         .await
/// }
/// ```
#[derive(Clone)]
pub struct Admin {
    projections: Arc<Registrar>,
    default_schema: String,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            projections: Arc::new(|_| Vec::new()),
            default_schema: es_postgres::EventStoreConfig::default().schema,
        }
    }
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("default_schema", &self.default_schema)
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// An es-admin without projections, on es-postgres' default schema.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the application's projections: `f` builds their runners
    /// once es-admin has connected (names must be unique).
    #[must_use]
    pub fn projections(
        mut self,
        f: impl Fn(&PostgresEventStore) -> Vec<ProjectionRunner> + Send + Sync + 'static,
    ) -> Self {
        self.projections = Arc::new(f);
        self
    }

    /// The schema used when neither `--schema` nor `DATABASE_SCHEMA` is
    /// given (es-postgres' default, `es`, unless set).
    #[must_use]
    pub fn default_schema(mut self, schema: impl Into<String>) -> Self {
        self.default_schema = schema.into();
        self
    }

    /// Runs the process's command line on its stdout and stderr; `tail
    /// --follow` stops on Ctrl-C. The binary's `main` returns this.
    pub async fn run(&self) -> ExitCode {
        let progress = if std::io::stderr().is_terminal() {
            Some(ProgressTarget::Terminal)
        } else {
            None
        };
        let code = self
            .execute(
                std::env::args_os(),
                std::io::stdout(),
                std::io::stderr(),
                ctrl_c(),
                progress,
            )
            .await;
        ExitCode::from(u8::try_from(code).unwrap_or(1))
    }

    /// Runs the command line `args` (the program name first) writing to
    /// `stdout` and `stderr`; returns the exit code. `tail --follow` stops
    /// on Ctrl-C. Progress is written to `stderr` as plain lines.
    pub async fn run_with<I, T>(
        &self,
        args: I,
        stdout: impl Write + Send + 'static,
        stderr: impl Write + Send + 'static,
    ) -> i32
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        self.execute(args, stdout, stderr, ctrl_c(), None).await
    }

    /// [`run_with`](Self::run_with), with `tail --follow` stopping when
    /// `shutdown` completes instead of on Ctrl-C.
    pub async fn run_until<I, T>(
        &self,
        args: I,
        stdout: impl Write + Send + 'static,
        stderr: impl Write + Send + 'static,
        shutdown: impl Future<Output = ()> + Send,
    ) -> i32
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        self.execute(args, stdout, stderr, shutdown, None).await
    }

    async fn execute<I, T>(
        &self,
        args: I,
        stdout: impl Write + Send + 'static,
        stderr: impl Write + Send + 'static,
        shutdown: impl Future<Output = ()> + Send,
        progress: Option<ProgressTarget>,
    ) -> i32
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut stdout = stdout;
        let stderr = SharedWriter::new(stderr);
        let cli = match Cli::try_parse_from(args) {
            Ok(cli) => cli,
            Err(e) => {
                let text = e.render().to_string();
                return if e.use_stderr() {
                    let _ = stderr.line(text.trim_end());
                    EXIT_USAGE
                } else {
                    // --help, --version
                    let _ = writeln!(stdout, "{}", text.trim_end());
                    EXIT_OK
                };
            }
        };
        let progress = progress.unwrap_or_else(|| ProgressTarget::Lines(stderr.clone()));
        let mut out = Output::new(stdout, cli.json);
        match self.dispatch(cli, &mut out, &progress, shutdown).await {
            Ok(()) => EXIT_OK,
            Err(e) if e.is_broken_pipe() => EXIT_OK,
            Err(e) => {
                let _ = out.flush();
                let _ = stderr.line(&format!("error: {}", chain(&e)));
                if matches!(e, AdminError::NoUrl) {
                    EXIT_USAGE
                } else {
                    EXIT_FAILED
                }
            }
        }
    }

    async fn dispatch(
        &self,
        cli: Cli,
        out: &mut Output,
        progress: &ProgressTarget,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), AdminError> {
        let url = cli.database_url.ok_or(AdminError::NoUrl)?;
        let schema = cli.schema.unwrap_or_else(|| self.default_schema.clone());
        let session = Session::open(
            &url,
            &schema,
            Duration::from_secs(cli.connect_timeout),
            &*self.projections,
        )
        .await?;
        match cli.command {
            Command::Stream(args) => commands::stream::run(&session, &args, out).await,
            Command::Tail(args) => commands::tail::run(&session, &args, out, shutdown).await,
            Command::Projections => commands::projections::run(&session, out).await,
            Command::Rebuild(args) => commands::rebuild::run(&session, &args, out, progress).await,
            Command::DeadLetters(cmd) => commands::dead_letters::run(&session, &cmd, out).await,
            Command::Publishing(args) => commands::publishing::run(&session, &args, out).await,
            Command::Unpark { position } => commands::unpark::run(&session, position, out).await,
        }
    }
}

/// Ctrl-C, or never when the signal cannot be listened to.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The error and its sources, `: `-separated, each said once.
fn chain(e: &AdminError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
