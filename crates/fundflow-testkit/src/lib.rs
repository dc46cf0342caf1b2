//! Test helpers, written once for every test binary and benchmark: [`NatsServer`] starts a real
//! `nats-server` (2.10 or newer, never the machine's shared instance) with JetStream on a free
//! loopback port and a temporary store, and kills it on drop, so tests run in parallel and clean
//! up after themselves; [`FundflowProcess`] runs a `fundflow` command on port 0 and reads back
//! where it listens; [`AccessConfig`] writes an access config with a serializer.
//!
//! The binary is found through `FUNDFLOW_NATS_SERVER`, then the repository's `.tools/` folder
//! (filled by `deploy/nats/fetch-nats-server.sh`), then `PATH`; one older than 2.10 is refused
//! with a message that says how to get the right one.

mod access;
mod process;

pub use access::AccessConfig;
pub use process::{FundflowCommand, FundflowProcess};

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running `nats-server` owned by a test.
pub struct NatsServer {
    /// The process; `None` while stopped.
    child: Option<Child>,
    /// The loopback port, kept across restarts so clients reconnect to the same address.
    port: u16,
    /// The JetStream store, kept across restarts so the stream survives them; removed on drop.
    store: tempfile::TempDir,
    binary: PathBuf,
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port. Panics with a clear message if no
    /// suitable binary is found or it does not start: this is test setup.
    pub fn start() -> NatsServer {
        let binary = binary().unwrap_or_else(|message| panic!("{message}"));
        let store = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary store: {e}"));
        let port = free_port();
        let mut server = NatsServer {
            child: None,
            port,
            store,
            binary,
        };
        server.restart();
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The JetStream store directory.
    pub fn store(&self) -> &Path {
        self.store.path()
    }

    /// Kills the server at once (SIGKILL), as a crash would. The store stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (after [`NatsServer::kill`]) on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        let log = self.store.path().join("nats-server.log");
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// `n` distinct ports nobody listens on right now. They are bound all at once before any is
/// released: ports taken one after another may repeat, and a cluster whose two listeners got
/// the same port runs short of a node.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("no free port: {e}")))
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("no free port: {e}"))
        })
        .collect()
}

/// The nats-server binary to use, checked to be 2.10 or newer.
pub fn binary() -> Result<PathBuf, String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("FUNDFLOW_NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo.join(".tools/nats-server/usr/sbin/nats-server")])
        .chain(std::env::split_paths(&path).map(|p| p.join("nats-server")));
    for candidate in candidates {
        if !candidate.is_file() {
            continue;
        }
        let version = Command::new(&candidate)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        if is_at_least_2_10(&version) {
            return Ok(candidate);
        }
    }
    Err(
        "no nats-server 2.10 or newer found: run deploy/nats/fetch-nats-server.sh, or set \
         FUNDFLOW_NATS_SERVER to its path"
            .to_owned(),
    )
}

/// Whether `nats-server --version` output (`nats-server: v2.10.27`) is 2.10 or newer.
pub fn is_at_least_2_10(version_output: &str) -> bool {
    let version = version_output.rsplit('v').next().unwrap_or("");
    let mut parts = version
        .split('.')
        .map(|p| p.trim().parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_check_accepts_2_10_and_later_only() {
        assert!(is_at_least_2_10("nats-server: v2.10.27"));
        assert!(is_at_least_2_10("nats-server: v2.11.0"));
        assert!(is_at_least_2_10("nats-server: v3.0.0"));
        assert!(!is_at_least_2_10("nats-server: v2.9.10"));
        assert!(!is_at_least_2_10(""));
    }

    #[test]
    fn a_started_server_listens_and_stops_on_drop() {
        let server = NatsServer::start();
        let port = server.port;
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
