//! The OpenAPI document is valid enough to use and describes exactly the
//! routes the server answers: the router is built from
//! `route_table()`, whose routes must each be documented; every documented
//! operation must be answered by the running server (not its 404
//! fallback, not 405).

mod common;

use std::collections::BTreeSet;

use banking_example::api::routes::route_table;
use common::read;
use reqwest::{Method, StatusCode};
use serde_json::Value;

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k == "$ref" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_owned());
                    }
                }
                collect_refs(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// Whether the server routes `method path` to a handler: the router's
/// fallback answers exactly `404 {"error": "not found"}`, an unrouted
/// method 405.
async fn routed(base: &str, method: &str, path: &str) -> bool {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    // Path parameters get a well-formed value (an unknown account).
    let path = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
    // With a client id, so that the per-client rate limit layer of
    // /accounts lets the request reach the router.
    let mut rb = reqwest::Client::new()
        .request(method.clone(), format!("{base}{path}"))
        .header("x-client-id", "openapi-test");
    if method == Method::POST {
        rb = rb.json(&serde_json::json!({}));
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(!status.is_server_error(), "{method} {path}: {status} {body}");
    let fallback = status == StatusCode::NOT_FOUND && body == r#"{"error":"not found"}"#;
    status != StatusCode::METHOD_NOT_ALLOWED && !fallback
}

#[tokio::test]
async fn document_and_router_have_the_same_routes() {
    let server = common::start().await;
    let base = server.url();
    let r = reqwest::get(format!("{base}/openapi.json")).await.unwrap();
    let (status, doc) = read(r).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["info"]["title"].is_string());

    let table: BTreeSet<(String, String)> = route_table()
        .iter()
        .map(|r| (r.verb.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(table.len(), route_table().len(), "a route is listed twice");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no response"
            );
            documented.insert((method.clone(), path.clone()));
        }
    }
    let undocumented: Vec<_> = table.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&table).collect();
    assert!(
        unrouted.is_empty(),
        "documented but not in the route table: {unrouted:?}"
    );

    // The server answers every documented operation...
    for (method, path) in &documented {
        assert!(
            routed(&base, method, path).await,
            "{method} {path} is documented but not routed"
        );
    }
    // ... and the check can tell: an unknown path and a wrong method are not routed.
    assert!(!routed(&base, "get", "/no/such/route").await);
    assert!(!routed(&base, "post", "/health").await);
    assert!(!routed(&base, "get", "/accounts/{id}/deposit").await);

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("odd $ref {r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "unresolved $ref {r}");
    }
    server.stop().await.unwrap();
}

/// The document says what the middleware and the extractors answer:
/// every operation may time out (408) or be rate limited (429), every secured one answers
/// 401, every one with a JSON body 400/413/415; the header formats and
/// the bearer scheme are described.
#[tokio::test]
async fn every_operation_documents_the_shared_statuses_and_header_rules() {
    let server = common::start().await;
    let (_, doc) = read(reqwest::get(format!("{}/openapi.json", server.url())).await.unwrap()).await;
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&Value::from("http"), &Value::from("bearer"))
    );
    let mut headers = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            let has = |s: &str| responses.contains_key(s);
            assert!(has("408"), "{method} {path}: no 408 (the request timeout)");
            assert!(has("429"), "{method} {path}: no 429");
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                assert!(has("401"), "{method} {path}: secured, no 401");
                assert!(
                    responses["401"]["headers"].get("WWW-Authenticate").is_some(),
                    "{method} {path}: 401 without WWW-Authenticate"
                );
            }
            // The correlation header, asked for and answered everywhere.
            let request_id = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == "x-request-id" && p["in"] == "header")
                .unwrap_or_else(|| panic!("{method} {path}: no x-request-id parameter"));
            assert_eq!(request_id["x-kept-when"]["maxLength"], 128, "{method} {path}");
            for (status, response) in responses {
                assert!(
                    response["headers"].get("x-request-id").is_some(),
                    "{method} {path} {status}: x-request-id not documented"
                );
            }
            if op["parameters"].as_array().into_iter().flatten().any(|p| {
                p["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("idempotency-key"))
            }) {
                assert!(
                    responses["409"]["headers"].get("Retry-After").is_some(),
                    "{method} {path}: 409 in progress without Retry-After"
                );
            }
            if op.get("requestBody").is_some() {
                for s in ["400", "413", "415"] {
                    assert!(has(s), "{method} {path}: a body, no {s}");
                }
            }
            for p in op["parameters"].as_array().into_iter().flatten() {
                if p["in"] == "path" {
                    let name = p["name"].as_str().unwrap();
                    assert!(
                        path.contains(&format!("{{{name}}}")),
                        "{method} {path}: path parameter {p} not in the path"
                    );
                    assert_eq!(p["required"], true, "{method} {path}: {p}");
                }
                let (name, schema) = (p["name"].as_str().unwrap().to_ascii_lowercase(), &p["schema"]);
                let max = match name.as_str() {
                    "x-client-id" => 128,
                    "idempotency-key" => 255,
                    _ => continue,
                };
                headers += 1;
                assert_eq!(
                    p["required"],
                    Value::from(name == "x-client-id"),
                    "{method} {path}: {p}"
                );
                assert_eq!(schema["minLength"], 1, "{method} {path}: {p}");
                assert_eq!(schema["maxLength"], max, "{method} {path}: {p}");
                assert_eq!(schema["pattern"], "^[!-~]+$", "{method} {path}: {p}");
                assert!(has("400"), "{method} {path}: a header rule, no 400");
            }
        }
    }
    assert!(headers >= 10, "{headers} header parameters seen");
    // The pages of the two lists are query parameters.
    for (path, also) in [("/accounts", Some("x-client-id")), ("/auth/users", None)] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for name in ["limit", "offset"] {
            assert!(
                params.iter().any(|p| p["name"] == name && p["in"] == "query"),
                "GET {path}: no query parameter {name}: {params:?}"
            );
        }
        if let Some(name) = also {
            assert!(
                params.iter().any(|p| p["name"] == name),
                "GET {path}: no {name}: {params:?}"
            );
        }
    }
    server.stop().await.unwrap();
}

/// The amount schemas carry the server's own `MAX_TRANSACTION_AMOUNT`,
/// so a request valid by the document is not refused for its size.
#[tokio::test]
async fn amount_schemas_carry_the_configured_maximum() {
    let mut config = common::config();
    config.max_transaction_amount = banking_example::domain::Money::from_cents(5_000);
    let server = common::start_with(config).await;
    let (_, doc) = read(reqwest::get(format!("{}/openapi.json", server.url())).await.unwrap()).await;
    for name in ["PositiveAmount", "OpeningBalance"] {
        assert_eq!(
            doc["components"]["schemas"][name]["maximum"].as_f64(),
            Some(50.0),
            "{name}: {}",
            doc["components"]["schemas"][name]
        );
        // Its examples are amounts the server accepts.
        let examples = doc["components"]["schemas"][name]["examples"].as_array().unwrap();
        assert!(!examples.is_empty(), "{name}");
        for example in examples {
            assert!(example.as_f64().is_some_and(|e| e <= 50.0), "{name}: {example}");
        }
    }
    let api = common::Api::new(&server, "max").await;
    let r = api
        .post(
            "/accounts",
            serde_json::json!({"owner_name": "Max", "initial_balance": 50.01}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "above the maximum the document states"
    );
    let r = api
        .post(
            "/accounts",
            serde_json::json!({"owner_name": "Max", "initial_balance": 50}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "at the maximum");
}
