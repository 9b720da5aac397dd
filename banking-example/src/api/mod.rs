//! The HTTP API (axum): routes, handlers, extractors, errors, OpenAPI.

pub mod access;
pub mod accounts;
pub mod amounts;
pub mod cluster;
pub mod contract;
mod dto;
pub mod errors;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod peer;
pub mod routes;
pub mod transfers;

pub use dto::{
    AccountPage, AccountView, AccountViewStatus, CloseAccountRequest, CreateAccountRequest, ErrorBody, EventHistory,
    EventView, EventsQuery, TransactionRequest, DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE,
};
pub use errors::ApiError;
pub use routes::{admin_router, router};
