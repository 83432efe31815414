//! The `engine` command line.

use crate::config::Pipeline;
use crate::graph::Graph;
use crate::produce::{Kind, ProduceArgs};
use crate::runtime::{RunOptions, run};
use clap::{Parser, Subcommand, ValueEnum};
use engine_api::{EngineError, ErrorKind, Reason, Registry, Result, Service, is_local_address};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "engine",
    version,
    about = "An actor-based stream processing engine: Kafka JSON events to Parquet on S3, with windows",
    long_about = "An actor-based stream processing engine.\n\n\
A pipeline is a TOML file of named nodes (a Kafka source, operators such as json_parse and \
explode, and sinks such as parquet and console), each naming its inputs. Every node runs as an \
actor; actors exchange Arrow micro-batches over bounded mailboxes. Output becomes visible once \
per trigger, when the epoch's checkpoint manifest is committed, so nothing is lost or duplicated \
across restarts.\n\n\
Exit codes: 0 done, 1 failure while running, 2 a mistake in the pipeline or its input \
(bad TOML, missing topic, missing bucket), 3 a service unreachable or refusing credentials.",
    after_help = "Examples:\n  engine validate pipelines/orders.toml\n  engine graph pipelines/orders.toml\n  engine run pipelines/orders.toml --batch\n  engine produce --topic commandes-json --count 10000\n  engine report pipelines/orders.toml pipelines/logs.toml pipelines/metrics.toml"
)]
struct Cli {
    /// Log format on stderr: text or json. The level comes from RUST_LOG (default info).
    #[arg(long, global = true, default_value = "text", env = "ENGINE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: until Ctrl-C or SIGTERM (a clean stop with a final checkpoint, exit 0), or
    /// with --batch until the end offsets seen at start.
    Run {
        /// The pipeline file.
        file: PathBuf,
        /// Read up to the end offsets seen at start, commit, and exit 0. A later run takes only
        /// newer messages.
        #[arg(long)]
        batch: bool,
        /// Serve Prometheus metrics at http://HOST:PORT/metrics, liveness at /health and
        /// readiness at /ready (ready once an epoch has committed; not ready while stopping).
        /// Overrides the pipeline's `metrics_address`. Off by default.
        #[arg(long, value_name = "HOST:PORT", env = "ENGINE_METRICS_ADDRESS")]
        metrics_address: Option<String>,
    },
    /// Check pipelines without running them: TOML keys, types and ranges, node types, wiring,
    /// column names and schemas, URLs. Connects to nothing and writes nothing, unless --connect.
    /// Checks every file given and prints one line per error; exits 2 if any file fails. A
    /// `.test.toml` file is checked against its pipeline (it parses and names what it has).
    Validate {
        /// The pipeline file(s).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also check the environment: the brokers answer and accept the credentials, the
        /// topics exist, and the buckets of the sinks and the checkpoint exist and accept the
        /// credentials. Reads and writes no data.
        #[arg(long)]
        connect: bool,
    },
    /// Print a pipeline's actor graph with the schema of every port.
    Graph {
        file: PathBuf,
        /// text or dot (Graphviz).
        #[arg(long, default_value = "text")]
        format: GraphFormat,
    },
    /// Write realistic synthetic messages for the course's topics (orders keyed by customer_id).
    Produce {
        /// The topic to write to.
        #[arg(long)]
        topic: String,
        /// How many messages.
        #[arg(long)]
        count: u64,
        /// Messages per second (open loop); as fast as possible when absent.
        #[arg(long)]
        rate: Option<f64>,
        /// Seed: the same seed and start time give the same messages.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Message kind; guessed from the topic name when absent.
        #[arg(long)]
        kind: Option<Kind>,
        /// Event time of the first message (RFC 3339), or `now`.
        #[arg(long, default_value = "2026-01-01T00:00:00Z")]
        start_time: String,
        /// Kafka brokers.
        #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Replace every N-th message with a malformed one (truncated JSON, an array, a wrong
        /// type, a missing field, a broken rule, an empty value), to see the quarantine at work.
        #[arg(long, default_value_t = 0)]
        bad_every: u64,
        /// With --rate: set each message's event time and Kafka timestamp to its intended send
        /// time (overrides --start-time), to measure produce-to-visible latency (`make bench`).
        #[arg(long, requires = "rate")]
        stamp_send_time: bool,
    },
    /// Read back what the pipelines' parquet sinks wrote: the rows of each bronze and quarantine
    /// table, the quarantine per reason, and a preview of each gold table (downstream of an
    /// aggregate, window_aggregate or top_n). Tables and storage settings come from the files,
    /// with their ${VAR:-default} values.
    Report {
        /// The pipeline file(s) whose tables to read.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rows in each gold table's preview [default: the sink's preview_rows, else 5].
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
        rows: Option<u16>,
    },
    /// Watch a running engine: rows/s in and out per node, mailbox depth, time blocked on full
    /// mailboxes, state entries and watermarks; committed offset and lag per Kafka partition;
    /// epochs committed and the time since the last commit. Read from the engine's /metrics
    /// (started with --metrics-address), refreshed every interval; q quits. Prints one view and
    /// exits when standard output is not a terminal, or with --once.
    Top {
        /// Where the engine serves its metrics (its --metrics-address).
        #[arg(long, value_name = "HOST:PORT", env = "ENGINE_METRICS_ADDRESS")]
        metrics_address: String,
        /// Time between refreshes (rates are measured over it), such as 1s or 500ms.
        #[arg(long, default_value = "1s", value_parser = refresh_interval)]
        interval: std::time::Duration,
        /// Print one view (two scrapes an interval apart) and exit.
        #[arg(long)]
        once: bool,
    },
    /// Run the unit tests of pipelines, declared in `<pipeline>.test.toml` beside each file:
    /// messages for the sources (barriers between them where a trigger should fall) and the rows
    /// expected on named nodes, ports (`parse.quarantine`) or sinks. Runs the real graph
    /// in-process with no Kafka, no S3 and no disk: sources replaced by the messages, sinks by
    /// memory tables, checkpoints in memory. Prints a diff of expected and actual rows for each
    /// failure; exits 1 if any test fails, 2 if a file is wrong. A `.test.toml` argument stands
    /// for its pipeline, so `engine test pipelines/*.toml` works.
    Test {
        /// The pipeline file(s).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// text, or json (one document with every result).
        #[arg(long, default_value = "text")]
        format: TestFormat,
        /// Run only the tests whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
    },
    /// List the node types this binary knows.
    Types,
}

#[derive(Clone, Copy, ValueEnum)]
enum TestFormat {
    Text,
    Json,
}

/// `engine top --interval`: 100 ms to 1 min.
fn refresh_interval(s: &str) -> std::result::Result<std::time::Duration, String> {
    engine_api::parse_duration(
        "--interval",
        s,
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(60),
    )
    .map_err(|e| e.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

/// Runs the CLI with a registry; custom binaries register their operators first.
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    // Tests print their results; the runtime's progress would bury them.
    let quiet = matches!(cli.command, Command::Test { .. });
    init_logging(cli.log_format, if quiet { "error" } else { "info" });
    let json = matches!(cli.log_format, LogFormat::Json);
    match execute(cli.command, registry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.kind() {
                ErrorKind::Reported(_) => {}
                // Every line JSON: the error goes through the log, as one event.
                _ if json => tracing::error!(target: "engine", "{}", error_line(&e)),
                _ => eprintln!("{}", error_line(&e)),
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// The line printed for an error: the error, and a remediation hint when its kind has one.
pub fn error_line(e: &EngineError) -> String {
    match hint(e) {
        Some(hint) => format!("error: {e} ({hint})"),
        None => format!("error: {e}"),
    }
}

/// What to do about an error, from its kind and the service's address: how to start the local
/// stack (`scripts/stack up`), for addresses on this machine only, where that advice cannot
/// mislead. The message itself already says which setting to check.
pub fn hint(e: &EngineError) -> Option<&'static str> {
    let ErrorKind::Unavailable { service, reason } = e.kind() else {
        return None;
    };
    if !is_local_address(e.address()?) {
        return None;
    }
    match (service, reason) {
        (_, Reason::Unreachable | Reason::Timeout) if service != Service::Other => {
            Some("scripts/stack up starts the local one")
        }
        (Service::Kafka, Reason::NotFound) => Some("scripts/stack up creates the course topics"),
        (Service::ObjectStore | Service::CheckpointStore, Reason::NotFound) => {
            Some("scripts/stack up creates bronze and gold")
        }
        _ => None,
    }
}

fn init_logging(format: LogFormat, level: &str) {
    // The Delta kernel logs every snapshot it builds at info: quiet unless RUST_LOG names it.
    let mut directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| format!("{level},librdkafka=off,rdkafka=off"));
    if !directives.contains("delta_kernel") {
        directives.push_str(",delta_kernel=warn");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=off,rdkafka=off,delta_kernel=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(file: &std::path::Path, registry: &Registry) -> Result<Graph> {
    let pipeline = Pipeline::load(file)?;
    Graph::build(pipeline, registry)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::runtime(format!("cannot start the async runtime: {e}")))
}

fn execute(command: Command, registry: Registry) -> Result<()> {
    match command {
        Command::Validate { files, connect } => {
            let rt = if connect { Some(runtime()?) } else { None };
            let mut first_error: Option<EngineError> = None;
            let mut registry = registry;
            crate::pipeline_tests::register_tap(&mut registry);
            for f in &files {
                if crate::pipeline_tests::pipeline_path(f) != *f {
                    // A pipeline's tests: they parse and name what the pipeline has.
                    match crate::pipeline_tests::validate(f, &registry) {
                        Ok(n) => println!("{}: ok ({n} tests)", f.display()),
                        Err(e) => {
                            eprintln!("{}", error_line(&e));
                            first_error.get_or_insert(e);
                        }
                    }
                    continue;
                }
                let checked = load(f, &registry).and_then(|mut g| {
                    if let Some(rt) = &rt {
                        rt.block_on(crate::runtime::check_environment(&mut g))?;
                    }
                    Ok(g)
                });
                match checked {
                    Ok(g) => {
                        for w in &g.warnings {
                            eprintln!("warning: {}: {w}", f.display());
                        }
                        let connected = if connect { ", services answered" } else { "" };
                        println!("{}: ok ({} nodes{connected})", f.display(), g.nodes.len());
                    }
                    Err(e) => {
                        eprintln!("{}", error_line(&e));
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                None => Ok(()),
                Some(e) => Err(EngineError::reported(e.exit_code())),
            }
        }
        Command::Graph { file, format } => {
            let g = load(&file, &registry)?;
            match format {
                GraphFormat::Text => print!("{}", g.render_text()),
                GraphFormat::Dot => print!("{}", g.render_dot()),
            }
            Ok(())
        }
        Command::Test {
            files,
            format,
            filter,
        } => {
            let mut registry = registry;
            crate::pipeline_tests::register_tap(&mut registry);
            let rt = runtime()?;
            let mut seen = std::collections::BTreeSet::new();
            let (mut results, mut missing) = (Vec::new(), Vec::new());
            for f in &files {
                let pipeline = crate::pipeline_tests::pipeline_path(f);
                if !seen.insert(pipeline.clone()) {
                    continue;
                }
                match rt.block_on(crate::pipeline_tests::run_pipeline_tests(
                    &pipeline,
                    &registry,
                    filter.as_deref(),
                ))? {
                    Some(r) => results.push(r),
                    None => missing.push(pipeline.display().to_string()),
                }
            }
            let failed = match format {
                TestFormat::Text => crate::pipeline_tests::print_text(&results, &missing).1,
                TestFormat::Json => {
                    let doc = crate::pipeline_tests::to_json(&results, &missing);
                    println!("{doc:#}");
                    doc["failed"].as_u64().unwrap_or(0) as usize
                }
            };
            if failed > 0 {
                return Err(EngineError::reported(1));
            }
            Ok(())
        }
        Command::Types => {
            for (name, kind) in registry.types() {
                println!("{name:<16} {kind}");
            }
            Ok(())
        }
        Command::Run {
            file,
            batch,
            metrics_address,
        } => {
            let pipeline = Pipeline::load(&file)?;
            let metrics_address = metrics_address
                .filter(|a| !a.trim().is_empty())
                .or_else(|| pipeline.metrics_address.clone());
            let name = pipeline.name.clone();
            let rt = runtime()?;
            // The recorder goes in before the nodes are built: they register their series then.
            if let Some(address) = &metrics_address {
                rt.block_on(crate::metrics_server::start(address, &name))?;
            }
            let g = Graph::build(pipeline, &registry)?;
            for w in &g.warnings {
                tracing::warn!("{w}");
            }
            // The instance that takes the finalizer's role over builds its nodes afresh.
            let registry = std::sync::Arc::new(registry);
            let rebuild: crate::runtime::GraphFactory =
                std::sync::Arc::new(move || load(&file, &registry));
            rt.block_on(async move {
                let cancel = CancellationToken::new();
                spawn_signal_handler(cancel.clone());
                tracing::info!(pipeline = %name, batch, "starting");
                let opts = RunOptions {
                    batch,
                    rebuild: Some(rebuild),
                };
                let summary = run(g, opts, cancel).await?;
                let secs = summary.elapsed.as_secs_f64().max(1e-9);
                tracing::info!(
                    pipeline = %name,
                    records = summary.records,
                    seconds = format!("{secs:.2}"),
                    records_per_s = (summary.records as f64 / secs).round() as u64,
                    epochs = summary.epochs_committed,
                    rows = ?summary.rows_per_sink,
                    "finished"
                );
                Ok(())
            })
        }
        Command::Produce {
            topic,
            count,
            rate,
            seed,
            kind,
            start_time,
            brokers,
            bad_every,
            stamp_send_time,
        } => {
            let kind = kind.or_else(|| Kind::for_topic(&topic)).ok_or_else(|| {
                EngineError::config(format!("cannot tell the kind of messages for topic `{topic}`; pass --kind orders|logs|metrics"))
            })?;
            let start_ms = if start_time == "now" {
                chrono::Utc::now().timestamp_millis()
            } else {
                chrono::DateTime::parse_from_rfc3339(&start_time)
                    .map_err(|e| {
                        EngineError::config(format!("bad --start-time `{start_time}`: {e}"))
                    })?
                    .timestamp_millis()
            };
            if rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
                return Err(EngineError::config(
                    "--rate must be a positive number of messages per second",
                ));
            }
            let t0 = std::time::Instant::now();
            let n = crate::produce::produce(&ProduceArgs {
                brokers,
                topic: topic.clone(),
                kind,
                count,
                rate,
                seed,
                start_ms,
                bad_every,
                stamp_send_time,
            })?;
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "produced {n} messages to {topic} in {secs:.1}s ({:.0}/s)",
                n as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        Command::Top {
            metrics_address,
            interval,
            once,
        } => runtime()?.block_on(crate::top::run(&metrics_address, interval, once)),
        Command::Report { files, rows } => {
            let mut tables = Vec::new();
            for f in &files {
                let found = crate::report::tables(&load(f, &registry)?);
                if found.is_empty() {
                    eprintln!(
                        "warning: {}: no parquet sink, so no table to report",
                        f.display()
                    );
                }
                tables.extend(found);
            }
            runtime()?.block_on(crate::report::report(
                &tables,
                rows.map(usize::from),
                &mut std::io::stdout().lock(),
            ))
        }
    }
}

/// First Ctrl-C or SIGTERM: clean stop (final checkpoint, exit 0). Second: exit at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!(
                    "stopping: finishing the current epoch (press Ctrl-C again to quit at once)"
                );
                engine_runtime::health::health().set_stopping();
                cancel.cancel();
            } else {
                tracing::warn!(
                    "stopped without a final checkpoint; the next run resumes from the last one"
                );
                std::process::exit(130);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(service: Service, reason: Reason, address: &str) -> EngineError {
        EngineError::service(service, reason, address, "m").context("p.toml:3: node `n`")
    }

    #[test]
    fn each_hint_comes_from_the_kind_and_a_local_address() {
        let local = [
            (
                Service::Kafka,
                Reason::Unreachable,
                "127.0.0.1:9092",
                "scripts/stack up starts the local one",
            ),
            (
                Service::Kafka,
                Reason::Timeout,
                "localhost:9092",
                "scripts/stack up starts the local one",
            ),
            (
                Service::ObjectStore,
                Reason::Unreachable,
                "http://127.0.0.1:9000",
                "scripts/stack up starts the local one",
            ),
            (
                Service::CheckpointStore,
                Reason::Timeout,
                "http://[::1]:9000",
                "scripts/stack up starts the local one",
            ),
            (
                Service::Kafka,
                Reason::NotFound,
                "127.0.0.1:9092",
                "scripts/stack up creates the course topics",
            ),
            (
                Service::ObjectStore,
                Reason::NotFound,
                "http://127.0.0.1:9000",
                "scripts/stack up creates bronze and gold",
            ),
            (
                Service::CheckpointStore,
                Reason::NotFound,
                "http://127.0.0.1:9000",
                "scripts/stack up creates bronze and gold",
            ),
        ];
        for (service, reason, address, hint) in local {
            let e = down(service, reason, address);
            assert_eq!(
                error_line(&e),
                format!("error: p.toml:3: node `n`: m ({hint})"),
                "{service:?} {reason:?}"
            );
        }
    }

    #[test]
    fn no_hint_where_the_local_stack_would_not_help() {
        let cases = [
            // Somewhere else: starting the local stack would not help.
            down(Service::Kafka, Reason::Unreachable, "kafka-1.prod:9092"),
            down(Service::ObjectStore, Reason::NotFound, "AWS S3"),
            // Credentials: the message says which to check.
            down(Service::Kafka, Reason::Denied, "127.0.0.1:9092"),
            down(
                Service::ObjectStore,
                Reason::Denied,
                "http://127.0.0.1:9000",
            ),
            down(Service::Kafka, Reason::Other, "127.0.0.1:9092"),
            // No service or address said.
            EngineError::unavailable("m"),
            EngineError::config("m"),
            EngineError::runtime("m"),
        ];
        for e in cases {
            assert_eq!(hint(&e), None, "{e:?}");
            assert!(error_line(&e).ends_with('m'), "{e:?}");
        }
    }
}
