//! `rebuild`: a full, from-a-position or selective replay of one
//! projection, with a progress bar in events (positions are sparse, so the
//! events to replay are counted first).

use std::time::Instant;

use es_core::{EventStore, ProjectionConfig, ReplayMode};
use serde::Serialize;

use crate::cli::RebuildArgs;
use crate::log::count_events;
use crate::output::Output;
use crate::progress::{Bar, ProgressTarget};
use crate::session::Session;
use crate::AdminError;

/// The JSON document of `rebuild`.
#[derive(Debug, Serialize)]
struct RebuildDoc<'a> {
    projection: &'a str,
    /// `full`, `from` or `selective`.
    mode: &'static str,
    /// Where the replay started (after this position).
    from: u64,
    /// The event types of a selective replay.
    event_types: &'a [String],
    /// Events counted before the replay (the bar's length).
    expected: u64,
    applied: u64,
    dead_lettered: u64,
    /// The checkpoint afterwards.
    position: u64,
    seconds: f64,
}

/// A full or from replay rewinds the read model; refused for the version
/// readers are served from (es-postgres `BlueGreen`: `<name>_v<active>`).
async fn refuse_if_serving(session: &Session, projection: &str) -> Result<(), AdminError> {
    let active: Vec<(String, i32)> = sqlx::query_as(&format!(
        "SELECT name, active FROM {}.projection_versions",
        session.store.schema()
    ))
    .fetch_all(session.store.pool())
    .await
    .map_err(|source| AdminError::Database {
        operation: "read active projection versions",
        source,
    })?;
    match active
        .into_iter()
        .find(|(name, v)| format!("{name}_v{v}") == projection)
    {
        Some((name, _)) => Err(AdminError::Serving {
            projection: projection.to_owned(),
            name,
        }),
        None => Ok(()),
    }
}

#[tracing::instrument(name = "es.admin.rebuild", skip_all, fields(projection = %args.projection))]
pub(crate) async fn run(
    session: &Session,
    args: &RebuildArgs,
    out: &mut Output,
    progress: &ProgressTarget,
) -> Result<(), AdminError> {
    let runner = session.runner(&args.projection).await?;
    let store = &session.store;
    let head = store.head_position().await?;
    let from = args.from.unwrap_or(0);
    if from > head {
        return Err(AdminError::PastHead { position: from, head });
    }
    if args.event_types.is_empty() && !args.serving {
        refuse_if_serving(session, runner.name()).await?;
    }
    let filter = runner.unit().filter();
    let (mode, name, expected) = if !args.event_types.is_empty() {
        // Applied again up to the checkpoint, which does not move.
        let until = runner.position().await?;
        let wanted = filter.narrowed_to(args.event_types.clone());
        let expected = if wanted.event_types.is_empty() {
            0 // none of them is an event type the projection reads
        } else {
            count_events(store, from, until, &wanted, None).await?
        };
        let mode = ReplayMode::Selective {
            event_types: args.event_types.clone(),
            from,
        };
        (mode, "selective", expected)
    } else if args.from.is_some() {
        (
            ReplayMode::From(from),
            "from",
            count_events(store, from, head, &filter, None).await?,
        )
    } else {
        (
            ReplayMode::Full,
            "full",
            count_events(store, 0, head, &filter, None).await?,
        )
    };

    let pb = Bar::new(progress, &format!("rebuild {}", runner.name()), expected);
    let shown = pb.handle();
    let mut runner = runner.clone().with_progress(move |p| {
        let done = p.report.applied + p.report.dead_lettered;
        if done > shown.length().unwrap_or(0) {
            shown.set_length(done); // events appended since they were counted
        }
        shown.set_position(done);
    });
    if let Some(batch_size) = args.batch_size {
        let config = ProjectionConfig {
            batch_size: batch_size as usize,
            ..runner.config().clone()
        };
        runner = runner.with_config(config);
    }
    let started = Instant::now();
    let report = match runner.replay(mode).await {
        Ok(report) => {
            pb.finish();
            report
        }
        Err(e) => {
            pb.abandon();
            return Err(e.into());
        }
    };
    let doc = RebuildDoc {
        projection: runner.name(),
        mode: name,
        from,
        event_types: &args.event_types,
        expected,
        applied: report.applied,
        dead_lettered: report.dead_lettered,
        position: report.position,
        seconds: started.elapsed().as_secs_f64(),
    };
    if out.is_json() {
        return out.document(&doc);
    }
    out.line(format_args!(
        "rebuilt {} ({}{}): {} event(s) applied, {} dead-lettered, checkpoint {}, in {:.1}s",
        doc.projection,
        doc.mode,
        match (name, args.event_types.is_empty()) {
            ("full", _) => String::new(),
            (_, true) => format!(" after {from}"),
            (_, false) => format!(" of {} after {from}", args.event_types.join(", ")),
        },
        doc.applied,
        doc.dead_lettered,
        doc.position,
        doc.seconds
    ))?;
    out.flush()
}
