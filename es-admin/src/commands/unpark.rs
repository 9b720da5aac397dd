//! `unpark`: releases a parked outbox row (es-kafka's `outbox::unpark`),
//! once the cause of its failures is fixed.

use serde::Serialize;

use crate::output::Output;
use crate::session::Session;
use crate::AdminError;

#[derive(Debug, Serialize)]
struct UnparkedDoc {
    global_position: u64,
    stream_id: String,
    /// Rows of the stream held behind it, pending again.
    released: u64,
}

#[tracing::instrument(name = "es.admin.unpark", skip_all, fields(position = position))]
pub(crate) async fn run(session: &Session, position: u64, out: &mut Output) -> Result<(), AdminError> {
    let store = &session.store;
    let done = es_kafka::outbox::unpark(store.pool(), store.schema(), position)
        .await?
        .ok_or(AdminError::NotParked { position })?;
    let doc = UnparkedDoc {
        global_position: position,
        stream_id: done.stream_id,
        released: done.released,
    };
    if out.is_json() {
        return out.document(&doc);
    }
    out.line(format_args!(
        "unparked outbox row {} of {}: it is published again, with {} row(s) held behind it",
        doc.global_position, doc.stream_id, doc.released
    ))
}
