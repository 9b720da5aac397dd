//! `tail`: the last events of the global log, and `--follow`.

use std::future::Future;
use std::time::Duration;

use es_core::{EventFilter, EventStore, RecordedEvent};

use crate::cli::TailArgs;
use crate::log::tail_start;
use crate::output::Output;
use crate::session::Session;
use crate::AdminError;

/// Events read per round trip while following.
const FOLLOW_PAGE: usize = 1000;
/// Longest wait for a wake-up before polling the log again.
const FOLLOW_POLL: Duration = Duration::from_secs(1);

#[tracing::instrument(name = "es.admin.tail", skip_all, fields(last = args.last, follow = args.follow))]
pub(crate) async fn run(
    session: &Session,
    args: &TailArgs,
    out: &mut Output,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AdminError> {
    let store = &session.store;
    let head = store.head_position().await?;
    let start = tail_start(store, head, args.last).await?;
    let mut events = Vec::with_capacity(args.last.min(10_000));
    let mut position = start;
    while events.len() < args.last {
        let page = store
            .read_all(
                position,
                (args.last - events.len()).min(FOLLOW_PAGE),
                &EventFilter::all(),
            )
            .await?;
        let Some(last) = page.last() else { break };
        position = last.global_position;
        events.extend(page.into_iter().filter(|e| e.global_position <= head));
        if position >= head {
            break;
        }
    }
    let mut position = events.last().map_or(start, |e| e.global_position).max(head);
    if !args.follow {
        if out.is_json() {
            return out.document(&events);
        }
        return print(out, &events);
    }
    if out.is_json() {
        for e in &events {
            out.json_line(e)?;
        }
    } else {
        print(out, &events)?;
    }
    tokio::pin!(shutdown);
    loop {
        let page = store.read_all(position, FOLLOW_PAGE, &EventFilter::all()).await?;
        if let Some(last) = page.last() {
            position = last.global_position;
            if out.is_json() {
                for e in &page {
                    out.json_line(e)?;
                }
            } else {
                print(out, &page)?;
            }
            if page.len() == FOLLOW_PAGE {
                continue;
            }
        }
        tokio::select! {
            () = &mut shutdown => return out.flush(),
            waited = store.wait_for_events(position, FOLLOW_POLL) => waited?,
        }
    }
}

fn print(out: &mut Output, events: &[RecordedEvent]) -> Result<(), AdminError> {
    for e in events {
        out.event(e)?;
    }
    out.flush()
}
