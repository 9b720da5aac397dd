//! HTTP load against a running banking server: closed-loop deposits with a
//! bearer token, one JSON line on stdout.
//!
//! ```sh
//! cargo build --release -p banking-example --bin banking-example --example http_bench
//! DATABASE_URL='postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' DATABASE_SCHEMA=bench_http \
//!   RATE_LIMIT_REQUESTS_PER_MINUTE=0 AUTH_RATE_LIMIT_PER_MINUTE=0 ADMIN_BIND_ADDR=off \
//!   AUTH_ALLOW_INSECURE_SECRETS=1 BIND_ADDR=127.0.0.1:18080 target/release/banking-example &
//! target/release/examples/http_bench --url http://127.0.0.1:18080 --connections 16 \
//!   --duration 5 --accounts 1000 --server-pid $!
//! ```
//!
//! `scripts/bench-http.sh` runs it next to es-postgres's `bank_bench` and
//! the pgbench ceiling (docs/benchmarks.md, the HTTP request path).
//!
//! Set-up (not timed): registers a user, logs in, opens `--accounts`
//! accounts. Then `--connections` keep-alive HTTP/1.1 connections each send
//! `POST /accounts/{id}/deposit` (a random account, amount 1.00) and wait for
//! the answer before sending the next, for `--warmup` seconds (not counted)
//! and then `--duration` seconds. Afterwards every account is read back and
//! the balances must add up to the opening balances plus the acknowledged
//! deposits (`"verified"`; exit 1 when they do not).
//!
//! The client is a minimal HTTP/1.1 writer and reader on one current-thread
//! runtime, so that on a small machine the load generator takes as little
//! CPU from the server as it can (the role `wrk` plays elsewhere). With
//! `--server-pid` the server's resident set (`VmRSS`) and its peak
//! (`VmHWM`) are read from `/proc` after the run.
//!
//! Output: `{"connections":16,"duration_s":5.0,"requests":..,
//! "requests_per_sec":..,"p50_us":..,"p90_us":..,"p99_us":..,"max_us":..,
//! "status":{"200":..},"io_errors":0,"server_rss_kb":..,"server_hwm_kb":..,
//! "verified":true}`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use es_core::testing::bank::percentile;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Args {
    host: String,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    accounts: usize,
    server_pid: Option<u32>,
}

fn usage() -> String {
    "usage: http_bench [--url http://127.0.0.1:8080] [--connections 16] [--duration SECS] [--warmup SECS] \
     [--accounts 1000] [--server-pid PID]"
        .to_owned()
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        host: "127.0.0.1:8080".into(),
        connections: 16,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        accounts: 1000,
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value; {}", usage()));
        match flag.as_str() {
            "--url" => {
                let url = value()?;
                let rest = url
                    .strip_prefix("http://")
                    .ok_or_else(|| format!("--url must start with http:// ({url})"))?;
                args.host = rest.trim_end_matches('/').to_owned();
            }
            "--connections" => args.connections = value()?.parse()?,
            "--duration" => args.duration = Duration::from_secs_f64(value()?.parse()?),
            "--warmup" => args.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--accounts" => args.accounts = value()?.parse()?,
            "--server-pid" => args.server_pid = Some(value()?.parse()?),
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown argument {other}; {}", usage()).into()),
        }
    }
    if args.connections == 0 || args.accounts == 0 {
        return Err("--connections and --accounts must be at least 1".into());
    }
    Ok(args)
}

/// One keep-alive HTTP/1.1 connection: writes a request, reads one answer.
struct Conn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(host: &str) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            host: host.to_owned(),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `method path` with a JSON `body` and the extra `headers`
    /// (already formatted, each ending in CRLF); returns status and body.
    async fn send(&mut self, method: &str, path: &str, headers: &str, body: &str) -> Result<(u16, Vec<u8>), BoxError> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.write_all(request.as_bytes()).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> Result<(u16, Vec<u8>), BoxError> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end])?;
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .ok_or("response without a status line")?
                    .parse()?;
                let length = head
                    .split("\r\n")
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.trim().parse::<usize>())
                    .transpose()?
                    .ok_or("response without content-length")?;
                let total = end + 4 + length;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                let body = self.buf[end + 4..total].to_vec();
                self.buf.drain(..total);
                return Ok((status, body));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), BoxError> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed by the server".into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn json_call(
    conn: &mut Conn,
    method: &str,
    path: &str,
    headers: &str,
    body: &Value,
) -> Result<(u16, Value), BoxError> {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, bytes) = conn.send(method, path, headers, &body).await?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)?
    };
    Ok((status, value))
}

/// What one connection measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    status: BTreeMap<u16, u64>,
    io_errors: u64,
    /// 200 answers, warm-up included.
    acked: u64,
    /// Requests without an answer, warm-up included (applied or not).
    unknown: u64,
}

async fn worker(
    host: String,
    auth: String,
    accounts: std::rc::Rc<Vec<String>>,
    seed: u64,
    start: Instant,
    warmup: Duration,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    // xorshift64: the account of each request.
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut conn = None;
    let body = r#"{"amount":1.00}"#;
    while Instant::now() < end {
        let c = match &mut conn {
            Some(c) => c,
            None => {
                if let Ok(c) = Conn::open(&host).await {
                    conn.insert(c)
                } else {
                    tally.io_errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        };
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let path = &accounts[(x % accounts.len() as u64) as usize];
        let t0 = Instant::now();
        let result = c.send("POST", path, &auth, body).await;
        let counted = t0 >= start + warmup;
        if let Ok((status, _)) = result {
            tally.acked += u64::from(status == 200);
            if counted {
                tally.latencies_us.push(t0.elapsed().as_micros() as u64);
                *tally.status.entry(status).or_default() += 1;
            }
        } else {
            tally.unknown += 1;
            if counted {
                tally.io_errors += 1;
            }
            conn = None;
        }
    }
    tally
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory_kb(pid: u32) -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn open_accounts(host: &str, auth: &str, n: usize, parallel: usize) -> Result<Vec<String>, BoxError> {
    let per = n.div_ceil(parallel);
    let mut tasks = Vec::new();
    for p in 0..parallel {
        let (host, auth) = (host.to_owned(), auth.to_owned());
        let count = per.min(n.saturating_sub(p * per));
        tasks.push(tokio::task::spawn_local(async move {
            let mut conn = Conn::open(&host).await?;
            let mut ids = Vec::with_capacity(count);
            for i in 0..count {
                let body = json!({"owner_name": format!("bench {p}-{i}"), "initial_balance": 100});
                let (status, value) = json_call(&mut conn, "POST", "/accounts", &auth, &body).await?;
                let id = value["id"].as_str().filter(|_| status == 201);
                let id = id.ok_or_else(|| format!("POST /accounts answered {status}: {value}"))?;
                ids.push(id.to_owned());
            }
            Ok::<_, BoxError>(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(ids)
}

/// Sum of the balances of `ids`, in cents, read through the API.
async fn balance_cents(host: &str, auth: &str, ids: &[String]) -> Result<i128, BoxError> {
    let mut conn = Conn::open(host).await?;
    let mut total = 0i128;
    for id in ids {
        let (status, value) = json_call(&mut conn, "GET", &format!("/accounts/{id}"), auth, &Value::Null).await?;
        if status != 200 {
            return Err(format!("GET /accounts/{id} answered {status}: {value}").into());
        }
        let balance = match &value["balance"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let d: rust_decimal::Decimal = balance.parse()?;
        total += (d * rust_decimal::Decimal::from(100)).trunc().mantissa();
    }
    Ok(total)
}

async fn run(args: Args) -> Result<bool, BoxError> {
    let host = args.host.clone();
    let mut conn = Conn::open(&host).await?;
    let username = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let credentials = json!({"username": username, "password": "http bench passphrase"});
    let (status, value) = json_call(&mut conn, "POST", "/auth/register", "", &credentials).await?;
    if status != 201 {
        return Err(format!("register answered {status}: {value} (is AUTH_RATE_LIMIT_PER_MINUTE=0 set?)").into());
    }
    let (status, value) = json_call(&mut conn, "POST", "/auth/login", "", &credentials).await?;
    let token = value["access_token"]
        .as_str()
        .filter(|_| status == 200)
        .ok_or_else(|| format!("login answered {status}: {value}"))?
        .to_owned();
    let auth = format!("authorization: Bearer {token}\r\nx-client-id: http-bench\r\n");
    drop(conn);

    let ids = open_accounts(&host, &auth, args.accounts, args.connections.min(16)).await?;
    let paths = std::rc::Rc::new(
        ids.iter()
            .map(|id| format!("/accounts/{id}/deposit"))
            .collect::<Vec<_>>(),
    );
    let before = balance_cents(&host, &auth, &ids).await?;
    let memory_before = args.server_pid.map(memory_kb);

    let start = Instant::now();
    let end = start + args.warmup + args.duration;
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        tasks.push(tokio::task::spawn_local(worker(
            host.clone(),
            auth.clone(),
            std::rc::Rc::clone(&paths),
            c as u64 + 1,
            start,
            args.warmup,
            end,
        )));
    }
    let mut all = Tally::default();
    for t in tasks {
        let tally = t.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.io_errors += tally.io_errors;
        all.acked += tally.acked;
        all.unknown += tally.unknown;
        for (s, n) in tally.status {
            *all.status.entry(s).or_default() += n;
        }
    }
    let elapsed = start.elapsed().saturating_sub(args.warmup).as_secs_f64();
    let (rss, hwm) = args.server_pid.map_or((None, None), memory_kb);

    // Every acknowledged deposit, warm-up included, moved 1.00 exactly once.
    let after = balance_cents(&host, &auth, &ids).await?;
    let sorted = {
        let mut l = all.latencies_us.clone();
        l.sort_unstable();
        l
    };
    let delta = after - before;
    let verified = delta >= i128::from(all.acked) * 100 && delta <= i128::from(all.acked + all.unknown) * 100;
    let requests = sorted.len() as u64;
    let status: BTreeMap<String, u64> = all.status.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let line = json!({
        "connections": args.connections,
        "accounts": args.accounts,
        "duration_s": (elapsed * 100.0).round() / 100.0,
        "requests": requests,
        "requests_per_sec": (requests as f64 / elapsed).round(),
        "p50_us": percentile(&sorted, 50.0),
        "p90_us": percentile(&sorted, 90.0),
        "p99_us": percentile(&sorted, 99.0),
        "max_us": sorted.last().copied().unwrap_or(0),
        "status": status,
        "io_errors": all.io_errors,
        "server_rss_before_kb": memory_before.and_then(|m| m.0),
        "server_rss_kb": rss,
        "server_hwm_kb": hwm,
        "verified": verified,
    });
    println!("{line}");
    if !verified {
        eprintln!(
            "deposited {delta} cents; acknowledged {} deposits of 100, {} unanswered",
            all.acked, all.unknown
        );
    }
    Ok(verified)
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("http_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
