//! Turns a pipeline file into a checked graph of built nodes. Only this module wires nodes
//! together: sources, operators and sinks never know about each other.

use crate::config::{NodeSpec, Pipeline};
use arrow::datatypes::SchemaRef;
use engine_api::{EngineError, MAIN_PORT, Node, OutputMode, Registry, Result};
use std::fmt::Write as _;

pub struct GraphNode {
    pub spec: NodeSpec,
    pub node: Node,
    /// Upstream (node index, port index) pairs.
    pub inputs: Vec<(usize, usize)>,
    /// Output port names (empty for sinks).
    pub ports: Vec<String>,
    /// Schema of each output port.
    pub out_schemas: Vec<SchemaRef>,
    /// Schema of the input (operators and sinks).
    pub in_schema: Option<SchemaRef>,
    /// The output mode of its output (the input's mode for a sink).
    pub mode: OutputMode,
}

pub struct Graph {
    pub pipeline: Pipeline,
    /// In topological order: every node comes after its inputs.
    pub nodes: Vec<GraphNode>,
    pub warnings: Vec<String>,
}

impl Graph {
    /// Builds and checks every node. Does no I/O.
    pub fn build(pipeline: Pipeline, registry: &Registry) -> Result<Graph> {
        let mut built = Vec::new();
        for spec in &pipeline.nodes {
            let ctx = pipeline.build_context(spec);
            let node = registry
                .build(&spec.type_name, spec.config.clone(), &ctx)
                .map_err(|e| pipeline.node_error(spec, e))?;
            built.push((spec.clone(), node));
        }

        // Resolve inputs by name.
        let ports_of = |n: &Node| -> Vec<String> {
            match n {
                Node::Source(_) => vec![MAIN_PORT.to_string()],
                Node::Operator(op) => op.output_ports(),
                Node::Sink(_) => Vec::new(),
            }
        };
        let mut edges: Vec<Vec<(usize, usize)>> = Vec::new();
        for (spec, node) in &built {
            let at = pipeline.locate(spec, Some("inputs"));
            match node {
                Node::Source(_) if !spec.inputs.is_empty() => {
                    return Err(EngineError::config(format!(
                        "{at}: a source takes no `inputs`"
                    )));
                }
                Node::Operator(_) | Node::Sink(_) if spec.inputs.is_empty() => {
                    return Err(EngineError::config(format!(
                        "{at}: missing `inputs`, the node(s) it reads from, such as inputs = [\"source\"]"
                    )));
                }
                _ => {}
            }
            let mut ins = Vec::new();
            for input in &spec.inputs {
                let (name, port) = input.split_once('.').unwrap_or((input.as_str(), MAIN_PORT));
                let Some(idx) = built.iter().position(|(s, _)| s.name == name) else {
                    return Err(EngineError::config(format!(
                        "{at}: input `{input}` names no node; nodes are: {}",
                        built
                            .iter()
                            .map(|(s, _)| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                };
                let ports = ports_of(&built[idx].1);
                let Some(p) = ports.iter().position(|p| p == port) else {
                    return Err(EngineError::config(if ports.is_empty() {
                        format!("{at}: input `{input}` is a sink, which has no output")
                    } else {
                        format!(
                            "{at}: node `{name}` has no port `{port}`; its ports are: {}",
                            ports.join(", ")
                        )
                    }));
                };
                ins.push((idx, p));
            }
            edges.push(ins);
        }
        let sources = built
            .iter()
            .filter(|(_, n)| matches!(n, Node::Source(_)))
            .count();
        let sinks = built
            .iter()
            .filter(|(_, n)| matches!(n, Node::Sink(_)))
            .count();
        let file = pipeline.path.display();
        if sources != 1 {
            return Err(EngineError::config(format!(
                "{file}: a pipeline needs exactly one source node, found {sources}"
            )));
        }
        if sinks == 0 {
            return Err(EngineError::config(format!(
                "{file}: the pipeline has no sink, so its output goes nowhere"
            )));
        }

        // Topological order (Kahn); anything left over is in a cycle.
        let n = built.len();
        let mut order = Vec::with_capacity(n);
        let mut placed = vec![false; n];
        while order.len() < n {
            let next = (0..n).find(|i| !placed[*i] && edges[*i].iter().all(|(u, _)| placed[*u]));
            match next {
                Some(i) => {
                    placed[i] = true;
                    order.push(i);
                }
                None => {
                    let stuck: Vec<_> = (0..n)
                        .filter(|i| !placed[*i])
                        .map(|i| built[i].0.name.as_str())
                        .collect();
                    return Err(EngineError::config(format!(
                        "{file}: the nodes {} form a cycle through their `inputs`",
                        stuck.join(", ")
                    )));
                }
            }
        }

        // Schemas, in order.
        let mut slots: Vec<Option<GraphNode>> = Vec::with_capacity(n);
        let mut built: Vec<Option<(NodeSpec, Node)>> = built.into_iter().map(Some).collect();
        slots.resize_with(n, || None);
        let mut new_index = vec![0; n];
        for (pos, &i) in order.iter().enumerate() {
            new_index[i] = pos;
        }
        let mut nodes: Vec<GraphNode> = Vec::with_capacity(n);
        for &i in &order {
            let (spec, mut node) = built[i].take().expect("each node once");
            let inputs: Vec<(usize, usize)> =
                edges[i].iter().map(|(u, p)| (new_index[*u], *p)).collect();
            let at = pipeline.locate(&spec, None);
            let in_schema = match inputs.first() {
                None => None,
                Some((u, p)) => {
                    let s = nodes[*u].out_schemas[*p].clone();
                    for (u2, p2) in &inputs[1..] {
                        if nodes[*u2].out_schemas[*p2] != s {
                            return Err(EngineError::config(format!(
                                "{at}: its inputs have different schemas; a node with several inputs needs the same columns from each"
                            )));
                        }
                    }
                    Some(s)
                }
            };
            let ports = ports_of(&node);
            let in_mode = match inputs.first() {
                None => OutputMode::Append,
                Some((u, _)) => {
                    let m = nodes[*u].mode;
                    if inputs.iter().any(|(u2, _)| nodes[*u2].mode != m) {
                        return Err(EngineError::config(format!(
                            "{at}: its inputs have different output modes; read from nodes of one mode"
                        )));
                    }
                    m
                }
            };
            let mode = match &node {
                Node::Operator(op) => op
                    .output_mode(in_mode)
                    .map_err(|e| pipeline.node_error(&spec, e))?,
                Node::Sink(sink) => {
                    let ok = sink.accepts();
                    if !ok.contains(&in_mode) {
                        let from = &nodes[inputs[0].0].spec.name;
                        let accepted = ok
                            .iter()
                            .map(|m| m.to_string())
                            .collect::<Vec<_>>()
                            .join(" or ");
                        return Err(EngineError::config(format!(
                            "{at}: cannot write {in_mode}-mode output of `{from}`; this sink takes {accepted} mode (Spark's rules: a file table takes append mode, a whole-table object complete mode, the console all three); change output_mode on `{from}`, set mode = \"complete\" on a parquet sink for a small complete table, or use a console sink"
                        )));
                    }
                    in_mode
                }
                Node::Source(_) => OutputMode::Append,
            };
            let out_schemas = match &mut node {
                Node::Source(s) => vec![s.schema()],
                Node::Operator(op) => {
                    let out = op
                        .init(in_schema.as_ref().expect("operators have inputs"))
                        .map_err(|e| pipeline.node_error(&spec, e))?;
                    if out.len() != ports.len() {
                        return Err(EngineError::config(format!(
                            "{at}: the operator returned {} schemas for {} ports",
                            out.len(),
                            ports.len()
                        )));
                    }
                    out
                }
                Node::Sink(s) => {
                    s.init(in_schema.as_ref().expect("sinks have inputs"))
                        .map_err(|e| pipeline.node_error(&spec, e))?;
                    Vec::new()
                }
            };
            nodes.push(GraphNode {
                spec,
                node,
                inputs,
                ports,
                out_schemas,
                in_schema,
                mode,
            });
        }

        // Every port must be read, or its rows are lost.
        let mut warnings = Vec::new();
        for (i, g) in nodes.iter().enumerate() {
            for (p, port) in g.ports.iter().enumerate() {
                let read = nodes.iter().any(|d| d.inputs.contains(&(i, p)));
                if read {
                    continue;
                }
                if p == 0 {
                    warnings.push(format!(
                        "node `{}`: its output is not read by any node",
                        g.spec.name
                    ));
                } else {
                    return Err(EngineError::config(format!(
                        "{}: nothing reads its `{port}` port, so those records would be lost; add a sink with inputs = [\"{}.{port}\"]{}",
                        pipeline.locate(&g.spec, None),
                        g.spec.name,
                        if port == "quarantine" {
                            " or set on_error = \"drop\""
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
        Ok(Graph {
            pipeline,
            nodes,
            warnings,
        })
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
                        format!("{}.{}", n.spec.name, n.ports[*port])
                    }
                })
                .collect();
            let arrow = if from.is_empty() {
                String::new()
            } else {
                format!(" <- {}", from.join(", "))
            };
            let extra = match &g.node {
                Node::Sink(sink) => format!(": {}", sink.describe()),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "\n  {} [{} {}, {} mode]{arrow}{extra}",
                g.spec.name,
                g.node.kind(),
                g.spec.type_name,
                g.mode
            );
            for (port, schema) in g.ports.iter().zip(&g.out_schemas) {
                let cols: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), engine_api::type_name(f.data_type())))
                    .collect();
                let _ = writeln!(s, "    {port} -> {}", cols.join(", "));
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
                    format!(" [label=\"{}\"]", n.ports[*port])
                };
                let _ = writeln!(s, "  \"{}\" -> \"{}\"{label};", n.spec.name, g.spec.name);
            }
        }
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    //! The graph builder on pipelines of test nodes: no Kafka, no S3, no built-in operator.
    use super::*;
    use arrow::array::RecordBatch;
    use arrow::datatypes::{DataType, Field, Schema};
    use engine_api::{
        BuildContext, Collector, Committer, Epoch, Operator, OperatorConfig, PendingCommit, Sink,
        SinkConfig, Source, SourceConfig, SourceContext,
    };
    use serde::Deserialize;
    use std::path::Path;
    use std::sync::Arc;

    fn schema(cols: &[&str]) -> SchemaRef {
        Arc::new(Schema::new(
            cols.iter()
                .map(|c| Field::new(*c, DataType::Int64, true))
                .collect::<Vec<_>>(),
        ))
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TestSource {
        columns: Vec<String>,
    }
    struct TestSourceNode(SchemaRef);
    impl SourceConfig for TestSource {
        fn build(self, _: &BuildContext) -> Result<Box<dyn Source>> {
            let cols: Vec<&str> = self.columns.iter().map(String::as_str).collect();
            Ok(Box::new(TestSourceNode(schema(&cols))))
        }
    }
    impl Source for TestSourceNode {
        fn schema(&self) -> SchemaRef {
            self.0.clone()
        }
        fn open(&mut self, _: Option<&serde_json::Value>) -> Result<()> {
            Ok(())
        }
        fn run(&mut self, _: &mut dyn SourceContext) -> Result<()> {
            Ok(())
        }
    }

    /// Keeps the input and, with `split`, also sends rows to a second port `rejected` that must
    /// be read; `mode` sets its output mode.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TestOp {
        #[serde(default)]
        split: bool,
        #[serde(default)]
        mode: Option<OutputMode>,
        #[serde(default)]
        needs: Option<String>,
    }
    struct TestOpNode(TestOp);
    impl OperatorConfig for TestOp {
        fn build(self, _: &BuildContext) -> Result<Box<dyn Operator>> {
            Ok(Box::new(TestOpNode(self)))
        }
    }
    impl Operator for TestOpNode {
        fn output_ports(&self) -> Vec<String> {
            let mut p = vec![MAIN_PORT.to_string()];
            if self.0.split {
                p.push("rejected".into());
            }
            p
        }
        fn init(&mut self, input: &SchemaRef) -> Result<Vec<SchemaRef>> {
            if let Some(c) = &self.0.needs {
                input
                    .index_of(c)
                    .map_err(|_| EngineError::invalid("needs", format!("no column `{c}`")))?;
            }
            Ok(self.output_ports().iter().map(|_| input.clone()).collect())
        }
        fn output_mode(&self, input: OutputMode) -> Result<OutputMode> {
            Ok(self.0.mode.unwrap_or(input))
        }
        fn process(&mut self, batch: RecordBatch, out: &mut Collector) -> Result<()> {
            out.emit(batch);
            Ok(())
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TestSink {}
    struct TestSinkNode;
    struct NoCommit;
    #[async_trait::async_trait]
    impl Committer for NoCommit {
        async fn commit(&self, _: &[PendingCommit]) -> Result<()> {
            Ok(())
        }
    }
    impl SinkConfig for TestSink {
        fn build(self, _: &BuildContext) -> Result<Box<dyn Sink>> {
            Ok(Box::new(TestSinkNode))
        }
    }
    #[async_trait::async_trait]
    impl Sink for TestSinkNode {
        fn init(&mut self, _: &SchemaRef) -> Result<()> {
            Ok(())
        }
        async fn open(&mut self) -> Result<()> {
            Ok(())
        }
        async fn write(&mut self, _: RecordBatch) -> Result<()> {
            Ok(())
        }
        async fn prepare_commit(&mut self, _: Epoch) -> Result<Vec<PendingCommit>> {
            Ok(Vec::new())
        }
        fn committer(&self) -> Arc<dyn Committer> {
            Arc::new(NoCommit)
        }
        fn describe(&self) -> String {
            "test sink".into()
        }
        fn accepts(&self) -> Vec<OutputMode> {
            vec![OutputMode::Append]
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register_source::<TestSource>("src");
        r.register_operator::<TestOp>("op");
        r.register_sink::<TestSink>("sink");
        r
    }

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
        assert_eq!(g.nodes[3].in_schema.as_ref().unwrap(), &schema(&["x", "y"]));
        assert_eq!(g.readers(2, 0), vec![(3, 0)]);
        assert!(g.warnings.is_empty(), "{:?}", g.warnings);
    }

    #[test]
    fn wiring_mistakes_are_located_errors() {
        let src = "[nodes.in]\ntype = \"src\"\ncolumns = [\"x\"]\n";
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
                "g.toml:8: node `a` (op): nothing reads its `rejected` port",
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
                "[nodes.in2]\ntype = \"src\"\ncolumns = [\"x\"]\n[nodes.out]\ntype = \"sink\"\ninputs = [\"in\"]\n",
                "g.toml: a pipeline needs exactly one source node, found 2",
            ),
        ];
        for (nodes, want) in cases {
            let e = build(&format!("{src}{nodes}"))
                .err()
                .unwrap_or_else(|| panic!("builds: {nodes}"));
            assert!(e.starts_with(want), "want `{want}`, got `{e}`");
        }
    }
}
