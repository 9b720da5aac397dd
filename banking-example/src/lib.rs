//! # banking-example — the reference banking application of es-rs
//!
//! An accounts service on the es-core kernel: the [`domain::Account`]
//! aggregate (exact [`domain::Money`]), an axum HTTP API with OpenAPI,
//! request validation, rate limiting, idempotency keys, and a projection
//! read model. Run it with `cargo run -p banking-example`; see the README.
//!
//! Each module imports only modules after it in this list (no cycles):
//! [`app`] (wiring), [`api`] (all of HTTP), [`backends`], [`publishing`],
//! [`config`], [`auth`], [`cluster`], [`rate_limit`], [`transfer`],
//! [`error`], [`read_model`], [`net`], [`domain`].
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod backends;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod net;
pub mod publishing;
pub mod rate_limit;
pub mod read_model;
pub mod transfer;

pub use app::{start, App, AppError, AppState, Backends, RunningServer};
pub use config::AppConfig;
