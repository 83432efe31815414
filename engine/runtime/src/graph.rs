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
