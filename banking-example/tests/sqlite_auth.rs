//! The auth state in SQLite ([`SqliteAuthStore`]) on a real database file
//! in a temporary directory: the store traits directly (rotation and reuse
//! detection under concurrent connections, single-use reset tokens,
//! lockout counting, the reset mail outbox, reopening the file), then the HTTP flows
//! of a server whose auth stores are SQLite, across a restart on the same
//! file.

mod common;

use std::path::PathBuf;

use banking_example::auth::lockout::{AttemptKey, Attempts, LockoutPolicy, LoginAttempts};
use banking_example::auth::refresh::{RefreshRecord, RefreshStore};
use banking_example::auth::reset::{MailOutbox, QueuedReset, ResetRecord, ResetStore};
use banking_example::auth::sqlite::SqliteAuthStore;
use banking_example::auth::users::{User, UserStore};
use banking_example::auth::{AuthStoreError, AuthStores, Role};
use banking_example::{AppConfig, Backends, RunningServer};
use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{expect_error, read, Api};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::sqlite::SqlitePool;
use sqlx::Row;
use uuid::Uuid;

/// A directory of its own under the system temp dir, removed on drop,
/// holding one database file.
struct TempDb {
    dir: PathBuf,
}

impl TempDb {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("banking-sqlite-auth-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("bank.db")
    }

    /// A new pool on the file (as a new process would open it).
    async fn pool(&self) -> SqlitePool {
        SqlitePool::connect_with(SqliteAuthStore::connect_options(self.path()))
            .await
            .unwrap()
    }

    /// A migrated store on a new pool.
    async fn open(&self) -> SqliteAuthStore {
        let store = SqliteAuthStore::new(self.pool().await);
        store.migrate().await.unwrap();
        store
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn user(username: &str) -> User {
    User {
        id: Uuid::new_v4(),
        username: username.into(),
        password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA".into(),
        roles: vec![Role::Customer],
        // Microseconds: what the store keeps (as PostgreSQL does).
        created_at: Utc.timestamp_micros(1_700_000_000_123_456).unwrap(),
    }
}

fn refresh(user_id: Uuid, family_id: Uuid) -> RefreshRecord {
    RefreshRecord {
        token_hash: format!("hash-{}", Uuid::new_v4().simple()),
        user_id,
        family_id,
        expires_at: Utc::now() + Duration::days(30),
        used_at: None,
        revoked: false,
    }
}

fn at(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(micros).unwrap()
}

#[tokio::test]
async fn migrate_is_idempotent_and_leaves_other_tables_alone() {
    let db = TempDb::new();
    let pool = db.pool().await;
    // The event store's tables share the file.
    sqlx::query("CREATE TABLE events (position INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO events (payload) VALUES ('{}')")
        .execute(&pool)
        .await
        .unwrap();
    let store = SqliteAuthStore::new(pool.clone());
    store.migrate().await.unwrap();
    store.create(user("ada@example.com")).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store.by_username("ada@example.com").await.unwrap().is_some());
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        tables,
        [
            "auth_login_failures",
            "auth_password_resets",
            "auth_refresh_tokens",
            "auth_reset_mails",
            "auth_revocations",
            "auth_users",
            "events"
        ]
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 1);
    // Several processes starting together: the migrations serialize.
    let others: Vec<_> = futures::future::join_all((0..4).map(|_| async {
        let store = SqliteAuthStore::new(db.pool().await);
        store.migrate().await
    }))
    .await;
    assert!(others.iter().all(Result::is_ok), "{others:?}");
}

#[tokio::test]
async fn users_are_unique_updated_and_listed() {
    let db = TempDb::new();
    let store = db.open().await;
    let ada = user("ada@example.com");
    store.create(ada.clone()).await.unwrap();
    assert_eq!(store.by_username("ada@example.com").await.unwrap(), Some(ada.clone()));
    assert_eq!(store.by_id(ada.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(store.by_username("nobody@example.com").await.unwrap(), None);
    assert_eq!(store.by_id(Uuid::new_v4()).await.unwrap(), None);
    let dup = User {
        id: Uuid::new_v4(),
        ..ada.clone()
    };
    assert_eq!(store.create(dup).await, Err(AuthStoreError::Duplicate));
    let same_id = User {
        username: "other@example.com".into(),
        ..ada.clone()
    };
    assert_eq!(store.create(same_id).await, Err(AuthStoreError::Duplicate));

    store.set_password(ada.id, "new-hash").await.unwrap();
    store.set_roles(ada.id, &[Role::Admin, Role::Customer]).await.unwrap();
    let changed = store.by_id(ada.id).await.unwrap().unwrap();
    assert_eq!(changed.password_hash, "new-hash");
    assert_eq!(changed.roles, [Role::Admin, Role::Customer]);
    assert_eq!(
        store.set_password(Uuid::new_v4(), "h").await,
        Err(AuthStoreError::NotFound)
    );
    assert_eq!(
        store.set_roles(Uuid::new_v4(), &[Role::Admin]).await,
        Err(AuthStoreError::NotFound)
    );

    for name in ["carol@example.com", "bob@example.com"] {
        store.create(user(name)).await.unwrap();
    }
    let names = |users: Vec<User>| users.into_iter().map(|u| u.username).collect::<Vec<_>>();
    let (page, total) = store.list(0, 2).await.unwrap();
    assert_eq!(total, 3);
    assert_eq!(names(page), ["ada@example.com", "bob@example.com"]);
    let (page, total) = store.list(2, 10).await.unwrap();
    assert_eq!((names(page), total), (vec!["carol@example.com".to_owned()], 3));
    let (page, _) = store.list(0, usize::MAX).await.unwrap();
    assert_eq!(page.len(), 3);
}

#[tokio::test]
async fn refresh_consume_returns_the_record_as_it_was_and_marks_it_used_once() {
    let db = TempDb::new();
    let store = db.open().await;
    let user_id = Uuid::new_v4();
    let family = Uuid::new_v4();
    let mut token = refresh(user_id, family);
    token.expires_at = at(1_900_000_000_123_456);
    RefreshStore::insert(&store, token.clone()).await.unwrap();
    assert_eq!(
        RefreshStore::insert(&store, token.clone()).await,
        Err(AuthStoreError::Duplicate)
    );

    let first_use = at(1_800_000_000_000_001);
    let first = RefreshStore::consume(&store, &token.token_hash, first_use)
        .await
        .unwrap();
    assert_eq!(first, Some(token.clone()), "unused before the first use");
    // A reuse sees when it was first used; the time is not moved.
    let reuse = RefreshStore::consume(&store, &token.token_hash, first_use + Duration::hours(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reuse.used_at, Some(first_use));
    assert!(!reuse.revoked);
    assert_eq!(RefreshStore::consume(&store, "unknown", first_use).await.unwrap(), None);

    // Stored as fixed-width ISO-8601 UTC text.
    let row = sqlx::query("SELECT expires_at, used_at, revoked FROM auth_refresh_tokens WHERE token_hash = ?1")
        .bind(&token.token_hash)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>(0), "2030-03-17T17:46:40.123456Z");
    assert_eq!(row.get::<String, _>(1), "2027-01-15T08:00:00.000001Z");
    assert_eq!(row.get::<i64, _>(2), 0);
}

#[tokio::test]
async fn revoking_a_family_or_a_user_marks_their_tokens() {
    let db = TempDb::new();
    let store = db.open().await;
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (session_a, session_b) = (Uuid::new_v4(), Uuid::new_v4());
    let a1 = refresh(ada, session_a);
    let a2 = refresh(ada, session_a);
    let b1 = refresh(ada, session_b);
    let other = refresh(bob, Uuid::new_v4());
    for t in [&a1, &a2, &b1, &other] {
        RefreshStore::insert(&store, t.clone()).await.unwrap();
    }
    let revoked = |t: &RefreshRecord| {
        let store = store.clone();
        let hash = t.token_hash.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT revoked FROM auth_refresh_tokens WHERE token_hash = ?1")
                .bind(hash)
                .fetch_one(store.pool())
                .await
                .unwrap()
        }
    };
    store.revoke_family(session_a).await.unwrap();
    assert_eq!(
        (revoked(&a1).await, revoked(&a2).await, revoked(&b1).await),
        (true, true, false)
    );
    let seen = RefreshStore::consume(&store, &a2.token_hash, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(seen.revoked);

    // Everything of ada but the session she keeps; bob untouched.
    let kept = refresh(ada, session_b);
    RefreshStore::insert(&store, kept.clone()).await.unwrap();
    let c1 = refresh(ada, Uuid::new_v4());
    RefreshStore::insert(&store, c1.clone()).await.unwrap();
    store.revoke_user(ada, Some(session_b)).await.unwrap();
    assert_eq!(
        (revoked(&c1).await, revoked(&kept).await, revoked(&other).await),
        (true, false, false)
    );
    store.revoke_user(ada, None).await.unwrap();
    assert_eq!(
        (revoked(&kept).await, revoked(&b1).await, revoked(&other).await),
        (true, true, false)
    );
}

/// Many uses of one token at once, on two pools (two sets of
/// connections, as two processes on the file): exactly one sees it
/// unused, every other one sees the reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uses_of_one_refresh_token_let_exactly_one_through() {
    let db = TempDb::new();
    let stores = [db.open().await, db.open().await];
    for _ in 0..10 {
        let token = refresh(Uuid::new_v4(), Uuid::new_v4());
        RefreshStore::insert(&stores[0], token.clone()).await.unwrap();
        let uses: Vec<_> = (0..16)
            .map(|i| {
                let store = stores[i % 2].clone();
                let hash = token.token_hash.clone();
                tokio::spawn(async move { RefreshStore::consume(&store, &hash, Utc::now()).await })
            })
            .collect();
        let mut unused = 0;
        for u in uses {
            let record = u.await.unwrap().unwrap().unwrap();
            if record.used_at.is_none() {
                unused += 1;
            }
        }
        assert_eq!(unused, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_tokens_are_single_use_even_when_raced() {
    let db = TempDb::new();
    let store = db.open().await;
    let token = ResetRecord {
        token_hash: "reset-hash".into(),
        user_id: Uuid::new_v4(),
        expires_at: at(1_900_000_000_000_000),
        used_at: None,
    };
    ResetStore::insert(&store, token.clone()).await.unwrap();
    assert_eq!(
        ResetStore::insert(&store, token.clone()).await,
        Err(AuthStoreError::Duplicate)
    );
    let other = db.open().await;
    let uses: Vec<_> = (0..8)
        .map(|i| {
            let store = if i % 2 == 0 { store.clone() } else { other.clone() };
            tokio::spawn(async move { ResetStore::consume(&store, "reset-hash", at(1_800_000_000_000_000 + i)).await })
        })
        .collect();
    let mut firsts = Vec::new();
    for u in uses {
        let record = u.await.unwrap().unwrap().unwrap();
        assert_eq!(record.user_id, token.user_id);
        if record.used_at.is_none() {
            firsts.push(record);
        }
    }
    assert_eq!(firsts, [token]);
    let after = ResetStore::consume(&store, "reset-hash", Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(after.used_at.is_some());
    assert_eq!(ResetStore::consume(&store, "unknown", Utc::now()).await.unwrap(), None);
}

const ADA: AttemptKey<'static> = AttemptKey {
    username: "ada@example.com",
    source: "ip:203.0.113.7",
};
const ADA_ELSEWHERE: AttemptKey<'static> = AttemptKey {
    username: "ada@example.com",
    source: "ip:198.51.100.1",
};
const BOB: AttemptKey<'static> = AttemptKey {
    username: "bob@example.com",
    source: "ip:203.0.113.7",
};

#[tokio::test]
async fn failures_lock_after_the_maximum_then_clear() {
    let db = TempDb::new();
    let store = db.open().await;
    let policy = LockoutPolicy {
        max_attempts: 3,
        duration: Duration::minutes(15),
        backoff: Duration::zero(),
    };
    let now = at(1_800_000_000_000_000);
    assert_eq!(store.get(ADA).await.unwrap(), Attempts::default());
    for n in 1..=2 {
        let a = store.record_failure(ADA, policy, now).await.unwrap();
        assert_eq!(
            a,
            Attempts {
                failures: n,
                locked_until: None
            }
        );
    }
    let locked = store.record_failure(ADA, policy, now).await.unwrap();
    let until = now + Duration::minutes(15);
    assert_eq!(
        locked,
        Attempts {
            failures: 0,
            locked_until: Some(until)
        }
    );
    // Not extended while locked; read back as written.
    let later = now + Duration::minutes(5);
    assert_eq!(store.record_failure(ADA, policy, later).await.unwrap(), locked);
    assert_eq!(store.get(ADA).await.unwrap(), locked);
    // Counting restarts once the lock is over.
    let after = until + Duration::seconds(1);
    assert_eq!(store.record_failure(ADA, policy, after).await.unwrap().failures, 1);
    // Other usernames, and other sources, are counted apart; clear forgets.
    assert_eq!(store.get(BOB).await.unwrap(), Attempts::default());
    assert_eq!(store.get(ADA_ELSEWHERE).await.unwrap(), Attempts::default());
    store.record_failure(ADA_ELSEWHERE, policy, after).await.unwrap();
    store.clear(ADA).await.unwrap();
    assert_eq!(store.get(ADA).await.unwrap(), Attempts::default());
    assert_eq!(store.get(ADA_ELSEWHERE).await.unwrap().failures, 1);
    store.clear_user("ada@example.com").await.unwrap();
    assert_eq!(store.get(ADA_ELSEWHERE).await.unwrap(), Attempts::default());
}

/// Failures recorded at once from two pools are all counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_failures_are_all_counted() {
    let db = TempDb::new();
    let stores = [db.open().await, db.open().await];
    let policy = LockoutPolicy {
        max_attempts: 1_000,
        duration: Duration::minutes(15),
        backoff: Duration::zero(),
    };
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move { store.record_failure(ADA, policy, Utc::now()).await })
        })
        .collect();
    let mut seen: Vec<u32> = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().unwrap().failures);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=24).collect::<Vec<_>>(), "each failure saw the one before");
    assert_eq!(stores[1].get(ADA).await.unwrap().failures, 24);
}

#[tokio::test]
async fn the_outbox_delivers_each_mail_once_in_order_and_purges_expired_ones() {
    let db = TempDb::new();
    let store = db.open().await;
    let now = at(1_800_000_000_000_000);
    let mail = |seed: &str| QueuedReset {
        to: "ada@example.com".into(),
        token_seed: seed.into(),
        expires_at: now + Duration::minutes(30),
    };
    store.queue_reset(mail("first")).await.unwrap();
    store
        .queue_reset(QueuedReset {
            to: "bob@example.com".into(),
            ..mail("bob's")
        })
        .await
        .unwrap();
    store.queue_reset(mail("second")).await.unwrap();
    store
        .queue_reset(QueuedReset {
            expires_at: now,
            ..mail("expired")
        })
        .await
        .unwrap();
    assert_eq!(
        store.take_resets("ada@example.com", now).await.unwrap(),
        [mail("first"), mail("second")],
        "in order, the expired one left out"
    );
    assert!(
        store.take_resets("ada@example.com", now).await.unwrap().is_empty(),
        "delivered once"
    );
    assert!(store.take_resets("nobody@example.com", now).await.unwrap().is_empty());
    store
        .queue_reset(QueuedReset {
            to: "bob@example.com".into(),
            expires_at: now,
            ..mail("bob's expired")
        })
        .await
        .unwrap();
    assert_eq!(MailOutbox::purge_expired(&store, now).await.unwrap(), 1);
    store.discard_resets("bob@example.com").await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM auth_reset_mails")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn state_survives_reopening_the_file() {
    let db = TempDb::new();
    let store = db.open().await;
    let ada = user("ada@example.com");
    store.create(ada.clone()).await.unwrap();
    let token = refresh(ada.id, Uuid::new_v4());
    RefreshStore::insert(&store, token.clone()).await.unwrap();
    RefreshStore::consume(&store, &token.token_hash, Utc::now())
        .await
        .unwrap();
    let policy = LockoutPolicy {
        max_attempts: 5,
        duration: Duration::minutes(15),
        backoff: Duration::zero(),
    };
    let key = AttemptKey {
        username: &ada.username,
        source: "ip:203.0.113.7",
    };
    store.record_failure(key, policy, Utc::now()).await.unwrap();
    store
        .queue_reset(QueuedReset {
            to: ada.username.clone(),
            token_seed: "t".into(),
            expires_at: at(1_800_000_000_000_000),
        })
        .await
        .unwrap();
    store.pool().close().await;

    let reopened = db.open().await;
    assert_eq!(reopened.by_id(ada.id).await.unwrap(), Some(ada.clone()));
    let again = RefreshStore::consume(&reopened, &token.token_hash, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert!(again.used_at.is_some(), "the use is remembered: a reuse");
    assert_eq!(reopened.get(key).await.unwrap().failures, 1);
    assert_eq!(
        reopened
            .take_resets(&ada.username, at(1_700_000_000_000_000))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A server on in-memory backends whose auth stores are SQLite on `db`.
async fn start(db: &TempDb, config: AppConfig) -> RunningServer {
    let auth = db.open().await;
    let mut backends = Backends::in_memory(&config);
    backends.auth = AuthStores::sqlite(&config.auth, auth);
    banking_example::start(config, backends).await.unwrap()
}

/// The HTTP flows with the auth state in SQLite, across a restart on the
/// same file: refresh rotation, reuse detection revoking the family,
/// lockout, a reset through the SQLite outbox (single use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_state_lives_in_sqlite() {
    let db = TempDb::new();
    let server = start(&db, common::config()).await;
    let base = server.url();
    let api = Api::new(&server, "sqlite-auth").await;
    let (status, rotated) = read(
        common::post_json(
            &base,
            "/auth/refresh",
            None,
            json!({"refresh_token": api.refresh_token}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    server.stop().await.unwrap();

    let server = start(&db, common::config()).await;
    let base = server.url();
    // Reuse of the rotated token after the restart revokes the family.
    let r = common::post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": api.refresh_token}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = common::post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": rotated["refresh_token"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The user is still there; a new session rotates.
    let owner = Api::login(&server, "sqlite-auth", &api.username).await;
    let r = common::post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": owner.refresh_token}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    // Lockout counts in SQLite.
    for _ in 0..5 {
        let r = common::post_json(
            &base,
            "/auth/login",
            None,
            json!({"username": api.username, "password": "wrong password!"}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = common::post_json(
        &base,
        "/auth/login",
        None,
        json!({"username": api.username, "password": common::PASSWORD}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A reset through the SQLite outbox clears the lockout.
    let r = common::post_json(&base, "/auth/reset-password", None, json!({"email": api.username})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mails = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    assert_eq!(mails.len(), 1);
    let confirm = json!({"token": mails[0].token, "new_password": "brand new passphrase"});
    let r = common::post_json(&base, "/auth/reset-password/confirm", None, confirm.clone()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = common::post_json(&base, "/auth/reset-password/confirm", None, confirm).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "single use");
    common::login(&base, &api.username, "brand new passphrase").await;
    server.stop().await.unwrap();

    // The new password is what a restarted server knows.
    let server = start(&db, common::config()).await;
    common::login(&server.url(), &api.username, "brand new passphrase").await;
    server.stop().await.unwrap();
}

/// `create-admin` on the server's default store (the SQLite file under
/// `DATA_DIR`, no `DATABASE_URL`): the admin is kept in the file and can
/// log in to a server started on it, whose log does not claim the data is
/// lost on exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_admin_keeps_the_admin_in_the_default_sqlite_file() {
    let db = TempDb::new();
    let env = common::process::sqlite_env(&db.dir);
    let username = format!("admin-{}@example.com", Uuid::now_v7().simple());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_banking-example"))
        .args(["create-admin", "--username", &username])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ADMIN_PASSWORD", common::PASSWORD)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(&db.dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "create-admin failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let server = common::process::ServerProcess::start(&env).await;
    let tokens = common::login(&server.base, &username, common::PASSWORD).await;
    let token = tokens["access_token"].as_str().unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/auth/users", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, body) = read(r).await;
    assert_eq!(status, StatusCode::OK, "an admin lists users: {body}");
    assert!(!server.log().contains("NOT persisted"), "{}", server.log());
}

/// `banking-example reset-mails` delivers the reset mails the server
/// queued in the default SQLite file: each token works once over HTTP, and
/// a mail is delivered once.
#[tokio::test]
async fn reset_mails_delivers_a_token_the_server_accepts_once() {
    let db = TempDb::new();
    let env = common::process::sqlite_env(&db.dir);
    let server = common::process::ServerProcess::start(&env).await;
    let username = format!("reset-{}@example.com", Uuid::now_v7().simple());
    common::register_and_login(&server.base, &username).await;
    let r = common::post_json(&server.base, "/auth/reset-password", None, json!({"email": username})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deliver = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_banking-example"))
            .args(["reset-mails", "--email", &username])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&db.dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let delivered = deliver();
    let mails: Vec<serde_json::Value> = delivered.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(mails.len(), 1, "one mail, nothing else on stdout: {delivered:?}");
    assert_eq!(mails[0]["to"], json!(username));
    assert!(mails[0]["expires_at"].is_string());
    let token = mails[0]["token"].as_str().unwrap();
    assert_eq!(deliver(), "", "a mail is delivered once");
    let confirm = |password: &'static str| {
        common::post_json(
            &server.base,
            "/auth/reset-password/confirm",
            None,
            json!({"token": token, "new_password": password}),
        )
    };
    assert_eq!(
        confirm("a-new-passphrase-for-reset").await.status(),
        StatusCode::NO_CONTENT
    );
    expect_error(confirm("another-new-passphrase-2").await, StatusCode::BAD_REQUEST).await;
    common::login(&server.base, &username, "a-new-passphrase-for-reset").await;
}
