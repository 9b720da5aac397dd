//! Authentication over HTTP: registration, login, wrong passwords,
//! lockout, token rejection, refresh rotation and reuse detection,
//! logout, password change and reset.

mod common;

use common::Backend;

use banking_example::auth::AuthConfig;
use chrono::Duration;
use common::{expect_error, post_json, read, Api, PASSWORD};
use es_core::ManualClock;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn clock() -> ManualClock {
    ManualClock::at(chrono::Utc::now())
}

async fn me(base: &str, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{base}/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn expect_401(r: reqwest::Response) -> String {
    assert_eq!(
        r.headers().get("www-authenticate").map(|v| v.to_str().unwrap()),
        Some("Bearer")
    );
    expect_error(r, StatusCode::UNAUTHORIZED).await
}

async fn register_login_and_me(backend: Backend) {
    let server = backend.start().await;
    let base = server.url();
    let (status, body) = read(
        post_json(
            &base,
            "/auth/register",
            None,
            json!({"username": "Ada@Example.com", "password": PASSWORD}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let user_id = body["user_id"].as_str().unwrap().to_owned();
    // Unique, case-insensitively.
    let r = post_json(
        &base,
        "/auth/register",
        None,
        json!({"username": "ada@example.COM", "password": PASSWORD}),
    )
    .await;
    expect_error(r, StatusCode::CONFLICT).await;
    let r = post_json(
        &base,
        "/auth/register",
        None,
        json!({"username": "not-an-email", "password": "short"}),
    )
    .await;
    let msg = expect_error(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        msg,
        "username must be an email address, password must be at least 12 characters"
    );
    let r = post_json(
        &base,
        "/auth/register",
        None,
        json!({"username": "b@c.de", "password": "B@C.de"}),
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST).await;

    let pair = common::login(&base, "ADA@example.com", PASSWORD).await;
    assert_eq!(pair["token_type"], "Bearer");
    assert_eq!(pair["expires_in"], 900, "15 minutes by default");
    assert!(pair["refresh_token"].as_str().unwrap().len() >= 43);
    let (status, who) = read(me(&base, pair["access_token"].as_str().unwrap()).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        who,
        json!({"user_id": user_id, "username": "ada@example.com", "roles": ["customer"]})
    );
    server.stop().await.unwrap();
}

async fn wrong_password_and_unknown_user_get_the_same_answer(backend: Backend) {
    let server = backend.start().await;
    let base = server.url();
    let api = Api::new(&server, "c").await;
    let wrong = post_json(
        &base,
        "/auth/login",
        None,
        json!({"username": api.username, "password": "wrong password!"}),
    )
    .await;
    let (s1, b1) = read(wrong).await;
    let unknown = post_json(
        &base,
        "/auth/login",
        None,
        json!({"username": "nobody@test.example", "password": "wrong password!"}),
    )
    .await;
    let (s2, b2) = read(unknown).await;
    assert_eq!(
        (s1, &b1),
        (
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid username or password"})
        )
    );
    assert_eq!((s1, b1), (s2, b2));
    // Reset requests answer alike too.
    for email in [api.username.as_str(), "nobody@test.example"] {
        let r = post_json(&base, "/auth/reset-password", None, json!({"email": email})).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(r.text().await.unwrap(), "");
    }
    server.stop().await.unwrap();
}

async fn lockout_after_max_attempts_then_expiry(backend: Backend) {
    let clock = clock();
    let mut config = common::config();
    config.auth.max_login_attempts = 3;
    let server = backend.start_with_clock(config, clock.clone()).await;
    let base = server.url();
    let api = Api::new(&server, "c").await;
    let attempt = |password: &'static str, user: String| {
        let base = base.clone();
        async move {
            post_json(
                &base,
                "/auth/login",
                None,
                json!({"username": user, "password": password}),
            )
            .await
        }
    };
    for _ in 0..3 {
        expect_error(
            attempt("wrong password!", api.username.clone()).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    // Locked: even the right password is refused.
    let r = attempt(PASSWORD, api.username.clone()).await;
    assert!(r.headers().contains_key("retry-after"));
    let msg = expect_error(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(msg, "too many failed login attempts; try again later");
    // Unknown usernames lock the same way (no enumeration).
    for _ in 0..3 {
        expect_error(
            attempt("wrong password!", "ghost@test.example".into()).await,
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    expect_error(
        attempt("wrong password!", "ghost@test.example".into()).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    clock.advance(Duration::minutes(4));
    expect_error(
        attempt(PASSWORD, api.username.clone()).await,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    clock.advance(Duration::minutes(1) + Duration::seconds(1));
    let (status, _) = read(attempt(PASSWORD, api.username.clone()).await).await;
    assert_eq!(status, StatusCode::OK, "lockout expired");
    server.stop().await.unwrap();
}

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

async fn expired_forged_alg_none_and_other_algorithm_tokens_are_rejected(backend: Backend) {
    let clock = clock();
    let server = backend.start_with_clock(common::config(), clock.clone()).await;
    let base = server.url();
    let api = Api::new(&server, "c").await;
    assert_eq!(me(&base, &api.token).await.status(), StatusCode::OK);

    let no_token = reqwest::get(format!("{base}/auth/me")).await.unwrap();
    assert_eq!(expect_401(no_token).await, "missing bearer token");
    assert_eq!(expect_401(me(&base, "garbage").await).await, "invalid token");
    // An account route without a token is refused too.
    let r = reqwest::Client::new()
        .get(format!("{base}/accounts"))
        .header("x-client-id", "c")
        .send()
        .await
        .unwrap();
    expect_401(r).await;

    let payload = api.token.split('.').nth(1).unwrap().to_owned();
    let claims: Value = {
        use base64::Engine as _;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&payload)
                .unwrap(),
        )
        .unwrap()
    };
    // Forged: right claims, signed with another key.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another"),
    )
    .unwrap();
    assert_eq!(expect_401(me(&base, &forged).await).await, "invalid token");
    // Role escalation by editing the payload breaks the signature.
    let mut admin = claims.clone();
    admin["roles"] = json!(["admin"]);
    let parts: Vec<&str> = api.token.split('.').collect();
    let edited = format!("{}.{}.{}", parts[0], b64(&admin), parts[2]);
    expect_401(me(&base, &edited).await).await;
    // alg none, with and without a signature.
    let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
    expect_401(me(&base, &none).await).await;
    // Another algorithm with the right secret.
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&common::auth_config().jwt_secret),
    )
    .unwrap();
    expect_401(me(&base, &hs512).await).await;
    // Not yet valid.
    let mut future = claims.clone();
    future["nbf"] = json!(claims["iat"].as_i64().unwrap() + 3600);
    let early = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &future,
        &jsonwebtoken::EncodingKey::from_secret(&common::auth_config().jwt_secret),
    )
    .unwrap();
    expect_401(me(&base, &early).await).await;
    // Expired: 15 minutes later, to the second (no leeway by default).
    clock.advance(Duration::seconds(899));
    let (status, _) = read(me(&base, &api.token).await).await;
    assert_eq!(status, StatusCode::OK, "valid in its last second");
    clock.advance(Duration::seconds(1));
    assert_eq!(expect_401(me(&base, &api.token).await).await, "token expired");
    server.stop().await.unwrap();
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let server = backend.start().await;
    let base = server.url();
    let api = Api::new(&server, "c").await;
    let (status, second) = read(
        post_json(
            &base,
            "/auth/refresh",
            None,
            json!({"refresh_token": api.refresh_token}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_ne!(second["refresh_token"], api.refresh_token.as_str());
    assert_eq!(
        me(&base, second["access_token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
    // The first token was rotated away: using it again is theft.
    let reuse = post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": api.refresh_token}),
    )
    .await;
    assert_eq!(expect_401(reuse).await, "invalid refresh token");
    // ... and the whole family is revoked, including the newest token.
    let r = post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": second["refresh_token"]}),
    )
    .await;
    expect_401(r).await;
    let r = post_json(&base, "/auth/refresh", None, json!({"refresh_token": "made-up"})).await;
    expect_401(r).await;
    server.stop().await.unwrap();
}

async fn logout_revokes_the_access_and_refresh_tokens(backend: Backend) {
    let server = backend.start().await;
    let base = server.url();
    let api = Api::new(&server, "c").await;
    let other = common::login(&base, &api.username, PASSWORD).await;
    let r = post_json(&base, "/auth/logout", Some(&api.token), json!({})).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(expect_401(me(&base, &api.token).await).await, "token revoked");
    expect_401(api.get("/accounts").await).await;
    let r = post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": api.refresh_token}),
    )
    .await;
    expect_401(r).await;
    // Another session of the same user is unaffected.
    assert_eq!(
        me(&base, other["access_token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
    server.stop().await.unwrap();
}

async fn password_change_revokes_other_sessions(backend: Backend) {
    let server = backend.start().await;
    let base = server.url();
    let api = Api::new(&server, "c").await;
    let other = common::login(&base, &api.username, PASSWORD).await;
    let new_password = "a completely new passphrase";
    let r = post_json(
        &base,
        "/auth/change-password",
        Some(&api.token),
        json!({"current_password": "wrong one!!!!", "new_password": new_password}),
    )
    .await;
    expect_401(r).await;
    let r = post_json(
        &base,
        "/auth/change-password",
        Some(&api.token),
        json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await;
    expect_error(r, StatusCode::BAD_REQUEST).await;
    let r = post_json(
        &base,
        "/auth/change-password",
        Some(&api.token),
        json!({"current_password": PASSWORD, "new_password": new_password}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": other["refresh_token"]}),
    )
    .await;
    expect_401(r).await;
    let (status, _) = read(
        post_json(
            &base,
            "/auth/refresh",
            None,
            json!({"refresh_token": api.refresh_token}),
        )
        .await,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the session that changed the password continues"
    );
    let r = post_json(
        &base,
        "/auth/login",
        None,
        json!({"username": api.username, "password": PASSWORD}),
    )
    .await;
    expect_401(r).await;
    common::login(&base, &api.username, new_password).await;
    server.stop().await.unwrap();
}

async fn reset_tokens_are_single_use_and_expire(backend: Backend) {
    let clock = clock();
    let server = backend.start_with_clock(common::config(), clock.clone()).await;
    let base = server.url();
    let api = Api::new(&server, "c").await;
    let r = post_json(
        &base,
        "/auth/reset-password",
        None,
        json!({"email": api.username.to_uppercase()}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mails = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    assert_eq!(mails.len(), 1);
    let token = mails[0].token.clone();
    let new_password = "reset passphrase number one";
    let confirm = |token: String, password: &'static str| {
        let base = base.clone();
        async move {
            post_json(
                &base,
                "/auth/reset-password/confirm",
                None,
                json!({"token": token, "new_password": password}),
            )
            .await
        }
    };
    assert_eq!(
        confirm(token.clone(), new_password).await.status(),
        StatusCode::NO_CONTENT
    );
    let msg = expect_error(confirm(token, "another passphrase 2").await, StatusCode::BAD_REQUEST).await;
    assert_eq!(msg, "invalid or expired reset token");
    // Every session was revoked; the new password works.
    let r = post_json(
        &base,
        "/auth/refresh",
        None,
        json!({"refresh_token": api.refresh_token}),
    )
    .await;
    expect_401(r).await;
    common::login(&base, &api.username, new_password).await;
    // An expired token is refused.
    post_json(&base, "/auth/reset-password", None, json!({"email": api.username})).await;
    let mails = server.state.auth.take_reset_mails(&api.username).await.unwrap();
    assert_eq!(mails.len(), 1, "the first mail was delivered already");
    clock.advance(Duration::minutes(31));
    let r = confirm(mails[0].token.clone(), "another passphrase 2").await;
    expect_error(r, StatusCode::BAD_REQUEST).await;
    common::login(&base, &api.username, new_password).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn auth_routes_have_their_own_rate_limit() {
    let mut config = common::config();
    config.auth = AuthConfig {
        rate_limit_requests: 3,
        ..common::auth_config()
    };
    let server = common::start_with(config).await;
    let base = server.url();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = post_json(
            &base,
            "/auth/login",
            None,
            json!({"username": "x@test.example", "password": "whatever pass"}),
        )
        .await;
        statuses.push(r.status());
    }
    assert_eq!(statuses[..3], [StatusCode::UNAUTHORIZED; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    server.stop().await.unwrap();
}

crate::on_every_backend!(
    register_login_and_me,
    wrong_password_and_unknown_user_get_the_same_answer,
    lockout_after_max_attempts_then_expiry,
    expired_forged_alg_none_and_other_algorithm_tokens_are_rejected,
    refresh_rotates_and_reuse_revokes_the_family,
    logout_revokes_the_access_and_refresh_tokens,
    password_change_revokes_other_sessions,
    reset_tokens_are_single_use_and_expire,
);
