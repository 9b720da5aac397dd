//! Hostile and odd inputs get clear 4xx answers, never a 500.

mod common;

use common::Backend;

use common::{expect_error, read, Api};
use reqwest::StatusCode;
use serde_json::json;

async fn odd_payloads_never_cause_a_500(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "hostile").await;
    let id = api.open("Target", json!(100)).await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<String> = vec![
        deep,
        r#"{"amount": 1e400}"#.into(),
        r#"{"amount": -0}"#.into(),
        r#"{"amount": 0.000000000000000000000000000001}"#.into(),
        r#"{"amount": 123456789012345678901234567890}"#.into(),
        r#"{"amount": NaN}"#.into(),
        r#"{"amount": "1; DROP TABLE events"}"#.into(),
        r#"{"amount": 1, "expected_version": -1}"#.into(),
        r#"{"amount": 1, "expected_version": 1.5}"#.into(),
        r#"{"amount": 1, "amount": 2}"#.into(),
        r#"{"amount": {"$gt": 0}}"#.into(),
        "\u{feff}{\"amount\": 1}".into(),
        String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x01]).into_owned(),
    ];
    for body in bodies {
        let r = api
            .http
            .post(api.url(&format!("/accounts/{id}/deposit")))
            .header("x-client-id", "hostile")
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(
            status.is_client_error(),
            "{status} for {:?}: {text}",
            &body[..body.len().min(40)]
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(parsed["error"].is_string(), "{text}");
    }
    let (_, account) = read(api.get(&format!("/accounts/{id}")).await).await;
    assert_eq!(account["version"], 1, "no hostile request moved money");
    server.stop().await.unwrap();
}

async fn odd_names_and_ids(backend: Backend) {
    let server = backend.start().await;
    let api = Api::new(&server, "names").await;
    let msg = expect_error(
        api.post(
            "/accounts",
            json!({"owner_name": "a".repeat(201), "initial_balance": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "owner_name must be at most 200 characters");
    let msg = expect_error(
        api.post(
            "/accounts",
            json!({"owner_name": "evil\u{0000}name\n", "initial_balance": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(msg, "owner_name must not contain control characters");
    // 200 multi-byte characters are fine, and come back unchanged.
    let name = "é".repeat(199) + "字";
    let (status, body) = read(
        api.post("/accounts", json!({"owner_name": name, "initial_balance": 0}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["owner_name"], name);
    // Surrounding whitespace is trimmed with a warning header.
    let r = api
        .post("/accounts", json!({"owner_name": "  Zoe  ", "initial_balance": 0}))
        .await;
    assert!(r.headers().get("x-validation-warnings").is_some());
    assert_eq!(read(r).await.1["owner_name"], "Zoe");
    for path in [
        "/accounts/..%2F..%2Fetc%2Fpasswd",
        "/accounts/%00",
        "/accounts/' OR 1=1 --",
    ] {
        let r = api.get(path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    server.stop().await.unwrap();
}

crate::on_every_backend!(odd_payloads_never_cause_a_500, odd_names_and_ids,);
