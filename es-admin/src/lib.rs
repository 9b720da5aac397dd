#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod admin;
mod cli;
mod commands;
mod error;
mod log;
mod output;
mod progress;
mod session;

pub use admin::{Admin, EXIT_FAILED, EXIT_OK, EXIT_USAGE};
pub use error::AdminError;
