//! The consume-apply-commit loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use es_core::{BoxError, Projector, RecordedEvent, StreamId};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::Offset;
use tracing::Instrument;

use super::dedup::{verdict, DedupStore, Verdict};
use super::{dead_letter, ConsumerConfig};
use crate::error::{ConsumerError, SetupError};
use crate::message::{decode_envelope, header_str};
use crate::telemetry;

/// The pause after a passing consumption error, before waiting again.
/// How long a dead letter may take to be acknowledged, unless
/// `message.timeout.ms` is set in the config's `extra`.
pub(crate) const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(30);
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long rewinding a partition after a failed message may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a blocking librdkafka call on a thread of its own and waits for it
/// up to `timeout`, so that no runtime thread is held: a synchronous commit
/// waits for the broker for as long as it is away. Past the timeout (or if
/// no thread could be started) `None`; the thread finishes by itself.
async fn off_runtime<T: Send + 'static>(timeout: Duration, call: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("es-kafka-blocking".into())
        .spawn(move || {
            let _ = tx.send(call());
        });
    if let Err(e) = thread {
        tracing::warn!(error = %e, "could not start a thread for a blocking kafka call");
        return None;
    }
    tokio::time::timeout(timeout, rx).await.ok().and_then(Result::ok)
}

/// The stream and version a message names in its key and
/// [`headers::STREAM_VERSION`](crate::message::headers::STREAM_VERSION)
/// header, when both are there (what the publishers write beside the
/// envelope).
fn stream_position(msg: &BorrowedMessage<'_>) -> Option<(StreamId, u64)> {
    let stream = std::str::from_utf8(msg.key()?).ok()?;
    let version = header_str(msg.headers()?, crate::message::headers::STREAM_VERSION)?
        .parse()
        .ok()?;
    Some((StreamId::from(stream), version))
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The projector applied the event.
    Applied,
    /// The projector's filter does not want the event.
    Filtered,
    /// The event was handled before (redelivery or duplicate publish).
    Duplicate,
    /// An earlier version of the stream has not arrived yet; skipped, it
    /// is delivered again after the missing one.
    Early,
    /// The event failed every attempt (or could not be decoded) and was
    /// sent to the dead-letter topic.
    DeadLettered,
}

/// A consumer-group member that feeds an es-core [`Projector`].
///
/// Guarantees:
/// - a message's offset is stored for commit only after it was handled
///   (applied, skipped as duplicate, or dead-lettered), and only stored
///   offsets are committed: after a crash, consumption resumes at or
///   before the first unhandled message (at least once);
/// - redelivery is harmless: each stream's last handled version is kept in
///   a [`DedupStore`] and older or equal versions are skipped;
/// - a poison event is retried `retry.max_attempts` times with back-off,
///   then copied to `dead_letter_topic` with the error in the `es-error`
///   header, and consumption moves on;
/// - partitions are split between the group's members by Kafka.
pub struct KafkaProjectionConsumer {
    consumer: Arc<StreamConsumer>,
    producer: FutureProducer,
    projector: Arc<dyn Projector>,
    dedup: Arc<dyn DedupStore>,
    config: ConsumerConfig,
}

impl std::fmt::Debug for KafkaProjectionConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProjectionConsumer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaProjectionConsumer {
    /// Creates the consumer and subscribes to `config.topics`.
    pub fn new(
        config: ConsumerConfig,
        projector: Arc<dyn Projector>,
        dedup: Arc<dyn DedupStore>,
    ) -> Result<Self, SetupError> {
        let mut cc = ClientConfig::new();
        for (k, v) in &config.extra {
            cc.set(k, v);
        }
        cc.set("bootstrap.servers", &config.bootstrap_servers);
        let mut pc = cc.clone();
        if !config.extra.contains_key("message.timeout.ms") {
            // librdkafka's default is 300 s; a dead letter that cannot go
            // out in time fails the message (it is consumed again) instead
            // of holding the consumer, and its shutdown, for minutes.
            pc.set("message.timeout.ms", DEAD_LETTER_TIMEOUT.as_millis().to_string());
        }
        let producer: FutureProducer = pc.set("enable.idempotence", "true").set("acks", "all").create()?;
        let consumer: StreamConsumer = cc
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                config.commit_interval.as_millis().to_string(),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self {
            consumer: Arc::new(consumer),
            producer,
            projector,
            dedup,
            config,
        })
    }

    /// Waits for the next message and handles it. After an error the
    /// message is consumed again by the next call (the partition is
    /// rewound to it), so a caller may retry.
    pub async fn next(&self) -> Result<Handled, ConsumerError> {
        let msg = self.receive().await?;
        self.handle_and_store(&msg).await
    }

    /// The next message. librdkafka reports passing conditions (brokers
    /// unreachable for a while, a group rebalancing, a coordinator moving)
    /// as consumption errors and recovers from them by itself: they are
    /// logged and counted, and the wait goes on. A fatal error ends it.
    async fn receive(&self) -> Result<BorrowedMessage<'_>, ConsumerError> {
        loop {
            match self.consumer.recv().await {
                Ok(msg) => return Ok(msg),
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consumer error; librdkafka recovers");
                    ::metrics::counter!(telemetry::CONSUMER_ERRORS, "projection" => self.projector.name().to_owned())
                        .increment(1);
                    tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                }
            }
        }
    }

    /// Handles `msg` and marks it handled; when handling fails, rewinds
    /// its partition to it, so it is consumed again rather than passed over.
    async fn handle_and_store(&self, msg: &BorrowedMessage<'_>) -> Result<Handled, ConsumerError> {
        let span = tracing::debug_span!(
            "kafka.consume",
            topic = msg.topic(),
            partition = msg.partition(),
            offset = msg.offset()
        );
        match self.handle(msg).instrument(span).await {
            Ok(handled) => {
                self.store_offset(msg);
                Ok(handled)
            }
            Err(e) => {
                let consumer = Arc::clone(&self.consumer);
                let (topic, partition, offset) = (msg.topic().to_owned(), msg.partition(), msg.offset());
                let rewound = off_runtime(SEEK_TIMEOUT + Duration::from_secs(1), move || {
                    consumer.seek(&topic, partition, Offset::Offset(offset), SEEK_TIMEOUT)
                })
                .await;
                match rewound {
                    Some(Ok(())) => {}
                    // The partition was revoked meanwhile: its new owner
                    // starts at the last committed offset, before `msg`.
                    Some(Err(seek)) => tracing::warn!(error = %seek, partition, offset, "not rewound"),
                    None => tracing::warn!(partition, offset, "not rewound in time"),
                }
                Err(e)
            }
        }
    }

    /// Handles messages until `shutdown` completes (checked between
    /// messages, never in the middle of one), then commits the handled
    /// offsets and waits for the broker (see [`commit`](Self::commit)).
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), ConsumerError> {
        tokio::pin!(shutdown);
        loop {
            let msg = tokio::select! {
                () = &mut shutdown => break,
                msg = self.receive() => msg?,
            };
            self.handle_and_store(&msg).await?;
        }
        self.commit().await
    }

    /// The partitions this member owns now, as `(topic, partition)`.
    pub fn assignment(&self) -> Result<Vec<(String, i32)>, ConsumerError> {
        Ok(self
            .consumer
            .assignment()?
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect())
    }

    /// Commits the offsets of every handled message now and waits for the
    /// broker, up to [`ConsumerConfig::commit_timeout`], off the runtime's
    /// threads (librdkafka's commit blocks its thread while the broker is
    /// away). Past the timeout it returns
    /// `KafkaError::ConsumerCommit(OperationTimedOut)`.
    pub async fn commit(&self) -> Result<(), ConsumerError> {
        use rdkafka::types::RDKafkaErrorCode;
        let consumer = Arc::clone(&self.consumer);
        let committed = off_runtime(self.config.commit_timeout, move || {
            consumer.commit_consumer_state(CommitMode::Sync)
        })
        .await;
        match committed {
            None => Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::OperationTimedOut).into()),
            // Nothing stored since the last commit.
            Some(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => Ok(()),
            Some(other) => Ok(other?),
        }
    }

    /// Marks `msg` handled, for the next commit. Fails only when the
    /// partition was revoked meanwhile; its new owner then gets the message
    /// again (at least once), so that is logged, not fatal.
    fn store_offset(&self, msg: &BorrowedMessage<'_>) {
        if let Err(e) = self.consumer.store_offset_from_message(msg) {
            tracing::warn!(error = %e, partition = msg.partition(), offset = msg.offset(), "offset not stored");
        }
    }

    async fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<Handled, ConsumerError> {
        let name = self.projector.name().to_owned();
        let event = match decode_envelope(msg.payload().unwrap_or_default()) {
            Ok(e) => e,
            Err(e) => {
                let error = format!("undecodable envelope: {e}");
                tracing::warn!(%error, "dead-lettering message");
                let handled = self.dead_letter(msg, &error, 0, &name).await?;
                // Its place in its stream, when its key and headers tell it
                // and it is the next version: the versions after it are not
                // early (they would be skipped for good).
                if let Some((stream, version)) = stream_position(msg) {
                    let last = self.dedup.last_version(&stream).await.map_err(ConsumerError::Dedup)?;
                    if verdict(last, version) == Verdict::Apply {
                        self.record_with_retry(&stream, version).await?;
                    }
                }
                return Ok(handled);
            }
        };
        let last = self
            .dedup
            .last_version(&event.stream_id)
            .await
            .map_err(ConsumerError::Dedup)?;
        match verdict(last, event.version) {
            Verdict::Duplicate => {
                ::metrics::counter!(telemetry::CONSUMER_DUPLICATES, "projection" => name).increment(1);
                return Ok(Handled::Duplicate);
            }
            Verdict::Early => {
                tracing::warn!(stream = %event.stream_id, version = event.version, ?last, "event ahead of its stream, skipped");
                ::metrics::counter!(telemetry::CONSUMER_EARLY, "projection" => name).increment(1);
                return Ok(Handled::Early);
            }
            Verdict::Apply => {}
        }
        let handled = if self.projector.filter().matches(&event.stream_type, &event.event_type) {
            match self.apply_with_retry(&event, &name).await {
                Ok(()) => {
                    ::metrics::counter!(telemetry::CONSUMER_APPLIED, "projection" => name.clone()).increment(1);
                    Handled::Applied
                }
                Err((error, attempts)) => self.dead_letter(msg, &error.to_string(), attempts, &name).await?,
            }
        } else {
            Handled::Filtered
        };
        self.record_with_retry(&event.stream_id, event.version).await?;
        Ok(handled)
    }

    /// Records a handled version, retrying a failing store by the retry
    /// policy: the message is applied (or dead-lettered) already, and an
    /// error here means it is consumed and handled again.
    async fn record_with_retry(&self, stream: &StreamId, version: u64) -> Result<(), ConsumerError> {
        self.config
            .retry
            .run(
                || self.dedup.record(stream, version),
                |_| true,
                |e, attempt| {
                    tracing::warn!(error = %e, attempt, %stream, version, "recording the handled version failed; retrying");
                },
            )
            .await
            .map_err(ConsumerError::Dedup)
    }

    async fn apply_with_retry(&self, event: &RecordedEvent, name: &str) -> Result<(), (BoxError, u32)> {
        let mut attempt = 1;
        loop {
            match self.projector.apply(event).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    ::metrics::counter!(telemetry::CONSUMER_FAILURES, "projection" => name.to_owned()).increment(1);
                    tracing::warn!(error = %e, attempt, event_id = %event.event_id, "projector failed");
                    if !self.config.retry.should_retry(attempt) {
                        return Err((e, attempt));
                    }
                    tokio::time::sleep(self.config.retry.delay_after(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        error: &str,
        attempts: u32,
        name: &str,
    ) -> Result<Handled, ConsumerError> {
        dead_letter::send(&self.producer, &self.config.dead_letter_topic, msg, error, attempts).await?;
        ::metrics::counter!(telemetry::CONSUMER_DEAD_LETTERS, "projection" => name.to_owned()).increment(1);
        Ok(Handled::DeadLettered)
    }
}
