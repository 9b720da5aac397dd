//! Plain configuration structs with sensible defaults. Reading them from the
//! environment is the binary's job (`src/bin/es-kafka-relay.rs`); the enums
//! parse the documented setting values with [`FromStr`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::SetupError;

/// How committed events are captured from PostgreSQL (`DATA_CAPTURE_METHOD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataCaptureMethod {
    /// `outbox_poller`: es-postgres writes outbox rows in the append's own
    /// statement; an [`OutboxPoller`](crate::OutboxPoller) publishes them.
    OutboxPoller,
    /// `cdc_debezium` (the default): change data capture from the
    /// write-ahead log, by Debezium or the built-in relay ([`CdcRelayKind`]).
    #[default]
    CdcDebezium,
}

/// Which program reads the write-ahead log when the method is
/// [`DataCaptureMethod::CdcDebezium`] (`CDC_RELAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CdcRelayKind {
    /// `builtin` (the default): the Rust [`CdcRelay`](crate::CdcRelay)
    /// (logical decoding over SQL), no Kafka Connect needed.
    #[default]
    Builtin,
    /// `debezium`: the Debezium connector in `deploy/` does it; this
    /// process publishes nothing.
    Debezium,
}

impl FromStr for DataCaptureMethod {
    type Err = SetupError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "outbox_poller" | "outbox" => Ok(Self::OutboxPoller),
            "cdc_debezium" | "cdc" => Ok(Self::CdcDebezium),
            _ => Err(invalid("DATA_CAPTURE_METHOD", s, "outbox_poller or cdc_debezium")),
        }
    }
}

impl FromStr for CdcRelayKind {
    type Err = SetupError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "builtin" => Ok(Self::Builtin),
            "debezium" => Ok(Self::Debezium),
            _ => Err(invalid("CDC_RELAY", s, "builtin or debezium")),
        }
    }
}

impl fmt::Display for DataCaptureMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutboxPoller => "outbox_poller",
            Self::CdcDebezium => "cdc_debezium",
        })
    }
}

impl fmt::Display for CdcRelayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Builtin => "builtin",
            Self::Debezium => "debezium",
        })
    }
}

fn invalid(name: &str, value: &str, expected: &str) -> SetupError {
    SetupError::InvalidSetting {
        name: name.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

/// Where events of a stream type go.
///
/// The default, `banking.{stream_type}.events`, gives one topic per stream
/// type (`banking.account.events`); a template without `{stream_type}`
/// sends everything to one topic. Debezium's outbox router is configured
/// with the same pattern (`route.topic.replacement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNaming {
    /// The template; `{stream_type}` is replaced by the event's stream type.
    pub template: String,
}

impl Default for TopicNaming {
    fn default() -> Self {
        Self {
            template: "banking.{stream_type}.events".into(),
        }
    }
}

impl TopicNaming {
    /// A template, e.g. `"shop.{stream_type}"` or `"all-events"`.
    pub fn new(template: impl Into<String>) -> Self {
        Self {
            template: template.into(),
        }
    }

    /// The topic of events of `stream_type`.
    pub fn topic_for(&self, stream_type: &str) -> String {
        self.template.replace("{stream_type}", stream_type)
    }
}

/// Settings of a [`KafkaPublisher`](crate::KafkaPublisher).
#[derive(Debug, Clone, PartialEq)]
pub struct PublisherConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `client.id`.
    pub client_id: String,
    /// Topic of each stream type.
    pub topics: TopicNaming,
    /// How long [`publish`](crate::KafkaPublisher::publish) waits for
    /// acknowledgements (and for an earlier call's messages to leave the
    /// producer) before it reports the events it has no answer for as
    /// failed ([`PublishError::Unacknowledged`](crate::PublishError::Unacknowledged));
    /// the poller or relay then counts a failed round and retries later.
    /// The messages stay queued: librdkafka's own `message.timeout.ms` is
    /// infinite, because a message it times out lets the later messages
    /// of its partition overtake it (a gap in a stream's order on the
    /// topic).
    pub message_timeout: Duration,
    /// `linger.ms`: how long messages wait to be batched.
    pub linger: Duration,
    /// `reconnect.backoff.max.ms`: the longest wait between attempts to
    /// reach a broker that is down, so publishing resumes this soon after
    /// the broker returns (librdkafka's own default is 10 s).
    pub reconnect_backoff_max: Duration,
    /// Any other librdkafka producer settings (security, compression ...).
    /// The idempotence settings and `message.timeout.ms` (always 0, see
    /// `message_timeout`) cannot be overridden.
    pub extra: BTreeMap<String, String>,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            client_id: "es-kafka".into(),
            topics: TopicNaming::default(),
            message_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(2),
            reconnect_backoff_max: Duration::from_secs(1),
            extra: BTreeMap::new(),
        }
    }
}

/// The librdkafka security settings an application may take from its
/// environment: `(variable, librdkafka property)`. TLS needs the `ssl`
/// build of librdkafka (this crate's default); SASL `PLAIN`, `SCRAM-SHA-256`,
/// `SCRAM-SHA-512` and `OAUTHBEARER` come with it (`GSSAPI` needs Cyrus
/// SASL and is not built).
pub const SECURITY_SETTINGS: &[(&str, &str)] = &[
    ("KAFKA_SECURITY_PROTOCOL", "security.protocol"),
    ("KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
    ("KAFKA_SSL_CERTIFICATE_LOCATION", "ssl.certificate.location"),
    ("KAFKA_SSL_KEY_LOCATION", "ssl.key.location"),
    ("KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
    (
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
        "ssl.endpoint.identification.algorithm",
    ),
    ("KAFKA_SASL_MECHANISM", "sasl.mechanism"),
    ("KAFKA_SASL_USERNAME", "sasl.username"),
    ("KAFKA_SASL_PASSWORD", "sasl.password"),
];

/// The [`SECURITY_SETTINGS`] that `lookup` (the environment, in a binary)
/// sets, as librdkafka properties for [`PublisherConfig::extra`] or
/// [`ConsumerConfig::extra`](crate::ConsumerConfig::extra). Empty values
/// count as unset.
pub fn security_settings(lookup: impl Fn(&str) -> Option<String>) -> BTreeMap<String, String> {
    SECURITY_SETTINGS
        .iter()
        .filter_map(|(var, property)| {
            let value = lookup(var)?.trim().to_owned();
            (!value.is_empty()).then(|| ((*property).to_owned(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_print_round_trip() {
        for m in [DataCaptureMethod::OutboxPoller, DataCaptureMethod::CdcDebezium] {
            assert_eq!(m.to_string().parse::<DataCaptureMethod>().unwrap(), m);
        }
        for r in [CdcRelayKind::Builtin, CdcRelayKind::Debezium] {
            assert_eq!(r.to_string().parse::<CdcRelayKind>().unwrap(), r);
        }
        assert_eq!(DataCaptureMethod::default(), DataCaptureMethod::CdcDebezium);
        assert!(" Outbox_Poller ".parse::<DataCaptureMethod>().is_ok());
        assert!("kafka".parse::<DataCaptureMethod>().is_err());
        assert!("wal2json".parse::<CdcRelayKind>().is_err());
    }

    #[test]
    fn topics_per_stream_type_or_single() {
        assert_eq!(TopicNaming::default().topic_for("account"), "banking.account.events");
        assert_eq!(TopicNaming::new("all").topic_for("account"), "all");
    }

    #[test]
    fn security_settings_map_variables_to_librdkafka_properties() {
        let env = |k: &str| match k {
            "KAFKA_SECURITY_PROTOCOL" => Some("SASL_SSL".to_owned()),
            "KAFKA_SASL_MECHANISM" => Some("SCRAM-SHA-512".to_owned()),
            "KAFKA_SASL_USERNAME" => Some(" bank ".to_owned()),
            "KAFKA_SASL_PASSWORD" => Some(String::new()),
            _ => None,
        };
        let settings = security_settings(env);
        assert_eq!(settings.len(), 3, "{settings:?}");
        assert_eq!(settings["security.protocol"], "SASL_SSL");
        assert_eq!(settings["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(settings["sasl.username"], "bank");
    }
}
