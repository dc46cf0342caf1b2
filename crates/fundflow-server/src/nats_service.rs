//! fundflow on NATS besides the log: partners submitting by request-reply on
//! `fundflow.v1.submit.<partner_id>`, served by every gateway in one queue group; and the
//! projector's fold notices on `fundflow.v1.folded`, relayed to gateways in other processes so
//! that `wait` works wherever the event was submitted.
//!
//! The subject is the partner's identity here, as the bearer token is over HTTP; only partners in
//! the access config are served. Who may publish on a partner's submit subject, and on
//! `fundflow.v1.folded`, is for NATS permissions to enforce: `fundflow nats-config` generates
//! per-partner users (see [`crate::nats_auth`]) for the server configs in `deploy/nats`. A
//! server without them lets any client submit as any configured partner.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use fundflow_domain::RejectCode;
use fundflow_proto::v1::FoldNotice;
use fundflow_proto::{Message, v1};
use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use fundflow_api::{InvalidEvent, Status, SubmitResult};

use crate::gateway::{Gateway, Input};
use crate::http::{ServiceError, problem_of, submit_result};
use crate::problem::Problem;

/// Where partners submit: `fundflow.v1.submit.<partner_id>`.
pub const SUBMIT_PREFIX: &str = "fundflow.v1.submit.";
/// The queue group every gateway joins, so each submission is handled once.
pub const SUBMIT_QUEUE: &str = "fundflow-gateways";
/// Where projectors announce folded batches.
pub const FOLDED_SUBJECT: &str = "fundflow.v1.folded";
/// The header that asks a NATS submission to wait for the fold.
pub const WAIT_HEADER: &str = "Fundflow-Wait";

/// NATS submissions answered at once; more wait in the subscription until one is done (each
/// may wait up to `--wait-secs` for the fold, so without a bound a burst would hold one task
/// each).
pub const SUBMISSIONS_IN_HAND_MAX: usize = 256;

/// Serves submissions of the `partners` the access config lists until `stop` turns true.
pub async fn serve_submissions(
    client: Client,
    gateway: Gateway,
    partners: Arc<BTreeSet<String>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), async_nats::SubscribeError> {
    let mut requests = client
        .queue_subscribe(format!("{SUBMIT_PREFIX}*"), SUBMIT_QUEUE.to_owned())
        .await?;
    // Submissions in hand, awaited before returning so that a stop answers them all.
    let mut in_hand = tokio::task::JoinSet::new();
    let mut stopping = false;
    loop {
        let stop_now = async {
            let _ = stop.wait_for(|s| *s).await;
        };
        let message = tokio::select! {
            message = requests.next() => message,
            () = stop_now, if !stopping => {
                // Drain: the server sends no more, and what it sent already is still answered.
                stopping = true;
                if let Err(err) = requests.drain().await {
                    tracing::warn!(error = %err, "cannot drain the submit subscription");
                    break;
                }
                continue;
            }
        };
        let Some(message) = message else {
            break;
        };
        while in_hand.try_join_next().is_some() {}
        // Bounded: wait for one in hand to be answered before taking another.
        while in_hand.len() >= SUBMISSIONS_IN_HAND_MAX {
            in_hand.join_next().await;
        }
        let partner_id = message
            .subject
            .as_str()
            .strip_prefix(SUBMIT_PREFIX)
            .unwrap_or("");
        let Some(reply) = message
            .reply
            .clone()
            .filter(|reply| is_partner_inbox(partner_id, reply))
        else {
            // No reply subject, or one outside the partner's inbox: the gateway publishes only
            // where the partner listens, never on a subject the sender picked (the stream's,
            // another partner's inbox). Nothing is appended.
            metrics::counter!("fundflow_nats_submissions_dropped_total").increment(1);
            tracing::warn!(subject = %message.subject, reply = ?message.reply, "a NATS submission without a reply subject in the partner's inbox; dropped");
            continue;
        };
        let client = client.clone();
        let gateway = gateway.clone();
        let partners = Arc::clone(&partners);
        in_hand.spawn(async move {
            let span = tracing::info_span!("nats_submit", subject = %message.subject);
            let body =
                tracing::Instrument::instrument(answer(&gateway, &partners, &message), span).await;
            // A reply is strings and numbers, which always encode; were one not to, the
            // partner's request times out and is sent again (safely), rather than be answered
            // with an empty payload.
            let payload = match serde_json::to_vec(&body) {
                Ok(payload) => payload,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot encode a NATS reply");
                    return;
                }
            };
            if let Err(err) = client.publish(reply, Bytes::from(payload)).await {
                tracing::warn!(error = %err, "cannot reply to a NATS submission");
            }
        });
    }
    while in_hand.join_next().await.is_some() {}
    if let Err(err) = client.flush().await {
        tracing::warn!(error = %err, "cannot flush the last replies");
    }
    Ok(())
}

/// Whether `reply` lies in the partner's own inbox, `_INBOX_<partner_id>.` (see
/// [`crate::nats_auth::partner_inbox_prefix`]).
pub fn is_partner_inbox(partner_id: &str, reply: &str) -> bool {
    reply
        .strip_prefix(&crate::nats_auth::partner_inbox_prefix(partner_id))
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
}

async fn answer(
    gateway: &Gateway,
    partners: &BTreeSet<String>,
    message: &async_nats::Message,
) -> SubmitResult {
    let partner_id = message
        .subject
        .as_str()
        .strip_prefix(SUBMIT_PREFIX)
        .unwrap_or("");
    if !partners.contains(partner_id) {
        return problem_body(Problem::forbidden(format!(
            "{:?} is not the submit subject of a partner in the access config",
            message.subject.as_str()
        )));
    }
    let headers = message.headers.as_ref();
    let is_json =
        header(headers, "Content-Type").is_some_and(|v| v.starts_with("application/json"));
    let wait = header(headers, WAIT_HEADER).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let input = if is_json {
        Input::Object(fundflow_api::parse_event(&message.payload))
    } else {
        match v1::Envelope::decode(message.payload.as_ref()) {
            Ok(envelope) => Input::Envelope(envelope),
            Err(err) => Input::Object(Err(InvalidEvent::new(
                RejectCode::Undecodable.as_str(),
                "",
                format!(
                    "the payload is not a protobuf Envelope ({err}); send JSON with Content-Type: application/json"
                ),
            ))),
        }
    };
    match gateway.submit(partner_id, vec![input], wait).await {
        Ok(mut results) => match results.pop() {
            Some(result) => submit_result(result),
            None => problem_body(Problem::unavailable("no result for the event")),
        },
        Err(error) => problem_body(problem_of(ServiceError::Submit(error))),
    }
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|v| v.as_str())
}

/// A request that did not get as far as a result is `refused`, with the problem HTTP would
/// give, so that a NATS client reads the same fields as an HTTP one.
fn problem_body(problem: Problem) -> SubmitResult {
    SubmitResult {
        line: None,
        event_id: None,
        seq: None,
        status: Status::Refused,
        code: None,
        field: None,
        message: None,
        problem: Some(problem.into()),
    }
}

/// Publishes the projector's notices on [`FOLDED_SUBJECT`], as `fundflow.v1.FoldNotice`
/// protobuf, until the channel closes.
pub async fn publish_notices(client: Client, mut notices: broadcast::Receiver<Arc<FoldNotice>>) {
    loop {
        let notice = match notices.recv().await {
            Ok(notice) => notice,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "fold notices dropped before publishing");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let payload = Bytes::from(notice.encode_to_vec());
        if let Err(err) = client.publish(FOLDED_SUBJECT, payload).await {
            tracing::warn!(error = %err, "cannot publish a fold notice");
        }
    }
}

/// Feeds notices from [`FOLDED_SUBJECT`] into `notices`, for gateways without a projector.
pub async fn relay_notices(
    client: Client,
    notices: broadcast::Sender<Arc<FoldNotice>>,
) -> Result<(), async_nats::SubscribeError> {
    let mut subscription = client.subscribe(FOLDED_SUBJECT).await?;
    while let Some(message) = subscription.next().await {
        match FoldNotice::decode(message.payload.as_ref()) {
            // Nobody waiting is not an error.
            Ok(notice) => drop(notices.send(Arc::new(notice))),
            Err(err) => tracing::warn!(error = %err, "an unreadable fold notice; ignored"),
        }
    }
    Ok(())
}
