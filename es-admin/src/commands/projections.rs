//! `projections`: checkpoint, lag, dead letters and state of each
//! projection — es-postgres' `projection_statuses`, plus the registered
//! projections that have no checkpoint yet.

use chrono::{DateTime, Utc};
use es_core::{EventFilter, EventStore};
use es_postgres::projection_statuses;
use serde::Serialize;

use crate::log::count_events;
use crate::output::{human_seconds, timestamp, Output};
use crate::session::Session;
use crate::AdminError;

/// Lag in events is counted up to this many (as es-postgres'
/// `projection_statuses` does).
const LAG_COUNT_CAP: u64 = 1_000_000;

/// One projection, as listed.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    /// Registered with this es-admin (it can rebuild it).
    registered: bool,
    position: u64,
    /// Events after the checkpoint, of any type (counted up to a cap).
    lag_events: u64,
    /// Age of the oldest event after the checkpoint.
    lag_seconds: f64,
    dead_letters: u64,
    /// `failed`, `dead-letters`, `catching-up`, `current`, or `new` (no
    /// checkpoint yet).
    state: &'static str,
    last_error: Option<String>,
    /// When the checkpoint last moved (none: never).
    updated_at: Option<DateTime<Utc>>,
}

#[tracing::instrument(name = "es.admin.projections", skip_all)]
pub(crate) async fn run(session: &Session, out: &mut Output) -> Result<(), AdminError> {
    let store = &session.store;
    let registered = |name: &str| session.runners.iter().any(|r| r.name() == name);
    let mut rows: Vec<Row> = projection_statuses(store)
        .await?
        .into_iter()
        .map(|s| Row {
            registered: registered(&s.name),
            state: s.state(),
            name: s.name,
            position: s.position,
            lag_events: s.lag_events,
            lag_seconds: s.lag_seconds,
            dead_letters: s.dead_letters,
            last_error: s.last_error,
            updated_at: Some(s.updated_at),
        })
        .collect();
    let new: Vec<&str> = session
        .runners
        .iter()
        .map(es_core::ProjectionRunner::name)
        .filter(|n| !rows.iter().any(|row| row.name == *n))
        .collect();
    if !new.is_empty() {
        // Never ran: the whole log is its lag.
        let head = store.head_position().await?;
        let lag_events = count_events(store, 0, head, &EventFilter::all(), Some(LAG_COUNT_CAP)).await?;
        let oldest = store.read_all(0, 1, &EventFilter::all()).await?;
        let lag_seconds = oldest
            .first()
            .filter(|e| e.global_position <= head)
            .map_or(0.0, |e| (Utc::now() - e.recorded_at).as_seconds_f64().max(0.0));
        for name in new {
            rows.push(Row {
                name: name.to_owned(),
                registered: true,
                position: 0,
                lag_events,
                lag_seconds,
                dead_letters: 0,
                state: "new",
                last_error: None,
                updated_at: None,
            });
        }
        rows.sort_by(|a, b| a.name.cmp(&b.name));
    }
    if out.is_json() {
        return out.document(&rows);
    }
    print(out, &rows)?;
    // The lag above stops at the log's head, which an open writing
    // transaction anywhere in the cluster holds back: say so.
    let held = store.held_back().await?;
    if let (true, Some(age)) = (held.events > 0, held.for_how_long) {
        if age.as_secs_f64() >= HELD_BACK_NOTE_AFTER {
            out.line(format_args!(
                "note: {} committed event(s) are not readable yet, the oldest for {}: a transaction still writing \
                 somewhere in the PostgreSQL cluster holds the log back (pg_stat_activity, oldest xact_start); \
                 the lag above does not count them",
                held.events,
                human_seconds(age.as_secs_f64())
            ))?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Events held back for less than this (seconds) are commits in flight,
/// not worth a note.
const HELD_BACK_NOTE_AFTER: f64 = 1.0;

fn print(out: &mut Output, rows: &[Row]) -> Result<(), AdminError> {
    if rows.is_empty() {
        return out.line("no projections (no checkpoints, none registered)");
    }
    let width = rows.iter().map(|r| r.name.len() + 1).max().unwrap_or(4).max(10);
    out.line(format_args!(
        "{:<width$}  {:>20}  {:>10}  {:>8}  {:>5}  {:<12}  UPDATED",
        "PROJECTION", "POSITION", "LAG", "LAG AGE", "DEAD", "STATE"
    ))?;
    for r in rows {
        let name = if r.registered {
            r.name.clone()
        } else {
            format!("{}*", r.name)
        };
        out.line(format_args!(
            "{name:<width$}  {:>20}  {:>10}  {:>8}  {:>5}  {:<12}  {}",
            r.position,
            r.lag_events,
            human_seconds(r.lag_seconds),
            r.dead_letters,
            r.state,
            r.updated_at.as_ref().map_or_else(|| "never".to_owned(), timestamp),
        ))?;
        if let Some(e) = &r.last_error {
            out.line(format_args!("{:<width$}  stopped: {e}", ""))?;
        }
    }
    if rows.iter().any(|r| !r.registered) {
        out.line("* a checkpoint only: not registered with this es-admin (another program's, or retired)")?;
    }
    out.flush()
}
