//! The dead-letter topic: messages the worker cannot use, kept with the reason and where they
//! came from, so nothing is silently dropped and no partition is blocked.

use std::time::Duration;

use anyhow::Context;
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;

use insightflow_runtime::kafka::KafkaConnection;

pub const HEADER_ERROR: &str = "dlq-error";
pub const HEADER_REASON: &str = "dlq-reason";
pub const HEADER_TOPIC: &str = "dlq-original-topic";
pub const HEADER_PARTITION: &str = "dlq-original-partition";
pub const HEADER_OFFSET: &str = "dlq-original-offset";

/// Why a message was dead-lettered (a metric label: a fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not JSON, or not an event.
    Undecodable,
    /// A schema version this build does not know.
    UnknownSchema,
    /// Decoded but refused by a store (e.g. a value MySQL will not take).
    Refused,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::UnknownSchema => "unknown_schema",
            Self::Refused => "refused",
        }
    }
}

pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(connection: &KafkaConnection, topic: &str) -> anyhow::Result<Self> {
        let producer = connection
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()
            .context("cannot create the dead-letter producer")?;
        Ok(Self {
            producer,
            topic: topic.to_owned(),
        })
    }

    /// Sends the message and waits for Kafka to hold it.
    pub async fn send(
        &self,
        message: &OwnedMessage,
        reason: Reason,
        error: &str,
    ) -> anyhow::Result<()> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: HEADER_ERROR,
                value: Some(error),
            })
            .insert(Header {
                key: HEADER_REASON,
                value: Some(reason.as_str()),
            })
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(message.topic()),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(&offset),
            });
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let mut record = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| {
                anyhow::Error::new(e).context("dead-letter topic refused the message")
            })?;
        Ok(())
    }
}
