//! Splits a built graph into the part that runs per source partition and the finalizer.
//!
//! A node *merges partitions* when its operator snapshots state (an aggregate, a window) or
//! says so ([`engine_api::Operator::merges_partitions`]: it emits on watermarks or barriers):
//! its result depends on rows of every partition, so it cannot run per partition. Such nodes
//! and everything downstream of them form the finalizer; the rest runs per partition. Each edge
//! from the per-partition part into the finalizer becomes an exchange: an
//! [`ExchangeSink`] on one side, an [`ExchangeSource`] of the same name on the other.

use super::exchange::{ExchangeSink, ExchangeSource, Planner};
use crate::checkpoint::{CheckpointStore, Manifest};
use crate::config::NodeSpec;
use crate::graph::GraphNode;
use engine_api::{ConfigValue, Epoch, EventTime, Input, Node, OutputPort, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub(crate) struct Split {
    /// In topological order, exchange sinks last.
    pub(crate) partitioned: Vec<GraphNode>,
    pub(crate) finalizer: Option<Finalizer>,
}

pub(crate) struct Finalizer {
    /// In topological order, exchange sources first.
    pub(crate) nodes: Vec<GraphNode>,
    pub(crate) planner: Arc<Planner>,
}

/// Whether `g` merges partitions: it keeps state, or says so.
fn merges_partitions(g: &mut GraphNode) -> Result<bool> {
    Ok(match &mut g.node {
        Node::Operator(b) => b.operator.merges_partitions() || b.operator.snapshot()?.is_some(),
        _ => false,
    })
}

/// The name of the exchange for output `port` of `node`: `node.port`, which no node of a
/// pipeline file can be called.
fn exchange_name(node: &str, port: &str) -> String {
    format!("{node}.{port}")
}

fn internal_spec(name: &str, inputs: Vec<String>) -> NodeSpec {
    NodeSpec {
        name: name.to_string(),
        type_name: "exchange".into(),
        inputs,
        config: ConfigValue::Table(Vec::new()),
        event_time: None,
        line: 0,
    }
}

/// The columns of `edge`'s rows that its readers in the finalizer use: the union of what each
/// declares ([`engine_api::Built::reading`]) and the event-time column, whose watermark the
/// finalizer tracks again. `None` when any reader reads every column.
fn columns_read(
    nodes: &[GraphNode],
    edge: (usize, usize),
    event_time: Option<&EventTime>,
) -> Option<BTreeSet<String>> {
    let mut read: BTreeSet<String> = event_time.iter().map(|e| e.column.clone()).collect();
    for g in nodes.iter().filter(|g| g.inputs.contains(&edge)) {
        match &g.node {
            Node::Operator(b) => read.extend(b.reads.clone()?),
            _ => return None,
        }
    }
    Some(read)
}

/// Splits `nodes` (in topological order). `latest` is the finalizer's last manifest, which says
/// how far it consumed the partition chains.
pub(crate) fn split(
    mut nodes: Vec<GraphNode>,
    store: &Arc<CheckpointStore>,
    latest: Option<&Manifest>,
    owner: &str,
    base: Epoch,
) -> Result<Split> {
    let mut fin = vec![false; nodes.len()];
    for i in 0..nodes.len() {
        fin[i] = merges_partitions(&mut nodes[i])? || nodes[i].inputs.iter().any(|(u, _)| fin[*u]);
    }
    if !fin.iter().any(|f| *f) {
        return Ok(Split {
            partitioned: nodes,
            finalizer: None,
        });
    }
    // The edges that cross, in order of first use.
    let mut crossings: Vec<(usize, usize)> = Vec::new();
    for (i, g) in nodes.iter().enumerate() {
        for inp in &g.inputs {
            if fin[i] && !fin[inp.0] && !crossings.contains(inp) {
                crossings.push(*inp);
            }
        }
    }
    let declared: Vec<EventTime> = nodes.iter().filter_map(|g| g.event_time.clone()).collect();
    let sources: Vec<String> = nodes
        .iter()
        .filter(|g| matches!(g.node, Node::Source(_)))
        .map(|g| g.spec.name.clone())
        .collect();
    let names: Vec<String> = crossings
        .iter()
        .map(|(u, port)| exchange_name(&nodes[*u].spec.name, &nodes[*u].ports[*port].name))
        .collect();
    let consumed = latest
        .and_then(|m| names.first().and_then(|n| m.positions.get(n)))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let planner = Arc::new(Planner::new(
        store.clone(),
        sources,
        names.clone(),
        &consumed,
        owner.to_string(),
        base,
    ));

    // What each side's nodes become, and where the crossing outputs go.
    let mut exchange_sources = Vec::new();
    let mut exchange_sinks = Vec::new();
    for ((u, port), name) in crossings.iter().zip(&names) {
        let up = &nodes[*u];
        let out = &up.ports[*port];
        let event_time = declared
            .iter()
            .find(|e| up.sends_watermarks() && out.schema.index_of(&e.column).is_ok())
            .cloned();
        let read = columns_read(&nodes, (*u, *port), event_time.as_ref());
        exchange_sinks.push(GraphNode {
            spec: internal_spec(name, vec![format!("{}.{}", up.spec.name, out.name)]),
            node: Node::Sink(Box::new(ExchangeSink::new(
                name.clone(),
                store.clone(),
                out.schema.clone(),
                read,
            ))),
            inputs: vec![(*u, *port)],
            ports: Vec::new(),
            input: Some(Input {
                schema: out.schema.clone(),
                mode: out.mode,
                event_time: event_time.as_ref().map(|e| e.column.clone()),
            }),
            mode: out.mode,
            event_time: None,
            timed_inputs: vec![up.sends_watermarks()],
        });
        exchange_sources.push(GraphNode {
            spec: internal_spec(name, Vec::new()),
            node: Node::Source(Box::new(ExchangeSource {
                node: name.clone(),
                schema: out.schema.clone(),
                planner: planner.clone(),
                store: store.clone(),
                handle: tokio::runtime::Handle::current(),
                next_plan: 0,
            })),
            inputs: Vec::new(),
            ports: vec![OutputPort::main(out.schema.clone(), out.mode)],
            input: None,
            mode: out.mode,
            event_time,
            timed_inputs: Vec::new(),
        });
    }

    let mut partitioned = Vec::new();
    let mut finalizer = exchange_sources;
    let mut new_index: BTreeMap<usize, usize> = BTreeMap::new();
    for (i, mut g) in nodes.into_iter().enumerate() {
        if fin[i] {
            for inp in g.inputs.iter_mut() {
                *inp = match crossings.iter().position(|c| c == inp) {
                    Some(x) => (x, 0),
                    None => (new_index[&inp.0], inp.1),
                };
            }
            new_index.insert(i, finalizer.len());
            finalizer.push(g);
        } else {
            for inp in g.inputs.iter_mut() {
                inp.0 = new_index[&inp.0];
            }
            new_index.insert(i, partitioned.len());
            partitioned.push(g);
        }
    }
    // Indices into the per-partition part were final as soon as each node was placed there.
    for mut sink in exchange_sinks {
        let u = sink.inputs[0].0;
        sink.inputs[0].0 = new_index[&u];
        partitioned.push(sink);
    }
    Ok(Split {
        partitioned,
        finalizer: Some(Finalizer {
            nodes: finalizer,
            planner,
        }),
    })
}
