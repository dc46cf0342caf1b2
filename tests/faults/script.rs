//! `deploy/local-cluster.sh`: up starts three healthy nodes from the deploy configs with a
//! service key, fundflow can use them at three replicas, status reports them, down stops them.

use std::process::Command;

use crate::support::report;

const TEST: &str = "local-cluster.sh";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_script_starts_reports_and_stops_three_nodes() {
    let _alone = crate::one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    // All nine at once, so that no two listeners share one.
    let ports = fundflow_testkit::free_ports(9);
    let list = |range: std::ops::Range<usize>| {
        ports[range]
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (client_ports, route_ports, monitor_ports) = (list(0..3), list(3..6), list(6..9));
    let script = |command: &str| {
        Command::new(crate::support::repo().join("deploy/local-cluster.sh"))
            .arg(command)
            .env("FUNDFLOW_CLUSTER_DIR", dir.path())
            .env("FUNDFLOW_CLUSTER_CLIENT_PORTS", &client_ports)
            .env("FUNDFLOW_CLUSTER_ROUTE_PORTS", &route_ports)
            .env("FUNDFLOW_CLUSTER_MONITOR_PORTS", &monitor_ports)
            .env("FUNDFLOW_BIN", env!("CARGO_BIN_EXE_fundflow"))
            .env(
                "FUNDFLOW_NATS_SERVER",
                fundflow_testkit::binary().unwrap_or_else(|m| panic!("{m}")),
            )
            .env_remove("FUNDFLOW_CONFIG")
            .output()
            .unwrap()
    };
    // Whatever happens below, the nodes go.
    struct Down<F: Fn(&str) -> std::process::Output>(F);
    impl<F: Fn(&str) -> std::process::Output> Drop for Down<F> {
        fn drop(&mut self) {
            let _ = (self.0)("down");
        }
    }
    let script = Down(script);

    let up = (script.0)("up");
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        up.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(stdout.contains("cluster healthy"), "{stdout}");
    report(
        TEST,
        format!(
            "up: {}",
            stdout.lines().find(|l| l.contains("healthy")).unwrap()
        ),
    );

    let status = (script.0)("status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert_eq!(text.matches("running, healthy").count(), 3, "{text}");

    // The generated service key may create the stream at three replicas and publish.
    let urls: Vec<String> = client_ports
        .split(' ')
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    let file = dir.path().join("gen.log");
    let generated = Command::new(env!("CARGO_BIN_EXE_fundflow"))
        .args(["gen-log", "--events", "200"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let published = Command::new(env!("CARGO_BIN_EXE_fundflow"))
        .args(["publish-file", file.to_str().unwrap(), "--replicas", "3"])
        .args(["--nats-url", &urls.join(",")])
        .arg("--nats-nkey")
        .arg(dir.path().join("service.nk"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&published.stdout);
    assert!(
        published.status.success() && said.starts_with("stored "),
        "{said}{}",
        String::from_utf8_lossy(&published.stderr)
    );
    report(
        TEST,
        format!(
            "status: 3 nodes healthy; publish-file with the generated service key at R3: {}",
            said.trim()
        ),
    );

    let down = (script.0)("down");
    assert!(down.status.success());
    let status = (script.0)("status");
    assert!(!status.status.success());
    assert_eq!(
        String::from_utf8_lossy(&status.stdout)
            .matches("stopped")
            .count(),
        3
    );
    report(TEST, "down: 3 nodes stopped; status then exits 1");
}
