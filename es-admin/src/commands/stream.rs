//! `stream`: the events of one stream.

use es_core::{EventStore, RecordedEvent, StreamId};
use serde::Serialize;

use crate::cli::StreamArgs;
use crate::output::Output;
use crate::session::Session;
use crate::AdminError;

/// The JSON document of `stream`.
#[derive(Serialize)]
struct StreamDoc<'a> {
    stream_id: &'a str,
    /// The stream's current version (0: no such stream).
    version: u64,
    events: &'a [RecordedEvent],
}

#[tracing::instrument(name = "es.admin.stream", skip_all, fields(stream = %args.stream_id))]
pub(crate) async fn run(session: &Session, args: &StreamArgs, out: &mut Output) -> Result<(), AdminError> {
    let mut id = StreamId::from(args.stream_id.as_str());
    let mut version = session.store.stream_version(&id).await?;
    // `tail` and `stream` print events as `type/id`: that form is taken
    // too, when no stream has the whole of it as its id.
    if version == 0 {
        if let Some((_, bare)) = args.stream_id.split_once('/') {
            let bare_id = StreamId::from(bare);
            let bare_version = session.store.stream_version(&bare_id).await?;
            if bare_version > 0 {
                (id, version) = (bare_id, bare_version);
            }
        }
    }
    let events = session
        .store
        .read_stream_batch(&id, args.from_version.max(1), args.limit)
        .await?;
    if out.is_json() {
        return out.document(&StreamDoc {
            stream_id: id.as_str(),
            version,
            events: &events,
        });
    }
    if version == 0 {
        return out.line(format_args!("stream {} has no events", args.stream_id));
    }
    out.line(format_args!(
        "stream {} at version {version}; {} event(s) from version {}:",
        id.as_str(),
        events.len(),
        args.from_version.max(1)
    ))?;
    for e in &events {
        out.event(e)?;
    }
    out.flush()
}
