//! Reads: a record by seq or by (partner, event id), and the reader, an ordered consumer that
//! starts at the reader's own checkpoint + 1.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::{FutureExt, StreamExt};

use super::JetStreamLog;
use crate::{LogError, LogErrorKind, Record};

impl JetStreamLog {
    /// The record of (partner, event id), if the stream holds one.
    pub async fn find(&self, partner_id: &str, event_id: &str) -> Result<Option<Record>, LogError> {
        let stream = self.stream().await?;
        let subject = crate::subject(partner_id, event_id);
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(Record {
                seq: message.sequence,
                partner: partner_id.to_owned(),
                bytes: message.payload,
            })),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(LogError::with_source(
                LogErrorKind::Read,
                format!("cannot look event {event_id} up"),
                err,
            )),
        }
    }

    /// The record at `seq`, if there is one.
    pub async fn get(&self, seq: u64) -> Result<Option<Record>, LogError> {
        let stream = self.stream().await?;
        match stream.get_raw_message(seq).await {
            Ok(message) => Ok(Some(Record {
                seq,
                partner: crate::partner_of_subject(message.subject.as_str()).to_owned(),
                bytes: message.payload,
            })),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(err) => Err(LogError::with_source(
                LogErrorKind::Read,
                format!("cannot read record {seq}"),
                err,
            )),
        }
    }

    /// A handle on the stream without asking the server for its info (one round trip saved per
    /// lookup).
    async fn stream(&self) -> Result<stream::Stream<()>, LogError> {
        self.context
            .get_stream_no_info(&self.config.stream)
            .await
            .map_err(|err| {
                LogError::with_source(LogErrorKind::Read, "cannot look the stream up", err)
            })
    }

    /// A reader from `from_seq` on, through an ordered consumer.
    pub async fn reader(&self, from_seq: u64) -> Result<JetStreamReader, LogError> {
        let stream = self
            .context
            .get_stream(&self.config.stream)
            .await
            .map_err(|err| {
                LogError::with_source(LogErrorKind::Read, "cannot look the stream up", err)
            })?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from_seq.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|err| {
                LogError::with_source(LogErrorKind::Read, "cannot create an ordered consumer", err)
            })?;
        let messages = consumer.messages().await.map_err(|err| {
            LogError::with_source(LogErrorKind::Read, "cannot read the stream", err)
        })?;
        Ok(JetStreamReader { messages })
    }
}

/// Reads the stream in order.
pub struct JetStreamReader {
    messages: consumer::pull::Ordered,
}

impl JetStreamReader {
    /// Up to `max` records, waiting at most `wait` for the first.
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Record>, LogError> {
        let mut batch = Vec::new();
        let first = match tokio::time::timeout(wait, self.messages.next()).await {
            Err(_) => return Ok(batch),
            Ok(None) => {
                return Err(LogError::new(
                    LogErrorKind::Read,
                    "the stream's consumer ended",
                ));
            }
            Ok(Some(message)) => message,
        };
        batch.push(record(first)?);
        while batch.len() < max {
            match self.messages.next().now_or_never() {
                Some(Some(message)) => batch.push(record(message)?),
                _ => break,
            }
        }
        Ok(batch)
    }
}

fn record(
    message: Result<jetstream::Message, consumer::pull::OrderedError>,
) -> Result<Record, LogError> {
    let message = message.map_err(|err| {
        LogError::with_source(LogErrorKind::Read, "reading the stream failed", err)
    })?;
    let seq = message
        .info()
        .map_err(|err| {
            LogError::with_source(LogErrorKind::Read, "a message without stream metadata", err)
        })?
        .stream_sequence;
    let partner = crate::partner_of_subject(message.subject.as_str()).to_owned();
    Ok(Record {
        seq,
        partner,
        // A copy, so that a queued record does not keep the connection's read buffer alive.
        bytes: bytes::Bytes::copy_from_slice(&message.payload),
    })
}
