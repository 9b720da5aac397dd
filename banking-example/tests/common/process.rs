//! The real server binary as a child process (`CARGO_BIN_EXE_banking-example`),
//! configured through its environment like in production, so a test can
//! kill it with SIGKILL and start it again on the same database.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One server process; killed on drop.
pub(crate) struct ServerProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The operations listener, `http://127.0.0.1:<port>` (`/metrics`,
    /// the detailed `/health/ready`).
    pub admin: String,
    log: PathBuf,
}

/// The environment of a server on PostgreSQL in `schema`: fixed secrets
/// (tokens stay valid across restarts), cheap Argon2, no rate limits.
pub(crate) fn pg_env(schema: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", super::pg::database_url()),
        ("DATABASE_SCHEMA", schema.to_owned()),
        ("JWT_SECRET", "process-test-jwt-signing-key-0123456789abcdefgh".into()),
        (
            "REFRESH_TOKEN_SECRET",
            "process-test-refresh-hmac-key-0123456789abcdefgh".into(),
        ),
        ("ARGON2_MEMORY_KIB", "1024".into()),
        ("ARGON2_ITERATIONS", "1".into()),
        ("ARGON2_PARALLELISM", "1".into()),
        ("RATE_LIMIT_REQUESTS_PER_MINUTE", "0".into()),
        ("AUTH_RATE_LIMIT_PER_MINUTE", "0".into()),
    ]
}

/// The environment of a server on its default store, the SQLite file in
/// `data_dir`: as [`pg_env`] without `DATABASE_URL`.
pub(crate) fn sqlite_env(data_dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut env: Vec<_> = pg_env("unused")
        .into_iter()
        .filter(|(k, _)| !k.starts_with("DATABASE_"))
        .collect();
    env.push(("DATA_DIR", data_dir.display().to_string()));
    env
}

impl ServerProcess {
    /// Starts the binary with `env` (and nothing else of this process's
    /// environment but `PATH`) on a spare port, in an empty directory (no
    /// `.env`), and waits until `/health` answers.
    pub(crate) async fn start(env: &[(&'static str, String)]) -> Self {
        let port = super::redis::spare_port();
        let admin_port = super::redis::spare_port();
        let dir = std::env::temp_dir().join(format!("es-rs-test-server-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_banking-example"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("ADMIN_BIND_ADDR", format!("127.0.0.1:{admin_port}"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut server = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            log,
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{}/health", server.base)).send().await {
                if r.status().is_success() {
                    return server;
                }
            }
            if let Some(status) = server.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("server exited with {status}:\n{}", server.log());
            }
            assert!(Instant::now() < deadline, "server never answered:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process with SIGKILL (no graceful shutdown, nothing
    /// flushed) and reaps it.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits, at most `patience`, for a successful exit;
    /// returns how long the graceful shutdown took.
    pub(crate) async fn terminate(&mut self, patience: Duration) -> Duration {
        let mut child = self.child.take().expect("running");
        let started = Instant::now();
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}:\n{}", self.log());
                return started.elapsed();
            }
            if started.elapsed() > patience {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no exit {patience:?} after SIGTERM:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Its output so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
