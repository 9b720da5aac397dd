//! The OpenAPI document is valid enough to use and covers every route.

mod common;

use banking_example::api::routes::ROUTES;
use common::read;
use reqwest::StatusCode;
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

#[tokio::test]
async fn document_covers_every_route_and_resolves() {
    let server = common::start().await;
    let r = reqwest::get(format!("{}/openapi.json", server.url())).await.unwrap();
    let (status, doc) = read(r).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in ROUTES {
        let op = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"))[*method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"].as_object().is_some_and(|r| !r.is_empty()),
            "{method} {path}"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "the document has operations the router does not"
    );
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("odd $ref {r}"));
        assert!(doc["components"]["schemas"][name].is_object(), "unresolved $ref {r}");
    }
    // Every documented route exists on the server (none answers 404 by route).
    for (method, path) in ROUTES {
        if *method == "get" && !path.contains('{') {
            let r = reqwest::get(format!("{}{path}", server.url())).await.unwrap();
            assert_ne!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
    server.stop().await.unwrap();
}
