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
//! | an `Idempotency-Key` header | 409 (the key is in use by a request in flight, `Retry-After`), 422 (the key was used for another request); `idempotent-replayed` on a replayed answer |
//! | every operation | the optional `x-request-id` request header (1-128 printable ASCII characters; any other value is replaced, never refused); on every answer `x-request-id`, `x-request-id-replaced` when it was replaced, and `x-ratelimit-remaining` while a rate limit applies |
//! | a JSON request body | `x-validation-warnings` on a successful answer when the validation warned |

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

/// The optional `x-request-id` request header.
fn request_id_parameter() -> Value {
    json!({
        "name": super::headers::REQUEST_ID_HEADER,
        "in": "header",
        "required": false,
        "description": "Correlation id, echoed back and kept in the events' metadata; 1-128 printable ASCII \
                        characters (generated when absent; any other value is replaced and the answer says so \
                        in x-request-id-replaced)",
        // Any value is accepted (an unacceptable one is replaced), so the
        // schema constrains nothing; the kept ones are described above.
        "schema": {"type": "string"},
        "x-kept-when": {"minLength": 1, "maxLength": super::edge::MAX_REQUEST_ID_LEN, "pattern": "^[ -~]+$"},
    })
}

/// Response headers every answer (or, with `success_only`, every
/// successful one) may carry, by name: description and schema.
fn response_headers(idempotent: bool, validated: bool) -> Vec<(&'static str, &'static str, Value)> {
    let text = || json!({"type": "string"});
    let mut headers = vec![
        (
            super::headers::REQUEST_ID_HEADER,
            "The request's x-request-id, or the one generated for it",
            text(),
        ),
        (
            super::edge::REQUEST_ID_REPLACED_HEADER,
            "Present (\"true\") when the request's x-request-id was not acceptable and was replaced",
            text(),
        ),
        (
            super::headers::RATE_LIMIT_REMAINING_HEADER,
            "Requests left before the rate limit applies (while rate limiting is on)",
            json!({"type": "integer", "minimum": 0}),
        ),
    ];
    if idempotent {
        headers.push((
            super::headers::REPLAYED_HEADER,
            "Present (\"true\") when the answer is the stored answer of an earlier request with this key",
            text(),
        ));
    }
    if validated {
        headers.push((
            super::headers::WARNINGS_HEADER,
            "Validation warnings (the request was accepted)",
            text(),
        ));
    }
    headers
}

/// Adds `headers` to `response` (keeping any it documents already).
fn add_headers(response: &mut Value, headers: &[(&'static str, &'static str, Value)]) {
    let Some(response) = response.as_object_mut() else {
        return;
    };
    let documented = response.entry("headers").or_insert_with(|| json!({})).as_object_mut();
    if let Some(documented) = documented {
        for (name, description, schema) in headers {
            documented
                .entry(*name)
                .or_insert_with(|| json!({"description": description, "schema": schema}));
        }
    }
}

/// Completes one operation of `path`.
fn complete_operation(path: &str, op: &mut Map<String, Value>) {
    let mut headers = Vec::new();
    let params = op.entry("parameters").or_insert_with(|| json!([]));
    if let Value::Array(params) = params {
        for p in params.iter_mut().filter(|p| p["in"] == "header") {
            let name = p["name"].as_str().unwrap_or_default().to_ascii_lowercase();
            if let Some((_, max)) = VISIBLE_ASCII_HEADERS.iter().find(|(h, _)| *h == name) {
                p["schema"] = visible_ascii(*max);
            }
            headers.push(name);
        }
        if !headers.iter().any(|h| h == super::headers::REQUEST_ID_HEADER) {
            params.push(request_id_parameter());
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
    let idempotent = headers.iter().any(|h| h == super::headers::IDEMPOTENCY_KEY_HEADER);
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
        if let Some(unauthorized) = responses.get_mut("401") {
            add_headers(
                unauthorized,
                &[(
                    "WWW-Authenticate",
                    "The authentication scheme: Bearer",
                    json!({"type": "string", "enum": ["Bearer"]}),
                )],
            );
        }
    }
    if !headers.is_empty()
        && headers
            .iter()
            .any(|h| VISIBLE_ASCII_HEADERS.iter().any(|(v, _)| v == h))
    {
        add(responses, "400", "A header is missing or invalid", false);
    }
    if idempotent {
        add(
            responses,
            "409",
            "The Idempotency-Key is in use by a request in flight (retry after Retry-After), or a conflict of the \
             command",
            true,
        );
        if let Some(conflict) = responses.get_mut("409") {
            add_headers(
                conflict,
                &[(
                    "Retry-After",
                    "Seconds to wait before retrying, when the key is in use by a request in flight",
                    json!({"type": "integer", "minimum": 1}),
                )],
            );
        }
        add(
            responses,
            "422",
            "The Idempotency-Key was used for another request",
            false,
        );
    }
    let every = response_headers(false, false);
    let success = response_headers(idempotent, has_body);
    for (status, response) in responses.iter_mut() {
        add_headers(response, if status.starts_with('2') { &success } else { &every });
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
