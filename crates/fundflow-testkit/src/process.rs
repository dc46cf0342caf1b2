//! A `fundflow` process owned by a test: started with its standard error in a file (so a failure
//! can show what it said), listening on port 0 when it serves HTTP (the address is read from
//! the `fundflow: listening on http://ADDR` line it prints once bound, so no port is picked in
//! advance and raced for), and killed on drop.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a serving process prints once its listener is bound.
const LISTENING_PREFIX: &str = "fundflow: listening on ";

/// How often a wait looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A running `fundflow` command.
pub struct FundflowProcess {
    /// For messages: which process of the test this is.
    name: String,
    /// `None` once it has been reaped.
    child: Option<Child>,
    /// Where its standard error goes.
    stderr_path: PathBuf,
    /// `http://ADDR`, once read from its standard error.
    url: Option<String>,
    /// Its exit status, once reaped.
    exited: Option<ExitStatus>,
}

/// How to start one.
pub struct FundflowCommand {
    command: Command,
    name: String,
    stderr_path: PathBuf,
}

impl FundflowCommand {
    /// `binary args…` (tests pass `env!("CARGO_BIN_EXE_fundflow")`), its standard error written
    /// to `stderr_path`, with `RUST_LOG=warn` unless set otherwise.
    pub fn new(binary: impl AsRef<OsStr>, name: &str, stderr_path: &Path) -> FundflowCommand {
        let mut command = Command::new(binary);
        command.env("RUST_LOG", "warn").stdin(Stdio::null());
        FundflowCommand {
            command,
            name: name.to_owned(),
            stderr_path: stderr_path.to_owned(),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> FundflowCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Adds `--listen 127.0.0.1:0`: the process picks its port.
    pub fn listen_on_any_port(self) -> FundflowCommand {
        self.args(["--listen", "127.0.0.1:0"])
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> FundflowCommand {
        self.command.env(key, value);
        self
    }

    /// Starts it. Panics if it cannot start: this is test setup.
    pub fn spawn(mut self) -> FundflowProcess {
        let stderr = std::fs::File::create(&self.stderr_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", self.stderr_path.display()));
        let child = self
            .command
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        FundflowProcess {
            name: self.name,
            child: Some(child),
            stderr_path: self.stderr_path,
            url: None,
            exited: None,
        }
    }
}

impl FundflowProcess {
    /// Its name in the test.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_else(|e| format!("(no stderr: {e})"))
    }

    /// Its process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `http://ADDR`: waits (at most `within`) until the process says where it listens. Panics
    /// if it exits first or does not say so in time.
    pub async fn wait_listening(&mut self, within: Duration) -> String {
        if let Some(url) = &self.url {
            return url.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            let stderr = self.stderr();
            if let Some(addr) = stderr
                .lines()
                .find_map(|line| line.strip_prefix(LISTENING_PREFIX))
            {
                let url = addr.trim().to_owned();
                self.url = Some(url.clone());
                return url;
            }
            if let Some(status) = self.try_exit() {
                panic!("{} exited ({status}) before listening: {stderr}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen within {within:?}: {stderr}",
                self.name
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The URL it listens on. Panics before [`FundflowProcess::wait_listening`] found it.
    pub fn url(&self) -> &str {
        self.url
            .as_deref()
            .unwrap_or_else(|| panic!("{}: wait_listening first", self.name))
    }

    /// Waits until `GET /readyz` answers 200, at most `within`. Panics if it exits first.
    pub async fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let url = format!("{}/readyz", self.wait_listening(within).await);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|e| panic!("HTTP client: {e}"));
        loop {
            if let Ok(reply) = http.get(&url).send().await
                && reply.status() == 200
            {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!("{} exited ({status}): {}", self.name, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "{} is not ready within {within:?}: {}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Its exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exited = Some(status);
        }
        self.exited
    }

    /// Waits for it to exit, at most `within`; panics past that.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}: {}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends SIGTERM (as systemd stops a unit) and waits for a clean exit, at most 30 s.
    pub async fn terminate(&mut self) {
        if self.try_exit().is_none()
            && let Some(id) = self.id()
        {
            let _ = Command::new("kill").arg(id.to_string()).status();
        }
        let status = self.wait_exit(Duration::from_secs(30)).await;
        assert!(
            status.success(),
            "{} exited with {status}: {}",
            self.name,
            self.stderr()
        );
    }

    /// Kills it at once (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            if let Ok(status) = child.wait() {
                self.exited.get_or_insert(status);
            }
        }
    }
}

impl Drop for FundflowProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
