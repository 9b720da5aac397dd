//! The OpenAPI 3 document of every route, and a docs page.

use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{access, accounts, health, transfers};
use crate::auth::routes as auth;

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
        health::ready,
        health::metrics,
        openapi_json,
        docs,
    ),
    tags(
        (name = "auth", description = "Registration, login, tokens, password change and reset"),
        (name = "accounts", description = "Accounts: open, read, deposit, withdraw, close"),
        (name = "transfers", description = "Transfers between accounts: started with 202, completed or failed (and refunded) in the background"),
        (name = "operations", description = "Health, metrics and API documentation"),
    )
)]
pub struct ApiDoc;

/// The OpenAPI document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This OpenAPI 3 document", body = Object)))]
pub async fn openapi_json() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// A docs page (Swagger UI loaded from a CDN, reading `/openapi.json`).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "HTML documentation page", body = String, content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_PAGE)
}

const DOCS_PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>es-rs banking example API</title>
  <link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js" crossorigin></script>
  <script>
    window.onload = () => { window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" }); };
  </script>
</body>
</html>
"##;
