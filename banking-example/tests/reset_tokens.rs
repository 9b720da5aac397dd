//! Password reset tokens: the outbox never holds a usable token and is
//! emptied by delivery, expired tokens and mails are purged, a reset or a
//! password change ends every other reset token of the user, and a
//! password the policy refuses leaves the token usable. On every backend.

mod common;

use std::sync::Arc;

use banking_example::auth::reset::{MailError, Mailer, ResetMail, MAILS_IN_FLIGHT};
use banking_example::auth::{AuthService, AuthStores};
use banking_example::RunningServer;
use chrono::Duration;
use common::{expect_error, post_json, Api, Backend};
use es_core::{ManualClock, SystemClock};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The stored reset mails (each row as JSON) and the number of stored
/// reset tokens, read from the database; `None` in memory.
async fn stored(server: &RunningServer) -> Option<(Vec<Value>, i64)> {
    let stores = server.state.auth.stores();
    if let Some(pg) = &stores.pg {
        let s = pg.schema();
        let mails: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT row_to_json(m)::text FROM {s}.auth_reset_mails m ORDER BY id"
        ))
        .fetch_all(pg.pool())
        .await
        .unwrap();
        let tokens: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {s}.auth_password_resets"))
            .fetch_one(pg.pool())
            .await
            .unwrap();
        return Some((mails.iter().map(|m| serde_json::from_str(m).unwrap()).collect(), tokens));
    }
    if let Some(sqlite) = &stores.sqlite {
        let mails: Vec<String> = sqlx::query_scalar(
            "SELECT json_object('id', id, 'recipient', recipient, 'token_seed', token_seed, 'expires_at', expires_at) \
             FROM auth_reset_mails ORDER BY id",
        )
        .fetch_all(sqlite.pool())
        .await
        .unwrap();
        let tokens: i64 = sqlx::query_scalar("SELECT count(*) FROM auth_password_resets")
            .fetch_one(sqlite.pool())
            .await
            .unwrap();
        return Some((mails.iter().map(|m| serde_json::from_str(m).unwrap()).collect(), tokens));
    }
    None
}

async fn request_reset(api: &Api) {
    let r = post_json(&api.base, "/auth/reset-password", None, json!({"email": api.username})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

async fn confirm(base: &str, token: &str, password: &str) -> reqwest::Response {
    post_json(
        base,
        "/auth/reset-password/confirm",
        None,
        json!({"token": token, "new_password": password}),
    )
    .await
}

async fn the_outbox_holds_no_usable_token_and_delivery_empties_it(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "reset").await;
    request_reset(&api).await;
    let before = stored(&server).await;
    let mails = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    assert_eq!(mails.len(), 1);
    let token = &mails[0].token;
    if let Some((rows, _)) = before {
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[0];
        assert!(!row.to_string().contains(token.as_str()), "the token is stored: {row}");
        // What is stored is no token.
        let seed = row["token_seed"].as_str().unwrap();
        let msg = expect_error(
            confirm(&api.base, seed, "a brand new passphrase").await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(msg, "invalid or expired reset token");
        let (rows, _) = stored(&server).await.unwrap();
        assert!(rows.is_empty(), "a delivered mail is deleted: {rows:?}");
    }
    assert!(
        server
            .state
            .auth
            .take_reset_mails(&api.username)
            .await
            .unwrap()
            .is_empty(),
        "delivered once"
    );
    assert_eq!(
        confirm(&api.base, token, "a brand new passphrase").await.status(),
        StatusCode::NO_CONTENT
    );
    server.stop().await.unwrap();
}

async fn expired_reset_tokens_and_mails_are_purged(backend: Backend) {
    let clock = ManualClock::at(chrono::Utc::now());
    let server = backend.start_with_clock(common::config(), clock.clone()).await;
    let ada = Api::new(&server, "reset").await;
    let bob = Api::new(&server, "reset").await;
    request_reset(&ada).await;
    request_reset(&bob).await;
    server.state.auth.take_reset_mails(&bob.username).await.unwrap();
    clock.advance(Duration::minutes(31));
    // The next request purges what expired: Ada's undelivered mail, and
    // both tokens.
    request_reset(&bob).await;
    if let Some((rows, tokens)) = stored(&server).await {
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["recipient"], json!(bob.username));
        assert_eq!(tokens, 1, "only the new token is kept");
    }
    assert!(server
        .state
        .auth
        .take_reset_mails(&ada.username)
        .await
        .unwrap()
        .is_empty());
    let mails = server.state.auth.take_reset_mails(&bob.username).await.unwrap();
    assert_eq!(mails.len(), 1);
    assert_eq!(
        confirm(&bob.base, &mails[0].token, "a brand new passphrase")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    server.stop().await.unwrap();
}

async fn a_reset_or_password_change_ends_every_other_reset_token(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "reset").await;
    request_reset(&api).await;
    request_reset(&api).await;
    let mails = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    assert_eq!(mails.len(), 2);
    assert_eq!(
        confirm(&api.base, &mails[0].token, "first new passphrase")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    let msg = expect_error(
        confirm(&api.base, &mails[1].token, "second new passphrase").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "invalid or expired reset token", "the reset ended the other token");

    // A password change ends the delivered tokens and the pending mails.
    request_reset(&api).await;
    let delivered = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    request_reset(&api).await;
    let tokens = common::login(&api.base, &api.username, "first new passphrase").await;
    let r = post_json(
        &api.base,
        "/auth/change-password",
        tokens["access_token"].as_str(),
        json!({"current_password": "first new passphrase", "new_password": "changed passphrase"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        confirm(&api.base, &delivered[0].token, "third new passphrase").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        server
            .state
            .auth
            .take_reset_mails(&api.username)
            .await
            .unwrap()
            .is_empty(),
        "pending mails are dropped"
    );
    if let Some((rows, tokens)) = stored(&server).await {
        assert_eq!((rows.len(), tokens), (0, 0), "{rows:?}");
    }
    common::login(&api.base, &api.username, "changed passphrase").await;
    server.stop().await.unwrap();
}

async fn a_refused_password_leaves_the_reset_token_usable(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "reset").await;
    request_reset(&api).await;
    let mails = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    let token = &mails[0].token;
    let msg = expect_error(confirm(&api.base, token, "short").await, StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("password"), "{msg}");
    let msg = expect_error(confirm(&api.base, token, &api.username).await, StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("password"), "{msg}");
    assert_eq!(
        confirm(&api.base, token, "a strong new passphrase").await.status(),
        StatusCode::NO_CONTENT,
        "the refused passwords did not use the token up"
    );
    expect_error(
        confirm(&api.base, token, "another new passphrase").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    common::login(&api.base, &api.username, "a strong new passphrase").await;
    server.stop().await.unwrap();
}

crate::on_every_backend!(
    the_outbox_holds_no_usable_token_and_delivery_empties_it,
    expired_reset_tokens_and_mails_are_purged,
    a_reset_or_password_change_ends_every_other_reset_token,
    a_refused_password_leaves_the_reset_token_usable,
);

/// A mailer that hands over what it is given, or refuses everything.
struct Recording {
    sent: tokio::sync::mpsc::UnboundedSender<ResetMail>,
    refuse: bool,
}

#[async_trait::async_trait]
impl Mailer for Recording {
    async fn send_reset(&self, mail: &ResetMail) -> Result<(), MailError> {
        if self.refuse {
            return Err(MailError::Unavailable {
                reason: "relay down".into(),
            });
        }
        self.sent
            .send(mail.clone())
            .map_err(|e| MailError::Unavailable { reason: e.to_string() })
    }
}

fn service_with(refuse: bool) -> (AuthService, tokio::sync::mpsc::UnboundedReceiver<ResetMail>) {
    let config = common::auth_config();
    let stores = AuthStores::in_memory(&config);
    let (sent, received) = tokio::sync::mpsc::unbounded_channel();
    let auth = AuthService::new(config, Arc::new(SystemClock), stores)
        .unwrap()
        .with_mailer(Arc::new(Recording { sent, refuse }));
    (auth, received)
}

#[tokio::test]
async fn a_plugged_in_mailer_is_handed_the_reset_mail_instead_of_the_outbox() {
    let (auth, mut received) = service_with(false);
    auth.register("ann@example.com", "a long enough passphrase")
        .await
        .unwrap();
    auth.request_reset("nobody@example.com").await.unwrap();
    auth.request_reset("Ann@Example.com").await.unwrap();
    let mail = tokio::time::timeout(std::time::Duration::from_secs(30), received.recv())
        .await
        .expect("the mail is sent")
        .unwrap();
    assert_eq!(mail.to, "ann@example.com");
    assert!(mail.expires_at > chrono::Utc::now());
    assert!(
        auth.take_reset_mails("ann@example.com").await.unwrap().is_empty(),
        "nothing waits in the outbox"
    );
    auth.confirm_reset(&mail.token, "a brand new passphrase").await.unwrap();
    auth.login("ann@example.com", "a brand new passphrase", "test")
        .await
        .unwrap();
    assert!(
        received.try_recv().is_err(),
        "no mail for an unknown address, one for Ann"
    );
}

#[tokio::test]
async fn a_mailer_that_fails_leaves_the_request_answered_and_nothing_queued() {
    let (auth, _received) = service_with(true);
    auth.register("bob@example.com", "a long enough passphrase")
        .await
        .unwrap();
    auth.request_reset("bob@example.com").await.unwrap();
    assert!(auth.take_reset_mails("bob@example.com").await.unwrap().is_empty());
    // The password is unchanged and a later request works the same way.
    auth.login("bob@example.com", "a long enough passphrase", "test")
        .await
        .unwrap();
    auth.request_reset("bob@example.com").await.unwrap();
}

/// A mailer that never finishes a send; counts the sends started.
struct Hung(Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl Mailer for Hung {
    async fn send_reset(&self, _mail: &ResetMail) -> Result<(), MailError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_hung_mailer_holds_a_bounded_number_of_sends() {
    let config = common::auth_config();
    let stores = AuthStores::in_memory(&config);
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let auth = AuthService::new(config, Arc::new(SystemClock), stores)
        .unwrap()
        .with_mailer(Arc::new(Hung(Arc::clone(&started))));
    auth.register("cat@example.com", "a long enough passphrase")
        .await
        .unwrap();
    for _ in 0..MAILS_IN_FLIGHT + 8 {
        auth.request_reset("cat@example.com").await.unwrap();
    }
    // Every admitted send gets to run; none past the bound is started.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while started.load(std::sync::atomic::Ordering::SeqCst) < MAILS_IN_FLIGHT {
        assert!(std::time::Instant::now() < deadline, "the admitted sends never ran");
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), MAILS_IN_FLIGHT);
}
