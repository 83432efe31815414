//! The TOML pipeline file: parsing, `${VAR}` / `${VAR:-default}` interpolation, and errors that
//! name the file, the line and the key, and never a configured value.
//!
//! The file is parsed once into a spanned document (`toml::de::DeTable`), so every key's line is
//! known exactly, whether it was written under a `[table]` header, as a dotted key, quoted or
//! in an inline table. Strings are interpolated while the document is converted into
//! [`ConfigValue`]s; text that came from the environment takes the type of the field it fills.

use engine_api::{
    BuildContext, ConfigValue, EngineError, EventTime, Result, StorageConfig, check_range,
    parse_duration,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The trigger: how often a checkpoint barrier is injected, so how often output becomes
    /// visible (default 10s, from 100ms to 24h).
    #[serde(default = "default_trigger")]
    pub trigger: String,
    /// Where manifests and state go: `s3://bucket/prefix` or `file:///path`.
    pub checkpoint: String,
    /// Capacity of each actor's mailbox, in messages (default 4, from 1 to 1024).
    #[serde(default = "default_mailbox")]
    pub mailbox: usize,
    /// Where `engine run` serves Prometheus metrics (`/metrics`), liveness (`/health`) and
    /// readiness (`/ready`): `HOST:PORT`. Off when absent or empty; `--metrics-address` (or
    /// `ENGINE_METRICS_ADDRESS`) overrides it.
    #[serde(default)]
    pub metrics_address: Option<String>,
}

/// The file's top level, without `[nodes]` (taken apart by hand to keep each node's table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    pipeline: PipelineSection,
    #[serde(default)]
    storage: Option<StorageConfig>,
}

fn default_trigger() -> String {
    "10s".into()
}
fn default_mailbox() -> usize {
    4
}

/// The accepted range of `trigger`.
pub const TRIGGER_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(24 * 3600));
/// The accepted range of `mailbox`: each slot holds one micro-batch.
pub const MAILBOX_RANGE: (usize, usize) = (1, 1024);

/// A node after its `type` and `inputs` are taken out.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub type_name: String,
    /// Upstream references: `node` (its main port) or `node.port`.
    pub inputs: Vec<String>,
    pub config: ConfigValue,
    /// The pipeline's event time, when this node declares it (`event_time = { column = ... }`).
    pub event_time: Option<EventTime>,
    /// The 1-based line of the node's table (`[nodes.<name>]`) in the file, for messages.
    pub line: usize,
}

/// A pipeline file, loaded and interpolated.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub path: PathBuf,
    pub name: String,
    pub trigger: Duration,
    pub checkpoint: String,
    pub mailbox: usize,
    /// `HOST:PORT` for the metrics endpoint, if set (see [`PipelineSection::metrics_address`]).
    pub metrics_address: Option<String>,
    pub storage: StorageConfig,
    pub nodes: Vec<NodeSpec>,
    /// The line of every key, by its path (`nodes.parse.schema.level`, `aggregates[0]`).
    lines: HashMap<String, usize>,
}

impl Pipeline {
    /// Reads, parses and interpolates a pipeline file.
    pub fn load(path: &Path) -> Result<Pipeline> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EngineError::config(format!("cannot read pipeline file {}: {e}", path.display()))
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Pipeline> {
        let file = path.display().to_string();
        let doc = DeTable::parse(text).map_err(|e| toml_error(&file, text, &e))?;
        let mut conv = Converter {
            file: &file,
            newlines: text.match_indices('\n').map(|(i, _)| i).collect(),
            lines: HashMap::new(),
        };
        let mut root = conv.table(doc.into_inner(), "")?;
        let mut p = Pipeline {
            path: path.to_path_buf(),
            name: String::new(),
            trigger: Duration::ZERO,
            checkpoint: String::new(),
            mailbox: 0,
            metrics_address: None,
            storage: StorageConfig::default(),
            nodes: Vec::new(),
            lines: conv.lines,
        };
        let nodes = root.remove("nodes");
        let parsed: PipelineFile = root.deserialize_into().map_err(|e| p.at_key(e))?;
        let at = |key: &str, e| p.at_key(EngineError::invalid(key, e));
        let s = parsed.pipeline;
        let trigger = parse_duration(
            "pipeline.trigger",
            &s.trigger,
            TRIGGER_RANGE.0,
            TRIGGER_RANGE.1,
        )
        .map_err(|e| p.at_key(e))?;
        let mailbox = check_range(
            "pipeline.mailbox",
            s.mailbox,
            MAILBOX_RANGE.0,
            MAILBOX_RANGE.1,
        )
        .map_err(|e| p.at_key(e))?;
        if !valid_name(&s.name) {
            return Err(at("pipeline.name", "must be letters, digits, `-` and `_`"));
        }
        let storage = parsed.storage.unwrap_or_default();
        engine_api::Location::open(&s.checkpoint, &storage)
            .map_err(|e| p.at_key(EngineError::invalid("pipeline.checkpoint", e)))?;
        let Some(ConfigValue::Table(nodes)) = nodes else {
            return Err(EngineError::config(format!(
                "{file}: no [nodes.<name>] tables; a pipeline needs at least a source and a sink"
            )));
        };
        let mut specs = Vec::new();
        for (name, mut table) in nodes {
            let line = p.line_of(&format!("nodes.{name}"));
            let at = format!("{file}:{line}: node `{name}`");
            if !valid_name(&name) {
                return Err(EngineError::config(format!(
                    "{at}: node names must be letters, digits, `-` and `_`"
                )));
            }
            if !matches!(table, ConfigValue::Table(_)) {
                return Err(EngineError::config(format!(
                    "{at}: must be a table, such as [nodes.{name}] with type = \"...\""
                )));
            }
            let key_at = |key: &str| {
                format!(
                    "{file}:{}: node `{name}`",
                    p.line_of(&format!("nodes.{name}.{key}"))
                )
            };
            let type_name = match table.remove("type") {
                Some(t) => t.as_str().map(str::to_string).ok_or_else(|| {
                    EngineError::config(format!("{}: `type` must be a string", key_at("type")))
                })?,
                None => return Err(EngineError::config(format!("{at}: missing `type`"))),
            };
            let inputs = match table.remove("inputs") {
                None => Vec::new(),
                Some(ConfigValue::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        EngineError::config(format!(
                            "{}: `inputs` must be a list of node names",
                            key_at("inputs")
                        ))
                    })?,
                Some(_) => {
                    return Err(EngineError::config(format!(
                        "{}: `inputs` must be a list of node names",
                        key_at("inputs")
                    )));
                }
            };
            let event_time = match table.remove("event_time") {
                None => None,
                Some(v) => Some(event_time(v).map_err(|e| {
                    let e = e.for_key("event_time");
                    let at = key_at(e.key().unwrap_or("event_time"));
                    e.context(at)
                })?),
            };
            specs.push(NodeSpec {
                name,
                type_name,
                inputs,
                config: table,
                event_time,
                line,
            });
        }
        p.name = s.name;
        p.trigger = trigger;
        p.checkpoint = s.checkpoint;
        p.mailbox = mailbox;
        p.metrics_address = s.metrics_address.filter(|a| !a.trim().is_empty());
        p.storage = storage;
        p.nodes = specs;
        Ok(p)
    }

    /// What a node's factory is told about this pipeline.
    pub fn build_context(&self, node: &NodeSpec) -> BuildContext {
        BuildContext {
            pipeline: self.name.clone(),
            node: node.name.clone(),
            storage: self.storage.clone(),
            trigger: self.trigger,
            checkpoint: self.checkpoint.clone(),
        }
    }

    /// The line of `key` (a path such as `nodes.parse.aggregates[0].fn`), or of the nearest
    /// enclosing key the file has.
    fn line_of(&self, key: &str) -> usize {
        let mut k = key;
        loop {
            if let Some(l) = self.lines.get(k) {
                return *l;
            }
            match k.rfind(['.', '[']) {
                Some(i) => k = &k[..i],
                None => return 1,
            }
        }
    }

    /// A configuration error about the file's top-level tables, located: an error about a key
    /// ([`EngineError::key`]) points at its line; other errors keep their text.
    fn at_key(&self, e: EngineError) -> EngineError {
        match e.key() {
            Some(key) => {
                let at = format!("{}:{}", self.path.display(), self.line_of(key));
                e.context(at)
            }
            None => e.context(self.path.display()),
        }
    }

    /// `file:line: node `name` (type)`, for messages about a node, pointing at `key` when given.
    pub fn locate(&self, node: &NodeSpec, key: Option<&str>) -> String {
        let line = match key {
            Some(k) => self.line_of(&format!("nodes.{}.{k}", node.name)),
            None => node.line,
        };
        format!(
            "{}:{line}: node `{}` ({})",
            self.path.display(),
            node.name,
            node.type_name
        )
    }

    /// A node's build error, located and naming the node: at its key's line when it is about
    /// a key ([`EngineError::key`]), else at the node.
    pub fn node_error(&self, node: &NodeSpec, e: EngineError) -> EngineError {
        let at = self.locate(node, e.key());
        e.context(at).with_node(&node.name)
    }
}

/// A node's `event_time = { column = "...", lateness = "2m", idle_timeout = "30s" }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventTimeSection {
    column: String,
    #[serde(default)]
    lateness: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
}

/// Default and range of the allowed lateness (how far the watermark trails event time).
const LATENESS: (&str, Duration, Duration) =
    ("2m", Duration::ZERO, Duration::from_secs(31 * 86400));
/// Default and range of the idle timeout of a source partition.
const IDLE_TIMEOUT: (&str, Duration, Duration) =
    ("30s", Duration::ZERO, Duration::from_secs(86400));

fn event_time(v: ConfigValue) -> Result<EventTime> {
    let s: EventTimeSection = v.deserialize_into()?;
    if s.column.is_empty() {
        return Err(EngineError::invalid(
            "column",
            "is empty; name the event-time column",
        ));
    }
    let duration =
        |key: &str, value: Option<String>, (default, lo, hi): (&str, Duration, Duration)| {
            parse_duration(key, value.as_deref().unwrap_or(default), lo, hi)
        };
    Ok(EventTime {
        column: s.column,
        lateness_ms: duration("lateness", s.lateness, LATENESS)?.as_millis() as i64,
        idle_timeout: duration("idle_timeout", s.idle_timeout, IDLE_TIMEOUT)?,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Turns the spanned document into [`ConfigValue`]s, interpolating strings and recording the
/// line of every key.
struct Converter<'a> {
    file: &'a str,
    /// Byte offsets of the file's newlines, to turn spans into lines.
    newlines: Vec<usize>,
    lines: HashMap<String, usize>,
}

impl Converter<'_> {
    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&n| n < offset) + 1
    }

    fn error(&self, line: usize, key: &str, msg: impl std::fmt::Display) -> EngineError {
        EngineError::config(format!("{}:{line}: `{key}`: {msg}", self.file))
    }

    fn table(&mut self, t: DeTable<'_>, path: &str) -> Result<ConfigValue> {
        let mut out = Vec::with_capacity(t.len());
        for (k, v) in t {
            let key = k.get_ref().to_string();
            let p = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let line = self.line(k.span().start);
            self.lines.insert(p.clone(), line);
            let value = self.value(v, &p, line)?;
            out.push((key, value));
        }
        Ok(ConfigValue::Table(out))
    }

    fn value(&mut self, v: Spanned<DeValue<'_>>, path: &str, line: usize) -> Result<ConfigValue> {
        Ok(match v.into_inner() {
            DeValue::String(s) => match interpolate(&s) {
                Ok(Expanded::Plain(s)) => ConfigValue::String(s),
                Ok(Expanded::FromEnv(s)) => ConfigValue::Interpolated(s),
                Err(e) => return Err(self.error(line, path, e)),
            },
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => ConfigValue::Integer(n),
                Err(_) => {
                    return Err(self.error(
                        line,
                        path,
                        format!(
                            "integer out of range; TOML integers lie between {} and {}",
                            i64::MIN,
                            i64::MAX
                        ),
                    ));
                }
            },
            DeValue::Float(f) => match f.as_str().parse::<f64>() {
                Ok(x) => ConfigValue::Float(x),
                Err(_) => return Err(self.error(line, path, "not a valid number")),
            },
            DeValue::Boolean(b) => ConfigValue::Boolean(b),
            DeValue::Datetime(d) => ConfigValue::String(d.to_string()),
            DeValue::Array(a) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, item) in a.into_iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    let l = self.line(item.span().start);
                    self.lines.insert(p.clone(), l);
                    out.push(self.value(item, &p, l)?);
                }
                ConfigValue::Array(out)
            }
            DeValue::Table(t) => self.table(t, path)?,
        })
    }
}

/// A string after interpolation.
#[derive(Debug, PartialEq)]
enum Expanded {
    /// No `${...}` in it (a `$$` may have become `$`).
    Plain(String),
    /// At least one `${...}` was expanded: the text takes the type of the field it fills.
    FromEnv(String),
}

/// Expands `${VAR}` and `${VAR:-default}` (the default when VAR is unset or empty). `$$` is a
/// literal `$`, and so is any other `$`, so a password may hold `$` signs. The error names
/// the variable, never the text around it.
fn interpolate(s: &str) -> std::result::Result<Expanded, String> {
    if !s.contains('$') {
        return Ok(Expanded::Plain(s.to_string()));
    }
    let mut out = String::with_capacity(s.len());
    let mut from_env = false;
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let reference = after
            .strip_prefix('{')
            .and_then(|r| r.find('}').map(|end| (&r[..end], &r[end + 1..])));
        let Some((inner, tail)) = reference else {
            out.push('$');
            rest = after;
            continue;
        };
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if !valid_var(name) {
            out.push('$');
            rest = after;
            continue;
        }
        match (std::env::var(name), default) {
            (Ok(v), Some(d)) if v.is_empty() => out.push_str(d),
            (Ok(v), _) => out.push_str(&v),
            (Err(std::env::VarError::NotPresent), Some(d)) => out.push_str(d),
            (Err(std::env::VarError::NotPresent), None) => {
                return Err(format!(
                    "environment variable `{name}` is not set; set it, give a default with ${{{name}:-default}}, or write $$ for a literal `$`"
                ));
            }
            (Err(std::env::VarError::NotUnicode(_)), _) => {
                return Err(format!("environment variable `{name}` is not valid UTF-8"));
            }
        }
        from_env = true;
        rest = tail;
    }
    out.push_str(rest);
    Ok(if from_env {
        Expanded::FromEnv(out)
    } else {
        Expanded::Plain(out)
    })
}

fn valid_var(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One line: `file:line:col: message`, naming the key of a duplicate.
fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> EngineError {
    let mut msg = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            if msg.starts_with("duplicate key")
                && let Some(key) = text.get(span.clone())
                && !key.contains('\n')
            {
                msg = format!("duplicate key `{}`", key.trim().trim_matches(['"', '\'']));
            }
            let within = enclosing_table(before)
                .map(|t| format!(" (in [{t}])"))
                .unwrap_or_default();
            EngineError::config(format!("{file}:{line}:{col}: {msg}{within}"))
        }
        None => EngineError::config(format!("{file}: {msg}")),
    }
}

fn enclosing_table(before: &str) -> Option<&str> {
    before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[pipeline]
name = "orders"
checkpoint = "${CHK_TEST_UNSET_1:-file:///tmp/chk}"
trigger = "2s"

[storage]
endpoint = "${S3_TEST_ENDPOINT_X:-http://127.0.0.1:9000}"

[nodes.source]
type = "kafka"
brokers = "${KAFKA_TEST_BROKERS_X:-127.0.0.1:9092}"
topic = "t"

[nodes.sink]
type = "console"
inputs = ["source"]
"#;

    #[test]
    fn parses_and_interpolates_defaults() {
        let p = Pipeline::parse(Path::new("p.toml"), GOOD).unwrap();
        assert_eq!(p.name, "orders");
        assert_eq!(p.trigger, Duration::from_secs(2));
        assert_eq!(p.checkpoint, "file:///tmp/chk");
        assert_eq!(p.storage.endpoint, "http://127.0.0.1:9000");
        assert_eq!(p.nodes.len(), 2);
        assert_eq!(p.nodes[0].type_name, "kafka");
        assert_eq!(
            p.nodes[0].config.get("brokers").unwrap().as_str(),
            Some("127.0.0.1:9092")
        );
        assert_eq!(p.nodes[1].inputs, vec!["source"]);
        assert_eq!(p.nodes[1].line, 15);
    }

    #[test]
    fn interpolates_set_variables() {
        // SAFETY: the variable name is unique to this test.
        unsafe { std::env::set_var("KAFKA_TEST_BROKERS_SET_Z", "broker:29092") };
        let text = GOOD.replace("KAFKA_TEST_BROKERS_X", "KAFKA_TEST_BROKERS_SET_Z");
        let p = Pipeline::parse(Path::new("p.toml"), &text).unwrap();
        assert_eq!(
            p.nodes[0].config.get("brokers").unwrap().as_str(),
            Some("broker:29092")
        );
    }

    #[test]
    fn unset_variable_without_default_names_the_key() {
        let text = GOOD.replace("topic = \"t\"", "topic = \"${TOPIC_TEST_UNSET_Y}\"");
        let e = Pipeline::parse(Path::new("p.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`TOPIC_TEST_UNSET_Y` is not set"), "{e}");
        assert!(e.contains("nodes.source.topic"), "{e}");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let text = GOOD.replace("trigger = \"2s\"", "trigerr = \"2s\"");
        let e = Pipeline::parse(Path::new("p.toml"), &text).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = e.to_string();
        assert!(
            e.starts_with("p.toml:5: `pipeline.trigerr`: unknown field `trigerr`, expected one of"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn bad_type_names_the_line() {
        let text = GOOD.replace("trigger = \"2s\"", "mailbox = \"lots\"");
        let e = Pipeline::parse(Path::new("p.toml"), &text)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "p.toml:5: `pipeline.mailbox`: expected usize, found a string"
        );
    }

    #[test]
    fn bad_trigger_and_syntax() {
        let e = Pipeline::parse(
            Path::new("p.toml"),
            &GOOD.replace("\"2s\"", "\"2 parsecs\""),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("p.toml:5: `pipeline.trigger`: not a duration"),
            "{e}"
        );
        let e = Pipeline::parse(Path::new("p.toml"), "[pipeline\nname=1")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:1:"), "{e}");
    }

    #[test]
    fn node_without_type() {
        let text = GOOD.replace("type = \"console\"\n", "");
        let e = Pipeline::parse(Path::new("p.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml:15: node `sink`: missing `type`"), "{e}");
    }

    fn parse(text: &str) -> std::result::Result<Pipeline, String> {
        Pipeline::parse(Path::new("p.toml"), text).map_err(|e| {
            let e = e.to_string();
            assert!(!e.contains('\n'), "one line: {e}");
            e
        })
    }

    /// Sets a variable whose name is unique to the calling test.
    fn set_env(k: &str, v: &str) {
        // SAFETY: each test uses its own variable names.
        unsafe { std::env::set_var(k, v) };
    }

    #[test]
    fn interpolation_expands_only_braced_references() {
        set_env("CFG_T_USER", "alice");
        let cases = [
            ("plain", Expanded::Plain("plain".into())),
            ("a$b", Expanded::Plain("a$b".into())),
            ("$", Expanded::Plain("$".into())),
            ("a$$b", Expanded::Plain("a$b".into())),
            ("$${CFG_T_USER}", Expanded::Plain("${CFG_T_USER}".into())),
            ("x${", Expanded::Plain("x${".into())),
            ("${not a name}", Expanded::Plain("${not a name}".into())),
            ("${CFG_T_USER}", Expanded::FromEnv("alice".into())),
            ("u=${CFG_T_USER}!", Expanded::FromEnv("u=alice!".into())),
            ("${CFG_T_UNSET:-d$f}", Expanded::FromEnv("d$f".into())),
            ("${CFG_T_UNSET:-}", Expanded::FromEnv("".into())),
        ];
        for (input, want) in cases {
            assert_eq!(interpolate(input).unwrap(), want, "{input}");
        }
        set_env("CFG_T_EMPTY", "");
        assert_eq!(
            interpolate("${CFG_T_EMPTY:-dflt}").unwrap(),
            Expanded::FromEnv("dflt".into())
        );
    }

    /// The sentinel secrets: `$`, `${`, `$$`, quotes, backslashes and non-ASCII.
    const SECRETS: [&str; 6] = [
        "hunter2$TopSecretTail",
        "pa${ss",
        "s3cr$$et",
        "q\"uo'te\\back",
        "mot-de-passé-ß∂ƒ",
        "x${SECRET_LOOKING_NAME}y",
    ];

    /// Fragments of `secret` (6 characters) that must never show in a message.
    fn fragments(secret: &str) -> Vec<String> {
        let chars: Vec<char> = secret.chars().collect();
        chars.windows(6).map(|w| w.iter().collect()).collect()
    }

    fn assert_hidden(secret: &str, text: &str) {
        for f in fragments(secret) {
            // The one name an error may give is the variable it could not find.
            if "${SECRET_LOOKING_NAME}".contains(f.as_str()) {
                continue;
            }
            assert!(!text.contains(&f), "`{f}` of a secret shows in: {text}");
        }
    }

    #[test]
    fn secrets_with_dollars_are_kept_literally_and_never_shown() {
        for secret in SECRETS {
            let literal = toml::Value::String(secret.to_string()).to_string();
            // Through the TOML: the value is kept as written (but `$$` and a set `${...}`).
            let text = GOOD.replace(
                "endpoint = ",
                &format!("secret_access_key = {literal}\nendpoint = "),
            );
            match parse(&text) {
                Ok(p) => {
                    if !secret.contains("$$") && !secret.contains("${SECRET") {
                        assert_eq!(p.storage.secret_access_key.expose(), secret);
                    }
                    assert_hidden(secret, &format!("{:?}", p.storage));
                }
                Err(e) => assert_hidden(secret, &e),
            }
            // Through an environment variable: taken as is, never expanded again.
            set_env("CFG_T_SECRET", secret);
            let text = GOOD.replace(
                "endpoint = ",
                "secret_access_key = \"${CFG_T_SECRET}\"\nendpoint = ",
            );
            let p = parse(&text).unwrap();
            assert_eq!(p.storage.secret_access_key.expose(), secret);
            // In every kind of error around it.
            for broken in [
                "mailbox = \"${CFG_T_SECRET}\"\n",
                "trigger = \"${CFG_T_SECRET}\"\n",
                "checkpoint2 = \"${CFG_T_SECRET}\"\n",
                "name2 = 1\n",
            ] {
                let text = text.replace("[storage]\n", &format!("[storage]\n{broken}"));
                let e = parse(&text).unwrap_err();
                assert_hidden(secret, &e);
                let text = text.replace(
                    "trigger = \"2s\"",
                    &format!("trigger = \"2s\"\n{}", broken.replace("2 = ", " = ")),
                );
                if let Err(e) = parse(&text) {
                    assert_hidden(secret, &e);
                }
            }
            let e = parse(&GOOD.replace("\"2s\"", &literal)).unwrap_err();
            assert_hidden(secret, &e);
            let e = parse(&GOOD.replace("chk}\"", &format!("chk}}\"\nmailbox = {literal}")))
                .unwrap_err();
            assert_hidden(secret, &e);
            let e = parse(&GOOD.replace(
                "[nodes.source]",
                &format!("[nodes.source]\nbatch_size = {literal}"),
            ));
            if let Err(e) = e {
                assert_hidden(secret, &e);
            }
        }
        // The example of the issue: the tail of a password read as a variable.
        let text = GOOD.replace(
            "endpoint = ",
            "secret_access_key = \"hunter2$TopSecretTail\"\nendpoint = ",
        );
        assert_eq!(
            parse(&text).unwrap().storage.secret_access_key.expose(),
            "hunter2$TopSecretTail"
        );
    }

    #[test]
    fn unset_variable_names_the_variable_and_the_key_only() {
        let text = GOOD.replace(
            "endpoint = ",
            "secret_access_key = \"pre-${CFG_T_NOPE}-post\"\nendpoint = ",
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with("p.toml:8: `storage.secret_access_key`: environment variable `CFG_T_NOPE` is not set"),
            "{e}"
        );
        assert!(!e.contains("pre-") && !e.contains("-post"), "{e}");
    }

    #[test]
    fn numbers_booleans_and_durations_come_from_the_environment() {
        set_env("CFG_T_MAILBOX", "16");
        set_env("CFG_T_PATH_STYLE", "false");
        let text = GOOD
            .replace(
                "trigger = \"2s\"",
                "trigger = \"${CFG_T_TRIGGER:-750ms}\"\nmailbox = \"${CFG_T_MAILBOX:-4}\"",
            )
            .replace(
                "[storage]\n",
                "[storage]\npath_style = \"${CFG_T_PATH_STYLE:-true}\"\n",
            );
        let p = parse(&text).unwrap();
        assert_eq!(p.mailbox, 16);
        assert_eq!(p.trigger, Duration::from_millis(750));
        assert!(!p.storage.path_style);

        set_env("CFG_T_MAILBOX_BAD", "lots-of-hunter2");
        let e = parse(&GOOD.replace("trigger = \"2s\"", "mailbox = \"${CFG_T_MAILBOX_BAD}\""))
            .unwrap_err();
        assert_eq!(
            e,
            "p.toml:5: `pipeline.mailbox`: expected a non-negative integer after expanding the environment variable"
        );
        set_env("CFG_T_BOOL_BAD", "yes");
        let e = parse(&GOOD.replace(
            "[storage]\n",
            "[storage]\npath_style = \"${CFG_T_BOOL_BAD}\"\n",
        ))
        .unwrap_err();
        assert_eq!(
            e,
            "p.toml:8: `storage.path_style`: expected a boolean (true or false) after expanding the environment variable"
        );
    }

    #[test]
    fn sizes_and_times_have_ranges() {
        for (line, want) in [
            (
                "mailbox = 9223372036854775807",
                "p.toml:5: `pipeline.mailbox`: out of range; it must be between 1 and 1024",
            ),
            (
                "mailbox = 0",
                "p.toml:5: `pipeline.mailbox`: out of range; it must be between 1 and 1024",
            ),
            (
                "mailbox = -1",
                "p.toml:5: `pipeline.mailbox`: invalid value, expected usize",
            ),
            (
                "trigger = \"500000000y\"",
                "p.toml:5: `pipeline.trigger`: out of range; it must be between 100ms and 1day",
            ),
            (
                "trigger = \"10ms\"",
                "p.toml:5: `pipeline.trigger`: out of range; it must be between 100ms and 1day",
            ),
            (
                "mailbox = 99999999999999999999",
                "p.toml:5: `pipeline.mailbox`: integer out of range; TOML integers lie between -9223372036854775808 and 9223372036854775807",
            ),
        ] {
            assert_eq!(
                parse(&GOOD.replace("trigger = \"2s\"", line)).unwrap_err(),
                want
            );
        }
    }

    #[test]
    fn the_checkpoint_url_is_checked_without_touching_anything() {
        for bad in ["hdfs://nn/x", "/tmp/x", "relative/dir", "file://host/x"] {
            let text = GOOD.replace("${CHK_TEST_UNSET_1:-file:///tmp/chk}", bad);
            let e = parse(&text).unwrap_err();
            assert!(
                e.starts_with("p.toml:4: `pipeline.checkpoint`: "),
                "{bad}: {e}"
            );
        }
        let dir = std::env::temp_dir().join(format!("cfg-chk-{}", std::process::id()));
        let text = GOOD.replace(
            "${CHK_TEST_UNSET_1:-file:///tmp/chk}",
            &format!("file://{}/deeper", dir.display()),
        );
        parse(&text).unwrap();
        assert!(!dir.exists(), "loading created {}", dir.display());
    }

    #[test]
    fn positions_point_at_the_key_itself() {
        // Dotted keys, inside a table and at the top level.
        let text = GOOD.replace("trigger = \"2s\"", "trigger = \"2s\"\nsub.trigerr = 1");
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with("p.toml:6: `pipeline.sub`: unknown field `sub`"),
            "{e}"
        );
        let storage = "[storage]\nendpoint = \"${S3_TEST_ENDPOINT_X:-http://127.0.0.1:9000}\"\n";
        assert!(GOOD.contains(storage));
        let text = format!(
            "storage.endpoint = \"x\"\nstorage.regoin = \"y\"\n{}",
            GOOD.replace(storage, "")
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with("p.toml:2: `storage.regoin`: unknown field"),
            "{e}"
        );
        // A duplicate key is named.
        let text = GOOD.replace("topic = \"t\"", "topic = \"t\"\ntopic = \"u\"");
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with("p.toml:14:1: duplicate key `topic`"), "{e}");
        // Quoted node names and keys of nested tables, dotted or not.
        let text = GOOD
            .replace("[nodes.source]", "[nodes.\"source\"]")
            .replace(
                "topic = \"t\"",
                "topic = \"t\"\nschema.level = \"string\"\n\n[nodes.source.more]\nx = 1",
            );
        let p = parse(&text).unwrap();
        let source = &p.nodes[0];
        assert_eq!(source.line, 10);
        assert_eq!(
            p.locate(source, Some("schema.level")),
            "p.toml:14: node `source` (kafka)"
        );
        assert_eq!(
            p.locate(source, Some("more.x")),
            "p.toml:17: node `source` (kafka)"
        );
        assert_eq!(
            p.locate(source, Some("more.nothing")),
            "p.toml:16: node `source` (kafka)"
        );
        let e = p.node_error(source, EngineError::invalid("schema.level", "bad type"));
        assert_eq!(
            e.to_string(),
            "p.toml:14: node `source` (kafka): `schema.level`: bad type"
        );
        assert_eq!((e.node(), e.key()), (Some("source"), None));
        // Array items.
        let text = GOOD.replace(
            "inputs = [\"source\"]",
            "inputs = [\n  \"source\",\n  2,\n]",
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with("p.toml:17: node `sink`: `inputs` must be"),
            "{e}"
        );
    }
}
