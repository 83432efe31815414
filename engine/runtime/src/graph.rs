//! Turns a pipeline file into a checked graph of built nodes. Only this module wires nodes
//! together: sources, operators and sinks never know about each other.

use crate::config::{NodeSpec, Pipeline};
use arrow::datatypes::DataType;
use engine_api::{
    EngineError, EventTime, Input, MAIN_PORT, Node, NodeKind, OutputMode, OutputPort, Registry,
    Result,
};
use std::fmt::Write as _;

pub struct GraphNode {
    pub spec: NodeSpec,
    pub node: Node,
    /// Upstream (node index, port index) pairs, one per input slot.
    pub inputs: Vec<(usize, usize)>,
    /// Output ports (a source's one main port; none for sinks).
    pub ports: Vec<OutputPort>,
    /// What it was built against (operators and sinks).
    pub input: Option<Input>,
    /// The output mode of its main output (the input's mode for a sink).
    pub mode: OutputMode,
    /// The event time this node declares: the runtime tracks it on its output.
    pub event_time: Option<EventTime>,
    /// Per input slot: whether watermarks arrive on it (it is downstream of a declaration).
    pub timed_inputs: Vec<bool>,
}

impl GraphNode {
    /// Whether this node sends watermarks: it declares event time or receives them.
    pub fn sends_watermarks(&self) -> bool {
        self.event_time.is_some() || self.timed_inputs.iter().any(|t| *t)
    }
}

pub struct Graph {
    pub pipeline: Pipeline,
    /// In topological order: every node comes after its inputs.
    pub nodes: Vec<GraphNode>,
    pub warnings: Vec<String>,
}

/// `inputs = ["node"]` or `["node.port"]`, split.
fn split_input(input: &str) -> (&str, &str) {
    input.split_once('.').unwrap_or((input, MAIN_PORT))
}

impl Graph {
    /// Builds and checks every node, in topological order, each against its input. Does no I/O.
    pub fn build(pipeline: Pipeline, registry: &Registry) -> Result<Graph> {
        let order = wiring_order(&pipeline, registry)?;
        let mut nodes: Vec<GraphNode> = Vec::with_capacity(order.len());
        for i in order {
            let spec = pipeline.nodes[i].clone();
            let node = build_node(&pipeline, registry, spec, &nodes)?;
            nodes.push(node);
        }
        let file = pipeline.path.display();
        if !nodes.iter().any(|g| matches!(g.node, Node::Sink(_))) {
            return Err(EngineError::config(format!(
                "{file}: the pipeline has no sink, so its output goes nowhere"
            )));
        }
        let warnings = unread_ports(&pipeline, &nodes)?;
        Ok(Graph {
            pipeline,
            nodes,
            warnings,
        })
    }
    /// Replaces source `name` with another of the same schema (an in-process run's
    /// [`crate::harness::VectorSource`]).
    pub fn replace_source(
        &mut self,
        name: &str,
        source: Box<dyn engine_api::Source>,
    ) -> Result<()> {
        let g = self.node_mut(name)?;
        match &g.node {
            Node::Source(old) if old.schema() == source.schema() => {
                g.node = Node::Source(source);
                Ok(())
            }
            Node::Source(_) => Err(EngineError::config(format!(
                "the replacement of source `{name}` has another schema"
            ))),
            _ => Err(EngineError::config(format!(
                "node `{name}` is not a source"
            ))),
        }
    }

    /// Replaces sink `name` (with a [`crate::harness::MemorySink`], say).
    pub fn replace_sink(&mut self, name: &str, sink: Box<dyn engine_api::Sink>) -> Result<()> {
        let g = self.node_mut(name)?;
        match &g.node {
            Node::Sink(_) => {
                g.node = Node::Sink(sink);
                Ok(())
            }
            _ => Err(EngineError::config(format!("node `{name}` is not a sink"))),
        }
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut GraphNode> {
        self.nodes
            .iter_mut()
            .find(|g| g.spec.name == name)
            .ok_or_else(|| EngineError::config(format!("the pipeline has no node `{name}`")))
    }

    /// Indices of nodes reading (node, port), with the input slot they read it on.
    pub fn readers(&self, node: usize, port: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, g) in self.nodes.iter().enumerate() {
            for (slot, inp) in g.inputs.iter().enumerate() {
                if *inp == (node, port) {
                    out.push((j, slot));
                }
            }
        }
        out
    }

    /// The actor graph as text, for `engine graph`.
    pub fn render_text(&self) -> String {
        let p = &self.pipeline;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "pipeline `{}` ({}): trigger {}, checkpoints at {}",
            p.name,
            p.path.display(),
            humantime::format_duration(p.trigger),
            p.checkpoint
        );
        for g in &self.nodes {
            let from: Vec<String> = g
                .inputs
                .iter()
                .map(|(u, port)| {
                    let n = &self.nodes[*u];
                    if *port == 0 {
                        n.spec.name.clone()
                    } else {
                        format!("{}.{}", n.spec.name, n.ports[*port].name)
                    }
                })
                .collect();
            let arrow = if from.is_empty() {
                String::new()
            } else {
                format!(" <- {}", from.join(", "))
            };
            let mut extra = match &g.node {
                Node::Sink(sink) => format!(": {}", sink.describe()),
                _ => String::new(),
            };
            if let Some(e) = &g.event_time {
                let _ = write!(
                    extra,
                    "; event time `{}`, lateness {}, idle partitions released after {}",
                    e.column,
                    humantime::format_duration(std::time::Duration::from_millis(
                        e.lateness_ms as u64
                    )),
                    humantime::format_duration(e.idle_timeout)
                );
            }
            let _ = writeln!(
                s,
                "\n  {} [{} {}, {} mode]{arrow}{extra}",
                g.spec.name,
                g.node.kind(),
                g.spec.type_name,
                g.mode
            );
            for port in &g.ports {
                let cols: Vec<String> = port
                    .schema
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), engine_api::type_name(f.data_type())))
                    .collect();
                let _ = writeln!(s, "    {} -> {}", port.name, cols.join(", "));
            }
        }
        for w in &self.warnings {
            let _ = writeln!(s, "\nwarning: {w}");
        }
        s
    }

    /// The actor graph in Graphviz dot.
    pub fn render_dot(&self) -> String {
        let mut s = format!("digraph \"{}\" {{\n  rankdir=LR;\n", self.pipeline.name);
        for g in &self.nodes {
            let shape = match g.node {
                Node::Source(_) => "cds",
                Node::Operator(_) => "box",
                Node::Sink(_) => "cylinder",
            };
            let _ = writeln!(
                s,
                "  \"{}\" [shape={shape}, label=\"{}\\n{}\"];",
                g.spec.name, g.spec.name, g.spec.type_name
            );
            for (u, port) in &g.inputs {
                let n = &self.nodes[*u];
                let label = if *port == 0 {
                    String::new()
                } else {
                    format!(" [label=\"{}\"]", n.ports[*port].name)
                };
                let _ = writeln!(s, "  \"{}\" -> \"{}\"{label};", n.spec.name, g.spec.name);
            }
        }
        s.push_str("}\n");
        s
    }
}

/// Checks each node's `inputs` by name and returns the nodes' indices in topological order
/// (Kahn's algorithm; anything left over is in a cycle).
fn wiring_order(pipeline: &Pipeline, registry: &Registry) -> Result<Vec<usize>> {
    let specs = &pipeline.nodes;
    let mut edges: Vec<Vec<usize>> = Vec::with_capacity(specs.len());
    for spec in specs {
        let at = pipeline.locate(spec, Some("inputs"));
        let kind = match registry.kind(&spec.type_name) {
            Some(k) => k,
            // The registry's own error names the known types.
            None => {
                let ctx = pipeline.build_context(spec);
                return match registry.build(&spec.type_name, spec.config.clone(), &ctx, None) {
                    Err(e) => Err(pipeline.node_error(spec, e)),
                    Ok(_) => Err(EngineError::runtime("a type without a kind built")),
                };
            }
        };
        match kind {
            NodeKind::Source if !spec.inputs.is_empty() => {
                return Err(EngineError::config(format!(
                    "{at}: a source takes no `inputs`"
                )));
            }
            NodeKind::Operator | NodeKind::Sink if spec.inputs.is_empty() => {
                return Err(EngineError::config(format!(
                    "{at}: missing `inputs`, the node(s) it reads from, such as inputs = [\"source\"]"
                )));
            }
            _ => {}
        }
        let mut ups = Vec::new();
        for input in &spec.inputs {
            let (name, _) = split_input(input);
            let Some(u) = specs.iter().position(|s| s.name == name) else {
                return Err(EngineError::config(format!(
                    "{at}: input `{input}` names no node; nodes are: {}",
                    specs
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            ups.push(u);
        }
        edges.push(ups);
    }
    let n = specs.len();
    let mut order = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    while order.len() < n {
        match (0..n).find(|i| !placed[*i] && edges[*i].iter().all(|u| placed[*u])) {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => {
                let stuck: Vec<_> = (0..n)
                    .filter(|i| !placed[*i])
                    .map(|i| specs[i].name.as_str())
                    .collect();
                return Err(EngineError::config(format!(
                    "{}: the nodes {} form a cycle through their `inputs`",
                    pipeline.path.display(),
                    stuck.join(", ")
                )));
            }
        }
    }
    Ok(order)
}

/// Resolves a node's inputs against the nodes built so far, works out its [`Input`], builds it
/// and checks what it declares.
fn build_node(
    pipeline: &Pipeline,
    registry: &Registry,
    spec: NodeSpec,
    built: &[GraphNode],
) -> Result<GraphNode> {
    let at = pipeline.locate(&spec, None);
    let mut inputs = Vec::new();
    for input in &spec.inputs {
        let (name, port) = split_input(input);
        let u = built
            .iter()
            .position(|g| g.spec.name == name)
            .ok_or_else(|| EngineError::runtime(format!("input `{name}` not built before")))?;
        let ports = &built[u].ports;
        let Some(p) = ports.iter().position(|p| p.name == port) else {
            let at = pipeline.locate(&spec, Some("inputs"));
            return Err(EngineError::config(if ports.is_empty() {
                format!("{at}: input `{input}` is a sink, which has no output")
            } else {
                format!(
                    "{at}: node `{name}` has no port `{port}`; its ports are: {}",
                    ports
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }));
        };
        inputs.push((u, p));
    }
    let input = resolve_input(&at, &inputs, built)?;
    let timed_inputs: Vec<bool> = inputs
        .iter()
        .map(|(u, _)| built[*u].sends_watermarks())
        .collect();
    if let (Some(_), Some(upstream)) = (
        &spec.event_time,
        input.as_ref().and_then(|i| i.event_time.as_ref()),
    ) {
        return Err(EngineError::config(format!(
            "{}: event time is already declared upstream (column `{upstream}`); declare it once, on the node where the column first exists",
            pipeline.locate(&spec, Some("event_time"))
        )));
    }
    let ctx = pipeline.build_context(&spec);
    let node = registry
        .build(&spec.type_name, spec.config.clone(), &ctx, input.as_ref())
        .map_err(|e| pipeline.node_error(&spec, e))?;
    let (ports, mode) = match &node {
        Node::Source(s) => (
            vec![OutputPort::main(s.schema(), OutputMode::Append)],
            OutputMode::Append,
        ),
        Node::Operator(b) => {
            if b.ports.first().is_none_or(|p| p.name != MAIN_PORT) {
                return Err(EngineError::config(format!(
                    "{at}: the operator must declare its main port `{MAIN_PORT}` first"
                )));
            }
            (b.ports.clone(), b.ports[0].mode)
        }
        Node::Sink(sink) => {
            let input = input
                .as_ref()
                .ok_or_else(|| EngineError::runtime("a sink without input"))?;
            let ok = sink.accepts();
            if !ok.contains(&input.mode) {
                let from = &built[inputs[0].0].spec.name;
                let accepted = ok
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(" or ");
                return Err(EngineError::config(format!(
                    "{at}: cannot write {}-mode output of `{from}`; this sink takes {accepted} mode (Spark's rules: a file table takes append mode, a whole-table object complete mode, the console all three); change output_mode on `{from}`, set mode = \"complete\" on a parquet sink for a small complete table, or use a console sink",
                    input.mode
                )));
            }
            (Vec::new(), input.mode)
        }
    };
    if let Some(e) = &spec.event_time {
        let key = pipeline.locate(&spec, Some("event_time"));
        let Some(port) = ports.first() else {
            return Err(EngineError::config(format!(
                "{key}: a sink has no output to take event time from; declare it on the node where the column first exists"
            )));
        };
        match port
            .schema
            .field_with_name(&e.column)
            .map(|f| f.data_type())
        {
            Ok(DataType::Utf8 | DataType::Timestamp(_, _)) => {}
            Ok(other) => {
                return Err(EngineError::config(format!(
                    "{key}: column `{}` is {}; event time must be ISO-8601 text or a timestamp",
                    e.column,
                    engine_api::type_name(other)
                )));
            }
            Err(_) => {
                return Err(EngineError::config(format!(
                    "{key}: the node's output has no column `{}`",
                    e.column
                )));
            }
        }
    }
    Ok(GraphNode {
        event_time: spec.event_time.clone(),
        spec,
        node,
        inputs,
        ports,
        input,
        mode,
        timed_inputs,
    })
}

/// The [`Input`] a node reading `inputs` is built against: one schema and one mode, which
/// every input must share, and the event-time column when one arrives and is still there.
fn resolve_input(
    at: &str,
    inputs: &[(usize, usize)],
    built: &[GraphNode],
) -> Result<Option<Input>> {
    let Some((u, p)) = inputs.first() else {
        return Ok(None);
    };
    let first = &built[*u].ports[*p];
    for (u2, p2) in &inputs[1..] {
        let other = &built[*u2].ports[*p2];
        if other.schema != first.schema {
            return Err(EngineError::config(format!(
                "{at}: its inputs have different schemas; a node with several inputs needs the same columns from each"
            )));
        }
        if other.mode != first.mode {
            return Err(EngineError::config(format!(
                "{at}: its inputs have different output modes; read from nodes of one mode"
            )));
        }
    }
    let event_time = inputs
        .iter()
        .find_map(|(u, _)| event_time_column(*u, built))
        .filter(|c| first.schema.column_with_name(c).is_some());
    Ok(Some(Input {
        schema: first.schema.clone(),
        mode: first.mode,
        event_time,
    }))
}

/// The event-time column on node `u`'s output: its own declaration, or its input's.
fn event_time_column(u: usize, built: &[GraphNode]) -> Option<String> {
    let g = &built[u];
    g.event_time
        .as_ref()
        .map(|e| e.column.clone())
        .or_else(|| g.input.as_ref().and_then(|i| i.event_time.clone()))
}

/// Every port that must be read is read (or the pipeline is rejected); an unread main port is a
/// warning.
fn unread_ports(pipeline: &Pipeline, nodes: &[GraphNode]) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (i, g) in nodes.iter().enumerate() {
        for (p, port) in g.ports.iter().enumerate() {
            if nodes.iter().any(|d| d.inputs.contains(&(i, p))) {
                continue;
            }
            if let Some(advice) = &port.must_read {
                let advice = if advice.is_empty() {
                    String::new()
                } else {
                    format!(" {advice}")
                };
                return Err(EngineError::config(format!(
                    "{}: nothing reads its `{}` port, so those records would be lost; add a sink with inputs = [\"{}.{}\"]{advice}",
                    pipeline.locate(&g.spec, None),
                    port.name,
                    g.spec.name,
                    port.name,
                )));
            }
            if p == 0 {
                warnings.push(format!(
                    "node `{}`: its output is not read by any node",
                    g.spec.name
                ));
            }
        }
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    //! The graph builder on pipelines of test nodes: no Kafka, no S3, no built-in operator.
    use super::*;
    use crate::test_nodes::{registry, schema};
    use std::path::Path;

    const HEAD: &str = "[pipeline]\nname = \"t\"\ncheckpoint = \"file:///tmp/graph-test\"\n\n";

    fn build(nodes: &str) -> std::result::Result<Graph, String> {
        let text = format!("{HEAD}{nodes}");
        let p = Pipeline::parse(Path::new("g.toml"), &text).map_err(|e| e.to_string())?;
        Graph::build(p, &registry()).map_err(|e| e.to_string())
    }

    #[test]
    fn nodes_come_in_topological_order_with_their_schemas() {
        // Written sinks first: the builder orders them after their inputs.
        let g = build(
            r#"
[nodes.out]
type = "sink"
inputs = ["b"]
[nodes.b]
type = "op"
inputs = ["a"]
[nodes.a]
type = "op"
inputs = ["in"]
[nodes.in]
type = "src"
columns = ["x", "y"]
"#,
        )
        .unwrap();
        let names: Vec<&str> = g.nodes.iter().map(|n| n.spec.name.as_str()).collect();
        assert_eq!(names, ["in", "a", "b", "out"]);
        assert_eq!(
            g.nodes[3].input.as_ref().unwrap().schema,
            schema(&["x", "y"])
        );
        assert_eq!(g.readers(2, 0), vec![(3, 0)]);
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    }

    #[test]
    fn wiring_mistakes_are_located_errors() {
        let src = "[nodes.in]\ntype = \"src\"\ncolumns = [\"x\", \"t:string\"]\n";
        let cases = [
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"b\"]\n[nodes.b]\ntype = \"op\"\ninputs = [\"a\"]\n[nodes.out]\ntype = \"sink\"\ninputs = [\"a\"]\n",
                "g.toml: the nodes a, b, out form a cycle",
            ),
            (
                "[nodes.out]\ntype = \"sink\"\ninputs = [\"nowhere\"]\n",
                "g.toml:10: node `out` (sink): input `nowhere` names no node; nodes are: in, out",
            ),
            (
                "[nodes.out]\ntype = \"sink\"\ninputs = [\"in.side\"]\n",
                "g.toml:10: node `out` (sink): node `in` has no port `side`; its ports are: out",
            ),
            (
                "[nodes.out]\ntype = \"sink\"\n",
                "g.toml:8: node `out` (sink): missing `inputs`",
            ),
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"in\"]\nsplit = true\n[nodes.out]\ntype = \"sink\"\ninputs = [\"a\"]\n",
                "g.toml:8: node `a` (op): nothing reads its `rejected` port, so those records would be lost; add a sink with inputs = [\"a.rejected\"] or set split = false",
            ),
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"in\"]\nmode = \"complete\"\n[nodes.out]\ntype = \"sink\"\ninputs = [\"a\"]\n",
                "g.toml:12: node `out` (sink): cannot write complete-mode output of `a`",
            ),
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"in\"]\nneeds = \"zz\"\n[nodes.out]\ntype = \"sink\"\ninputs = [\"a\"]\n",
                "g.toml:11: node `a` (op): `needs`: no column `zz`",
            ),
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"in\"]\nsplt = true\n",
                "g.toml:11: node `a` (op): `splt`: unknown field `splt`",
            ),
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"in\"]\n",
                "g.toml: the pipeline has no sink",
            ),
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"in\"]\nevent_time = { column = \"nope\" }\n[nodes.out]\ntype = \"sink\"\ninputs = [\"a\"]\n",
                "g.toml:11: node `a` (op): the node's output has no column `nope`",
            ),
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"in\"]\nevent_time = { column = \"t\", lateness = \"soon\" }\n[nodes.out]\ntype = \"sink\"\ninputs = [\"a\"]\n",
                "g.toml:11: node `a`: `event_time.lateness`:",
            ),
            (
                "[nodes.a]\ntype = \"op\"\ninputs = [\"in\"]\nevent_time = { column = \"t\" }\n[nodes.b]\ntype = \"op\"\ninputs = [\"a\"]\nevent_time = { column = \"t\" }\n[nodes.out]\ntype = \"sink\"\ninputs = [\"b\"]\n",
                "g.toml:15: node `b` (op): event time is already declared upstream (column `t`)",
            ),
            (
                "[nodes.w]\ntype = \"watermarks\"\ninputs = [\"in\"]\n[nodes.out]\ntype = \"sink\"\ninputs = [\"w\"]\n",
                "g.toml:9: node `w` (watermarks): `type`: needs event time",
            ),
        ];
        for (nodes, want) in cases {
            let e = build(&format!("{src}{nodes}"))
                .err()
                .unwrap_or_else(|| panic!("builds: {nodes}"));
            assert!(e.starts_with(want), "want `{want}`, got `{e}`");
        }
    }

    #[test]
    fn event_time_flows_to_the_nodes_that_still_have_its_column_and_sources_can_be_many() {
        let g = build(
            r#"
[nodes.in]
type = "src"
columns = ["x:string", "y"]
[nodes.in2]
type = "src"
columns = ["x:string", "y"]
[nodes.a]
type = "op"
inputs = ["in", "in2"]
event_time = { column = "x", lateness = "5s", idle_timeout = "1m" }
[nodes.w]
type = "watermarks"
inputs = ["a"]
[nodes.plain]
type = "op"
inputs = ["in2"]
[nodes.out]
type = "sink"
inputs = ["w"]
[nodes.out2]
type = "sink"
inputs = ["plain"]
"#,
        )
        .unwrap();
        let node = |n: &str| g.nodes.iter().find(|g| g.spec.name == n).unwrap();
        let e = node("a").event_time.as_ref().unwrap();
        assert_eq!((e.column.as_str(), e.lateness_ms), ("x", 5_000));
        assert_eq!(e.idle_timeout, std::time::Duration::from_secs(60));
        assert_eq!(node("a").timed_inputs, [false, false]);
        assert!(node("a").sends_watermarks());
        assert_eq!(
            node("w").input.as_ref().unwrap().event_time.as_deref(),
            Some("x")
        );
        assert_eq!(node("w").timed_inputs, [true]);
        // `w` outputs no `x`: event time stops there, watermarks still flow.
        assert_eq!(node("out").input.as_ref().unwrap().event_time, None);
        assert_eq!(node("out").timed_inputs, [true]);
        assert_eq!(node("plain").timed_inputs, [false]);
        assert!(!node("out2").sends_watermarks());
    }
}
