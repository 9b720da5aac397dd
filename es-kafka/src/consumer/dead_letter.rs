//! Sending a poison message to the dead-letter topic.

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::error::ConsumerError;
use crate::message::headers;

/// Copies `msg` (key, value, headers) to `topic` with the error, the
/// attempts and the origin in headers, and waits for the acknowledgement.
pub(crate) async fn send(
    producer: &FutureProducer,
    topic: &str,
    msg: &BorrowedMessage<'_>,
    error: &str,
    attempts: u32,
) -> Result<(), ConsumerError> {
    let mut h = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for header in original.iter() {
            h = h.insert(Header {
                key: header.key,
                value: header.value,
            });
        }
    }
    let origin = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
    let attempts = attempts.to_string();
    for (key, value) in [
        (headers::ERROR, error),
        (headers::ATTEMPTS, &attempts),
        (headers::ORIGIN, &origin),
    ] {
        h = h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(h);
    if let Some(key) = msg.key() {
        record = record.key(key);
    }
    if let Some(payload) = msg.payload() {
        record = record.payload(payload);
    }
    producer
        .send(record, super::worker::DEAD_LETTER_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(source, _)| ConsumerError::DeadLetter {
            topic: topic.to_owned(),
            source,
        })
}
