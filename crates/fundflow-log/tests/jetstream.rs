//! What only the JetStream log has, against a real nats-server 2.10 started for each test: the
//! stream's settings and its protection, and how connecting fails. What both logs do is in
//! `log_contract.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use fundflow_log::jetstream::{JetStreamConfig, JetStreamLog};
use fundflow_log::{AppendRequest, EventLog, LogErrorKind};
use fundflow_testkit::NatsServer;

fn request(partner: &str, event: &str, bytes: &'static [u8]) -> AppendRequest {
    AppendRequest {
        partner_id: partner.into(),
        event_id: event.into(),
        envelope: Bytes::from_static(bytes),
    }
}

#[tokio::test]
async fn the_stream_cannot_be_purged_or_have_messages_deleted() {
    let server = NatsServer::start();
    let log = JetStreamLog::connect(JetStreamConfig::new(server.url()))
        .await
        .unwrap();
    EventLog::from(log.clone())
        .append(request("a", "e1", b"one"))
        .await
        .unwrap();
    let context = async_nats::jetstream::new(log.client().clone());
    let stream = context.get_stream("FUNDFLOW").await.unwrap();
    assert!(stream.cached_info().config.deny_delete && stream.cached_info().config.deny_purge);
    assert!(
        stream.delete_message(1).await.is_err(),
        "deleting a message must be refused"
    );
    assert!(stream.purge().await.is_err(), "purging must be refused");
    assert_eq!(
        EventLog::JetStream(Box::new(log)).last_seq().await.unwrap(),
        1
    );
}

#[tokio::test]
async fn a_stream_with_contradicting_settings_is_refused() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let context = async_nats::jetstream::new(client);
    context
        .create_stream(async_nats::jetstream::stream::Config {
            name: "FUNDFLOW".into(),
            subjects: vec!["fundflow.v1.events.>".into()],
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .unwrap();
    let Err(err) = JetStreamLog::connect(JetStreamConfig::new(server.url())).await else {
        panic!("a stream that expires events must be refused");
    };
    assert_eq!(err.kind(), LogErrorKind::StreamConfig);
    let message = err.to_string();
    assert!(
        message.contains("deny_delete is off") && message.contains("would expire events"),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_a_connect_error() {
    let port = fundflow_testkit::free_port();
    let Err(err) =
        JetStreamLog::connect(JetStreamConfig::new(format!("nats://127.0.0.1:{port}"))).await
    else {
        panic!("nothing listens there");
    };
    assert_eq!(err.kind(), LogErrorKind::Connect);
    assert!(err.is_transient());
}

#[tokio::test]
async fn wrong_settings_are_config_errors_and_not_worth_retrying() {
    let Err(err) = JetStreamLog::connect(JetStreamConfig::new("nats://[::1")).await else {
        panic!("that is no URL");
    };
    assert_eq!(err.kind(), LogErrorKind::Config, "{err}");
    assert!(!err.is_transient());

    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = JetStreamConfig::new(server.url());
    config.nkey_seed_file = Some(dir.path().join("missing.nk"));
    let Err(err) = JetStreamLog::connect(config).await else {
        panic!("the NKey file is missing");
    };
    assert_eq!(err.kind(), LogErrorKind::Config, "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the I/O error is kept"
    );
}
