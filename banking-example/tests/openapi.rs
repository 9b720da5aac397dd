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
