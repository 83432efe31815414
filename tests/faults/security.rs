//! Security: the Kafka source authenticates on the local stack's SASL_PLAINTEXT listener (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512; `scripts/stack` creates the user), a wrong password fails
//! fast with one clear line, and a secret never shows in logs, `engine graph`, `engine validate`,
//! errors, or what the engine writes under its checkpoint location.
//!
//! The SASL listener is `KAFKA_SASL_PORT`, else the port of the first `KAFKA_BROKERS` entry + 2
//! (as `scripts/stack` derives it); the user is `KAFKA_SASL_USERNAME` / `KAFKA_SASL_PASSWORD`
//! (default `engine` / `engine-secret`).

use crate::ENGINE;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use test_support::*;

/// `host:port` of the SASL listener, derived like `scripts/stack` does.
fn sasl_brokers() -> String {
    let all = brokers();
    let first = all.split(',').next().unwrap_or_default();
    let first = first.rsplit("://").next().unwrap_or(first);
    let (host, port) = first
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("KAFKA_BROKERS={all} is not host:port"));
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| panic!("KAFKA_BROKERS={all}: bad port"));
    let sasl_port = match std::env::var("KAFKA_SASL_PORT") {
        Ok(p) if !p.is_empty() => p.parse().expect("KAFKA_SASL_PORT is a port"),
        _ => port + 2,
    };
    format!("{host}:{sasl_port}")
}

fn sasl_username() -> String {
    env_or("KAFKA_SASL_USERNAME", "engine")
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A copy of `pipelines/orders.toml` in a fresh temporary directory whose source reads from
/// `source_brokers` with these `[nodes.source.properties]`, written verbatim (so `${VAR}`
/// references are expanded by the engine).
struct TempPipeline {
    dir: PathBuf,
    file: PathBuf,
}

impl TempPipeline {
    fn new(name: &str, source_brokers: &str, properties: &[(&str, &str)]) -> TempPipeline {
        let text = std::fs::read_to_string(pipeline("orders.toml")).expect("read orders.toml");
        let start = text
            .find("[nodes.source]\n")
            .expect("orders.toml has [nodes.source]");
        let end = start
            + 1
            + text[start + 1..]
                .find("\n[")
                .expect("a table after [nodes.source]");
        let section = &text[start..end];
        let brokers_line = section
            .lines()
            .find(|l| l.trim_start().starts_with("brokers"))
            .expect("[nodes.source] has `brokers`");
        let mut new_section = section.replace(
            brokers_line,
            &format!("brokers = {}", toml_str(source_brokers)),
        );
        new_section.push_str("\n[nodes.source.properties]\n");
        for (k, v) in properties {
            // Values go in as written: `${VAR:-default}` stays for the engine to expand.
            assert!(
                !v.contains('"') && !v.contains('\\') && !v.contains('\n'),
                "{v}"
            );
            new_section.push_str(&format!("{} = \"{v}\"\n", toml_str(k)));
        }
        let dir = std::env::temp_dir().join(unique(&format!("engine-security-{name}")));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!("{}{new_section}{}", &text[..start], &text[end..]),
        )
        .expect("write pipeline");
        TempPipeline { dir, file }
    }

    fn path(&self) -> &str {
        self.file.to_str().expect("utf-8 path")
    }
}

impl Drop for TempPipeline {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One engine run, bounded in time.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ran {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
    fn describe(&self) -> String {
        format!(
            "exit {:?} after {:.1?}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `engine <args>` with `env` (RUST_LOG defaults to info), killing it after `limit`.
fn run_engine(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Ran {
    let start = Instant::now();
    let mut cmd = ENGINE.command();
    cmd.args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start engine");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() >= limit {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    Ran {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
        took,
    }
}

/// A topic with `n` orders, and fresh bronze/checkpoint prefixes for one run.
struct Case {
    topic: String,
    paths: EnginePaths,
}

impl Case {
    async fn new(name: &str, n: usize) -> Case {
        let topic = unique(name);
        create_topic(&topic, 3).await;
        // Order ids 1..=n.
        let sent = produce(&topic, burst(n, 1, 1, ms("2026-07-01T00:00:00Z"))).await;
        assert_eq!(sent.len(), n, "acknowledged orders");
        Case {
            topic,
            paths: EnginePaths::new(name),
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.paths.env(&[
            ("ORDERS_TOPIC", &self.topic),
            ("GOLD_URL", &self.paths.bronze),
            ("TRIGGER", "500ms"),
        ])
    }

    async fn order_ids(&self) -> BTreeSet<i64> {
        let rows = table_rows(&self.paths.table("commandes")).await;
        let ids: Vec<i64> = rows
            .iter()
            .map(|r| r["order_id"].as_i64().expect("order_id"))
            .collect();
        let set: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(ids.len(), set.len(), "duplicate orders in bronze");
        set
    }
}

fn sasl_properties<'a>(
    mechanism: &'a str,
    username: &'a str,
    password: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", mechanism),
        ("sasl.username", username),
        ("sasl.password", password),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_plain_and_scram_reach_the_broker() {
    let _serial = crate::SERIAL.lock().await;
    const N: usize = 60;
    let user = sasl_username();
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let case = Case::new(&format!("sasl-{}", mechanism.to_lowercase()), N).await;
        let p = TempPipeline::new(
            "orders-sasl",
            &sasl_brokers(),
            &sasl_properties(mechanism, &user, "${KAFKA_SASL_PASSWORD:-engine-secret}"),
        );
        let ran = run_engine(
            &["run", p.path(), "--batch"],
            &case.env(),
            Duration::from_secs(120),
        );
        assert!(
            ran.status.success(),
            "{mechanism} on {}: {}",
            sasl_brokers(),
            ran.describe()
        );
        let got = case.order_ids().await;
        assert_eq!(
            got,
            (1..=N as i64).collect::<BTreeSet<_>>(),
            "{mechanism}: orders in bronze"
        );
        eprintln!(
            "sasl {mechanism}: {N} orders read over {} in {:.1?}",
            sasl_brokers(),
            ran.took
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_sasl_password_is_one_clear_line_nonzero_exit() {
    let _serial = crate::SERIAL.lock().await;
    let wrong = format!("WR0NG-{}", fastrand::u64(..));
    let user = sasl_username();
    // Whether the one error line says the credentials were refused, per mechanism; checked last
    // so that the other properties are checked for every mechanism first.
    let mut unclear = Vec::new();
    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let case = Case::new(&format!("sasl-wrong-{}", mechanism.to_lowercase()), 5).await;
        let p = TempPipeline::new(
            "orders-wrong",
            &sasl_brokers(),
            &sasl_properties(mechanism, &user, &wrong),
        );
        let ran = run_engine(
            &["run", p.path(), "--batch"],
            &case.env(),
            Duration::from_secs(60),
        );
        assert!(
            ran.took < Duration::from_secs(30),
            "{mechanism}: a wrong password took {:.1?}: {}",
            ran.took,
            ran.describe()
        );
        assert!(
            !ran.status.success() && ran.status.code().is_some(),
            "{mechanism}: {}",
            ran.describe()
        );
        let all = ran.all();
        assert!(
            !all.contains("panicked") && !all.contains("RUST_BACKTRACE"),
            "{mechanism}: a panic: {}",
            ran.describe()
        );
        assert!(
            !all.contains(&wrong),
            "{mechanism}: the password is in the output: {}",
            ran.describe()
        );
        let errors = error_lines(&ran.stderr);
        assert_eq!(
            errors.len(),
            1,
            "{mechanism}: one `error:` line: {}",
            ran.describe()
        );
        assert_eq!(
            ran.status.code(),
            Some(3),
            "{mechanism}: exit code 3 (a service unreachable or refusing credentials): {}",
            ran.describe()
        );
        assert!(
            read_table(&case.paths.table("commandes")).await.is_empty(),
            "{mechanism}: rows were written without authenticating"
        );
        eprintln!(
            "sasl {mechanism} wrong password: exit {:?} in {:.1?}: {}",
            ran.status.code(),
            ran.took,
            errors[0]
        );
        let line = errors[0].to_lowercase();
        if !["credential", "authenticat", "password"]
            .iter()
            .any(|w| line.contains(w))
        {
            unclear.push(format!("{mechanism}: {}", errors[0]));
        }
    }
    assert!(
        unclear.is_empty(),
        "a wrong SASL password must be reported as refused credentials, not as an unreachable broker:\n{}",
        unclear.join("\n")
    );
}

fn assert_no_sentinel(what: &str, text: &str, sentinel: &str) {
    assert!(
        !text.contains(sentinel),
        "the secret {sentinel} is in {what}:\n{text}"
    );
}

/// Every line of `engine --log-format json` stderr is a JSON object (except the final
/// `error:` line).
fn assert_json_logs(what: &str, stderr: &str) {
    for l in stderr.lines().filter(|l| !l.trim().is_empty()) {
        if l.starts_with("error:") || l.starts_with("warning:") {
            continue;
        }
        assert!(
            serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()),
            "{what}: a log line that is not JSON: {l}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_secret_never_appears_in_logs_graph_validate_errors_or_manifests() {
    let _serial = crate::SERIAL.lock().await;
    let sentinel = format!("S3NT1NEL-{:016x}", fastrand::u64(..));
    let debug = [("RUST_LOG", "debug")];
    let limit = Duration::from_secs(120);

    // 1. A run that succeeds on the PLAINTEXT listener with secret-bearing properties that do
    //    not apply to it (librdkafka accepts and ignores them).
    const N: usize = 40;
    let ok_case = Case::new("sentinel-ok", N).await;
    let ok = TempPipeline::new(
        "orders-sentinel-ok",
        &brokers(),
        &[
            ("security.protocol", "PLAINTEXT"),
            ("sasl.username", "nobody"),
            ("sasl.password", &sentinel),
            ("ssl.key.password", &sentinel),
        ],
    );
    // 2. A run that fails authentication on the SASL listener with the sentinel as password.
    let bad_case = Case::new("sentinel-bad", 5).await;
    let bad = TempPipeline::new(
        "orders-sentinel-bad",
        &sasl_brokers(),
        &sasl_properties("SCRAM-SHA-256", &sasl_username(), &sentinel),
    );

    let mut outputs: Vec<(String, Ran)> = Vec::new();
    for (name, p, case) in [("ok", &ok, &ok_case), ("bad", &bad, &bad_case)] {
        let mut env = case.env();
        env.extend(debug);
        for (label, args) in [
            ("validate", vec!["validate", p.path()]),
            ("graph", vec!["graph", p.path()]),
            (
                "graph --format dot",
                vec!["graph", p.path(), "--format", "dot"],
            ),
            ("run --batch", vec!["run", p.path(), "--batch"]),
        ] {
            // Text logs and JSON logs.
            let text = run_engine(&args, &env, limit);
            let args_json: Vec<&str> = ["--log-format", "json"]
                .into_iter()
                .chain(args.iter().copied())
                .collect();
            let json = run_engine(&args_json, &env, limit);
            outputs.push((format!("{name}: {label}"), text));
            outputs.push((format!("{name}: --log-format json {label}"), json));
        }
    }

    for (what, ran) in &outputs {
        let ok_expected = what.starts_with("ok") || !what.contains("run --batch");
        assert_eq!(
            ran.status.success(),
            ok_expected,
            "{what}: {}",
            ran.describe()
        );
        assert_no_sentinel(what, &ran.all(), &sentinel);
        if what.contains("--log-format json") {
            assert_json_logs(what, &ran.stderr);
        }
        assert!(
            !ran.all().contains("panicked"),
            "{what}: {}",
            ran.describe()
        );
    }
    // The debug logs did say something (the sentinel check is not vacuous).
    let (_, ok_run) = outputs
        .iter()
        .find(|(w, _)| w == "ok: --log-format json run --batch")
        .unwrap();
    assert!(
        ok_run.stderr.lines().count() > 5 && ok_run.stderr.contains("\"DEBUG\""),
        "expected debug logs: {}",
        ok_run.describe()
    );
    let (_, graph) = outputs.iter().find(|(w, _)| w == "ok: graph").unwrap();
    assert!(graph.stdout.contains("source"), "{}", graph.describe());

    // The successful runs wrote the orders (twice: the second run found nothing new).
    assert_eq!(
        ok_case.order_ids().await,
        (1..=N as i64).collect::<BTreeSet<_>>()
    );

    // Everything under both checkpoint locations and bronze prefixes: manifests, state, tables.
    let mut objects = 0;
    for case in [&ok_case, &bad_case] {
        for (key, bytes) in all_objects(&case.paths.bronze).await {
            objects += 1;
            assert!(
                !bytes
                    .windows(sentinel.len())
                    .any(|w| w == sentinel.as_bytes()),
                "the secret is in s3 object {key}"
            );
            assert_no_sentinel(&key, &key, &sentinel);
        }
    }
    let manifests = all_objects(&ok_case.paths.checkpoints).await;
    assert!(
        !manifests.is_empty(),
        "no checkpoint objects under {}",
        ok_case.paths.checkpoints
    );
    eprintln!(
        "sentinel: {} engine outputs and {objects} objects ({} under the checkpoint) checked, none holds it",
        outputs.len(),
        manifests.len()
    );
}

/// A misspelt property key is refused by librdkafka; the refusal must not echo the value,
/// which is a secret when the key was meant to be `sasl.password`.
#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_secret_property_is_refused_without_echoing_its_value() {
    let _serial = crate::SERIAL.lock().await;
    let sentinel = format!("S3NT1NEL-{:016x}", fastrand::u64(..));
    let case = Case::new("sentinel-typo", 1).await;
    let p = TempPipeline::new(
        "orders-typo",
        &sasl_brokers(),
        &[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "engine"),
            ("sasl.pasword", &sentinel),
        ],
    );
    let ran = run_engine(
        &["run", p.path(), "--batch"],
        &case.env(),
        Duration::from_secs(60),
    );
    assert!(!ran.status.success(), "{}", ran.describe());
    let errors = error_lines(&ran.stderr);
    assert_eq!(errors.len(), 1, "{}", ran.describe());
    assert!(errors[0].contains("sasl.pasword"), "{}", ran.describe());
    assert_no_sentinel("the output", &ran.all(), &sentinel);
}

/// Secrets holding `$`, `${`, `$$`, quotes, backslashes and non-ASCII, written in the TOML or
/// read from an environment variable, never show in `validate`, `validate --connect`, `graph` or
/// `run`, whatever the error: refused S3 and SASL credentials, and the secret put by mistake
/// into a number, a duration, an enum or a URL.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_with_special_characters_never_show_whatever_the_error() {
    let _serial = crate::SERIAL.lock().await;
    let core = format!("k{:012x}", fastrand::u64(..));
    let secrets = [
        format!("hunter2${core}Tail"),
        format!("pa${{{core}"),
        format!("s3$${core}"),
        format!("q\"u'o\\te{core}"),
        format!("mot-de-passé-{core}-ß∂ƒ"),
        format!("x${{{core}-z}}y"),
    ];
    let case = Case::new("sentinel-special", 3).await;
    let base = std::fs::read_to_string(pipeline("orders.toml")).expect("read orders.toml");
    let dir = std::env::temp_dir().join(unique("engine-secrets"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let limit = Duration::from_secs(90);
    let line_of = |key: &str| {
        base.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("orders.toml has no `{key}` line"))
            .to_string()
    };
    let mut checked = 0;
    for (i, secret) in secrets.iter().enumerate() {
        for via_env in [false, true] {
            let value = if via_env {
                "\"${ENGINE_TEST_SECRET}\"".to_string()
            } else {
                toml_str(secret)
            };
            let source_with = |extra: &str| {
                base.replacen("[nodes.source]\n", &format!("[nodes.source]\n{extra}\n"), 1)
            };
            // (what, pipeline text, commands, expected exit code when it fails, what the error names)
            let cases: Vec<(&str, String, Vec<&str>, i32, &str)> = vec![
                (
                    "wrong S3 secret",
                    base.replace(&line_of("secret_access_key"), &format!("secret_access_key = {value}")),
                    vec!["validate", "graph", "validate --connect", "run"],
                    3,
                    "rejected the credentials",
                ),
                (
                    "wrong SASL password",
                    source_with(&format!(
                        "properties.\"security.protocol\" = \"SASL_PLAINTEXT\"\nproperties.\"sasl.mechanism\" = \"SCRAM-SHA-512\"\nproperties.\"sasl.username\" = \"{}\"\nproperties.\"sasl.password\" = {value}",
                        sasl_username()
                    ))
                    .replace(&line_of("brokers"), &format!("brokers = {}", toml_str(&sasl_brokers()))),
                    vec!["validate", "graph", "run"],
                    3,
                    "rejected the credentials",
                ),
                ("secret as a number", source_with(&format!("batch_size = {value}")), vec!["validate"], 2, "`batch_size`"),
                ("secret as a duration", source_with(&format!("linger = {value}")), vec!["validate"], 2, "`linger`"),
                (
                    "secret as an enum",
                    base.replace(&line_of("starting_offsets"), &format!("starting_offsets = {value}")),
                    vec!["validate"],
                    2,
                    "`starting_offsets`",
                ),
                (
                    "secret as a trigger",
                    base.replace(&line_of("trigger"), &format!("trigger = {value}")),
                    vec!["validate"],
                    2,
                    "`pipeline.trigger`",
                ),
                (
                    "secret as a URL",
                    base.replace(&line_of("checkpoint"), &format!("checkpoint = {value}")),
                    vec!["validate"],
                    2,
                    "`pipeline.checkpoint`",
                ),
            ];
            for (what, text, commands, code, names) in cases {
                let file = dir.join(format!(
                    "case-{i}-{via_env}-{}.toml",
                    what.replace(' ', "_")
                ));
                std::fs::write(&file, &text).expect("write pipeline");
                let mut env = case.env();
                env.push(("ENGINE_TEST_SECRET", secret));
                env.push(("RUST_LOG", "debug"));
                for command in &commands {
                    let mut args: Vec<&str> = command.split(' ').collect();
                    args.push(file.to_str().expect("utf-8 path"));
                    if *command == "run" {
                        args.push("--batch");
                    }
                    let ran = run_engine(&args, &env, limit);
                    let label = format!(
                        "{what} ({}, {command})",
                        if via_env { "env" } else { "toml" }
                    );
                    assert!(
                        !ran.all().contains(&core),
                        "{label}: the secret shows:\n{}",
                        ran.describe()
                    );
                    assert!(
                        !ran.all().contains("panicked"),
                        "{label}: {}",
                        ran.describe()
                    );
                    // `validate` and `graph` connect to nothing: only a mistake in the file fails them.
                    let fails = code == 2 || !matches!(*command, "validate" | "graph");
                    if fails {
                        assert_eq!(ran.status.code(), Some(code), "{label}: {}", ran.describe());
                        let errors = error_lines(&ran.stderr);
                        assert_eq!(
                            errors.len(),
                            1,
                            "{label}: one error line: {}",
                            ran.describe()
                        );
                        assert!(errors[0].contains(names), "{label}: {}", ran.describe());
                    } else {
                        assert!(ran.status.success(), "{label}: {}", ran.describe());
                    }
                    checked += 1;
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("special-character secrets: {checked} engine outputs checked, none shows any");
}
