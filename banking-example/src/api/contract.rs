//! The rules every operation shares, written into the OpenAPI document
//! once rather than on each handler: the status codes the middleware and
//! the extractors can answer with, the constraints of the headers, and
//! the `Retry-After` of 429 and 503.
//!
//! | when | adds |
//! | --- | --- |
//! | every operation | 408 (no answer within `REQUEST_TIMEOUT_SECS`), 429 (rate limited, `Retry-After`) |
//! | every operation but `/health`, `/openapi.json`, `/docs` | 503 (a backend is unavailable, or hashing is at capacity; `Retry-After` when retrying helps) |
//! | a JSON request body | 400 (malformed or invalid), 413 (over the body limit), 415 (not `application/json`) |
//! | bearer security | 401 (`WWW-Authenticate: Bearer`) |
//! | an `x-client-id` or `Idempotency-Key` header | 400 (missing or invalid header); the header's schema: 1-128 or 1-255 visible ASCII characters |
//! | an `Idempotency-Key` header | 409 (the key is in use by a request in flight), 422 (the key was used for another request) |

use serde_json::{json, Map, Value};

/// Operations that never touch a backend (no 503).
const NO_BACKEND: &[&str] = &["/health", "/openapi.json", "/docs"];

/// Headers with a fixed format: name, longest length.
const VISIBLE_ASCII_HEADERS: &[(&str, usize)] = &[("x-client-id", 128), ("idempotency-key", 255)];

/// 1 to `max` visible ASCII characters (`!` to `~`, no spaces).
fn visible_ascii(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": "^[!-~]+$"})
}

fn error_response(description: &str, retry_after: bool) -> Value {
    let mut response = json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    });
    if retry_after {
        response["headers"] = json!({"Retry-After": {
            "description": "Seconds to wait before retrying",
            "schema": {"type": "integer", "minimum": 1},
        }});
    }
    response
}

fn add(responses: &mut Map<String, Value>, status: &str, description: &str, retry_after: bool) {
    responses
        .entry(status)
        .or_insert_with(|| error_response(description, retry_after));
}

/// Completes one operation of `path`.
fn complete_operation(path: &str, op: &mut Map<String, Value>) {
    let mut headers = Vec::new();
    if let Some(Value::Array(params)) = op.get_mut("parameters") {
        for p in params.iter_mut().filter(|p| p["in"] == "header") {
            let name = p["name"].as_str().unwrap_or_default().to_ascii_lowercase();
            if let Some((_, max)) = VISIBLE_ASCII_HEADERS.iter().find(|(h, _)| *h == name) {
                p["schema"] = visible_ascii(*max);
            }
            headers.push(name);
        }
    }
    let has_body = op.contains_key("requestBody");
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|r| !r.is_empty())));
    let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
        return;
    };
    add(
        responses,
        "408",
        "No answer within the request timeout (REQUEST_TIMEOUT_SECS)",
        false,
    );
    add(responses, "429", "Rate limited", true);
    if !NO_BACKEND.contains(&path) {
        add(
            responses,
            "503",
            "A backend is unavailable, or password hashing is at capacity",
            true,
        );
    }
    if has_body {
        add(responses, "400", "Malformed JSON or an invalid body", false);
        add(responses, "413", "Body over the size limit", false);
        add(responses, "415", "Content-Type is not application/json", false);
    }
    if secured {
        add(responses, "401", "Missing, invalid, expired or revoked token", false);
    }
    if !headers.is_empty()
        && headers
            .iter()
            .any(|h| VISIBLE_ASCII_HEADERS.iter().any(|(v, _)| v == h))
    {
        add(responses, "400", "A header is missing or invalid", false);
    }
    if headers.iter().any(|h| h == "idempotency-key") {
        add(
            responses,
            "409",
            "The Idempotency-Key is in use by a request in flight",
            false,
        );
        add(
            responses,
            "422",
            "The Idempotency-Key was used for another request",
            false,
        );
    }
}

/// Writes the shared rules into every operation of `doc` (an OpenAPI 3
/// document as JSON).
pub fn complete(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for (method, op) in item.iter_mut() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            if let Some(op) = op.as_object_mut() {
                complete_operation(path, op);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_statuses_and_header_rules_are_written_in() {
        let mut doc = json!({"paths": {
            "/accounts/{id}/deposit": {"post": {
                "security": [{"bearer": []}],
                "requestBody": {"content": {}},
                "parameters": [
                    {"name": "x-client-id", "in": "header", "required": true, "schema": {"type": "string"}},
                    {"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "ok"}, "400": {"description": "kept"}},
            }},
            "/health": {"get": {"responses": {"200": {"description": "ok"}}}},
        }});
        complete(&mut doc);
        let op = &doc["paths"]["/accounts/{id}/deposit"]["post"];
        let statuses: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        assert_eq!(
            statuses,
            ["200", "400", "401", "408", "409", "413", "415", "422", "429", "503"]
        );
        assert_eq!(op["responses"]["400"]["description"], "kept");
        assert_eq!(op["parameters"][0]["schema"]["maxLength"], 128);
        assert_eq!(op["parameters"][1]["schema"]["maxLength"], 255);
        assert_eq!(op["parameters"][1]["schema"]["pattern"], "^[!-~]+$");
        let health: Vec<&String> = doc["paths"]["/health"]["get"]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(health, ["200", "408", "429"]);
    }
}
