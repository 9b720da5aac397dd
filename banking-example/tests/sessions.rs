//! A stolen access token stops working at once when its session ends:
//! logout (of any token of the session), a password change (other
//! sessions), a reset (every session), refresh-token reuse (the family).
//! On every backend, so in memory and in Redis alike.

mod common;

use common::{expect_error, post_json, read, Api, Backend};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn me(api: &Api, token: &str) -> StatusCode {
    api.http
        .get(api.url("/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn refresh(base: &str, refresh_token: &str) -> (StatusCode, Value) {
    read(post_json(base, "/auth/refresh", None, json!({"refresh_token": refresh_token})).await).await
}

async fn logout_ends_every_access_token_of_the_session(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "sess").await;
    let (status, second) = refresh(&api.base, &api.refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let newer = second["access_token"].as_str().unwrap();
    // Another session of the same user is not touched.
    let other = common::login(&api.base, &api.username, common::PASSWORD).await;
    let r = post_json(&api.base, "/auth/logout", Some(newer), json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&api, newer).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        me(&api, &api.token).await,
        StatusCode::UNAUTHORIZED,
        "the session's older access token (say, a stolen copy) ends with it"
    );
    assert_eq!(me(&api, other["access_token"].as_str().unwrap()).await, StatusCode::OK);
    server.stop().await.unwrap();
}

async fn a_password_change_ends_the_other_sessions_at_once(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "sess").await;
    let thief = common::login(&api.base, &api.username, common::PASSWORD).await;
    let thief_token = thief["access_token"].as_str().unwrap();
    assert_eq!(me(&api, thief_token).await, StatusCode::OK);
    let r = post_json(
        &api.base,
        "/auth/change-password",
        Some(&api.token),
        json!({"current_password": common::PASSWORD, "new_password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        me(&api, thief_token).await,
        StatusCode::UNAUTHORIZED,
        "other session ended at once"
    );
    let (status, _) = refresh(&api.base, thief["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        me(&api, &api.token).await,
        StatusCode::OK,
        "the changing session goes on"
    );
    server.stop().await.unwrap();
}

async fn a_reset_ends_every_session_at_once(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "sess").await;
    let r = post_json(&api.base, "/auth/reset-password", None, json!({"email": api.username})).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mails = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    let r = post_json(
        &api.base,
        "/auth/reset-password/confirm",
        None,
        json!({"token": mails[0].token, "new_password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(&api, &api.token).await, StatusCode::UNAUTHORIZED);
    // A login right after (even in the same second) works.
    let fresh = common::login(&api.base, &api.username, "a brand new passphrase").await;
    assert_eq!(me(&api, fresh["access_token"].as_str().unwrap()).await, StatusCode::OK);
    server.stop().await.unwrap();
}

async fn refresh_token_reuse_ends_the_session_at_once(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "sess").await;
    let (status, rotated) = refresh(&api.base, &api.refresh_token).await;
    assert_eq!(status, StatusCode::OK);
    let current = rotated["access_token"].as_str().unwrap();
    assert_eq!(me(&api, current).await, StatusCode::OK);
    // The old refresh token again: it was copied.
    let (status, _) = refresh(&api.base, &api.refresh_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&api, current).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&api, &api.token).await, StatusCode::UNAUTHORIZED);
    expect_error(api.get("/accounts").await, StatusCode::UNAUTHORIZED).await;
    server.stop().await.unwrap();
}

/// Revocations outlive a restart: a logged-out token and the sessions a
/// password change ended stay refused when the server starts again on
/// the same storage (its tokens still valid by their signature and
/// expiry), while the session that changed the password goes on.
async fn revocations_outlive_a_restart(backend: Backend) {
    let storage = backend.storage().await;
    let server = storage.start(common::config()).await;
    let api = Api::new(&server, "sess").await;
    let logged_out = common::login(&api.base, &api.username, common::PASSWORD).await;
    let logged_out = logged_out["access_token"].as_str().unwrap().to_owned();
    let r = post_json(&api.base, "/auth/logout", Some(&logged_out), json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let other = common::login(&api.base, &api.username, common::PASSWORD).await;
    let other = other["access_token"].as_str().unwrap().to_owned();
    let r = post_json(
        &api.base,
        "/auth/change-password",
        Some(&api.token),
        json!({"current_password": common::PASSWORD, "new_password": "a brand new passphrase"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    server.stop().await.unwrap();

    let server = storage.start(common::config()).await;
    let api = Api {
        base: server.url(),
        ..api
    };
    assert_eq!(me(&api, &logged_out).await, StatusCode::UNAUTHORIZED, "logged out");
    assert_eq!(
        me(&api, &other).await,
        StatusCode::UNAUTHORIZED,
        "ended by the password change"
    );
    assert_eq!(
        me(&api, &api.token).await,
        StatusCode::OK,
        "the changing session goes on"
    );
    server.stop().await.unwrap();
}

crate::on_every_backend!(
    revocations_outlive_a_restart,
    logout_ends_every_access_token_of_the_session,
    a_password_change_ends_the_other_sessions_at_once,
    a_reset_ends_every_session_at_once,
    refresh_token_reuse_ends_the_session_at_once,
);
