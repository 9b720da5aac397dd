//! Redis for the tests: the shared server (`BANKING_TEST_REDIS_URL`, else
//! `REDIS_URL`, else `redis://127.0.0.1:6379`; each test its own key
//! prefix), and private `redis-server` processes for tests that stop one.
//!
//! A test that needs Redis fails when none answers. Only an explicit
//! `BANKING_TESTS_WITHOUT_REDIS=1` turns that into a skip (with a message);
//! `scripts/test.sh` never sets it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The opt-out variable: set to `1` to skip Redis tests when no Redis runs.
pub(crate) const OPT_OUT: &str = "BANKING_TESTS_WITHOUT_REDIS";

/// The shared Redis of the tests.
pub(crate) fn url() -> String {
    std::env::var("BANKING_TEST_REDIS_URL")
        .or_else(|_| std::env::var("REDIS_URL"))
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether `url` answers PING within a few seconds.
pub(crate) async fn answers(url: &str) -> bool {
    let ping = async {
        let client = ::redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        ::redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(5), ping).await, Ok(Some(_)))
}

/// `true` when the shared Redis answers. When it does not: `false` (skip)
/// if the opt-out variable is set, else the test fails here.
pub(crate) async fn required() -> bool {
    if answers(&url()).await {
        return true;
    }
    if std::env::var(OPT_OUT).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: no Redis at {} and {OPT_OUT}=1", url());
        return false;
    }
    panic!(
        "Redis is not reachable at {} (start it, e.g. with scripts/test.sh; {OPT_OUT}=1 skips these tests)",
        url()
    );
}

/// A fresh key prefix.
pub(crate) fn prefix(name: &str) -> String {
    format!("banking-test:{name}:{}:", uuid::Uuid::new_v4().simple())
}

/// A private `redis-server` on a spare port, killed on drop.
pub(crate) struct OwnRedis {
    port: u16,
    child: Option<Child>,
    /// With AOF (`appendfsync always`): the directory of its files.
    aof_dir: Option<std::path::PathBuf>,
    /// With TLS: the TLS port, and `--tls-*` arguments.
    tls: Option<(u16, Vec<String>)>,
}

impl OwnRedis {
    /// Starts one and waits until it answers.
    pub(crate) async fn start() -> Self {
        let port = spare_port();
        let mut redis = Self {
            port,
            child: None,
            aof_dir: None,
            tls: None,
        };
        redis.spawn().await;
        redis
    }

    /// Starts one with AOF and `appendfsync always` (what write-behind
    /// needs for acknowledged events to survive a Redis restart).
    pub(crate) async fn start_aof() -> Self {
        let dir = std::env::temp_dir().join(format!("banking-redis-aof-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut redis = Self {
            port: spare_port(),
            child: None,
            aof_dir: Some(dir),
            tls: None,
        };
        redis.spawn().await;
        redis
    }

    /// Starts one that also takes TLS connections on another port,
    /// presenting `cert` and `key` (clients are not asked for one).
    pub(crate) async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let args = vec![
            "--tls-cert-file".to_owned(),
            cert.display().to_string(),
            "--tls-key-file".to_owned(),
            key.display().to_string(),
            "--tls-auth-clients".to_owned(),
            "no".to_owned(),
        ];
        let mut redis = Self {
            port: spare_port(),
            child: None,
            aof_dir: None,
            tls: Some((spare_port(), args)),
        };
        redis.spawn().await;
        redis
    }

    /// `rediss://127.0.0.1:<tls port>` (with [`Self::start_tls`]).
    pub(crate) fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL) and waits for the process to end.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"]);
        match &self.aof_dir {
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd
            .args(self.tls.iter().flat_map(|(port, args)| {
                let mut all = vec!["--tls-port".to_owned(), port.to_string()];
                all.extend(args.iter().cloned());
                all
            }))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !answers(&self.url()).await {
            assert!(
                Instant::now() < deadline,
                "own redis-server on {} never answered",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.aof_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A port nothing listens on right now.
pub(crate) fn spare_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
