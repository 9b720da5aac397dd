#![doc = include_str!("../README.md")]
//!
//! ## Modules
//!
//! The [`domain::Account`] aggregate (exact [`domain::Money`]), the HTTP
//! API in [`api`], auth, validation, rate limiting, idempotency keys and
//! the read model. Each module imports only modules after it in this list (no cycles):
//! [`app`] (wiring), [`api`] (all of HTTP), [`backends`], [`publishing`],
//! [`config`], [`auth`], [`cluster`], [`rate_limit`], [`transfer`],
//! [`error`], [`read_model`], [`net`], [`domain`].

pub mod api;
pub mod app;
pub mod auth;
pub mod backends;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod logging;
pub mod net;
pub mod publishing;
pub mod rate_limit;
pub mod read_model;
pub mod transfer;

pub use app::{start, App, AppError, AppState, Backends, RunningServer};
pub use config::AppConfig;
