//! The append pipeline: a bounded window of acks in flight, and each publish whose outcome is
//! unknown sent again under the same message id until the stream acknowledges it.

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;

use super::JetStreamLog;
use crate::{AppendRequest, Appended, Backoff, LogError, LogErrorKind};

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
