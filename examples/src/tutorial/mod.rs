//! The book's tutorial (`docs/tutorial.md`), one file per step: a bank
//! account from the aggregate to PostgreSQL, SQLite, a read model,
//! idempotent requests and a Redis cache. The book includes these files
//! (between `ANCHOR` comments) and `tests/tutorial.rs` runs every step
//! against the real backends. `projections` is the code of the book's
//! chapter on projections and replay.

pub mod projections;
pub mod step1_account;
pub mod step3_repository;
pub mod step4_postgres;
pub mod step4_sqlite;
pub mod step5_read_model;
pub mod step6_idempotency;
pub mod step7_redis;
