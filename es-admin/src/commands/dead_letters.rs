//! `dead-letters list | retry | skip`: the events projections set aside.

use es_core::{DeadLetter, ProjectionError};
use serde::Serialize;

use crate::cli::DeadLetterCommand;
use crate::output::{timestamp, Output};
use crate::session::Session;
use crate::AdminError;

/// The JSON document of `retry` and `skip`.
#[derive(Debug, Serialize)]
struct Resolved<'a> {
    projection: &'a str,
    /// `retry` or `skip`.
    action: &'static str,
    /// Positions whose letters were removed (retried: applied first).
    resolved: Vec<u64>,
    /// Letters whose event failed again, with the error; they stay.
    failed: Vec<Failed>,
}

#[derive(Debug, Serialize)]
struct Failed {
    position: u64,
    error: String,
}

#[tracing::instrument(name = "es.admin.dead_letters", skip_all)]
pub(crate) async fn run(session: &Session, cmd: &DeadLetterCommand, out: &mut Output) -> Result<(), AdminError> {
    match cmd {
        DeadLetterCommand::List { projection } => list(session, projection.as_deref(), out).await,
        DeadLetterCommand::Retry {
            projection,
            position,
            all,
        } => retry(session, projection, *position, *all, out).await,
        DeadLetterCommand::Skip { projection, position } => skip(session, projection, *position, out).await,
    }
}

async fn list(session: &Session, projection: Option<&str>, out: &mut Output) -> Result<(), AdminError> {
    let runners = match projection {
        Some(name) => vec![session.runner(name).await?],
        None => session.runners.iter().collect(),
    };
    let mut letters: Vec<DeadLetter> = Vec::new();
    for r in runners {
        letters.extend(r.dead_letters().await?);
    }
    if out.is_json() {
        return out.document(&letters);
    }
    if letters.is_empty() {
        return out.line(match projection {
            Some(name) => format!("no dead letters for {name}"),
            None => "no dead letters".to_owned(),
        });
    }
    for l in &letters {
        out.line(format_args!(
            "{}  {:>20}  {} v{}  {}  {} attempt(s), {}: {}",
            l.projection,
            l.global_position,
            l.stream_id,
            l.version,
            l.event_type,
            l.attempts,
            timestamp(&l.failed_at),
            l.error
        ))?;
    }
    out.flush()
}

async fn retry(
    session: &Session,
    projection: &str,
    position: Option<u64>,
    all: bool,
    out: &mut Output,
) -> Result<(), AdminError> {
    let runner = session.runner(projection).await?;
    let positions: Vec<u64> = match position {
        Some(p) if !all => vec![p],
        _ => runner.dead_letters().await?.iter().map(|l| l.global_position).collect(),
    };
    let mut doc = Resolved {
        projection,
        action: "retry",
        resolved: Vec::new(),
        failed: Vec::new(),
    };
    for &p in &positions {
        match runner.retry_dead_letter(p).await {
            Ok(true) => doc.resolved.push(p),
            Ok(false) => {
                return Err(AdminError::NoDeadLetter {
                    projection: projection.to_owned(),
                    position: p,
                })
            }
            // The projector still fails: the letter stays; tell and go on.
            Err(e @ ProjectionError::Stopped { .. }) => doc.failed.push(Failed {
                position: p,
                error: e.to_string(),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    report(out, &doc)?;
    if doc.failed.is_empty() {
        Ok(())
    } else {
        Err(AdminError::RetriesFailed {
            projection: projection.to_owned(),
            failed: doc.failed.len(),
            total: positions.len(),
        })
    }
}

async fn skip(session: &Session, projection: &str, position: u64, out: &mut Output) -> Result<(), AdminError> {
    let runner = session.runner(projection).await?;
    if !runner.skip_dead_letter(position).await? {
        return Err(AdminError::NoDeadLetter {
            projection: projection.to_owned(),
            position,
        });
    }
    report(
        out,
        &Resolved {
            projection,
            action: "skip",
            resolved: vec![position],
            failed: Vec::new(),
        },
    )
}

fn report(out: &mut Output, doc: &Resolved<'_>) -> Result<(), AdminError> {
    if out.is_json() {
        return out.document(doc);
    }
    let verb = if doc.action == "retry" {
        "applied again"
    } else {
        "skipped (not applied)"
    };
    if doc.resolved.is_empty() && doc.failed.is_empty() {
        out.line(format_args!("{}: no dead letters", doc.projection))?;
    }
    for p in &doc.resolved {
        out.line(format_args!(
            "{}: dead letter at {p} {verb}, letter removed",
            doc.projection
        ))?;
    }
    for f in &doc.failed {
        out.line(format_args!(
            "{}: dead letter at {} failed again: {}",
            doc.projection, f.position, f.error
        ))?;
    }
    out.flush()
}
