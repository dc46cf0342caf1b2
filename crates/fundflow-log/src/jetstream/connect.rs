//! Connecting: options, TLS, credentials and NKey files, the server version check, and waiting
//! for the stream while JetStream becomes available.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;

use super::{ConnectionStats, JetStreamConfig, JetStreamLog};
use crate::{Backoff, LogError, LogErrorKind};

/// How long connecting keeps asking for the stream while JetStream is unavailable.
const STREAM_SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// The pace of asking for the stream again while JetStream is unavailable: a leader election
/// takes a few seconds, a cluster's start somewhat longer.
const STREAM_SETUP_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

/// The server versions fundflow supports start at 2.10: 2.9 has no `sync_interval` and known
/// replication bugs fixed later.
fn supported(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 10)
}

impl JetStreamLog {
    /// Connects, checks the server version (warns below 2.10), and makes sure the stream exists
    /// with fundflow's settings.
    pub async fn connect(config: JetStreamConfig) -> Result<JetStreamLog, LogError> {
        let stats = Arc::new(ConnectionStats::default());
        let events = Arc::clone(&stats);
        let servers = server_addrs(&config.url)?;
        let mut options = async_nats::ConnectOptions::new()
            .name(&config.client_name)
            .require_tls(
                config
                    .url
                    .split(',')
                    .any(|u| u.trim().starts_with("tls://")),
            )
            .max_reconnects(None)
            .event_callback(move |event| {
                let stats = Arc::clone(&events);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            stats.connected.store(true, Ordering::Relaxed);
                            tracing::info!("connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            stats.connected.store(false, Ordering::Relaxed);
                            stats.disconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!("disconnected from NATS; reconnecting");
                        }
                        // A permissions violation, an authorization error: the server refused
                        // something, and the request behind it will only time out.
                        async_nats::Event::ServerError(err) => {
                            tracing::error!(error = %err, "the NATS server refused a request");
                        }
                        other => tracing::info!(event = %other, "NATS connection event"),
                    }
                }
            });
        if let Some(path) = &config.credentials {
            options = options.credentials_file(path).await.map_err(|err| {
                LogError::with_source(
                    LogErrorKind::Config,
                    format!("cannot read the credentials file {}", path.display()),
                    err,
                )
            })?;
        }
        if let Some(path) = &config.nkey_seed_file {
            options = options.nkey(read_nkey_seed(path).await?);
        }
        let client = options.connect(servers).await.map_err(|err| {
            LogError::with_source(
                LogErrorKind::Connect,
                format!("cannot connect to {}", config.url),
                err,
            )
        })?;
        stats.connected.store(true, Ordering::Relaxed);
        let version = client.server_info().version;
        if !supported(&version) {
            tracing::warn!(
                %version,
                "nats-server {version} is older than 2.10, which fundflow needs: acknowledged \
                 writes may reach the disk late and replication has known bugs; upgrade the server"
            );
        }
        let context = jetstream::new(client.clone());
        let log = JetStreamLog {
            client,
            context,
            config: Arc::new(config),
            stats,
            appending: Arc::new(tokio::sync::Mutex::new(())),
        };
        // During a leader election or while nodes start, the JetStream API times out or answers
        // "unavailable" for a few seconds: a process started then waits rather than exits.
        let deadline = tokio::time::Instant::now() + STREAM_SETUP_PATIENCE;
        let mut backoff = STREAM_SETUP_BACKOFF;
        loop {
            match log.ensure_stream().await {
                Ok(()) => return Ok(log),
                Err(err)
                    if err.is_transient()
                        && tokio::time::Instant::now() + backoff.delay() < deadline =>
                {
                    tracing::warn!(error = %err, backoff = ?backoff.delay(), "the stream cannot be set up yet; retrying");
                    backoff.wait().await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// The servers of a comma-separated URL list.
fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, LogError> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>().map_err(|err| {
                LogError::with_source(
                    LogErrorKind::Config,
                    format!("{url:?} is not a NATS server URL"),
                    err,
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|servers| {
            if servers.is_empty() {
                Err(LogError::new(
                    LogErrorKind::Config,
                    "no NATS server URL given",
                ))
            } else {
                Ok(servers)
            }
        })
}

/// Reads an NKey seed file: one line, a user seed (`SU...`), which is checked here so that a
/// wrong file is named rather than reported as an authorization failure.
async fn read_nkey_seed(path: &std::path::Path) -> Result<String, LogError> {
    let text = tokio::fs::read_to_string(path).await.map_err(|err| {
        LogError::with_source(
            LogErrorKind::Config,
            format!("cannot read the NKey seed file {}", path.display()),
            err,
        )
    })?;
    let seed = text.trim().to_owned();
    if !seed.starts_with("SU") || nkeys::KeyPair::from_seed(&seed).is_err() {
        return Err(LogError::new(
            LogErrorKind::Config,
            format!(
                "{} does not hold a NATS user NKey seed (one line starting with SU, as `fundflow nkey new` writes)",
                path.display()
            ),
        ));
    }
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_2_10_are_supported() {
        assert!(supported("2.10.27"));
        assert!(supported("2.11.1"));
        assert!(!supported("2.9.10"));
    }
}
