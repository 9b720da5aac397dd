//! PostgreSQL support: the test database and a fresh schema per test
//! (`es_postgres::testing`), so tests run in parallel.

use banking_example::AppConfig;

pub(crate) use es_postgres::testing::database_url;

/// Creates the test database when missing.
pub(crate) async fn ensure_database() {
    es_postgres::testing::ensure_database().await.expect("test database");
}

/// A fresh schema name (at most 40 characters).
pub(crate) fn schema() -> String {
    es_postgres::testing::fresh_schema("bank")
}

/// The test config on PostgreSQL in `schema`.
pub(crate) async fn config(schema: &str) -> AppConfig {
    ensure_database().await;
    AppConfig {
        database_url: Some(database_url()),
        database_schema: schema.to_owned(),
        read_your_writes_wait: READ_YOUR_WRITES_WAIT,
        ..super::config()
    }
}

/// How long a list waits for read-your-writes on servers of the shared
/// PostgreSQL. Readers see no event past a transaction still open, and
/// another test's may stay open for seconds (a server paused mid-append
/// in tests/cluster.rs): a list waits that out rather than answering
/// without the caller's own write.
pub(crate) const READ_YOUR_WRITES_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A private PostgreSQL cluster (initdb in a temporary directory, on a
/// spare port), for tests that stop the database under a running server.
/// Stopped and removed on drop.
pub(crate) struct OwnPostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
    running: bool,
    options: String,
}

impl OwnPostgres {
    /// Creates and starts a cluster (user `postgres`, trust auth).
    pub(crate) async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Creates and starts a cluster that takes TCP connections over TLS
    /// only (`hostssl` in pg_hba.conf), presenting `cert` and `key`.
    pub(crate) async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        Self::start_with(Some((cert.to_owned(), key.to_owned()))).await
    }

    async fn start_with(tls: Option<(std::path::PathBuf, std::path::PathBuf)>) -> Self {
        tokio::task::spawn_blocking(move || {
            let bin = pg_bin_dir();
            let dir = std::env::temp_dir().join(format!("es-rs-test-pg-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir(&dir).unwrap();
            if as_root() {
                // initdb refuses to run as root: the cluster belongs to postgres.
                run(std::process::Command::new("chown").arg("postgres:postgres").arg(&dir));
            }
            let dir_s = dir.display().to_string();
            run(&mut pg_command(
                &bin,
                "initdb",
                &["-D", &dir_s, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
            ));
            let mut options = String::new();
            if let Some((cert, key)) = tls {
                let data = dir.join("data-tls");
                std::fs::create_dir(&data).unwrap();
                std::fs::copy(cert, data.join("server.crt")).unwrap();
                std::fs::copy(key, data.join("server.key")).unwrap();
                std::fs::write(
                    dir.join("pg_hba.conf"),
                    "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
                )
                .unwrap();
                run(std::process::Command::new("chmod")
                    .arg("600")
                    .arg(data.join("server.key")));
                if as_root() {
                    run(std::process::Command::new("chown")
                        .args(["-R", "postgres:postgres"])
                        .arg(&data)
                        .arg(dir.join("pg_hba.conf")));
                }
                options = format!(
                    " -c ssl=on -c ssl_cert_file={d}/server.crt -c ssl_key_file={d}/server.key",
                    d = data.display()
                );
            }
            let port = super::redis::spare_port();
            start_cluster(&bin, &dir, port, &options);
            Self {
                dir,
                bin,
                port,
                running: true,
                options,
            }
        })
        .await
        .unwrap()
    }

    /// The URL of its `postgres` database.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it at once (`pg_ctl stop -m immediate`: like a crash).
    pub(crate) async fn stop(&mut self) {
        let (bin, dir) = (self.bin.clone(), self.dir.display().to_string());
        tokio::task::spawn_blocking(move || {
            run(&mut pg_command(
                &bin,
                "pg_ctl",
                &["-D", &dir, "-m", "immediate", "-w", "stop"],
            ));
        })
        .await
        .unwrap();
        self.running = false;
    }

    /// Starts it again on the same port and waits until it accepts connections.
    pub(crate) async fn restart(&mut self) {
        let (bin, dir, port, options) = (self.bin.clone(), self.dir.clone(), self.port, self.options.clone());
        tokio::task::spawn_blocking(move || start_cluster(&bin, &dir, port, &options))
            .await
            .unwrap();
        self.running = true;
    }
}

fn start_cluster(bin: &std::path::Path, dir: &std::path::Path, port: u16, extra: &str) {
    let dir = dir.display().to_string();
    let options =
        format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} -c fsync=off{extra}");
    let log = format!("{dir}/server.log");
    run(&mut pg_command(
        bin,
        "pg_ctl",
        &["-D", &dir, "-o", &options, "-l", &log, "-w", "start"],
    ));
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.running {
            let dir = self.dir.display().to_string();
            let _ = pg_command(&self.bin, "pg_ctl", &["-D", &dir, "-m", "immediate", "-w", "stop"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<version>/bin`,
/// else the `PATH`.
fn pg_bin_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return dir.into();
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_default()
}

/// A PostgreSQL tool, run as `postgres` when the tests run as root.
fn pg_command(bin: &std::path::Path, tool: &str, args: &[&str]) -> std::process::Command {
    let tool = if bin.as_os_str().is_empty() {
        tool.into()
    } else {
        bin.join(tool)
    };
    let mut cmd = if as_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        std::process::Command::new(tool)
    };
    cmd.args(args);
    cmd
}

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
