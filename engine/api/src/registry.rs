use crate::{Built, ConfigValue, EngineError, Input, Result, Sink, Source, StorageConfig};
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
    /// Builds a ready operator against its input: check column names and types here (errors
    /// keyed with [`EngineError::invalid`] point at the config line), and declare the output
    /// ports with their schemas and modes. No I/O: `engine validate` calls it.
    fn build(self, ctx: &BuildContext, input: &Input) -> Result<Built>;
}

/// A node config that builds a source.
pub trait SourceConfig: DeserializeOwned {
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Source>>;
}

/// A node config that builds a sink, against the schema and mode of what it will write.
pub trait SinkConfig: DeserializeOwned {
    fn build(self, ctx: &BuildContext, input: &Input) -> Result<Box<dyn Sink>>;
}

type Factory =
    Box<dyn Fn(ConfigValue, &BuildContext, Option<&Input>) -> Result<Node> + Send + Sync>;

/// A built node, before it is wrapped in an actor.
pub enum Node {
    Source(Box<dyn Source>),
    Operator(Built),
    Sink(Box<dyn Sink>),
}

/// The kind of node a registered type builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Source,
    Operator,
    Sink,
}

impl NodeKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Source => "source",
            NodeKind::Operator => "operator",
            NodeKind::Sink => "sink",
        }
    }
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

/// The error for a node built without the input it needs (the graph builder always gives one).
fn no_input() -> EngineError {
    EngineError::config("missing `inputs`, the node(s) it reads from")
}

/// Maps a node's `type = "..."` to the factory that builds it.
#[derive(Default)]
pub struct Registry {
    factories: BTreeMap<String, (NodeKind, Factory)>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an operator type under `name`.
    pub fn register_operator<C: OperatorConfig + 'static>(&mut self, name: &str) {
        self.insert(name, NodeKind::Operator, |v, ctx, input| {
            let input = input.ok_or_else(no_input)?;
            Ok(Node::Operator(
                v.deserialize_into::<C>()?.build(ctx, input)?,
            ))
        });
    }

    /// Registers a source type under `name`.
    pub fn register_source<C: SourceConfig + 'static>(&mut self, name: &str) {
        self.insert(name, NodeKind::Source, |v, ctx, _| {
            Ok(Node::Source(v.deserialize_into::<C>()?.build(ctx)?))
        });
    }

    /// Registers a sink type under `name`.
    pub fn register_sink<C: SinkConfig + 'static>(&mut self, name: &str) {
        self.insert(name, NodeKind::Sink, |v, ctx, input| {
            let input = input.ok_or_else(no_input)?;
            Ok(Node::Sink(v.deserialize_into::<C>()?.build(ctx, input)?))
        });
    }

    fn insert(
        &mut self,
        name: &str,
        kind: NodeKind,
        f: impl Fn(ConfigValue, &BuildContext, Option<&Input>) -> Result<Node> + Send + Sync + 'static,
    ) {
        self.factories.insert(name.to_string(), (kind, Box::new(f)));
    }

    /// The kind of node `type_name` builds, if it is registered.
    pub fn kind(&self, type_name: &str) -> Option<NodeKind> {
        self.factories.get(type_name).map(|(k, _)| *k)
    }

    /// Builds a node of type `type_name` from its TOML table (without the runtime's keys such
    /// as `type` and `inputs`). Operators and sinks get their `input`; sources none.
    pub fn build(
        &self,
        type_name: &str,
        config: ConfigValue,
        ctx: &BuildContext,
        input: Option<&Input>,
    ) -> Result<Node> {
        match self.factories.get(type_name) {
            Some((_, f)) => f(config, ctx, input),
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
        self.factories
            .iter()
            .map(|(n, (k, _))| (n.as_str(), k.name()))
    }

    pub fn names(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }
}
