//! The `engine` binary under test: where it writes, running it, stopping it, reading its errors.

use crate::stack::{kill_term, unique};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

/// The engine binary built for the test. Each suite has one, made from its own
/// `env!("CARGO_BIN_EXE_engine")`: Cargo sets that only when it compiles an integration test.
///
/// ```ignore
/// pub const ENGINE: Engine = Engine(env!("CARGO_BIN_EXE_engine"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Engine(pub &'static str);

impl Engine {
    /// The binary's path.
    pub fn bin(self) -> &'static str {
        self.0
    }

    /// A command running the binary, to set up as a test needs.
    pub fn command(self) -> Command {
        Command::new(self.0)
    }

    /// Runs `engine <args>` to its end with `env` (and `RUST_LOG=info`), capturing its output.
    pub fn run(self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command()
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .expect("run engine")
    }

    /// Starts `engine run <pipeline_file>` as a stream, with its stderr captured for
    /// [`sigterm`]. It goes to a file, not a pipe: nothing reads a pipe while the test runs, and
    /// once its 64 KiB were full (about a minute and a half of info logs at a 500 ms trigger)
    /// the engine's next log line, and the engine with it, would wait forever.
    pub fn spawn(self, pipeline_file: &str, env: &[(&str, &str)]) -> Child {
        let log = std::env::temp_dir().join(format!("{}.log", unique("engine-spawned")));
        let child = self.spawn_logged(pipeline_file, env, &log);
        spawned_logs().insert(child.id(), log);
        child
    }

    /// Starts `engine run <pipeline_file>` as a stream whose stderr goes to the file `log`,
    /// which stays for a look when a test fails (see [`log_file`]).
    pub fn spawn_logged(
        self,
        pipeline_file: &str,
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Child {
        self.command()
            .args(["run", pipeline_file])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("create the log file"))
            .spawn()
            .expect("start engine")
    }
}

/// Where the instance `name` of a test run `run` (its topic, say) logs: the temporary folder.
pub fn log_file(run: &str, name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{run}-{name}.log"))
}

/// Where one test's pipeline writes.
pub struct EnginePaths {
    pub bronze: String,
    pub checkpoints: String,
    /// The test's own gold prefix: tests never write the default `s3://gold` tables, which
    /// `make demo` reads.
    pub gold: String,
}

impl EnginePaths {
    /// A fresh prefix in the bronze bucket (and one in the gold bucket) for one test.
    pub fn new(test: &str) -> Self {
        let id = unique(test);
        let root = format!("s3://bronze/it/{id}");
        EnginePaths {
            bronze: root.clone(),
            checkpoints: format!("{root}/_checkpoints"),
            gold: format!("s3://gold/it/{id}"),
        }
    }

    /// The URL of a bronze table, as the shipped pipelines name it (`<bronze>/kafka/<t>`).
    pub fn table(&self, t: &str) -> String {
        format!("{}/kafka/{t}", self.bronze)
    }

    /// The environment the shipped pipelines read these paths from (`BRONZE_URL`, `GOLD_URL`,
    /// `CHECKPOINT_URL`), then `extra` (the topic variable, `TRIGGER`...), each entry of which
    /// replaces one of the same name.
    pub fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("BRONZE_URL", self.bronze.as_str()),
            ("GOLD_URL", self.gold.as_str()),
            ("CHECKPOINT_URL", self.checkpoints.as_str()),
        ];
        for (name, value) in extra {
            set_env(&mut env, name, value);
        }
        env
    }
}

/// Sets `name` to `value` in an environment list: replaces the entry of that name, else adds
/// one.
pub fn set_env<'a>(env: &mut Vec<(&'a str, &'a str)>, name: &'a str, value: &'a str) {
    match env.iter_mut().find(|(n, _)| *n == name) {
        Some(entry) => entry.1 = value,
        None => env.push((name, value)),
    }
}

/// Fails, with its output, unless the engine exited 0.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "engine failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `error:` lines of the engine's stderr.
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

/// The stderr files of the engines [`Engine::spawn`] started, by pid.
fn spawned_logs()
-> std::sync::MutexGuard<'static, std::collections::BTreeMap<u32, std::path::PathBuf>> {
    static LOGS: std::sync::Mutex<std::collections::BTreeMap<u32, std::path::PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    LOGS.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an engine [`Engine::spawn`] started has written to stderr so far (all of it, once it
/// has exited).
pub fn spawned_stderr(child: &Child) -> String {
    let log = spawned_logs().get(&child.id()).cloned();
    log.and_then(|l| std::fs::read_to_string(l).ok())
        .unwrap_or_default()
}

/// Sends SIGTERM and returns the exit status and stderr (of an engine [`Engine::spawn`]
/// started; empty for others); fails if it takes over 60 s.
pub async fn sigterm(mut child: Child) -> (ExitStatus, String) {
    kill_term(&child.id().to_string());
    let log = spawned_logs().remove(&child.id());
    let waited = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let err = log
            .and_then(|l| {
                let text = std::fs::read_to_string(&l).ok();
                let _ = std::fs::remove_file(&l);
                text
            })
            .unwrap_or_default();
        (status, err)
    });
    tokio::time::timeout(Duration::from_secs(60), waited)
        .await
        .expect("stops within 60 s")
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_entries_replace_those_of_the_same_name() {
        let paths = EnginePaths::new("env");
        let env = paths.env(&[
            ("ORDERS_TOPIC", "t"),
            ("GOLD_URL", "s3://g"),
            ("TRIGGER", "1s"),
        ]);
        assert_eq!(
            env,
            vec![
                ("BRONZE_URL", paths.bronze.as_str()),
                ("GOLD_URL", "s3://g"),
                ("CHECKPOINT_URL", paths.checkpoints.as_str()),
                ("ORDERS_TOPIC", "t"),
                ("TRIGGER", "1s"),
            ]
        );
    }
}
