#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

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
