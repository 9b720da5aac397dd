//! The two-level cache: L1 in process ([`moka`]), L2 in Redis.
//!
//! - [`RedisStateCache`]: aggregate states for the repository
//!   (es-core's [`StateCache`](es_core::StateCache)), with warming.
//! - [`QueryCache`]: query results (read-model views) with explicit
//!   invalidation, and [`InvalidateOnEvents`] to invalidate on commits.

mod generation;
mod l1;
mod l2;
mod query_cache;
mod state_cache;
mod warm;

pub use query_cache::{InvalidateOnEvents, QueryCache};
pub use state_cache::RedisStateCache;
pub use warm::WarmReport;
