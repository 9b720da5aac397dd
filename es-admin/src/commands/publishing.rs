//! `publishing`: what has not reached Kafka yet — the outbox backlog and
//! the replication slot's lag (es-kafka's status readers).

use chrono::{DateTime, Utc};
use es_kafka::cdc::{default_slot_name_for, slot_status};
use es_kafka::outbox::outbox_status;
use serde::Serialize;

use crate::cli::PublishingArgs;
use crate::output::{human_bytes, human_seconds, timestamp, Output};
use crate::session::Session;
use crate::AdminError;

#[derive(Debug, Serialize)]
struct PublishingDoc {
    outbox: OutboxDoc,
    slot: SlotDoc,
}

#[derive(Debug, Serialize)]
struct OutboxDoc {
    /// Rows not yet published and not parked.
    pending: u64,
    /// Rows parked after failing too often (each blocks its stream).
    parked: u64,
    /// Of the pending rows, those held behind a parked row of their stream.
    held: u64,
    /// Age of the oldest pending row.
    oldest_pending_seconds: Option<f64>,
    /// The parked rows (at most 100).
    parked_rows: Vec<ParkedDoc>,
}

#[derive(Debug, Serialize)]
struct ParkedDoc {
    global_position: u64,
    stream_id: String,
    version: u64,
    event_type: String,
    attempts: i32,
    last_error: String,
    parked_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
struct SlotDoc {
    name: String,
    exists: bool,
    confirmed_flush_lsn: Option<String>,
    /// WAL the relay still has to read.
    lag_bytes: Option<i64>,
    /// WAL the slot holds back on the server.
    retained_bytes: Option<i64>,
}

#[tracing::instrument(name = "es.admin.publishing", skip_all)]
pub(crate) async fn run(session: &Session, args: &PublishingArgs, out: &mut Output) -> Result<(), AdminError> {
    let pool = session.store.pool();
    let schema = session.store.schema();
    let outbox = outbox_status(pool, schema).await?;
    let slot = match &args.slot {
        Some(name) => name.clone(),
        None => default_slot_name_for(pool, schema).await?,
    };
    let status = slot_status(pool, &slot).await?;
    let doc = PublishingDoc {
        outbox: OutboxDoc {
            pending: outbox.pending,
            parked: outbox.parked,
            held: outbox.held,
            oldest_pending_seconds: outbox.oldest_pending_age.map(|d| d.as_secs_f64()),
            parked_rows: outbox
                .parked_rows
                .into_iter()
                .map(|r| ParkedDoc {
                    global_position: r.global_position,
                    stream_id: r.stream_id,
                    version: r.version,
                    event_type: r.event_type,
                    attempts: r.attempts,
                    last_error: r.last_error,
                    parked_at: r.parked_at,
                })
                .collect(),
        },
        slot: SlotDoc {
            name: slot,
            exists: status.exists,
            confirmed_flush_lsn: status.confirmed_flush_lsn,
            lag_bytes: status.lag_bytes,
            retained_bytes: status.retained_bytes,
        },
    };
    if out.is_json() {
        return out.document(&doc);
    }
    print(out, schema, &doc)
}

fn print(out: &mut Output, schema: &str, doc: &PublishingDoc) -> Result<(), AdminError> {
    let o = &doc.outbox;
    out.line(format_args!(
        "outbox ({schema}.outbox): {} pending{}{}, {} parked",
        o.pending,
        o.oldest_pending_seconds
            .map(|s| format!(" (oldest {} ago)", human_seconds(s)))
            .unwrap_or_default(),
        if o.held > 0 {
            format!(", {} of them held behind parked rows", o.held)
        } else {
            String::new()
        },
        o.parked
    ))?;
    for r in &o.parked_rows {
        out.line(format_args!(
            "  parked {:>20}  {} v{}  {}  {} attempt(s), since {}: {}",
            r.global_position,
            r.stream_id,
            r.version,
            r.event_type,
            r.attempts,
            timestamp(&r.parked_at),
            r.last_error
        ))?;
    }
    let s = &doc.slot;
    if s.exists {
        out.line(format_args!(
            "replication slot {}: confirmed up to {}, {} behind, {} of WAL retained",
            s.name,
            s.confirmed_flush_lsn.as_deref().unwrap_or("-"),
            s.lag_bytes.map_or_else(|| "-".to_owned(), human_bytes),
            s.retained_bytes.map_or_else(|| "-".to_owned(), human_bytes),
        ))?;
    } else {
        out.line(format_args!(
            "replication slot {}: none in this database (publishing by outbox poller or Debezium, or not yet started)",
            s.name
        ))?;
    }
    out.flush()
}
