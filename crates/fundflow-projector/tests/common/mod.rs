//! Helpers the projector's test binaries share: generated logs on the embedded log.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::Path;

use bytes::Bytes;
use fundflow_gen::{GenConfig, LogGenerator};
use fundflow_log::embedded::EmbeddedLog;
use fundflow_log::{AppendRequest, EventLog};
use fundflow_proto::{Message, v1};

/// Append requests for `records`, under each envelope's own partner and event id; records the
/// log cannot route (undecodable, an invalid partner id) are left out.
pub fn requests(records: impl IntoIterator<Item = Vec<u8>>) -> Vec<AppendRequest> {
    records
        .into_iter()
        .filter_map(|record| {
            let e = v1::Envelope::decode(record.as_slice()).ok()?;
            fundflow_domain::wire::is_valid_partner_id(&e.partner_id).then(|| AppendRequest {
                partner_id: e.partner_id,
                event_id: e.event_id,
                envelope: Bytes::from(record),
            })
        })
        .collect()
}

/// An embedded log in `dir` holding `events` generated events of `seed`.
pub async fn filled_log(dir: &Path, seed: u64, events: u64) -> EventLog {
    let log = EventLog::from(EmbeddedLog::open(dir).await.unwrap());
    let config = GenConfig {
        events,
        ..GenConfig::default()
    };
    log.append_batch(&requests(LogGenerator::new(seed, config)))
        .await
        .unwrap();
    log
}
