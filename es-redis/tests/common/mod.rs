//! Shared test helpers: a small aggregate, per-test key prefixes, configs,
//! a stoppable TCP proxy in front of Redis, and key cleanup.
#![allow(dead_code)]

pub(crate) mod write_behind;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use es_core::{Aggregate, DomainEvent};
use es_redis::{CacheConfig, DedupConfig, LockConfig, RedisConfig, ResilienceConfig};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A unique key prefix for one test.
pub(crate) fn prefix() -> String {
    format!("es-redis-test:{}", uuid::Uuid::new_v4().simple())
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Account {
    pub balance: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum AccountEvent {
    Deposited(i64),
    Withdrawn(i64),
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Deposited(_) => "Deposited",
            Self::Withdrawn(_) => "Withdrawn",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum AccountCommand {
    Deposit(i64),
    Withdraw(i64),
}

#[derive(Debug, thiserror::Error)]
#[error("insufficient funds")]
pub(crate) struct InsufficientFunds;

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = InsufficientFunds;

    fn handle(&self, cmd: &AccountCommand) -> Result<Vec<AccountEvent>, InsufficientFunds> {
        match *cmd {
            AccountCommand::Deposit(n) => Ok(vec![AccountEvent::Deposited(n)]),
            AccountCommand::Withdraw(n) if n > self.balance => Err(InsufficientFunds),
            AccountCommand::Withdraw(n) => Ok(vec![AccountEvent::Withdrawn(n)]),
        }
    }

    fn apply(&mut self, e: &AccountEvent) {
        match e {
            AccountEvent::Deposited(n) => self.balance += n,
            AccountEvent::Withdrawn(n) => self.balance -= n,
        }
    }
}

/// Generous timeouts: a loaded test machine must not turn a slow answer
/// into a failure (the fault tests use dead ports, which fail at once).
pub(crate) fn redis_config(url: String) -> RedisConfig {
    RedisConfig {
        url,
        connect_timeout: Duration::from_secs(10),
        response_timeout: Duration::from_secs(10),
        ..RedisConfig::default()
    }
}

/// Fast-failing resilience for fault tests.
pub(crate) fn fast_resilience() -> ResilienceConfig {
    ResilienceConfig {
        failure_threshold: 3,
        open_for: Duration::from_millis(200),
        ..ResilienceConfig::default()
    }
}

pub(crate) fn cache_config(prefix: &str) -> CacheConfig {
    CacheConfig {
        key_prefix: prefix.to_owned(),
        redis: redis_config(redis_url()),
        ..CacheConfig::default()
    }
}

pub(crate) fn dedup_config(prefix: &str) -> DedupConfig {
    DedupConfig {
        key_prefix: prefix.to_owned(),
        redis: redis_config(redis_url()),
        ..DedupConfig::default()
    }
}

pub(crate) fn lock_config(prefix: &str) -> LockConfig {
    LockConfig {
        lock_prefix: format!("{prefix}:lock:"),
        redis: redis_config(redis_url()),
        ..LockConfig::default()
    }
}

/// A direct connection for inspecting Redis in tests.
pub(crate) async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Deletes every key under `prefix` (SCAN + DEL; never FLUSH).
pub(crate) async fn cleanup(prefix: &str) {
    let mut c = raw().await;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut c).await.unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

/// A URL where nothing listens (a port bound and released).
pub(crate) async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("redis://127.0.0.1:{port}")
}

/// A TCP proxy to the real Redis that can be stopped (closing every
/// connection) and restarted on the same port.
pub(crate) struct Proxy {
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Self {
            addr,
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let target = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every proxied connection.
    pub(crate) fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn restart(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind proxy: {e}"),
            }
        };
        self.serve(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A redis-server of the test's own on a spare port (never the shared one),
/// for tests that take Redis down. Killed when dropped.
pub(crate) struct OwnRedis {
    child: std::process::Child,
    port: u16,
    /// With AOF (`appendfsync always`): the directory of its files.
    aof_dir: Option<std::path::PathBuf>,
}

impl OwnRedis {
    /// Starts `redis-server` without persistence and waits (a minute at
    /// most) until it answers PING.
    pub(crate) async fn start() -> Self {
        Self::launch(spare_port().await, None).await
    }

    /// Starts `redis-server` with AOF and `appendfsync always`, its files in
    /// a fresh directory under the system temp dir.
    pub(crate) async fn start_aof() -> Self {
        let dir = std::env::temp_dir().join(format!("es-redis-aof-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self::launch(spare_port().await, Some(dir)).await
    }

    async fn launch(port: u16, aof_dir: Option<std::path::PathBuf>) -> Self {
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        match &aof_dir {
            Some(dir) => args.extend(
                [
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--dir",
                    &dir.to_string_lossy(),
                ]
                .iter()
                .map(std::string::ToString::to_string),
            ),
            None => args.extend(["--appendonly".to_owned(), "no".to_owned()]),
        }
        let child = std::process::Command::new("redis-server")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = Self { child, port, aof_dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ping = async {
                let mut c = redis::Client::open(server.url())?
                    .get_multiplexed_async_connection()
                    .await?;
                redis::cmd("PING").query_async::<String>(&mut c).await
            };
            if ping.await.is_ok() {
                return server;
            }
            assert!(std::time::Instant::now() < deadline, "own redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (and, with AOF, the same files).
    pub(crate) async fn restart(&mut self) {
        self.kill();
        let again = Self::launch(self.port, self.aof_dir.take()).await;
        let old = std::mem::replace(self, again);
        std::mem::forget(old);
    }
}

async fn spare_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.aof_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
