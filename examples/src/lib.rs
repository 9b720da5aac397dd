//! Runnable examples of the es-rs event-sourcing toolkit.
//!
//! The domain models live here so that the examples (`cargo run -p es-examples
//! --example NAME`) and their property tests share them.

pub mod shopping_cart;
pub mod tutorial;
