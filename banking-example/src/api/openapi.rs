//! The OpenAPI 3 document of every route, and a docs page.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::auth;
use super::state::AppState;
use super::{access, accounts, health, transfers};

/// Adds the `bearer` security scheme (JWT access tokens).
#[derive(Debug, Clone, Copy)]
pub struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The API description (`GET /openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "es-rs banking example",
        description = "Reference banking API on the es-rs event-sourcing toolkit. Every `/accounts` request \
                       carries a Bearer access token (from `/auth/login`) and `x-client-id`; errors are always `{\"error\": \"...\"}`; amounts are exact JSON \
                       numbers with at most 2 decimal places."
    ),
    modifiers(&BearerScheme),
    paths(
        auth::register,
        auth::login,
        auth::refresh,
        auth::change_password,
        auth::reset_password,
        auth::reset_confirm,
        auth::logout,
        auth::me,
        auth::list_users,
        auth::set_user_roles,
        access::list_accounts,
        accounts::create_account,
        accounts::get_account,
        accounts::list_events,
        accounts::deposit,
        accounts::withdraw,
        accounts::close_account,
        super::cluster::cluster,
        transfers::create_transfer,
        transfers::get_transfer,
        health::live,
        health::ready_status,
        openapi_json,
        docs,
    ),
    tags(
        (name = "auth", description = "Registration, login, tokens, password change and reset"),
        (name = "accounts", description = "Accounts: open, read, deposit, withdraw, close"),
        (name = "transfers", description = "Transfers between accounts: started with 202, completed or failed (and refunded) in the background"),
        (name = "operations", description = "Health and API documentation (metrics and readiness details are on the operations listener, ADMIN_BIND_ADDR)"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as served: [`ApiDoc`] with the rules every
/// operation shares written in ([`super::contract`]).
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    super::contract::complete(&mut doc);
    doc
}

/// The OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI 3 document", body = Object)))]
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    let mut doc = DOCUMENT.get_or_init(document).clone();
    with_max_amount(&mut doc, state.config.max_transaction_amount);
    Json(doc).into_response()
}

/// Writes this server's per-transaction maximum (`MAX_TRANSACTION_AMOUNT`)
/// into the amount schemas, so that the document is as strict as the
/// validation; an example above it becomes the maximum itself (an example
/// the server would refuse misleads).
pub fn with_max_amount(doc: &mut serde_json::Value, max: crate::domain::Money) {
    let Some(limit) = max.value().to_string().parse::<f64>().ok() else {
        return;
    };
    let Some(number) = serde_json::Number::from_f64(limit) else {
        return;
    };
    for name in ["PositiveAmount", "OpeningBalance"] {
        if let Some(schema) = doc
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(serde_json::Value::as_object_mut)
        {
            schema.insert("maximum".into(), serde_json::Value::Number(number.clone()));
            if let Some(examples) = schema.get_mut("examples").and_then(serde_json::Value::as_array_mut) {
                for example in examples {
                    if example.as_f64().is_some_and(|e| e > limit) {
                        *example = serde_json::Value::Number(number.clone());
                    }
                }
            }
        }
    }
}

/// A docs page: Swagger UI [`SWAGGER_UI_VERSION`] from a CDN, pinned to
/// that exact version and loaded only if its bytes match the
/// Subresource Integrity hashes (a changed or compromised CDN file is
/// refused by the browser), reading `/openapi.json`.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML documentation page", body = String, content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

/// The pinned Swagger UI release (npm package `swagger-ui-dist`).
pub const SWAGGER_UI_VERSION: &str = "5.35.0";

/// The page. The hashes are `sha384` of the files of the npm package
/// `swagger-ui-dist` at [`SWAGGER_UI_VERSION`]; to move to another
/// version, recompute them from its tarball (`npm pack
/// swagger-ui-dist@VERSION`, then `openssl dgst -sha384 -binary FILE |
/// openssl base64 -A`) and change the version in both URLs.
const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>es-rs banking example API</title>
  <link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5.35.0/swagger-ui.css"
        integrity="sha384-WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I"
        crossorigin="anonymous" referrerpolicy="no-referrer">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="https://unpkg.com/swagger-ui-dist@5.35.0/swagger-ui-bundle.js"
          integrity="sha384-gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9"
          crossorigin="anonymous" referrerpolicy="no-referrer"></script>
  <script>
    window.onload = () => { window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" }); };
  </script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every asset the page loads from elsewhere names an exact version
    /// and carries an integrity hash.
    #[test]
    fn external_assets_are_pinned_with_integrity_hashes() {
        let tags: Vec<&str> = DOCS_PAGE.split('<').filter(|t| t.contains("https://")).collect();
        assert_eq!(tags.len(), 2, "{tags:?}");
        for tag in tags {
            assert!(
                tag.contains(&format!("swagger-ui-dist@{SWAGGER_UI_VERSION}/")),
                "not pinned: {tag}"
            );
            let integrity = tag
                .split("integrity=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no integrity: {tag}"));
            let hash = integrity
                .strip_prefix("sha384-")
                .unwrap_or_else(|| panic!("{integrity}"));
            assert_eq!(hash.len(), 64, "a base64 SHA-384: {hash}");
            assert!(tag.contains("crossorigin=\"anonymous\""), "{tag}");
        }
    }
}
