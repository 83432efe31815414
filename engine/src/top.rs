//! `engine top --metrics-address HOST:PORT`: a terminal view of a running engine, built from
//! its `/metrics`, refreshed every second: rows/s in and out per node, mailbox depth, time
//! waiting on full mailboxes, state entries and watermarks; committed offset and lag per Kafka
//! partition; epochs committed and the time since the last commit. Rates come from the
//! difference between two scrapes. Drawn with ratatui; `q`, Esc or Ctrl-C quits. When standard
//! output is not a terminal (or with `--once`) it prints one view and exits.

use bytes::Bytes;
use engine_api::{EngineError, Result};
use http_body_util::{BodyExt, Empty};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Paragraph, Row, Table};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One sample of the exposition: a metric, its labels, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the Prometheus text format (version 0.0.4) as the engine's exporter writes it.
/// Comment lines and lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.trim().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// `a="x",b="y \"q\""`: label values are quoted, with `\\`, `\"` and `\n` escaped.
fn parse_labels(mut s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim_start_matches(',').to_string(), value);
        s = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// A scrape and when it was taken.
pub struct Scrape {
    pub at: Instant,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of `name` over the samples whose label `key` is `value` (every sample of `name`
    /// when `key` is empty).
    fn sum(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        let mut found = None;
        for s in self.samples.iter().filter(|s| s.name == name) {
            if key.is_empty() || s.labels.get(key).is_some_and(|v| v == value) {
                *found.get_or_insert(0.0) += s.value;
            }
        }
        found
    }

    /// The values of label `key` on samples of `name`, in order.
    fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.labels.get(key).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// What the view shows, computed from the last two scrapes.
#[derive(Debug, Default, PartialEq)]
pub struct View {
    pub pipeline: String,
    pub version: String,
    pub nodes: Vec<NodeLine>,
    pub partitions: Vec<PartitionLine>,
    pub commits: Vec<CommitLine>,
}

#[derive(Debug, PartialEq)]
pub struct NodeLine {
    pub node: String,
    /// Rows/s in and out, once two scrapes are known.
    pub in_per_s: Option<f64>,
    pub out_per_s: Option<f64>,
    pub mailbox: Option<f64>,
    /// The share of the time spent waiting on full downstream mailboxes, 0 to 1.
    pub backpressure: Option<f64>,
    pub state_entries: Option<f64>,
    pub watermark: Option<f64>,
}

#[derive(Debug, PartialEq)]
pub struct PartitionLine {
    pub topic: String,
    pub partition: String,
    pub committed: Option<f64>,
    pub lag: Option<f64>,
}

#[derive(Debug, PartialEq)]
pub struct CommitLine {
    pub part: String,
    pub epochs: f64,
    pub last_epoch: Option<f64>,
    /// Mean commit time over the run, seconds.
    pub mean_commit_s: Option<f64>,
    /// Seconds since the epoch counter last moved, as far as this view has seen.
    pub since_commit_s: Option<f64>,
}

/// Per part: its epoch counter, and when this view saw it take that value (`None` for the
/// value of the first scrape).
pub type Moved = BTreeMap<String, (f64, Option<Instant>)>;

/// Builds the view of `cur`, with rates against `prev`; `moved` says, per part, when its epoch
/// counter was last seen to change (kept across calls).
pub fn view(prev: Option<&Scrape>, cur: &Scrape, moved: &mut Moved) -> View {
    let label = |name: &str, key: &str| {
        cur.samples
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.labels.get(key).cloned())
            .unwrap_or_default()
    };
    let rate = |name: &str, node: &str| -> Option<f64> {
        let p = prev?;
        let dt = cur.at.duration_since(p.at).as_secs_f64();
        let (a, b) = (p.sum(name, "node", node)?, cur.sum(name, "node", node)?);
        (dt > 0.0).then(|| ((b - a) / dt).max(0.0))
    };
    let mut names = cur.label_values("engine_records_received_total", "node");
    for n in cur.label_values("engine_records_sent_total", "node") {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let nodes = names
        .into_iter()
        .map(|node| NodeLine {
            in_per_s: rate("engine_records_received_total", &node),
            out_per_s: rate("engine_records_sent_total", &node),
            mailbox: cur.sum("engine_mailbox_depth", "node", &node),
            backpressure: rate("engine_backpressure_seconds_total", &node).map(|r| r.min(1.0)),
            state_entries: cur.sum("engine_state_entries", "node", &node),
            watermark: cur.sum("engine_watermark_seconds", "node", &node),
            node,
        })
        .collect();
    let mut partitions = Vec::new();
    for s in cur
        .samples
        .iter()
        .filter(|s| s.name == "engine_kafka_committed_offset")
    {
        let (topic, partition) = (
            s.labels.get("topic").cloned().unwrap_or_default(),
            s.labels.get("partition").cloned().unwrap_or_default(),
        );
        let lag = cur
            .samples
            .iter()
            .find(|l| {
                l.name == "engine_kafka_consumer_lag"
                    && l.labels.get("topic") == Some(&topic)
                    && l.labels.get("partition") == Some(&partition)
            })
            .map(|l| l.value);
        partitions.push(PartitionLine {
            topic,
            partition,
            committed: Some(s.value),
            lag,
        });
    }
    partitions.sort_by_key(|p| (p.topic.clone(), p.partition.parse::<i64>().unwrap_or(-1)));
    let commits = cur
        .label_values("engine_epochs_committed_total", "part")
        .into_iter()
        .map(|part| {
            let epochs = cur
                .sum("engine_epochs_committed_total", "part", &part)
                .unwrap_or(0.0);
            // When the counter was first seen at its value: unknown for the value of the first
            // scrape.
            let seen = moved.entry(part.clone()).or_insert((epochs, None));
            if seen.0 != epochs {
                *seen = (epochs, Some(cur.at));
            }
            let since = seen.1.map(|t| cur.at.duration_since(t).as_secs_f64());
            let mean = match (
                cur.sum("engine_epoch_commit_seconds_sum", "part", &part),
                cur.sum("engine_epoch_commit_seconds_count", "part", &part),
            ) {
                (Some(s), Some(n)) if n > 0.0 => Some(s / n),
                _ => None,
            };
            CommitLine {
                last_epoch: cur.sum("engine_last_committed_epoch", "part", &part),
                mean_commit_s: mean,
                since_commit_s: since,
                epochs,
                part,
            }
        })
        .collect();
    View {
        pipeline: label("engine_build_info", "pipeline"),
        version: label("engine_build_info", "version"),
        nodes,
        partitions,
        commits,
    }
}

fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000_000.0 => format!("{:.1}M", v / 1e6),
        Some(v) if v >= 100_000.0 => format!("{:.0}k", v / 1e3),
        Some(v) if v.fract() == 0.0 || v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn seconds(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v < 1.0 => format!("{:.0} ms", v * 1000.0),
        Some(v) => format!("{v:.1} s"),
    }
}

fn watermark(v: Option<f64>) -> String {
    v.and_then(|s| chrono::DateTime::from_timestamp_millis((s * 1000.0) as i64))
        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// Draws `view` (and `status`, the last scrape's trouble, if any) on `frame`.
fn draw(frame: &mut ratatui::Frame, view: &View, address: &str, status: &str) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let [head, nodes, parts, commits, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(view.nodes.len() as u16 + 3),
        Constraint::Length(view.partitions.len().max(1) as u16 + 3),
        Constraint::Length(view.commits.len().max(1) as u16 + 3),
        Constraint::Min(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(format!(
            "engine top: pipeline {} (engine {}) at {address}",
            view.pipeline, view.version
        ))
        .style(bold),
        head,
    );
    use Constraint::{Length, Min};
    let rows = view.nodes.iter().map(|n| {
        vec![
            n.node.clone(),
            number(n.in_per_s),
            number(n.out_per_s),
            number(n.mailbox),
            percent(n.backpressure),
            number(n.state_entries),
            watermark(n.watermark),
        ]
    });
    let columns = [
        ("node", Min(16)),
        ("in rows/s", Length(10)),
        ("out rows/s", Length(10)),
        ("mailbox", Length(8)),
        ("blocked", Length(9)),
        ("state", Length(9)),
        ("watermark", Length(19)),
    ];
    frame.render_widget(table(" nodes ", &columns, rows), nodes);
    let rows = view.partitions.iter().map(|p| {
        vec![
            p.topic.clone(),
            p.partition.clone(),
            number(p.committed),
            number(p.lag),
        ]
    });
    let columns = [
        ("topic", Min(16)),
        ("partition", Length(9)),
        ("committed offset", Length(16)),
        ("lag", Length(10)),
    ];
    frame.render_widget(table(" kafka partitions ", &columns, rows), parts);
    let rows = view.commits.iter().map(|c| {
        vec![
            c.part.clone(),
            number(Some(c.epochs)),
            number(c.last_epoch),
            seconds(c.mean_commit_s),
            seconds(c.since_commit_s),
        ]
    });
    let columns = [
        ("part", Min(12)),
        ("epochs", Length(8)),
        ("last epoch", Length(11)),
        ("mean commit", Length(12)),
        ("last commit", Length(12)),
    ];
    frame.render_widget(table(" commits ", &columns, rows), commits);
    frame.render_widget(Paragraph::new(status.to_string()), foot);
}

/// A bordered table titled `title`, with a bold header: `columns` gives each column's header
/// and width.
fn table<'a>(
    title: &'a str,
    columns: &[(&'a str, Constraint)],
    rows: impl Iterator<Item = Vec<String>>,
) -> Table<'a> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    Table::new(rows.map(Row::new), columns.iter().map(|(_, w)| *w))
        .header(Row::new(columns.iter().map(|(h, _)| *h)).style(bold))
        .block(Block::bordered().title(title))
}

/// `GET http://address/metrics`.
async fn fetch(address: &str) -> Result<String> {
    let unreachable = |e: &dyn std::fmt::Display| {
        EngineError::runtime(format!(
            "cannot read metrics at http://{address}/metrics ({e}); is an engine running with --metrics-address {address}?"
        ))
    };
    let stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|e| unreachable(&e))?
    .map_err(|e| unreachable(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics")
        .header(hyper::header::HOST, address)
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let answer = async {
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .map_err(|e| unreachable(&e))?
        .map_err(|e| unreachable(&e))?;
    if !status.is_success() {
        return Err(unreachable(&format!("HTTP {status}")));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn scrape(address: &str) -> Result<Scrape> {
    let text = fetch(address).await?;
    Ok(Scrape {
        at: Instant::now(),
        samples: parse(&text),
    })
}

/// Runs `engine top`.
pub async fn run(address: &str, interval: Duration, once: bool) -> Result<()> {
    let first = scrape(address).await?;
    if once || !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        tokio::time::sleep(interval).await;
        let second = scrape(address).await?;
        let mut moved = Moved::new();
        view(None, &first, &mut moved);
        let v = view(Some(&first), &second, &mut moved);
        print!("{}", render_text(&v, address));
        return Ok(());
    }
    let mut terminal = ratatui::try_init()
        .map_err(|e| EngineError::runtime(format!("cannot draw on this terminal: {e}")))?;
    let shown = watch(&mut terminal, address, interval, first).await;
    ratatui::restore();
    shown
}

async fn watch(
    terminal: &mut ratatui::DefaultTerminal,
    address: &str,
    interval: Duration,
    first: Scrape,
) -> Result<()> {
    let draw_error = |e: std::io::Error| EngineError::runtime(format!("drawing: {e}"));
    let mut moved = BTreeMap::new();
    let mut prev: Option<Scrape> = None;
    let mut cur = first;
    let mut status = String::from("q quits");
    loop {
        let v = view(prev.as_ref(), &cur, &mut moved);
        terminal
            .draw(|f| draw(f, &v, address, &status))
            .map_err(draw_error)?;
        let deadline = Instant::now() + interval;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if event::poll(left).map_err(draw_error)?
                && let Event::Key(k) = event::read().map_err(draw_error)?
                && k.kind == KeyEventKind::Press
                && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                    || (k.code == KeyCode::Char('c')
                        && k.modifiers.contains(KeyModifiers::CONTROL)))
            {
                return Ok(());
            }
        }
        match scrape(address).await {
            Ok(s) => {
                prev = Some(std::mem::replace(&mut cur, s));
                status = "q quits".into();
            }
            Err(e) => status = format!("{e}; retrying"),
        }
    }
}

/// The view as plain text, the way the terminal shows it (100 columns).
pub fn render_text(v: &View, address: &str) -> String {
    let height = (v.nodes.len() + v.partitions.len().max(1) + v.commits.len().max(1) + 11) as u16;
    let backend = ratatui::backend::TestBackend::new(100, height);
    let Ok(mut terminal) = ratatui::Terminal::new(backend);
    let Ok(_) = terminal.draw(|f| draw(f, v, address, ""));
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end().to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# TYPE engine_records_received_total counter
engine_records_received_total{pipeline=\"orders\",node=\"source\"} 100
engine_records_received_total{pipeline=\"orders\",node=\"parse\"} 90
engine_records_sent_total{pipeline=\"orders\",node=\"parse\",port=\"main\"} 80
engine_records_sent_total{pipeline=\"orders\",node=\"parse\",port=\"quarantine\"} 10
engine_backpressure_seconds_total{pipeline=\"orders\",node=\"source\"} 0.5
engine_kafka_committed_offset{pipeline=\"orders\",topic=\"t\",partition=\"10\"} 7
engine_kafka_committed_offset{pipeline=\"orders\",topic=\"t\",partition=\"2\"} 5
engine_kafka_consumer_lag{pipeline=\"orders\",topic=\"t\",partition=\"2\"} 3
engine_epochs_committed_total{pipeline=\"orders\",part=\"partitions\"} 4
engine_epoch_commit_seconds_sum{pipeline=\"orders\",part=\"partitions\"} 0.2
engine_epoch_commit_seconds_count{pipeline=\"orders\",part=\"partitions\"} 4
engine_build_info{pipeline=\"orders\",version=\"0.1.0\"} 1
odd{pipeline=\"a \\\"quoted\\\", name\"} +Inf
";

    #[test]
    fn the_exposition_parses_with_escaped_labels() {
        let s = parse(TEXT);
        assert_eq!(s.len(), 13);
        assert_eq!(s[0].name, "engine_records_received_total");
        assert_eq!(s[0].labels["node"], "source");
        assert_eq!(s[0].value, 100.0);
        let odd = s.last().unwrap();
        assert_eq!(odd.labels["pipeline"], "a \"quoted\", name");
        assert!(odd.value.is_infinite());
    }

    #[test]
    fn rates_come_from_two_scrapes() {
        let t0 = Instant::now();
        let prev = Scrape {
            at: t0,
            samples: parse(TEXT),
        };
        let later = TEXT
            .replace("\"source\"} 100", "\"source\"} 300")
            .replace("\"main\"} 80", "\"main\"} 160")
            .replace("\"source\"} 0.5", "\"source\"} 1.5")
            .replace(
                "part=\"partitions\"} 4\nengine_epoch_commit_seconds_sum",
                "part=\"partitions\"} 6\nengine_epoch_commit_seconds_sum",
            );
        let cur = Scrape {
            at: t0 + Duration::from_secs(2),
            samples: parse(&later),
        };
        let mut moved = BTreeMap::new();
        let first = view(None, &prev, &mut moved);
        assert_eq!(first.nodes[0].in_per_s, None, "no rate from one scrape");
        let v = view(Some(&prev), &cur, &mut moved);
        assert_eq!(
            (v.pipeline.as_str(), v.version.as_str()),
            ("orders", "0.1.0")
        );
        let node = |n: &str| v.nodes.iter().find(|l| l.node == n).unwrap();
        assert_eq!(node("source").in_per_s, Some(100.0));
        assert_eq!(node("parse").in_per_s, Some(0.0));
        assert_eq!(node("parse").out_per_s, Some(40.0), "over every port");
        assert_eq!(node("source").backpressure, Some(0.5));
        let parts: Vec<_> = v
            .partitions
            .iter()
            .map(|p| (p.partition.as_str(), p.committed, p.lag))
            .collect();
        assert_eq!(
            parts,
            [("2", Some(5.0), Some(3.0)), ("10", Some(7.0), None)]
        );
        assert_eq!(v.commits[0].epochs, 6.0);
        assert_eq!(
            v.commits[0].since_commit_s,
            Some(0.0),
            "moved at this scrape"
        );
        assert!((v.commits[0].mean_commit_s.unwrap() - 0.05).abs() < 1e-9);
        let text = render_text(&v, "127.0.0.1:9464");
        assert!(text.contains("pipeline orders"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.contains("source") && l.contains("100")),
            "{text}"
        );
    }
}
