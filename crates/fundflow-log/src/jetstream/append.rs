//! The append pipeline: a bounded window of acks in flight, and each publish whose outcome is
//! unknown sent again under the same message id until the stream acknowledges it.

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;

use super::JetStreamLog;
use crate::{AppendRequest, Appended, Backoff, LogError, LogErrorKind, RestoreRequest, Restored};

/// The pace of sending a publish again whose outcome is unknown: quick at first (one lost ack),
/// slower while the stream has no leader.
const PUBLISH_RETRY_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

impl JetStreamLog {
    /// Publishes in order with a bounded window of acks in flight; see the module docs.
    ///
    /// The sends are awaited one after another, so the stream stores the records in request
    /// order; only the acks overlap. A record whose ack fails is sent again on its own (same
    /// `Nats-Msg-Id`): if records after it were stored meanwhile, it lands after them. The log's
    /// order is the order of acknowledgement: a writer that needs one event before another (a
    /// payment after its pledge) must wait for the first ack before sending the second. The
    /// gateway does not reorder within a request; partners send dependent events in a later
    /// request (README, "Submitting").
    ///
    /// Not cancel-safe: dropped mid-way, records may be stored while their results are lost.
    /// Appending the same requests again is safe (they come back as duplicates), and fundflow's
    /// callers (the gateway's appender task, `publish-file`) never drop it.
    pub async fn append_batch(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Appended>, LogError> {
        let _one_at_a_time = self.appending.lock().await;
        let window = self.config.acks_in_flight_max.max(1);
        let mut results = Vec::with_capacity(requests.len());
        // Acks are awaited together, each with a deadline fixed when it was sent (tokio's
        // timeout starts at creation), so a connection lost with a full window costs one ack
        // timeout, not one per record.
        let mut in_flight = futures::stream::FuturesOrdered::new();
        for request in requests {
            if in_flight.len() >= window
                && let Some((request, acked)) = in_flight.next().await
            {
                results.push(self.settle(request, acked).await?);
            }
            let sent = self.send(request).await;
            let timeout = self.config.ack_timeout;
            in_flight.push_back(async move {
                let acked = match sent {
                    Ok(ack) => match tokio::time::timeout(timeout, ack.into_future()).await {
                        Ok(result) => result,
                        Err(_) => Err(jetstream::context::PublishError::new(
                            jetstream::context::PublishErrorKind::TimedOut,
                        )),
                    },
                    Err(err) => Err(err),
                };
                (request, acked)
            });
        }
        while let Some((request, acked)) = in_flight.next().await {
            results.push(self.settle(request, acked).await?);
        }
        Ok(results)
    }

    /// Puts records back at their seqs (see [`crate::EventLog::restore_batch`]): each publish
    /// expects the stream's last seq to be its seq − 1, so the server itself refuses a record
    /// anywhere else. Pipelined like `append_batch`; a publish whose outcome is unknown is
    /// sent again with the same expectation, which makes the retry safe.
    pub async fn restore_batch(
        &self,
        requests: &[RestoreRequest],
    ) -> Result<Vec<Restored>, LogError> {
        let _one_at_a_time = self.appending.lock().await;
        let window = self.config.acks_in_flight_max.max(1);
        let mut results = Vec::with_capacity(requests.len());
        let mut in_flight = futures::stream::FuturesOrdered::new();
        for request in requests {
            if in_flight.len() >= window
                && let Some((request, acked)) = in_flight.next().await
            {
                let restored = self.settle_restore(request, acked).await?;
                results.push(restored);
                if restored != Restored::Stored {
                    return Ok(results);
                }
            }
            let sent = self.send_restore(request).await;
            let timeout = self.config.ack_timeout;
            in_flight.push_back(async move {
                let acked = match sent {
                    Ok(ack) => match tokio::time::timeout(timeout, ack.into_future()).await {
                        Ok(result) => result,
                        Err(_) => Err(jetstream::context::PublishError::new(
                            jetstream::context::PublishErrorKind::TimedOut,
                        )),
                    },
                    Err(err) => Err(err),
                };
                (request, acked)
            });
        }
        while let Some((request, acked)) = in_flight.next().await {
            let restored = self.settle_restore(request, acked).await?;
            results.push(restored);
            if restored != Restored::Stored {
                break;
            }
        }
        Ok(results)
    }

    async fn send_restore(
        &self,
        request: &RestoreRequest,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        let append = &request.append;
        let id = crate::message_id(&append.partner_id, &append.event_id);
        let message = PublishMessage::build()
            .message_id(id.as_str())
            .expected_last_sequence(request.seq - 1)
            .expected_last_subject_sequence(0)
            .payload(append.envelope.clone());
        self.context
            .send_publish(
                crate::subject(&append.partner_id, &append.event_id),
                message,
            )
            .await
    }

    /// Turns a restore's ack into its result, sending it again while its outcome is unknown.
    async fn settle_restore(
        &self,
        request: &RestoreRequest,
        mut acked: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Result<Restored, LogError> {
        let deadline = tokio::time::Instant::now() + self.config.retry_for;
        let mut backoff = PUBLISH_RETRY_BACKOFF;
        loop {
            match acked {
                Ok(ack) if ack.sequence == request.seq => return Ok(Restored::Stored),
                Ok(ack) if ack.duplicate => return Ok(Restored::Occupied { seq: ack.sequence }),
                Ok(ack) => {
                    return Err(LogError::new(
                        LogErrorKind::Append,
                        format!(
                            "the stream stored the record due at seq {} at seq {}, against its expectation",
                            request.seq, ack.sequence
                        ),
                    ));
                }
                // Either expectation failed: the record's subject is taken, or the stream's
                // last seq is not the one before it. Which one, the stream says.
                Err(err)
                    if err.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                {
                    let append = &request.append;
                    return match self.find(&append.partner_id, &append.event_id).await? {
                        Some(record) if record.seq == request.seq => Ok(Restored::Stored),
                        Some(record) => Ok(Restored::Occupied { seq: record.seq }),
                        None => Ok(Restored::Misplaced {
                            last_seq: self.last_seq().await?,
                        }),
                    };
                }
                Err(err) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LogError::with_source(
                            LogErrorKind::Append,
                            format!(
                                "the record due at seq {} was not acknowledged within {:?}",
                                request.seq, self.config.retry_for
                            ),
                            err,
                        ));
                    }
                    self.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
                    backoff.wait().await;
                    acked = match self.send_restore(request).await {
                        Ok(ack) => {
                            match tokio::time::timeout(self.config.ack_timeout, ack.into_future())
                                .await
                            {
                                Ok(result) => result,
                                Err(_) => Err(jetstream::context::PublishError::new(
                                    jetstream::context::PublishErrorKind::TimedOut,
                                )),
                            }
                        }
                        Err(err) => Err(err),
                    };
                }
            }
        }
    }

    async fn send(
        &self,
        request: &AppendRequest,
    ) -> Result<jetstream::context::PublishAckFuture, jetstream::context::PublishError> {
        let id = crate::message_id(&request.partner_id, &request.event_id);
        let message = PublishMessage::build()
            .message_id(id.as_str())
            .expected_last_subject_sequence(0)
            .payload(request.envelope.clone());
        self.context
            .send_publish(
                crate::subject(&request.partner_id, &request.event_id),
                message,
            )
            .await
    }

    /// Turns an ack into a result; when the outcome is unknown, sends the record again until it
    /// is known.
    async fn settle(
        &self,
        request: &AppendRequest,
        acked: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Result<Appended, LogError> {
        match acked {
            Ok(ack) if ack.duplicate => Ok(Appended::Duplicate { seq: ack.sequence }),
            Ok(ack) => Ok(Appended::Stored { seq: ack.sequence }),
            Err(err) if err.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                self.already_stored(request).await
            }
            Err(err) => {
                self.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(event_id = %request.event_id, error = %err, "publish outcome unknown; sending again");
                self.publish_until_acknowledged(request).await
            }
        }
    }

    async fn publish_until_acknowledged(
        &self,
        request: &AppendRequest,
    ) -> Result<Appended, LogError> {
        let deadline = tokio::time::Instant::now() + self.config.retry_for;
        let mut backoff = PUBLISH_RETRY_BACKOFF;
        loop {
            let attempt = async {
                let ack = self.send(request).await?;
                // The ack future's timeout only starts when it is first polled: poll it now, and
                // bound it ourselves as well.
                match tokio::time::timeout(self.config.ack_timeout, ack.into_future()).await {
                    Ok(result) => result,
                    Err(_) => Err(jetstream::context::PublishError::new(
                        jetstream::context::PublishErrorKind::TimedOut,
                    )),
                }
            };
            match attempt.await {
                Ok(ack) if ack.duplicate => return Ok(Appended::Duplicate { seq: ack.sequence }),
                Ok(ack) => return Ok(Appended::Stored { seq: ack.sequence }),
                Err(err)
                    if err.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                {
                    return self.already_stored(request).await;
                }
                Err(err)
                    if err.kind() == jetstream::context::PublishErrorKind::MaxPayloadExceeded =>
                {
                    return Err(LogError::with_source(
                        LogErrorKind::Append,
                        format!(
                            "event {} is larger than the server accepts",
                            request.event_id
                        ),
                        err,
                    ));
                }
                Err(err) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LogError::with_source(
                            LogErrorKind::Append,
                            format!(
                                "event {} was not acknowledged within {:?}",
                                request.event_id, self.config.retry_for
                            ),
                            err,
                        ));
                    }
                    self.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(event_id = %request.event_id, error = %err, backoff = ?backoff.delay(), "publish outcome unknown; sending again");
                    backoff.wait().await;
                }
            }
        }
    }

    /// The server refused the append because the event's subject holds a record: that record is
    /// the duplicate.
    async fn already_stored(&self, request: &AppendRequest) -> Result<Appended, LogError> {
        match self.find(&request.partner_id, &request.event_id).await? {
            Some(record) => Ok(Appended::Duplicate { seq: record.seq }),
            None => Err(LogError::new(
                LogErrorKind::Append,
                format!(
                    "the stream refused event {} as already stored but does not hold it",
                    request.event_id
                ),
            )),
        }
    }
}
