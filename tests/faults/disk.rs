//! Fault 4: a projector whose data dir it cannot write. First the data dir's path is a regular
//! file; then the disk (a tmpfs: the test runs as root on Linux, or is told to skip this case with
//! `FUNDFLOW_FAULTS_NO_TMPFS=1`) fills up while the projector folds. Each time: a clear error naming the cause, a non-zero exit, and, once the
//! problem is fixed and the projector restarted, a read model equal to the auditor's replay.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Fundflow, Nats, Setup, audit_replay, report};

const TEST: &str = "fault 4: unwritable data dir";

/// Set to skip the disk-full case where a tmpfs cannot be mounted (not root, not Linux).
const NO_TMPFS_VAR: &str = "FUNDFLOW_FAULTS_NO_TMPFS";

/// A small tmpfs, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(Tmpfs {
                path: path.to_owned(),
            })
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "cannot resize the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a process still holds a file there): detach it now, free it when let go.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn project(setup: &Setup, nats: &Nats, name: &str, data_dir: &Path) -> Fundflow {
    Fundflow::spawn(
        setup,
        nats,
        name,
        &[
            "project",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--config",
            setup.config.to_str().unwrap(),
        ],
        1,
    )
}

/// Publishes `events` generated events (seed `seed`) as the service; returns the stream's
/// last seq.
fn publish(setup: &Setup, nats: &Nats, events: u64, seed: u64) -> u64 {
    crate::support::publish_generated(setup, nats, events, seed, 1);
    let replay = audit_replay(setup, nats);
    replay["last_seq"].as_u64().unwrap()
}

/// The one-sentence report of a failure: the last line of a process's standard error that is
/// not a log line (logs of other tasks may follow it while the process exits).
fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| l.starts_with("fundflow: ") && !l.starts_with("fundflow: listening"))
        .unwrap_or("")
}

/// Restarts the projector on `data_dir` and checks its model against the auditor's replay.
async fn restart_and_compare(setup: &Setup, nats: &Nats, data_dir: &Path, last_seq: u64) -> String {
    let mut projector = project(setup, nats, "projector-after-fix", data_dir);
    projector.wait_ready(Duration::from_secs(60)).await;
    let checkpoint = projector
        .wait_for_seq(setup, last_seq, Duration::from_secs(120))
        .await;
    let replay = audit_replay(setup, nats);
    assert_eq!(checkpoint["seq"].as_u64(), Some(last_seq));
    assert_eq!(checkpoint["log_digest"], replay["log_digest"]);
    assert_eq!(checkpoint["model_digest"], replay["model_digest"]);
    projector.terminate().await;
    checkpoint["model_digest"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_data_dir_stops_the_projector_and_leaves_the_model_intact() {
    let _alone = crate::one_at_a_time().await;
    let setup = Setup::new(&["icshp"]);
    let nats = Nats::single(&setup).await;
    let last_seq = publish(&setup, &nats, 5_000, 41);
    report(
        TEST,
        format!("published 5,000 generated events: stream at seq {last_seq}"),
    );

    // The data dir's path is a regular file.
    let data_dir = setup.path("data");
    std::fs::write(&data_dir, "not a directory\n").unwrap();
    let mut projector = project(&setup, &nats, "projector-on-a-file", &data_dir);
    let status = projector.wait_exit(Duration::from_secs(30)).await;
    let stderr = projector.stderr();
    assert!(!status.success(), "the projector ran on a file: {stderr}");
    let error = last_line(&stderr);
    assert!(error.starts_with("fundflow: "), "{stderr}");
    assert!(error.contains(data_dir.to_str().unwrap()), "{stderr}");
    report(
        TEST,
        format!("data dir is a regular file: {status}, {error:?}"),
    );
    std::fs::remove_file(&data_dir).unwrap();
    let digest = restart_and_compare(&setup, &nats, &data_dir, last_seq).await;
    report(
        TEST,
        format!(
            "file removed, projector restarted: seq {last_seq}, model digest {digest} = the auditor's replay"
        ),
    );

    // The disk fills up mid-run.
    let mount_point = setup.path("small-disk");
    let tmpfs = match Tmpfs::mount(&mount_point, "32m") {
        Ok(tmpfs) => tmpfs,
        // Skipping must be asked for: a test that cannot mount its disk is not green by itself.
        Err(why) if std::env::var_os(NO_TMPFS_VAR).is_some() => {
            report(
                TEST,
                format!(
                    "disk-full case skipped ({NO_TMPFS_VAR} is set): cannot mount a tmpfs ({why})"
                ),
            );
            return;
        }
        Err(why) => panic!(
            "cannot mount a tmpfs for the disk-full case ({why}); run as root, or set {NO_TMPFS_VAR}=1 to skip that case"
        ),
    };
    let data_dir = mount_point.join("data");
    let mut projector = project(&setup, &nats, "projector-on-a-small-disk", &data_dir);
    projector.wait_ready(Duration::from_secs(60)).await;
    let (checkpoint_before, last_seq) = {
        let checkpoint = projector
            .wait_for_seq(&setup, last_seq, Duration::from_secs(60))
            .await;
        (checkpoint, publish(&setup, &nats, 40_000, 42))
    };
    report(
        TEST,
        format!(
            "projector on a 32 MiB tmpfs folded seq {}, then 40,000 more events were published (stream at seq {last_seq})",
            checkpoint_before["seq"]
        ),
    );
    let status = projector.wait_exit(Duration::from_secs(120)).await;
    let stderr = projector.stderr();
    let error = last_line(&stderr);
    assert!(!status.success(), "{stderr}");
    assert!(error.starts_with("fundflow: "), "{stderr}");
    assert!(
        error.contains("No space left on device") || error.contains("os error 28"),
        "{stderr}"
    );
    report(TEST, format!("disk full: {status}, {error:?}"));
    tmpfs.resize("256m");
    let digest = restart_and_compare(&setup, &nats, &data_dir, last_seq).await;
    report(
        TEST,
        format!(
            "tmpfs grown to 256 MiB, projector restarted: seq {last_seq}, model digest {digest} = the auditor's replay"
        ),
    );
}
