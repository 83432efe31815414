//! The local stack: its addresses, the repository's files, and stopping and starting services.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The variable `name`, or `default` when it is unset or empty (as `${VAR:-default}` in a
/// pipeline file reads it).
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// The Kafka bootstrap servers: `KAFKA_BROKERS`, else the local stack's.
pub fn brokers() -> String {
    env_or("KAFKA_BROKERS", "127.0.0.1:9092")
}

/// The S3 endpoint: `S3_ENDPOINT`, else the local stack's.
pub fn s3_endpoint() -> String {
    env_or("S3_ENDPOINT", "http://127.0.0.1:9000")
}

/// A name unique to this test run.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), fastrand::u32(..))
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    // This crate is `tests/support`.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support has a grandparent")
        .to_path_buf()
}

/// The path of a shipped pipeline file, `pipelines/<name>`.
pub fn pipeline(name: &str) -> String {
    repo_root()
        .join("pipelines")
        .join(name)
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// Sends SIGTERM to `pid`, failing if `kill` does.
pub fn kill_term(pid: &str) {
    assert!(
        Command::new("kill")
            .args(["-TERM", pid])
            .status()
            .unwrap()
            .success()
    );
}

/// Stops one service of the local stack (`kafka`, `weed-s3`, `weed-master`) by its pid file.
pub fn stop_service(name: &str) {
    let dir = std::env::var("STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".stack"));
    let dir = if dir.is_absolute() {
        dir
    } else {
        repo_root().join(dir)
    };
    let pid = std::fs::read_to_string(dir.join("run").join(format!("{name}.pid")))
        .expect("pid file of the stack");
    let pid = pid.trim().to_string();
    kill_term(&pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "{name} (pid {pid}) did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts whatever of the local stack is not running, and waits until it is healthy.
pub fn start_stack() {
    let out = Command::new(repo_root().join("scripts/stack"))
        .arg("up")
        .output()
        .expect("scripts/stack up");
    assert!(
        out.status.success(),
        "scripts/stack up failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls until `f` returns Some or `timeout` passes, then fails naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
