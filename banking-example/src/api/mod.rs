//! The HTTP API (axum): routes, handlers, extractors, errors, OpenAPI.

pub mod access;
pub mod accounts;
pub mod amounts;
pub mod auth;
pub mod cluster;
mod consistency;
pub mod contract;
mod dto;
pub mod edge;
pub mod errors;
pub mod extract;
pub mod forwarding;
pub mod headers;
pub mod health;
mod http_metrics;
pub mod idempotency;
pub mod listener;
pub mod openapi;
pub mod owners;
pub mod peer;
pub mod routes;
mod state;
pub mod transfers;
pub mod validation;

pub use dto::{
    AccountPage, AccountView, AccountViewStatus, CloseAccountRequest, CreateAccountRequest, ErrorBody, EventHistory,
    EventView, EventsQuery, TransactionRequest, DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE,
};
pub use errors::ApiError;
pub use routes::{admin_router, router};
pub use state::{AppState, Services};
