//! [`KafkaPublisher`]: the idempotent producer every capture method uses.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use es_core::RecordedEvent;
use futures::future::join_all;
use futures::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tracing::Instrument;

use crate::config::{PublisherConfig, TopicNaming};
use crate::error::{PublishError, SetupError};
use crate::message::{encode_envelope, event_headers};
use crate::telemetry;

/// Where and when Kafka acknowledged one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Partition of the message.
    pub partition: i32,
    /// Offset of the message.
    pub offset: i64,
    /// When the acknowledgement arrived.
    pub acked_at: DateTime<Utc>,
}

/// Publishes events to Kafka with an idempotent producer
/// (`enable.idempotence=true`, `acks=all`): within a partition messages are
/// neither duplicated nor reordered by the producer's own retries.
///
/// Guarantees of [`publish`](Self::publish): a result is `Ok` only once
/// Kafka has acknowledged the message (all in-sync replicas); the message
/// key is the stream id, so all events of a stream land in one partition
/// in the order given; the partitioner is `murmur2_random`, the Java
/// client's, so Debezium and this publisher put a stream in the same
/// partition.
///
/// librdkafka gets no message timeout (`message.timeout.ms=0`): a message
/// it timed out let the later messages of its partition go out without it,
/// a gap in the stream's order on the topic. The publisher's own wait
/// ([`PublisherConfig::message_timeout`]) ends instead, with
/// [`PublishError::Unacknowledged`] for the events it has no answer for,
/// while their messages stay queued and go out in order when the broker
/// answers. After such a wait, calls queue nothing until the producer has
/// sent everything it holds (they wait up to the same time, else
/// [`PublishError::Behind`]), so a long outage neither reorders a stream
/// nor piles up copies of the same events; otherwise concurrent calls
/// (several pollers sharing one publisher) do not wait for each other.
///
/// A producer that librdkafka declares fatally failed (the idempotent
/// producer can end up so after a broker outage that lost in-flight
/// requests) is replaced by a fresh one before the next publish, with an
/// error log and the [`telemetry::PRODUCER_RECREATED`] counter: without
/// that, every later message would fail at once and nothing would be
/// published until a restart.
pub struct KafkaPublisher {
    producer: RwLock<FutureProducer>,
    ack_wait: Duration,
    /// Set when a call's wait ended with messages still queued: the next
    /// calls queue nothing until the producer has sent them.
    stalled: AtomicBool,
    client_config: ClientConfig,
    topics: TopicNaming,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A publisher for `config`. Creating it does not contact the brokers.
    pub fn new(config: &PublisherConfig) -> Result<Self, SetupError> {
        let mut cc = ClientConfig::new();
        for (k, v) in &config.extra {
            cc.set(k, v);
        }
        // Its alias would race the setting below (the keys go to librdkafka
        // in no set order).
        cc.remove("delivery.timeout.ms");
        cc.set("bootstrap.servers", &config.bootstrap_servers)
            .set("client.id", &config.client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "0")
            .set("linger.ms", config.linger.as_millis().to_string());
        if !config.extra.contains_key("reconnect.backoff.max.ms") {
            cc.set(
                "reconnect.backoff.max.ms",
                config.reconnect_backoff_max.as_millis().max(1).to_string(),
            );
        }
        Ok(Self {
            producer: RwLock::new(cc.create()?),
            ack_wait: config.message_timeout,
            stalled: AtomicBool::new(false),
            client_config: cc,
            topics: config.topics.clone(),
        })
    }

    /// The topic naming in use.
    pub fn topics(&self) -> &TopicNaming {
        &self.topics
    }

    /// The underlying producer (for flushing, metrics or raw sends): the
    /// current one, which a fatal error replaces.
    pub fn producer(&self) -> FutureProducer {
        match self.producer.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the producer if librdkafka reports it fatally failed.
    /// Messages still queued in the old one fail and are published again by
    /// the caller's retry (at least once).
    fn renew_if_fatal(&self) {
        let current = self.producer();
        let Some((code, reason)) = current.client().fatal_error() else {
            return;
        };
        match self.client_config.create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::error!(?code, %reason, "kafka producer failed fatally; replaced by a new producer");
                ::metrics::counter!(telemetry::PRODUCER_RECREATED).increment(1);
                let mut slot = match self.producer.write() {
                    Ok(p) => p,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *slot = fresh;
                // The new producer holds nothing of the old one's.
                self.stalled.store(false, Ordering::Release);
            }
            Err(e) => {
                tracing::error!(error = %e, ?code, %reason, "kafka producer failed fatally and cannot be recreated");
            }
        }
    }

    /// Publishes `events` and waits for every acknowledgement, up to
    /// [`PublisherConfig::message_timeout`]. Returns one result per event,
    /// in input order.
    ///
    /// Events are handed to the producer in input order (after an earlier
    /// call's wait ended with messages still queued, once those have left
    /// it). If one cannot even be queued (e.g. too large), the later events
    /// of the *same stream* in this batch are not sent
    /// ([`PublishError::Blocked`]), so a caller that counts, per stream,
    /// only the prefix up to the first failure as published never leaves a
    /// hole it would not fill by publishing again. An event with no answer
    /// when the wait ends ([`PublishError::Unacknowledged`]) stays queued
    /// and may still be delivered: publishing it again repeats it, after
    /// it, never before.
    pub async fn publish(&self, events: &[RecordedEvent]) -> Vec<Result<Delivered, PublishError>> {
        let span = tracing::debug_span!("kafka.publish", events = events.len());
        let deadline = tokio::time::Instant::now() + self.ack_wait;
        self.renew_if_fatal();
        let producer = self.producer();
        async {
            if self.stalled.load(Ordering::Acquire) {
                match drained(&producer, deadline).await {
                    Ok(()) => self.stalled.store(false, Ordering::Release),
                    Err(waiting) => return behind(events, waiting),
                }
            }
            // Marks the producer stalled if this call ends (or is dropped)
            // with messages it queued still unanswered.
            let mut guard = StallGuard {
                stalled: &self.stalled,
                answered: false,
            };
            let mut blocked: HashSet<&str> = HashSet::new();
            let mut pending = Vec::with_capacity(events.len());
            for event in events {
                if blocked.contains(event.stream_id.as_str()) {
                    pending.push(
                        futures::future::ready(Err(PublishError::Blocked {
                            stream_id: event.stream_id.to_string(),
                        }))
                        .boxed(),
                    );
                    continue;
                }
                match self.enqueue(&producer, event, deadline).await {
                    Ok(fut) => {
                        let (event_id, waited) = (event.event_id, self.ack_wait);
                        pending.push(
                            tokio::time::timeout_at(deadline, fut)
                                .map(move |r| r.unwrap_or(Err(PublishError::Unacknowledged { event_id, waited })))
                                .boxed(),
                        );
                    }
                    Err(e) => {
                        blocked.insert(event.stream_id.as_str());
                        pending.push(futures::future::ready(Err(e)).boxed());
                    }
                }
            }
            let results = join_all(pending).await;
            guard.answered = !results
                .iter()
                .any(|r| matches!(r, Err(PublishError::Unacknowledged { .. })));
            results
        }
        .instrument(span)
        .await
    }

    /// Queues one event; the returned future resolves at its acknowledgement.
    async fn enqueue(
        &self,
        producer: &FutureProducer,
        event: &RecordedEvent,
        deadline: tokio::time::Instant,
    ) -> Result<impl std::future::Future<Output = Result<Delivered, PublishError>> + Send + 'static, PublishError> {
        let event_id = event.event_id;
        let payload = encode_envelope(event).map_err(|source| PublishError::Encode { event_id, source })?;
        let topic = self.topics.topic_for(&event.stream_type);
        let headers: OwnedHeaders = event_headers(event);
        let key = event.stream_id.as_str();
        let mut record = FutureRecord::to(&topic).key(key).payload(&payload).headers(headers);
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if tokio::time::Instant::now() < deadline =>
                {
                    // Local queue full: let deliveries drain, then retry.
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, _)) => {
                    return Err(PublishError::Delivery {
                        event_id,
                        topic: topic.clone(),
                        source,
                    })
                }
            }
        };
        Ok(delivery.map(move |outcome| match outcome {
            Ok(Ok(d)) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
                acked_at: Utc::now(),
            }),
            Ok(Err((source, _))) => Err(PublishError::Delivery {
                event_id,
                topic,
                source,
            }),
            Err(_) => Err(PublishError::Canceled { event_id }),
        }))
    }

    /// Waits up to `timeout` for every queued message to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer().flush(timeout)
    }
}

/// Sets `stalled` when dropped before `answered` is set: a publish that
/// ran out of time, or whose future was dropped, left messages queued.
struct StallGuard<'a> {
    stalled: &'a AtomicBool,
    answered: bool,
}

impl Drop for StallGuard<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.stalled.store(true, Ordering::Release);
        }
    }
}

/// Every event refused as [`PublishError::Behind`].
fn behind(events: &[RecordedEvent], waiting: i32) -> Vec<Result<Delivered, PublishError>> {
    events
        .iter()
        .map(|e| {
            Err(PublishError::Behind {
                event_id: e.event_id,
                waiting,
            })
        })
        .collect()
}

/// Waits until `producer` holds no message (nor request) of an earlier
/// call, up to `deadline`; `Err` with how many it still holds then. A
/// fatally failed producer counts as drained: it sends nothing more, and
/// the next call replaces it.
async fn drained(producer: &FutureProducer, deadline: tokio::time::Instant) -> Result<(), i32> {
    loop {
        let waiting = producer.in_flight_count();
        if waiting == 0 || producer.client().fatal_error().is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(waiting);
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// How often [`drained`] looks at the producer's queue.
const DRAIN_POLL: Duration = Duration::from_millis(1);

/// Given events and their publish results (same order), the indexes of the
/// events that count as published: per stream, the acknowledged prefix up
/// to the first failure. Everything after a stream's first failure must be
/// published again, so the stream's order on the topic is never broken by
/// a hole.
pub fn published_prefix(events: &[RecordedEvent], results: &[Result<Delivered, PublishError>]) -> Vec<usize> {
    let mut failed: HashSet<&str> = HashSet::new();
    let mut ok = Vec::with_capacity(events.len());
    for (i, (event, result)) in events.iter().zip(results).enumerate() {
        let stream = event.stream_id.as_str();
        if result.is_ok() && !failed.contains(stream) {
            ok.push(i);
        } else {
            failed.insert(stream);
        }
    }
    ok
}
