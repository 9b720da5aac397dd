//! Abuse and exhaustion: what one caller can do to the server's limits,
//! memory and labels, and to other callers.

mod common;

use std::sync::Arc;
use std::time::Duration;

use banking_example::auth::config::Argon2Params;
use banking_example::rate_limit::{InMemoryRateLimiter, ManualMonotonicClock, RateLimitConfig};
use banking_example::{AppConfig, Backends, RunningServer};
use common::{expect_error, read, Api};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// 60 a minute (one a second) with a burst of 3, on a stopped clock.
async fn start_limited(config: AppConfig) -> RunningServer {
    start_limited_clock(config).await.0
}

async fn start_limited_clock(config: AppConfig) -> (RunningServer, ManualMonotonicClock) {
    let config = AppConfig {
        rate_limit: RateLimitConfig {
            requests_per_minute: 60,
            burst_size: 3,
            ..RateLimitConfig::default()
        },
        ..config
    };
    let clock = ManualMonotonicClock::new();
    let mut backends = Backends::in_memory(&config);
    backends.limiter = Arc::new(InMemoryRateLimiter::with_clock(
        config.rate_limit.clone(),
        Arc::new(clock.clone()),
    ));
    (banking_example::start(config, backends).await.unwrap(), clock)
}

/// A user with an account: registration and login count against the
/// address, the open against the user (one of its 3).
async fn limited_user(server: &RunningServer, client: &str) -> (Api, String) {
    let api = Api::new(server, client).await;
    let id = api.open("Lim", json!(1)).await;
    (api, format!("/accounts/{id}"))
}

#[tokio::test]
async fn a_fresh_client_id_per_request_does_not_escape_the_limit() {
    let server = start_limited(common::config()).await;
    let (api, account) = limited_user(&server, "first").await;
    // The open used one of the 3; two more pass, whatever the client id.
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(
            api.as_client(&format!("random-{i}"))
                .get(&account)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 429, 429, 429, 429],
        "keyed on the user, not the client id"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn flooding_a_shared_client_id_does_not_lock_out_its_other_users() {
    let (server, clock) = start_limited_clock(common::config()).await;
    let (mallory, mallorys) = limited_user(&server, "shared-app").await;
    // The address's allowance refills; Mallory's stays spent.
    clock.advance(Duration::from_secs(2));
    let (alice, alices) = limited_user(&server, "shared-app").await;
    clock.advance(Duration::from_secs(2));
    while mallory.get(&mallorys).await.status() != StatusCode::TOO_MANY_REQUESTS {}
    expect_error(mallory.get(&mallorys).await, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(
        alice.get(&alices).await.status(),
        StatusCode::OK,
        "another user of the same client id still gets through"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn unauthenticated_account_requests_are_limited_by_address() {
    let server = start_limited(common::config()).await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = http
            .get(format!("{}/accounts", server.url()))
            .header("x-client-id", format!("anon-{i}"))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies_and_ipv6_by_64() {
    let get = |server: &RunningServer, forwarded: &'static str| {
        let url = format!("{}/health", server.url());
        async move {
            reqwest::Client::new()
                .get(url)
                .header("x-forwarded-for", forwarded)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Not trusted: every request is the peer's (127.0.0.1), whatever it claims.
    let server = start_limited(common::config()).await;
    let mut statuses = Vec::new();
    for claimed in ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"] {
        statuses.push(get(&server, claimed).await);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429],
        "X-Forwarded-For ignored from an untrusted peer"
    );
    server.stop().await.unwrap();

    // Behind a trusted proxy: per client address, IPv6 per /64.
    let server = start_limited(AppConfig {
        trusted_proxies: "127.0.0.1".parse().unwrap(),
        ..common::config()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(get(&server, "198.51.100.1").await, 200);
    }
    assert_eq!(get(&server, "198.51.100.1").await, 429);
    assert_eq!(
        get(&server, "198.51.100.2").await,
        200,
        "another client behind the proxy"
    );
    assert_eq!(get(&server, "2001:db8:0:1::1").await, 200);
    assert_eq!(get(&server, "2001:db8:0:1::2").await, 200);
    assert_eq!(get(&server, "2001:db8:0:1:ffff::3").await, 200);
    assert_eq!(get(&server, "2001:db8:0:1::4").await, 429, "one /64 is one client");
    assert_eq!(get(&server, "2001:db8:0:2::1").await, 200, "the next /64 is another");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn made_up_methods_do_not_create_metric_series() {
    let server = common::start().await;
    let http = reqwest::Client::new();
    for i in 0..20 {
        let method = Method::from_bytes(format!("FOO{i}").as_bytes()).unwrap();
        let r = http.request(method, format!("{}/", server.url())).send().await.unwrap();
        assert!(r.status().is_client_error());
    }
    let text = http
        .get(format!("{}/metrics", server.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("FOO"), "a series per made-up method");
    assert!(
        text.lines()
            .any(|l| l.starts_with("http_requests_total{") && l.contains("method=\"other\"")),
        "made-up methods are counted as `other`"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_request_id_is_replaced_not_stored() {
    let server = common::start().await;
    let api = Api::new(&server, "rid").await;
    let id = api.open("Rid", json!(1)).await;
    let huge = "r".repeat(8 * 1024);
    let r = api
        .authed(api.http.post(api.url(&format!("/accounts/{id}/deposit"))))
        .header("x-request-id", &huge)
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-request-id-replaced"], "true");
    let echoed = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(echoed.len() <= 128 && echoed != huge, "{echoed}");
    // Non-ASCII is not printable ASCII either.
    let r = api
        .authed(api.http.get(api.url(&format!("/accounts/{id}"))))
        .header(
            "x-request-id",
            reqwest::header::HeaderValue::from_bytes("café".as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id-replaced"], "true");
    // 128 printable characters (spaces too) are kept as they are.
    let fine = format!("{} x", "a".repeat(126));
    let r = api
        .authed(api.http.get(api.url(&format!("/accounts/{id}"))))
        .header("x-request-id", &fine)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], fine.as_str());
    assert!(r.headers().get("x-request-id-replaced").is_none());
    // Nothing long reached the events' metadata.
    let events = server
        .state
        .repo
        .store()
        .read_stream_batch(&id.as_str().into(), 1, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    for e in events {
        let metadata = serde_json::to_string(&e.metadata).unwrap();
        assert!(metadata.len() < 1024, "{metadata}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn usernames_over_254_bytes_are_refused_before_any_lookup() {
    let server = common::start().await;
    let long = format!("{}@example.com", "a".repeat(250));
    for path in ["/auth/login", "/auth/register"] {
        let msg = expect_error(
            common::post_json(
                &server.url(),
                path,
                None,
                json!({"username": long, "password": common::PASSWORD}),
            )
            .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(msg, "username must be at most 254 bytes", "{path}");
    }
    let msg = expect_error(
        common::post_json(&server.url(), "/auth/reset-password", None, json!({"email": long})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "email must be at most 254 bytes");
    // Nothing was counted for it: no lockout state, no limiter key.
    let key = banking_example::auth::lockout::AttemptKey {
        username: &long,
        source: "ip:127.0.0.1",
    };
    let attempts = server.state.auth.stores().attempts.get(key).await.unwrap();
    assert_eq!(attempts.failures, 0);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_hashing_at_capacity_answers_503_with_retry_after() {
    let mut config = common::config();
    config.auth.argon2 = Argon2Params {
        memory_kib: 32 * 1024,
        iterations: 3,
        parallelism: 1,
    };
    config.auth.argon2_max_concurrent = 1;
    config.auth.argon2_queue_wait = Duration::ZERO;
    let server = common::start_with(config).await;
    // Eight users (logins of one user from one source take turns, so they
    // would never hash at once).
    let mut usernames = Vec::new();
    for _ in 0..8 {
        let username = common::username();
        let r = common::post_json(
            &server.url(),
            "/auth/register",
            None,
            json!({"username": username, "password": common::PASSWORD}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        usernames.push(username);
    }
    let username = usernames[0].clone();
    let base = server.url();
    let logins = usernames.iter().map(|username| {
        common::post_json(
            &base,
            "/auth/login",
            None,
            json!({"username": username, "password": common::PASSWORD}),
        )
    });
    let answers = futures::future::join_all(logins).await;
    let mut ok = 0;
    let mut busy = 0;
    for r in answers {
        match r.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(r.headers()["retry-after"], "1");
                let (_, body) = read(r).await;
                assert_eq!(body["error"], "the server is busy; retry later");
                busy += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "{ok} logged in, {busy} refused");
    // Capacity is back once they are done.
    common::login(&server.url(), &username, common::PASSWORD).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn events_come_a_page_at_a_time() {
    let server = common::start().await;
    let api = Api::new(&server, "pages").await;
    let id = api.open("Pages", json!(0)).await;
    for _ in 0..4 {
        let (status, _) = read(api.post(&format!("/accounts/{id}/deposit"), json!({"amount": 1})).await).await;
        assert_eq!(status, StatusCode::OK);
    }
    let page = |q: String| {
        let api = api.clone();
        let id = id.clone();
        async move { read(api.get(&format!("/accounts/{id}/events{q}")).await).await }
    };
    let (status, first) = page("?limit=2".into()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let versions = |b: &serde_json::Value| -> Vec<u64> {
        b["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(versions(&first), [1, 2]);
    assert_eq!(first["next"], 2);
    let (_, second) = page("?after=2&limit=2".into()).await;
    assert_eq!(versions(&second), [3, 4]);
    assert_eq!(second["next"], 4);
    let (_, last) = page("?after=4&limit=2".into()).await;
    assert_eq!(versions(&last), [5]);
    assert!(last["next"].is_null());
    let (_, all) = page(String::new()).await;
    assert_eq!(versions(&all), [1, 2, 3, 4, 5], "default page of 100");
    assert!(all["next"].is_null());
    let (_, beyond) = page("?after=99".into()).await;
    assert_eq!(versions(&beyond), Vec::<u64>::new());
    for bad in ["?limit=0", "?limit=1001", "?after=-1", "?limit=abc"] {
        expect_error(
            api.get(&format!("/accounts/{id}/events{bad}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idempotency_keys_are_shared_through_postgres_without_redis() {
    let schema = common::pg::schema();
    let config = common::pg::config(&schema).await;
    let a_backends = Backends::from_config(&config).await.unwrap();
    assert_eq!(a_backends.names.dedup, "postgres");
    let a = banking_example::start(config.clone(), a_backends).await.unwrap();
    let b = banking_example::start(config.clone(), Backends::from_config(&config).await.unwrap())
        .await
        .unwrap();
    let on_a = Api::new(&a, "pg-idem").await;
    let on_b = on_a.on(&b);
    let id = on_a.open("Idem", json!(10)).await;
    let path = format!("/accounts/{id}/deposit");
    let first = on_a.post_keyed(&path, "pay-1", json!({"amount": 5})).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first_body = first.text().await.unwrap();
    // The retry reaches the other instance: the first answer, replayed.
    let retry = on_b.post_keyed(&path, "pay-1", json!({"amount": 5})).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(retry.text().await.unwrap(), first_body);
    // The same key for another request is caught there too.
    expect_error(
        on_b.post_keyed(&path, "pay-1", json!({"amount": 6})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let (_, view) = read(on_a.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(view["balance"].to_string(), "15.00");
    // The key is a row of the schema, not process memory.
    let pool = sqlx::PgPool::connect(&common::pg::database_url()).await.unwrap();
    let keys: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.dedup_keys"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(keys, 1);
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn amounts_in_exponent_notation_are_exact_or_refused() {
    let server = common::start().await;
    let api = Api::new(&server, "exp").await;
    let id = api.open("Exp", json!(0)).await;
    let deposit = |body: &'static str| {
        let api = api.clone();
        let id = id.clone();
        async move {
            api.authed(api.http.post(api.url(&format!("/accounts/{id}/deposit"))))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    // Would round to 0.01 if parsed approximately.
    expect_error(
        deposit(r#"{"amount": 0.0099999999999999999999999999999e0}"#).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    expect_error(deposit(r#"{"amount": 1e-3}"#).await, StatusCode::BAD_REQUEST).await;
    let (status, view) = read(deposit(r#"{"amount": 1.5e2}"#).await).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["balance"].to_string(), "150.00");
    assert_eq!(view["version"], 2, "nothing else moved money");
    server.stop().await.unwrap();
}

/// A connection that sends its headers slowly (slowloris) or not at all,
/// or sits idle after a request, is closed once `HEADER_READ_TIMEOUT_SECS`
/// passes: idle clients hold no connection for long. A client that sends
/// its request in time is answered as usual.
#[tokio::test]
async fn connections_that_do_not_send_headers_in_time_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = common::config();
    config.header_read_timeout = Duration::from_secs(1);
    let server = common::start_with(config).await;
    let addr = server.url().trim_start_matches("http://").to_owned();
    // Reads until the server closes the connection; what it sent first.
    async fn until_closed(stream: &mut tokio::net::TcpStream, what: &str) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{what}: the connection was still open after 30 s");
        String::from_utf8_lossy(&seen).into_owned()
    }

    // Nothing at all.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(until_closed(&mut silent, "silent").await, "");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // Headers that never end.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    until_closed(&mut slow, "slow headers").await;

    // A request in time is answered; then the idle connection is closed.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = until_closed(&mut idle, "idle").await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    server.stop().await.unwrap();
}
