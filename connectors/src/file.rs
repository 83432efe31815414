//! `type = "file"`: newline-delimited JSON (or any text, one record per line) from a local
//! folder or an object-store prefix, optionally gzip-compressed, for backfills from exports and
//! archives.
//!
//! Every row carries its coordinates: `file` (the object's URL) and `line` (1-based), beside
//! `value` (the line's bytes, without its line ending), so the same `json_parse` and everything
//! after it work unchanged, and a bad line lands in quarantine with where it came from.
//!
//! Positions are kept per file (bytes and lines consumed, and the size once read to its end)
//! in the source's one partition, `files`, and committed with the output of each epoch as a
//! Kafka offset is: a re-run reads only new files and the lines added to files it has read.
//! Batch mode reads what the listing at start shows; streaming mode lists again every
//! `poll_interval` and reads what is new, as Spark's file source does.

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use engine_api::{
    BuildContext, EngineError, Location, OpenContext, PartitionId, Positions, Result, Source,
    SourceConfig, SourceContext,
};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// The folder or prefix to read: `file:///absolute/path` or `s3://bucket/prefix` (with the
    /// pipeline's `[storage]` settings).
    pub path: String,
    /// Which files under `path` to read, matched against their path below it (`*` also
    /// matches `/`): such as `"*.jsonl"` or `"2026-*/*.json.gz"`. Default: every file. Names
    /// starting with `_` or `.` (such as `_SUCCESS`), and files in such folders, are skipped.
    #[serde(default)]
    pub glob: Option<String>,
    /// `"auto"` (the default): gzip when the name ends in `.gz`; `"gzip"`: every file; `"none"`.
    #[serde(default)]
    pub compression: Compression,
    /// How often streaming mode lists the folder again for new files and lines (default 10s,
    /// from 100ms to 1h).
    #[serde(default = "default_poll")]
    pub poll_interval: String,
    /// Most lines per micro-batch (default 8192, from 1 to 1,000,000).
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
}

fn default_poll() -> String {
    "10s".into()
}
fn default_batch_lines() -> usize {
    8192
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Auto,
    Gzip,
    None,
}

/// The schema of the rows the file source emits.
pub fn file_record_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("value", DataType::Binary, true),
    ]))
}

/// The file source's one partition: files are read one after the other, in name order.
const PARTITION: &str = "files";

impl SourceConfig for FileSourceConfig {
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Source>> {
        Ok(Box::new(self.source(ctx)?))
    }
}

impl FileSourceConfig {
    fn source(self, ctx: &BuildContext) -> Result<FileSource> {
        let location = Location::open(&self.path, &ctx.storage).map_err(|e| e.for_key("path"))?;
        let glob = match &self.glob {
            Some(g) => Some(
                globset::GlobBuilder::new(g)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| {
                        EngineError::invalid("glob", format!("not a glob pattern: {}", e.kind()))
                    })?
                    .compile_matcher(),
            ),
            None => None,
        };
        let poll = engine_api::parse_duration(
            "poll_interval",
            &self.poll_interval,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        )?;
        let batch_lines = engine_api::check_range("batch_lines", self.batch_lines, 1, 1_000_000)?;
        Ok(FileSource {
            base: self.path.trim_end_matches('/').to_string(),
            location,
            glob,
            compression: self.compression,
            poll,
            batch_lines,
            partition: PartitionId::new(PARTITION),
            files: BTreeMap::new(),
            seen_size: BTreeMap::new(),
        })
    }
}

/// How far a file has been read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct FilePosition {
    /// Bytes consumed, up to the end of the last line emitted (of the decompressed text for a
    /// gzip file).
    bytes: u64,
    /// Lines consumed (emitted, or blank).
    lines: u64,
    /// The object's size when it was last read to its end: it is read again only if its size
    /// changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

pub struct FileSource {
    /// `path` without a trailing slash: a row's `file` is this, `/`, and the path below it.
    base: String,
    location: Location,
    glob: Option<globset::GlobMatcher>,
    compression: Compression,
    poll: Duration,
    batch_lines: usize,
    partition: PartitionId,
    /// Per file (its path below `path`): how far it was read.
    files: BTreeMap<String, FilePosition>,
    /// Per file: its size at the previous listing (streaming mode takes an unterminated last
    /// line only once the size has stopped changing).
    seen_size: BTreeMap<String, u64>,
}

/// One listed file.
struct Listed {
    rel: String,
    path: Path,
    size: u64,
}

impl FileSource {
    fn positions(&self) -> Result<Positions> {
        let files = serde_json::to_value(&self.files)
            .map_err(|e| EngineError::runtime(format!("file source: {e}")))?;
        Ok([(
            self.partition.clone(),
            serde_json::json!({ "files": files }),
        )]
        .into())
    }

    /// The files under the prefix that the glob takes, in name order.
    fn list(&self) -> Result<Vec<Listed>> {
        let prefix = self.location.prefix.clone();
        let store = self.location.store.clone();
        let metas: Vec<object_store::ObjectMeta> = block_on(async move {
            let mut out = Vec::new();
            let mut s = store.list(Some(&prefix));
            while let Some(m) = s.next().await {
                out.push(m?);
            }
            Ok::<_, object_store::Error>(out)
        })
        .map_err(|e| self.location.explain(e))?;
        let mut out: Vec<Listed> = metas
            .into_iter()
            .filter_map(|m| {
                let rel = m
                    .location
                    .prefix_match(&self.location.prefix)?
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>();
                if rel.is_empty() || rel.iter().any(|p| p.starts_with('_') || p.starts_with('.')) {
                    return None;
                }
                let rel = rel.join("/");
                if self.glob.as_ref().is_some_and(|g| !g.is_match(&rel)) {
                    return None;
                }
                Some(Listed {
                    rel,
                    path: m.location,
                    size: m.size,
                })
            })
            .collect();
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    fn gzip(&self, rel: &str) -> bool {
        match self.compression {
            Compression::Auto => rel.ends_with(".gz"),
            Compression::Gzip => true,
            Compression::None => false,
        }
    }

    /// Reads what is new in one file, emitting batches and a barrier whenever one is due.
    /// `take_tail`: also take a last line without a line ending.
    fn read_file(
        &mut self,
        f: &Listed,
        take_tail: bool,
        ctx: &mut dyn SourceContext,
    ) -> Result<()> {
        if !self.unread(f) {
            return Ok(());
        }
        let gzip = self.gzip(&f.rel);
        let mut pos = self.files.get(&f.rel).cloned().unwrap_or_default();
        if !gzip && pos.bytes > f.size {
            self.shrunk(f, pos);
            return Ok(());
        }
        // A plain file is read from where it was left; a gzip stream from its start, skipping
        // the decompressed bytes already consumed.
        let start = if gzip { 0 } else { pos.bytes };
        let raw = ObjectReader::open(&self.location, &f.path, start, f.size)?;
        let mut reader: Box<dyn BufRead> = if gzip {
            Box::new(std::io::BufReader::with_capacity(
                1 << 16,
                flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(1 << 16, raw)),
            ))
        } else {
            Box::new(std::io::BufReader::with_capacity(1 << 16, raw))
        };
        let url = format!("{}/{}", self.base, f.rel);
        let io_error =
            |e: std::io::Error| EngineError::runtime(format!("cannot read `{url}`: {e}"));
        if gzip && pos.bytes > 0 {
            let skipped = std::io::copy(&mut reader.by_ref().take(pos.bytes), &mut std::io::sink())
                .map_err(io_error)?;
            if skipped < pos.bytes {
                self.shrunk(f, pos);
                return Ok(());
            }
        }
        let lines_before = pos.lines;
        let mut batch = LineBatch::new(&url);
        let mut line = Vec::with_capacity(1024);
        let mut complete = true;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io_error)?;
            if n == 0 {
                break;
            }
            let terminated = line.last() == Some(&b'\n');
            if !terminated && !take_tail {
                // Still being written: taken once the file stops growing.
                complete = false;
                break;
            }
            let mut text: &[u8] = &line;
            if terminated {
                text = &text[..text.len() - 1];
            }
            if text.last() == Some(&b'\r') {
                text = &text[..text.len() - 1];
            }
            pos.bytes += n as u64;
            pos.lines += 1;
            // Blank lines hold no record (as Spark's JSON reader sees them): counted, not sent.
            if !text.iter().all(u8::is_ascii_whitespace) {
                batch.push(pos.lines as i64, text);
            }
            if batch.len() >= self.batch_lines {
                self.emit(&mut batch, &f.rel, &pos, ctx)?;
                if ctx.stopping() {
                    return Ok(());
                }
            }
        }
        if complete {
            pos.size = Some(f.size);
        }
        self.emit(&mut batch, &f.rel, &pos, ctx)?;
        if pos.lines > lines_before {
            tracing::info!(file = %url, lines = pos.lines - lines_before, to_line = pos.lines, complete, "file read");
        }
        Ok(())
    }

    /// Whether `f` has content the source has not read: it is new, or its size changed since
    /// it was read to its end.
    fn unread(&self, f: &Listed) -> bool {
        self.files.get(&f.rel).and_then(|p| p.size) != Some(f.size)
    }

    /// A file replaced by a shorter one: what was read of it stays read, as Spark does, and its
    /// new content is not read.
    fn shrunk(&mut self, f: &Listed, mut pos: FilePosition) {
        tracing::warn!(file = %f.rel, "a file the source read became shorter; its new content is not read");
        pos.size = Some(f.size);
        self.files.insert(f.rel.clone(), pos);
    }

    /// Sends a batch, records how far the file was read, and injects a barrier if one is due.
    fn emit(
        &mut self,
        batch: &mut LineBatch,
        rel: &str,
        pos: &FilePosition,
        ctx: &mut dyn SourceContext,
    ) -> Result<()> {
        if let Some(b) = batch.finish()? {
            ctx.emit(&self.partition, b)?;
        }
        self.files.insert(rel.to_string(), pos.clone());
        if ctx.checkpoint_due() {
            ctx.barrier(self.positions()?)?;
        }
        Ok(())
    }
}

impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        file_record_schema()
    }

    fn open(&mut self, ctx: &mut dyn OpenContext) -> Result<()> {
        let claimed = ctx.claim(std::slice::from_ref(&self.partition))?;
        if let Some(p) = claimed.positions.get(&self.partition) {
            self.files = serde_json::from_value(p["files"].clone()).map_err(|e| {
                EngineError::runtime(format!(
                    "the checkpoint's file positions cannot be read ({e}); use a new checkpoint location"
                ))
            })?;
        }
        Ok(())
    }

    fn check(&mut self) -> Result<()> {
        let location = self.location.clone();
        block_on(async move { location.check().await })
    }

    fn run(&mut self, ctx: &mut dyn SourceContext) -> Result<()> {
        let batch = ctx.batch_mode();
        loop {
            let listed = self.list()?;
            let new = listed.iter().filter(|f| self.unread(f)).count();
            if new > 0 {
                tracing::info!(path = %self.base, files = listed.len(), to_read = new, "files listed");
            }
            for f in &listed {
                if ctx.stopping() {
                    break;
                }
                // Batch mode takes every line; streaming mode an unterminated last line only
                // once the file's size is the one the previous listing saw.
                let stable = batch || self.seen_size.get(&f.rel) == Some(&f.size);
                self.read_file(f, stable, ctx)?;
            }
            self.seen_size = listed.iter().map(|f| (f.rel.clone(), f.size)).collect();
            if batch || ctx.stopping() {
                break;
            }
            let next = Instant::now() + self.poll;
            while Instant::now() < next && !ctx.stopping() {
                if ctx.checkpoint_due() {
                    ctx.barrier(self.positions()?)?;
                }
                std::thread::sleep(Duration::from_millis(50).min(self.poll));
            }
        }
        ctx.barrier(self.positions()?)?;
        Ok(())
    }
}

/// The lines of one file gathered for one batch.
struct LineBatch {
    file: String,
    lines: Int64Builder,
    values: BinaryBuilder,
}

impl LineBatch {
    fn new(file: &str) -> Self {
        LineBatch {
            file: file.to_string(),
            lines: Int64Builder::new(),
            values: BinaryBuilder::new(),
        }
    }

    fn push(&mut self, line: i64, value: &[u8]) {
        self.lines.append_value(line);
        self.values.append_value(value);
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>> {
        let n = self.len();
        if n == 0 {
            return Ok(None);
        }
        let mut files = StringBuilder::with_capacity(n, n * self.file.len());
        for _ in 0..n {
            files.append_value(&self.file);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(files.finish()),
            Arc::new(self.lines.finish()),
            Arc::new(self.values.finish()),
        ];
        RecordBatch::try_new(file_record_schema(), columns)
            .map(Some)
            .map_err(|e| EngineError::runtime(format!("file source: {e}")))
    }
}

/// Runs a future on the engine's runtime from the source's thread (sources run on blocking
/// threads, where this is allowed).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(f)
}

/// An object's bytes from `start` to `end`, read as a blocking stream of chunks.
struct ObjectReader {
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    url: String,
}

impl ObjectReader {
    fn open(location: &Location, path: &Path, start: u64, end: u64) -> Result<Self> {
        let url = location.url.clone();
        if start >= end {
            return Ok(ObjectReader {
                stream: futures::stream::empty().boxed(),
                chunk: bytes::Bytes::new(),
                url,
            });
        }
        let store: Arc<dyn ObjectStore> = location.store.clone();
        let path = path.clone();
        let opts = GetOptions {
            range: Some(GetRange::Bounded(start..end)),
            ..Default::default()
        };
        let got = block_on(async move { store.get_opts(&path, opts).await })
            .map_err(|e| location.explain(e))?;
        Ok(ObjectReader {
            stream: got.into_stream(),
            chunk: bytes::Bytes::new(),
            url,
        })
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match block_on(self.stream.next()) {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!(
                        "object store error under `{}`: {e}",
                        self.url
                    )));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
