//! The TOML pipeline file: parsing, `${VAR}` / `${VAR:-default}` interpolation, and errors that
//! name the file, the line and the key.

use engine_api::{EngineError, Result, StorageConfig};
use indexmap::IndexMap;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A pipeline file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: PipelineSection,
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// Named nodes. Each is a table with `type`, optional `inputs`, and the type's own keys.
    pub nodes: IndexMap<String, toml::Table>,
}

/// `[pipeline]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// The trigger: how often a checkpoint barrier is injected, so how often output becomes
    /// visible (default 10s).
    #[serde(default = "default_trigger")]
    pub trigger: String,
    /// Where manifests and state go: `s3://bucket/prefix` or `file:///path`.
    pub checkpoint: String,
    /// Capacity of each actor's mailbox, in messages (default 4).
    #[serde(default = "default_mailbox")]
    pub mailbox: usize,
}

fn default_trigger() -> String {
    "10s".into()
}
fn default_mailbox() -> usize {
    4
}

/// A node after its `type` and `inputs` are taken out.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub type_name: String,
    /// Upstream references: `node` (its main port) or `node.port`.
    pub inputs: Vec<String>,
    pub config: toml::Value,
    /// The 1-based line of `[nodes.<name>]` in the file, for messages.
    pub line: usize,
}

/// A pipeline file, loaded and interpolated.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub path: PathBuf,
    pub text: String,
    pub name: String,
    pub trigger: Duration,
    pub checkpoint: String,
    pub mailbox: usize,
    pub storage: StorageConfig,
    pub nodes: Vec<NodeSpec>,
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
        // First pass: the structure as written, so errors point at the right line.
        toml::from_str::<PipelineFile>(text).map_err(|e| toml_error(&file, text, &e))?;
        // Second pass: expand ${VAR} in every string value, then read the typed config.
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| toml_error(&file, text, &e))?;
        expand_env(&mut value, "").map_err(|e| e.context(&file))?;
        let parsed = PipelineFile::deserialize(value).map_err(|e| {
            EngineError::config(format!(
                "{file}: after expanding environment variables: {}",
                e.message()
            ))
        })?;
        let p = parsed.pipeline;
        let trigger = humantime::parse_duration(&p.trigger).map_err(|e| {
            EngineError::config(format!(
                "{file}:{}: bad `trigger` \"{}\": {e}; write it like \"5s\" or \"1m\"",
                key_line(text, None, "trigger"),
                p.trigger
            ))
        })?;
        if trigger < Duration::from_millis(100) {
            return Err(EngineError::config(format!(
                "{file}: `trigger` must be at least 100ms"
            )));
        }
        if p.mailbox == 0 {
            return Err(EngineError::config(format!(
                "{file}: `mailbox` must be at least 1"
            )));
        }
        if !valid_name(&p.name) {
            return Err(EngineError::config(format!(
                "{file}: pipeline name `{}` must be letters, digits, `-` and `_`",
                p.name
            )));
        }
        let mut nodes = Vec::new();
        for (name, mut table) in parsed.nodes {
            let line = key_line(text, Some(&name), "");
            let at = format!("{file}:{line}: node `{name}`");
            if !valid_name(&name) {
                return Err(EngineError::config(format!(
                    "{at}: node names must be letters, digits, `-` and `_`"
                )));
            }
            let type_name = match table.remove("type") {
                Some(toml::Value::String(t)) => t,
                Some(_) => {
                    return Err(EngineError::config(format!(
                        "{at}: `type` must be a string"
                    )));
                }
                None => return Err(EngineError::config(format!("{at}: missing `type`"))),
            };
            let inputs = match table.remove("inputs") {
                None => Vec::new(),
                Some(toml::Value::Array(a)) => a
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s),
                        _ => Err(EngineError::config(format!(
                            "{at}: `inputs` must be a list of node names"
                        ))),
                    })
                    .collect::<Result<_>>()?,
                Some(_) => {
                    return Err(EngineError::config(format!(
                        "{at}: `inputs` must be a list of node names"
                    )));
                }
            };
            nodes.push(NodeSpec {
                name,
                type_name,
                inputs,
                config: toml::Value::Table(table),
                line,
            });
        }
        Ok(Pipeline {
            path: path.to_path_buf(),
            text: text.to_string(),
            name: p.name,
            trigger,
            checkpoint: p.checkpoint,
            mailbox: p.mailbox,
            storage: parsed.storage.unwrap_or_default(),
            nodes,
        })
    }

    /// `file:line: node `name``, for messages about a node, pointing at `key` when given.
    pub fn locate(&self, node: &NodeSpec, key: Option<&str>) -> String {
        let line = match key {
            Some(k) => key_line(&self.text, Some(&node.name), k),
            None => node.line,
        };
        format!(
            "{}:{line}: node `{}` ({})",
            self.path.display(),
            node.name,
            node.type_name
        )
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Expands `${VAR}` and `${VAR:-default}` in every string, naming the key when a variable is unset.
fn expand_env(v: &mut toml::Value, path: &str) -> Result<()> {
    match v {
        toml::Value::String(s) => {
            let expanded = shellexpand::env_with_context(s, |var: &str| -> std::result::Result<Option<String>, String> {
                match std::env::var(var) {
                    Ok(val) => Ok(Some(val)),
                    Err(_) => Err(format!("environment variable `{var}` is not set (used by `{path}`); set it or write ${{{var}:-default}}")),
                }
            })
            .map_err(|e| EngineError::config(e.cause))?;
            *s = expanded.into_owned();
        }
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                expand_env(item, &format!("{path}[{i}]"))?;
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                expand_env(item, &p)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// One line: `file:line:col: message`.
fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> EngineError {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let table = enclosing_table(before);
            let within = table.map(|t| format!(" (in [{t}])")).unwrap_or_default();
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

/// The line of `key` inside `[nodes.<node>]` (or of the table header when `key` is empty).
fn key_line(text: &str, node: Option<&str>, key: &str) -> usize {
    let header = node.map(|n| format!("[nodes.{n}]"));
    let mut inside = header.is_none();
    let mut header_line = 1;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[')
            && let Some(h) = &header
        {
            if t == h {
                inside = true;
                header_line = i + 1;
                if key.is_empty() {
                    return header_line;
                }
                continue;
            } else if inside && !t.starts_with(&format!("[nodes.{}.", node.unwrap_or(""))) {
                break;
            }
        }
        if inside && !key.is_empty() {
            let k = t.split('=').next().unwrap_or("").trim().trim_matches('"');
            if k == key {
                return i + 1;
            }
        }
    }
    header_line
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
        assert!(e.starts_with("p.toml:5:1: unknown field `trigerr`"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn bad_type_names_the_line() {
        let text = GOOD.replace("trigger = \"2s\"", "mailbox = \"lots\"");
        let e = Pipeline::parse(Path::new("p.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.toml:5:"), "{e}");
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn bad_trigger_and_syntax() {
        let e = Pipeline::parse(
            Path::new("p.toml"),
            &GOOD.replace("\"2s\"", "\"2 parsecs\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad `trigger`"), "{e}");
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
}
