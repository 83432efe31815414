use crate::{ConfigValue, EngineError, Operator, Result, Sink, Source, StorageConfig};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a factory knows about the pipeline it builds a node for.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The pipeline's name (`[pipeline] name`).
    pub pipeline: String,
    /// The node's name in the TOML.
    pub node: String,
    /// The pipeline's `[storage]` table.
    pub storage: StorageConfig,
    /// The trigger (checkpoint) interval.
    pub trigger: Duration,
    /// The pipeline's checkpoint location. It identifies the pipeline's run: a sink keeps what
    /// it stages apart from what another pipeline writing the same table stages.
    pub checkpoint: String,
}

/// A node config that builds an operator. Implement it on a `serde::Deserialize` struct
/// (with `#[serde(deny_unknown_fields)]`) and register it with [`Registry::register_operator`].
pub trait OperatorConfig: DeserializeOwned {
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Operator>>;
}

/// A node config that builds a source.
pub trait SourceConfig: DeserializeOwned {
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Source>>;
}

/// A node config that builds a sink.
pub trait SinkConfig: DeserializeOwned {
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Sink>>;
}

type Factory<T> = Box<dyn Fn(ConfigValue, &BuildContext) -> Result<T> + Send + Sync>;

/// A built node, before it is wrapped in an actor.
pub enum Node {
    Source(Box<dyn Source>),
    Operator(Box<dyn Operator>),
    Sink(Box<dyn Sink>),
}

impl Node {
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Source(_) => "source",
            Node::Operator(_) => "operator",
            Node::Sink(_) => "sink",
        }
    }
}

/// Maps a node's `type = "..."` to the factory that builds it.
#[derive(Default)]
pub struct Registry {
    factories: BTreeMap<String, (&'static str, Factory<Node>)>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an operator type under `name`.
    pub fn register_operator<C: OperatorConfig + 'static>(&mut self, name: &str) {
        self.insert(name, "operator", |v, ctx| {
            Ok(Node::Operator(v.deserialize_into::<C>()?.build(ctx)?))
        });
    }

    /// Registers a source type under `name`.
    pub fn register_source<C: SourceConfig + 'static>(&mut self, name: &str) {
        self.insert(name, "source", |v, ctx| {
            Ok(Node::Source(v.deserialize_into::<C>()?.build(ctx)?))
        });
    }

    /// Registers a sink type under `name`.
    pub fn register_sink<C: SinkConfig + 'static>(&mut self, name: &str) {
        self.insert(name, "sink", |v, ctx| {
            Ok(Node::Sink(v.deserialize_into::<C>()?.build(ctx)?))
        });
    }

    fn insert(
        &mut self,
        name: &str,
        kind: &'static str,
        f: impl Fn(ConfigValue, &BuildContext) -> Result<Node> + Send + Sync + 'static,
    ) {
        self.factories.insert(name.to_string(), (kind, Box::new(f)));
    }

    /// Builds a node of type `type_name` from its TOML table (without `type` and `inputs`).
    pub fn build(&self, type_name: &str, config: ConfigValue, ctx: &BuildContext) -> Result<Node> {
        match self.factories.get(type_name) {
            Some((_, f)) => f(config, ctx),
            None => Err(EngineError::invalid(
                "type",
                format!(
                    "unknown node type `{type_name}`; known types: {}",
                    self.names().join(", ")
                ),
            )),
        }
    }

    /// The registered type names with their kind.
    pub fn types(&self) -> impl Iterator<Item = (&str, &'static str)> {
        self.factories.iter().map(|(n, (k, _))| (n.as_str(), *k))
    }

    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }
}
