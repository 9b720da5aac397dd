//! The HTTP API (axum): routes, handlers, extractors, errors, OpenAPI.

pub mod access;
pub mod accounts;
mod dto;
pub mod errors;
pub mod extract;
pub mod health;
pub mod openapi;
pub mod routes;
pub mod transfers;

pub use dto::{
    AccountPage, AccountView, AccountViewStatus, CloseAccountRequest, CreateAccountRequest, ErrorBody, EventHistory,
    EventView, TransactionRequest,
};
pub use errors::ApiError;
pub use routes::router;
