//! `parquet`: writes a table as Parquet files under an object-store prefix.
//!
//! Files are staged and become visible only when their epoch commits:
//! - on S3, a file is a multipart upload whose parts go up while rows arrive; the upload is
//!   completed after the epoch's manifest is written, and completing it again on restart is safe;
//! - on `file://`, a file is written under `_staging/<owner>/<partition>/` and renamed into the
//!   table on commit (`<owner>` identifies the pipeline by its checkpoint location).
//!
//! A reader listing the table's prefix therefore never sees a half-written or uncommitted file.
//! An append-mode table gets one file per epoch (the trigger interval), source partition and
//! Hive folder (`partition_by`, see [`crate::hive`]), rolled over at `target_file_mb`: a
//! partition's output is staged, committed and cleaned up with that partition alone, which is
//! what lets several processes share a topic. Intent records of uploads live in the partition's
//! staging folder too.

use crate::hive::{PartitionBy, Partitioning};
use crate::store::Location;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use engine_api::{
    BuildContext, Committer, EngineError, Epoch, Input, OutputMode, PartitionId, PendingCommit,
    Result, Sink, SinkConfig, TableFormat, TableInfo, TablePreview,
};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::{Path, PathPart};
use object_store::{
    Attribute, Attributes, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `type = "parquet"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// The table's location: `s3://bucket/prefix` or `file:///path`.
    pub path: String,
    /// `snappy` (the default, as Spark), `zstd` or `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Roll over to a new file past this size within an epoch (default 128, from 1 to 5,120).
    #[serde(default = "default_target_file_mb")]
    pub target_file_mb: usize,
    /// Rows per Parquet row group at most (default 131,072, from 1 to 10,000,000).
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: usize,
    /// `append` (default): new files each epoch, for append-mode input. `complete`: the table is
    /// one object, `<path>/data.parquet`, replaced whole at each epoch that changes it, for a
    /// small complete-mode result such as an aggregate.
    #[serde(default = "append")]
    pub mode: OutputMode,
    /// Append mode: Hive-style folders, from columns (`["level"]`, the columns then live in the
    /// folder names only) or from an event-time column (`{ time = "timestamp", format =
    /// "dt=%Y-%m-%d" }`). See [`crate::hive`].
    #[serde(default)]
    pub partition_by: Option<PartitionBy>,
    /// For `engine report` only: the column a gold table's preview is ordered by, largest first,
    /// or smallest first with ` asc` after it (`"ca_total"`, `"rank asc"`).
    #[serde(default)]
    pub preview_order_by: Option<String>,
    /// For `engine report` only: how many rows a gold table's preview shows (default 5).
    #[serde(default)]
    pub preview_rows: Option<usize>,
    /// Delta tables only: write a log checkpoint every this many commits (default 10, as
    /// Delta's `delta.checkpointInterval`).
    #[serde(default)]
    pub checkpoint_interval: Option<u64>,
    /// Delta tables only: how long files the table no longer references are kept for readers
    /// of older versions before vacuum deletes them (default "7d", as Delta's
    /// `delta.deletedFileRetentionDuration`).
    #[serde(default)]
    pub file_retention: Option<String>,
    /// Delta tables only: how long log entries older than the newest checkpoint are kept (time
    /// travel) before they are deleted (default "30d", as Delta's `delta.logRetentionDuration`).
    #[serde(default)]
    pub log_retention: Option<String>,
    /// Delta tables only: how often maintenance runs (compaction, then vacuum), or "off"
    /// (default "10m").
    #[serde(default)]
    pub maintenance_every: Option<String>,
}

/// The most rows a preview may ask for: it is printed, not stored.
const MAX_PREVIEW_ROWS: usize = 1000;

/// `preview_order_by` as (column, ascending).
fn parse_preview_order(text: &str) -> Result<(String, bool)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let bad = || {
        EngineError::invalid(
            "preview_order_by",
            "write a column name, optionally followed by asc or desc, such as \"ca_total\" or \"rank asc\"",
        )
    };
    match words.as_slice() {
        [col] => Ok((col.to_string(), false)),
        [col, dir] if dir.eq_ignore_ascii_case("asc") => Ok((col.to_string(), true)),
        [col, dir] if dir.eq_ignore_ascii_case("desc") => Ok((col.to_string(), false)),
        _ => Err(bad()),
    }
}

fn append() -> OutputMode {
    OutputMode::Append
}

fn default_compression() -> String {
    "snappy".into()
}
fn default_target_file_mb() -> usize {
    128
}
fn default_row_group_rows() -> usize {
    128 * 1024
}

/// Multipart parts are uploaded once this much is buffered (S3's minimum part is 5 MiB).
const PART_BYTES: usize = 5 * 1024 * 1024;
/// A row group is flushed once its encoded size in memory passes this, bounding memory.
const ROW_GROUP_BYTES: usize = 4 * 1024 * 1024;

impl SinkConfig for ParquetSinkConfig {
    fn build(self, ctx: &BuildContext, input: &Input) -> Result<Box<dyn Sink>> {
        for (key, set) in [
            ("checkpoint_interval", self.checkpoint_interval.is_some()),
            ("file_retention", self.file_retention.is_some()),
            ("log_retention", self.log_retention.is_some()),
            ("maintenance_every", self.maintenance_every.is_some()),
        ] {
            if set {
                return Err(EngineError::invalid(
                    key,
                    "applies to Delta tables only; remove it, or write the table with type = \"delta\"",
                ));
            }
        }
        Ok(Box::new(self.table_sink(
            ctx,
            input,
            TableFormat::Parquet,
        )?))
    }
}

impl ParquetSinkConfig {
    /// The sink that writes the table's files, as plain Parquet or as the data files of a
    /// Delta table (which [`crate::delta`] then commits to the table's log).
    pub(crate) fn table_sink(
        self,
        ctx: &BuildContext,
        input: &Input,
        format: TableFormat,
    ) -> Result<ParquetSink> {
        let compression = match self.compression.as_str() {
            "snappy" => Compression::SNAPPY,
            "zstd" => Compression::ZSTD(ZstdLevel::try_new(1).expect("valid level")),
            "none" | "uncompressed" => Compression::UNCOMPRESSED,
            _ => {
                return Err(EngineError::invalid(
                    "compression",
                    "unknown codec; use snappy, zstd or none",
                ));
            }
        };
        if self.mode == OutputMode::Update {
            return Err(EngineError::config(
                "a table cannot take update mode; use mode = \"append\" or \"complete\", or a console sink",
            ));
        }
        // Delta tables hold the types the protocol has: the input is cast to them.
        let input_schema = match format {
            TableFormat::Parquet => input.schema.clone(),
            TableFormat::Delta => crate::delta::writable_schema(&input.schema),
        };
        engine_api::check_range("target_file_mb", self.target_file_mb, 1, 5 * 1024)?;
        let partitioning = match &self.partition_by {
            Some(_) if self.mode == OutputMode::Complete => {
                return Err(EngineError::invalid(
                    "partition_by",
                    "a complete-mode table is replaced whole at each epoch; partition append-mode tables only",
                ));
            }
            Some(by) => Some(Partitioning::new(by, &input_schema)?),
            None => None,
        };
        let schema = partitioning
            .as_ref()
            .map_or_else(|| input_schema.clone(), |p| p.file_schema().clone());
        engine_api::check_range("row_group_rows", self.row_group_rows, 1, 10_000_000)?;
        let (order_by, ascending) = match &self.preview_order_by {
            Some(text) => {
                let (col, asc) = parse_preview_order(text)?;
                (Some(col), asc)
            }
            None => (None, false),
        };
        if let Some(n) = self.preview_rows {
            engine_api::check_range("preview_rows", n, 1, MAX_PREVIEW_ROWS)?;
        }
        if let Some(col) = &order_by {
            crate::column_index("preview_order_by", col, &input.schema)?;
        }
        let preview = TablePreview {
            order_by,
            ascending,
            rows: self.preview_rows,
        };
        let location = Location::open(&self.path, &ctx.storage)
            .map_err(|e| EngineError::invalid("path", e))?;
        let staging = staging_dir(&ctx.checkpoint);
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.row_group_rows))
            .build();
        let files = Arc::new(ParquetCommitter {
            location: location.clone(),
            staging: staging.clone(),
        });
        Ok(ParquetSink {
            node: ctx.node.clone(),
            written: metrics::counter!("engine_sink_bytes_written_total", "node" => ctx.node.clone()),
            committer: files.clone(),
            files_committer: files,
            format,
            cast_to: (input_schema != input.schema).then_some(input_schema),
            staging,
            location,
            props,
            target_bytes: self.target_file_mb * 1024 * 1024,
            mode: self.mode,
            preview,
            schema,
            partitioning,
            files: BTreeMap::new(),
            staged: Vec::new(),
            epoch: None,
        })
    }
}

pub struct ParquetSink {
    pub(crate) node: String,
    /// `engine_sink_bytes_written_total`: Parquet bytes sent to the store (staged files
    /// included; a file staged again after a restart counts twice).
    written: metrics::Counter,
    /// This pipeline's staging folder in the table, `_staging/<owner>`.
    staging: String,
    pub(crate) location: Location,
    /// What makes the staged output visible (for Delta, the log commit after `files_committer`).
    pub(crate) committer: Arc<dyn Committer>,
    /// Completes the staged files (and cleans up what never committed).
    pub(crate) files_committer: Arc<ParquetCommitter>,
    format: TableFormat,
    /// The schema rows are cast to before they are written, when it is not the input's.
    cast_to: Option<SchemaRef>,
    pub(crate) props: WriterProperties,
    pub(crate) target_bytes: usize,
    pub(crate) mode: OutputMode,
    preview: TablePreview,
    /// The schema of every file written.
    pub(crate) schema: SchemaRef,
    /// The Hive-style folders rows go to, if any.
    pub(crate) partitioning: Option<Partitioning>,
    /// The files being written, by source partition and folder (complete mode: one, under
    /// `None` and no folder).
    files: BTreeMap<FileKey, OpenFile>,
    staged: Vec<(Option<PartitionId>, Staged)>,
    /// The epoch being staged (complete mode records it with the table).
    epoch: Option<Epoch>,
}

/// Which file a row goes to: its source partition's, in its table folder (`""` for the table's
/// top, else `dt=2026-01-01/...`).
type FileKey = (Option<PartitionId>, String);

/// The writer settings of a file whose first rows are `first`: `base`, with dictionary encoding
/// turned off for the top-level columns whose values are mostly distinct in those rows (offsets,
/// ids, times, amounts). The writer would otherwise hash every such value into a dictionary
/// that saves nothing, only to fall back to plain encoding once it outgrows its page. Columns
/// whose values repeat (statuses, product names, customer ids) keep their dictionaries, and
/// files started with few rows keep the defaults.
fn file_props(base: &WriterProperties, first: &RecordBatch) -> WriterProperties {
    /// Fewer first rows than this say too little about a column.
    const MIN_SAMPLE: usize = 512;
    /// How many of the first rows are looked at.
    const SAMPLE: usize = 4096;
    if first.num_rows() < MIN_SAMPLE {
        return base.clone();
    }
    let sample = first.slice(0, first.num_rows().min(SAMPLE));
    let mut props = base.clone().into_builder();
    for (field, column) in sample.schema().fields().iter().zip(sample.columns()) {
        // Distinct in more than a quarter of the rows: a dictionary would hardly shrink them.
        if distinct_values(column.as_ref()).is_some_and(|d| d * 4 > sample.num_rows()) {
            props = props.set_column_dictionary_enabled(
                parquet::schema::types::ColumnPath::from(field.name().as_str()),
                false,
            );
        }
    }
    props.build()
}

/// How many distinct non-null values a column of plain values (numbers, times, strings, bytes)
/// holds; `None` for other types (lists, structs, booleans).
fn distinct_values(column: &dyn arrow::array::Array) -> Option<usize> {
    use arrow::array::AsArray;
    use std::collections::HashSet;
    let valid = |i: usize| column.is_valid(i);
    let n = column.len();
    let count = |values: &mut dyn Iterator<Item = &[u8]>| values.collect::<HashSet<_>>().len();
    Some(if let Some(s) = column.as_string_opt::<i32>() {
        count(&mut (0..n).filter(|i| valid(*i)).map(|i| s.value(i).as_bytes()))
    } else if let Some(b) = column.as_binary_opt::<i32>() {
        count(&mut (0..n).filter(|i| valid(*i)).map(|i| b.value(i)))
    } else {
        let width = column.data_type().primitive_width()?;
        let data = column.to_data();
        let values = &data.buffers().first()?.as_slice()[data.offset() * width..];
        count(
            &mut (0..n)
                .filter(|i| valid(*i))
                .map(|i| &values[i * width..(i + 1) * width]),
        )
    })
}

/// A file being written.
struct OpenFile {
    /// Where this file's staging objects go: `<staging>/<partition>`.
    staging: String,
    writer: ArrowWriter<Vec<u8>>,
    path: Path,
    rows: usize,
    upload: Upload,
}

enum Upload {
    /// S3: a multipart upload and the parts sent so far.
    Multipart { id: String, parts: Vec<PartId> },
    /// Local: the whole file is written at staging time.
    Local,
}

/// How a staged file is made visible; stored in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Staged {
    Multipart {
        path: String,
        upload_id: String,
        parts: Vec<String>,
        rows: usize,
        /// The upload's intent record, removed once it completed. Absent in manifests written
        /// before files were staged per partition: it was then `<staging>/uploads/<file>.json`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        intent: Option<String>,
    },
    Rename {
        from: String,
        to: String,
        rows: usize,
    },
    /// Complete mode: copy the staged object over the table's single object.
    Replace {
        from: String,
        to: String,
        rows: usize,
        /// The epoch whose result it is. On S3 the table's object records the epoch it holds,
        /// and is replaced only by a newer one, with `If-Match` on what was read: a stale
        /// writer (a finalizer that lost its role while paused) never overwrites a newer result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<Epoch>,
    },
}

impl ParquetSink {
    /// Whether the table is one object replaced whole (a plain Parquet table in complete mode);
    /// a Delta table replaces its files through its log instead.
    fn one_object(&self) -> bool {
        self.mode == OutputMode::Complete && self.format == TableFormat::Parquet
    }

    fn s3(&self) -> Option<&Arc<object_store::aws::AmazonS3>> {
        self.location.s3.as_ref()
    }

    /// Starts a file for `partition`'s rows in `folder`.
    async fn open_file(
        &mut self,
        partition: Option<&PartitionId>,
        folder: &str,
        first: &RecordBatch,
    ) -> Result<OpenFile> {
        let staging = partition_staging(&self.staging, partition);
        let name = file_name(now_ms(), &uuid::Uuid::new_v4().simple().to_string());
        let mut path = self.location.prefix.clone();
        // Folder names are escaped already: taken as they are, not encoded again.
        for part in folder
            .split('/')
            .filter(|p| !p.is_empty())
            .chain([name.as_str()])
        {
            let part = PathPart::parse(part).map_err(|e| {
                EngineError::runtime(format!(
                    "a partition folder is not a valid object name: {e}"
                ))
            })?;
            path = path.join(part);
        }
        let upload = match self.s3() {
            Some(s3) if !self.one_object() => {
                // Record the object before its upload exists, so that a crash at any point
                // leaves nothing recovery does not know about: `ParquetCommitter::recover`
                // aborts the uploads of that object (its key is new for each file).
                let intent = serde_json::json!({ "path": path.to_string() });
                self.location
                    .store
                    .put(
                        &intent_path(&self.location, &staging, &path),
                        PutPayload::from(intent.to_string()),
                    )
                    .await
                    .map_err(|e| self.location.explain(e))?;
                let id = s3
                    .create_multipart(&path)
                    .await
                    .map_err(|e| self.location.explain(e))?;
                engine_api::failpoint::hit("after_upload_created");
                Upload::Multipart {
                    id,
                    parts: Vec::new(),
                }
            }
            _ => Upload::Local,
        };
        let props = file_props(&self.props, first);
        let writer = ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(props))
            .map_err(|e| EngineError::runtime(format!("parquet writer: {e}")))?;
        Ok(OpenFile {
            staging,
            writer,
            path,
            rows: 0,
            upload,
        })
    }

    /// Uploads `file`'s buffered bytes as a part when there are enough of them (or `last`).
    async fn upload_parts(
        location: &Location,
        written: &metrics::Counter,
        file: &mut OpenFile,
        last: bool,
    ) -> Result<()> {
        let Upload::Multipart { id, parts } = &mut file.upload else {
            return Ok(());
        };
        let buffered = file.writer.inner_mut();
        if buffered.len() < PART_BYTES && !(last && (!buffered.is_empty() || parts.is_empty())) {
            return Ok(());
        }
        let data = Bytes::from(std::mem::take(buffered));
        written.increment(data.len() as u64);
        let s3 = location.s3.as_ref().expect("multipart only on S3");
        let part = s3
            .put_part(&file.path, id, parts.len(), PutPayload::from(data))
            .await
            .map_err(|e| location.explain(e))?;
        parts.push(part);
        Ok(())
    }

    /// Writes rows into the file of `key`, opening it first, and rolls it over at the target
    /// size.
    async fn write_to(&mut self, key: FileKey, batch: &RecordBatch) -> Result<()> {
        if !self.files.contains_key(&key) {
            let file = self.open_file(key.0.as_ref(), &key.1, batch).await?;
            self.files.insert(key.clone(), file);
        }
        let file = self.files.get_mut(&key).expect("opened above");
        file.rows += batch.num_rows();
        file.writer
            .write(batch)
            .map_err(|e| EngineError::runtime(format!("parquet writer: {e}")))?;
        if file.writer.in_progress_size() > ROW_GROUP_BYTES {
            file.writer
                .flush()
                .map_err(|e| EngineError::runtime(format!("parquet writer: {e}")))?;
        }
        let size = file.writer.bytes_written() + file.writer.in_progress_size();
        Self::upload_parts(&self.location, &self.written, file, false).await?;
        if size >= self.target_bytes && !self.one_object() {
            self.close_file(&key).await?;
        }
        Ok(())
    }

    /// Finishes the open file of `key`, if any, and records it as staged.
    async fn close_file(&mut self, key: &FileKey) -> Result<()> {
        let partition = &key.0;
        let Some(mut file) = self.files.remove(key) else {
            return Ok(());
        };
        file.writer
            .finish()
            .map_err(|e| EngineError::runtime(format!("parquet writer: {e}")))?;
        Self::upload_parts(&self.location, &self.written, &mut file, true).await?;
        let OpenFile {
            staging,
            mut writer,
            path,
            rows,
            upload,
        } = file;
        let staged = match upload {
            Upload::Multipart { id, parts } => Staged::Multipart {
                intent: Some(intent_path(&self.location, &staging, &path).to_string()),
                path: path.to_string(),
                upload_id: id,
                parts: parts.into_iter().map(|p| p.content_id).collect(),
                rows,
            },
            Upload::Local => {
                // The whole file goes to `_staging/`, to be renamed (append) or copied over the
                // table's single object (complete) on commit.
                let staged = staging_path(&self.location, &staging, &path);
                let data = Bytes::from(std::mem::take(writer.inner_mut()));
                self.written.increment(data.len() as u64);
                self.location
                    .store
                    .put(&staged, PutPayload::from(data))
                    .await
                    .map_err(|e| self.location.explain(e))?;
                let from = staged.to_string();
                match self.one_object() {
                    true => Staged::Replace {
                        from,
                        to: self.location.child("data.parquet").to_string(),
                        rows,
                        epoch: self.epoch,
                    },
                    false => Staged::Rename {
                        from,
                        to: path.to_string(),
                        rows,
                    },
                }
            }
        };
        self.staged.push((partition.clone(), staged));
        Ok(())
    }
}

/// The staging folder of one source partition's files: `<staging>/<partition>`, or
/// `<staging>/_mixed` for rows derived from several partitions.
fn partition_staging(staging: &str, partition: Option<&PartitionId>) -> String {
    match partition {
        Some(p) => format!("{staging}/{p}"),
        None => format!("{staging}/_mixed"),
    }
}

/// Where a local file for `path` is staged until its epoch commits: `<staging>/<file name>`.
fn staging_path(location: &Location, staging: &str, path: &Path) -> Path {
    let name = path.filename().unwrap_or("part.parquet");
    location.child(&format!("{staging}/{name}"))
}

/// Where the intent record of a multipart upload for `path` lives (hidden from readers).
fn intent_path(location: &Location, staging: &str, path: &Path) -> Path {
    location.child(&format!(
        "{staging}/uploads/{}.json",
        path.filename().unwrap_or("part")
    ))
}

/// A pipeline's staging folder in a table: `_staging/<owner>`, the owner being
/// [`owner_id`]. Recovery cleans only its own folder, so two pipelines writing one table (a
/// mistake, but a possible one) cannot abort each other's uploads.
fn staging_dir(checkpoint: &str) -> String {
    format!("_staging/{}", owner_id(checkpoint))
}

/// A stable hash (FNV-1a, 16 hex digits) of a pipeline's checkpoint location, which identifies
/// the pipeline's run in a table it writes.
pub(crate) fn owner_id(checkpoint: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in checkpoint.trim_end_matches('/').bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// A data file's name: `part-<ms, zero-padded so names sort by time>-<12 hex digits of id>`.
pub(crate) fn file_name(ms: u128, id: &str) -> String {
    let id: String = id.chars().take(12).collect();
    format!("part-{ms:015}-{id}.parquet")
}

/// What the manifest holds for a staged file of `partition`'s rows.
fn pending(node: &str, partition: Option<PartitionId>, staged: &Staged) -> PendingCommit {
    PendingCommit::of(
        node,
        partition,
        serde_json::to_value(staged).expect("serialisable"),
    )
}

/// A path as the manifest stores it (its `Display`), back as the same object name: parsed, not
/// encoded again (a partition folder such as `k=a%2Fb` keeps its `%`).
fn stored_path(text: impl AsRef<str>) -> Path {
    let text = text.as_ref();
    Path::parse(text).unwrap_or_else(|_| Path::from(text))
}

/// The object a committed file of an append-style table is, and its row count (not a plain
/// complete table's single object, which is replaced rather than added).
pub(crate) fn committed_file(p: &PendingCommit) -> Result<(Path, usize)> {
    match staged_of(p)? {
        Staged::Multipart { path, rows, .. } => Ok((stored_path(path), rows)),
        Staged::Rename { to, rows, .. } => Ok((stored_path(to), rows)),
        Staged::Replace { .. } => Err(EngineError::runtime(
            "a complete table's single object cannot be added to a table log",
        )),
    }
}

/// The staged file a manifest's pending commit describes.
fn staged_of(p: &PendingCommit) -> Result<Staged> {
    serde_json::from_value(p.data.clone())
        .map_err(|e| EngineError::runtime(format!("bad pending commit in manifest: {e}")))
}

#[async_trait::async_trait]
impl Sink for ParquetSink {
    async fn open(&mut self) -> Result<()> {
        self.check().await
    }

    async fn check(&mut self) -> Result<()> {
        self.location.check().await
    }

    async fn write(&mut self, batch: RecordBatch, partition: Option<&PartitionId>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = match &self.cast_to {
            Some(schema) => crate::delta::cast_batch(&batch, schema)?,
            None => batch,
        };
        // A complete-mode table is one object, whatever partitions its rows came from.
        let source = match self.mode {
            OutputMode::Complete => None,
            _ => partition.cloned(),
        };
        match &self.partitioning {
            None => self.write_to((source, String::new()), &batch).await,
            Some(p) => {
                for (folder, part) in p.split(&batch)? {
                    self.write_to((source.clone(), folder), &part).await?;
                }
                Ok(())
            }
        }
    }

    async fn prepare_commit(&mut self, epoch: Epoch) -> Result<Vec<PendingCommit>> {
        self.epoch = Some(epoch);
        let open: Vec<FileKey> = self.files.keys().cloned().collect();
        for p in &open {
            self.close_file(p).await?;
        }
        let staged = std::mem::take(&mut self.staged);
        Ok(staged
            .into_iter()
            .map(|(p, s)| pending(&self.node, p, &s))
            .collect())
    }

    fn committer(&self) -> Arc<dyn Committer> {
        self.committer.clone()
    }

    fn describe(&self) -> String {
        match (self.format, self.mode) {
            (TableFormat::Delta, OutputMode::Complete) => format!(
                "delta table {}, replaced whole each epoch (one commit)",
                self.location.url
            ),
            (TableFormat::Delta, _) => format!("delta table {}", self.location.url),
            (_, OutputMode::Complete) => format!(
                "parquet table {}/data.parquet, replaced whole each epoch",
                self.location.url
            ),
            _ => format!("parquet files at {}", self.location.url),
        }
    }

    fn accepts(&self) -> Vec<OutputMode> {
        vec![self.mode]
    }

    fn table(&self) -> Option<TableInfo> {
        Some(TableInfo {
            url: self.location.url.clone(),
            format: self.format,
            mode: self.mode,
            preview: self.preview.clone(),
        })
    }
}

pub struct ParquetCommitter {
    location: Location,
    /// This pipeline's staging folder, `_staging/<owner>`.
    staging: String,
}

/// The user metadata key under which a complete table's object records its epoch.
const EPOCH_KEY: &str = "engine-epoch";

impl ParquetCommitter {
    /// Puts the staged `from` at `to` unless `to` already holds epoch `epoch` or a newer one:
    /// read `to`'s epoch and ETag, then write with `If-Match` on that ETag (or if-absent), and
    /// read again when another writer came in between.
    async fn replace_if_newer(&self, from: &Path, to: &Path, epoch: Epoch) -> Result<()> {
        let store = &self.location.store;
        for _ in 0..5 {
            let head = object_store::GetOptions {
                head: true,
                ..Default::default()
            };
            let current = match store.get_opts(to, head).await {
                Ok(r) => {
                    let held = r
                        .attributes
                        .get(&Attribute::Metadata(EPOCH_KEY.into()))
                        .and_then(|v| v.as_ref().parse::<Epoch>().ok());
                    Some((held, r.meta.e_tag))
                }
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(self.location.explain(e).context(format!("reading {to}"))),
            };
            if let Some((Some(held), _)) = &current
                && *held >= epoch
            {
                // This result, or a newer one, is already there.
                let _ = store.delete(from).await;
                return Ok(());
            }
            let bytes = match store.get(from).await {
                Ok(r) => r.bytes().await.map_err(|e| self.location.explain(e))?,
                // Replaced before a restart: the staged object is gone.
                Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(self.location.explain(e).context(format!("reading {from}"))),
            };
            let mode = match current {
                Some((_, e_tag)) => PutMode::Update(UpdateVersion {
                    e_tag,
                    version: None,
                }),
                None => PutMode::Create,
            };
            let opts = PutOptions {
                mode,
                attributes: Attributes::from_iter([(
                    Attribute::Metadata(EPOCH_KEY.into()),
                    epoch.to_string(),
                )]),
                ..Default::default()
            };
            match store.put_opts(to, PutPayload::from(bytes), opts).await {
                Ok(_) => {
                    let _ = store.delete(from).await;
                    return Ok(());
                }
                Err(object_store::Error::Precondition { .. })
                | Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(self.location.explain(e).context(format!("replacing {to}"))),
            }
        }
        Err(EngineError::runtime(format!(
            "replacing {to}: another writer replaced it 5 times in a row"
        )))
    }

    async fn list(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        futures::TryStreamExt::try_collect(self.location.store.list(Some(prefix)))
            .await
            .map_err(|e| self.location.explain(e))
    }
}

#[async_trait::async_trait]
impl Committer for ParquetCommitter {
    async fn recover(
        &self,
        partition: Option<&PartitionId>,
        committed: &[PendingCommit],
    ) -> Result<usize> {
        // What the last committed manifest references must stay; everything else in the
        // partition's staging folder was staged by an epoch that never committed.
        let mut keep = std::collections::HashSet::new();
        for p in committed {
            if let Ok(st) = staged_of(p) {
                match st {
                    Staged::Multipart {
                        upload_id, path, ..
                    } => {
                        keep.insert(path);
                        keep.insert(upload_id)
                    }
                    Staged::Rename { from, .. } | Staged::Replace { from, .. } => keep.insert(from),
                };
            }
        }
        let mut objects = self
            .list(
                &self
                    .location
                    .child(&partition_staging(&self.staging, partition)),
            )
            .await?;
        if partition.is_none() {
            // What versions that staged every partition together left: files directly in the
            // staging folder, and their upload intents.
            let top = self.location.child(&self.staging);
            let listed = self
                .location
                .store
                .list_with_delimiter(Some(&top))
                .await
                .map_err(|e| self.location.explain(e))?;
            objects.extend(listed.objects);
            objects.extend(self.list(&top.clone().join("uploads")).await?);
        }
        let mut cleaned = 0;
        for o in objects {
            let name = o.location.to_string();
            if name.contains("/uploads/") {
                let bytes = self
                    .location
                    .store
                    .get(&o.location)
                    .await
                    .map_err(|e| self.location.explain(e))?;
                let intent: serde_json::Value = serde_json::from_slice(
                    &bytes.bytes().await.map_err(|e| self.location.explain(e))?,
                )
                .unwrap_or_default();
                let Some(path) = intent["path"].as_str() else {
                    continue;
                };
                let id = intent["upload_id"].as_str();
                if keep.contains(path) || id.is_some_and(|id| keep.contains(id)) {
                    continue;
                }
                match (&self.location.s3, id) {
                    // Intents written before the upload existed name no upload: abort every
                    // one of the object. (An upload completed before a crash is gone already.)
                    (Some(_), None) => {
                        self.location.abort_uploads_of(&stored_path(path)).await?;
                    }
                    // An older engine's intent, written once the upload existed.
                    (Some(s3), Some(id)) => {
                        let _ = s3
                            .abort_multipart(&stored_path(path), &id.to_string())
                            .await;
                    }
                    (None, _) => {}
                }
            } else if keep.contains(&name) {
                continue;
            }
            self.location
                .store
                .delete(&o.location)
                .await
                .map_err(|e| self.location.explain(e))?;
            cleaned += 1;
        }
        Ok(cleaned)
    }

    async fn abort(&self, pending: &[PendingCommit]) {
        for p in pending {
            match staged_of(p) {
                Ok(Staged::Multipart {
                    path,
                    upload_id,
                    intent,
                    ..
                }) => {
                    if let Some(s3) = &self.location.s3 {
                        let _ = s3.abort_multipart(&stored_path(path), &upload_id).await;
                    }
                    if let Some(i) = intent {
                        let _ = self.location.store.delete(&stored_path(i)).await;
                    }
                }
                Ok(Staged::Rename { from, .. } | Staged::Replace { from, .. }) => {
                    let _ = self.location.store.delete(&stored_path(from)).await;
                }
                Err(_) => {}
            }
        }
    }

    async fn commit(&self, pending: &[PendingCommit]) -> Result<()> {
        for p in pending {
            match staged_of(p)? {
                Staged::Multipart {
                    path,
                    upload_id,
                    parts,
                    intent,
                    ..
                } => {
                    let path = stored_path(path);
                    let s3 = self.location.s3.as_ref().ok_or_else(|| {
                        EngineError::runtime(format!(
                            "{} is not S3 but the manifest has a multipart upload",
                            self.location.url
                        ))
                    })?;
                    let parts = parts
                        .into_iter()
                        .map(|content_id| PartId { content_id })
                        .collect();
                    // Completed before a restart: the object is there and the upload is gone.
                    if let Err(e) = s3.complete_multipart(&path, &upload_id, parts).await
                        && self.location.store.head(&path).await.is_err()
                    {
                        return Err(self
                            .location
                            .explain(e)
                            .context(format!("completing {path}")));
                    }
                    let intent = match intent {
                        Some(i) => stored_path(i),
                        None => intent_path(&self.location, &self.staging, &path),
                    };
                    let _ = self.location.store.delete(&intent).await;
                }
                Staged::Replace {
                    from,
                    to,
                    epoch: Some(epoch),
                    ..
                } if self.location.s3.is_some() => {
                    self.replace_if_newer(&stored_path(from), &stored_path(to), epoch)
                        .await?;
                }
                Staged::Replace { from, to, .. } => {
                    let (from, to) = (stored_path(from), stored_path(to));
                    match self.location.store.copy(&from, &to).await {
                        Ok(()) => {
                            let _ = self.location.store.delete(&from).await;
                        }
                        // Replaced before a restart: the staged object is gone.
                        Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => {
                            return Err(self
                                .location
                                .explain(e)
                                .context(format!("replacing {to}")));
                        }
                    }
                }
                Staged::Rename { from, to, .. } => {
                    let (from, to) = (stored_path(from), stored_path(to));
                    if let Err(e) = self.location.store.rename(&from, &to).await
                        && self.location.store.head(&to).await.is_err()
                    {
                        return Err(self.location.explain(e).context(format!("publishing {to}")));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use engine_api::StorageConfig;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn batch(ids: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from_iter(
                    ids.iter().map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
                )),
            ],
        )
        .unwrap()
    }

    /// A fresh folder under the system's temporary one, removed when dropped.
    pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "engine-parquet-{name}-{}-{nanos}",
                std::process::id()
            ));
            TempDir(dir)
        }
        pub(crate) fn url(&self) -> String {
            format!("file://{}", self.0.display())
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn ctx(checkpoint: &str) -> BuildContext {
        BuildContext {
            pipeline: "test".into(),
            node: "table".into(),
            storage: StorageConfig::default(),
            trigger: std::time::Duration::from_secs(10),
            checkpoint: checkpoint.into(),
        }
    }

    fn sink(config: serde_json::Value, checkpoint: &str) -> Result<Box<dyn Sink>> {
        let cfg: ParquetSinkConfig = serde_json::from_value(config).unwrap();
        cfg.build(&ctx(checkpoint), &Input::new(schema()))
    }

    /// The `.parquet` files a reader of the table sees (outside `_` and `.` folders), by path
    /// relative to the table.
    fn visible(dir: &std::path::Path) -> Vec<String> {
        fn walk(root: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(d) else {
                return;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let p = e.path();
                if p.is_dir() {
                    if !name.starts_with('_') && !name.starts_with('.') {
                        walk(root, &p, out);
                    }
                } else if name.ends_with(".parquet") {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dir, dir, &mut out);
        out.sort();
        out
    }

    fn ids_in(file: &std::path::Path) -> Vec<i64> {
        let bytes = Bytes::from(std::fs::read(file).unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let mut ids = Vec::new();
        for b in reader {
            let b = b.unwrap();
            assert_eq!(b.schema(), schema());
            ids.extend(
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .iter(),
            );
        }
        ids
    }

    #[test]
    fn dictionaries_only_for_columns_whose_values_repeat() {
        let ids: Vec<i64> = (0..2000).collect();
        let b = batch(&ids); // `id` unique, `name` unique too (n1, n2, ...)
        let repeated = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 7))),
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("s{}", i % 40)),
                )),
            ],
        )
        .unwrap();
        let base = WriterProperties::builder().build();
        let on = |props: &WriterProperties, col: &str| {
            props.dictionary_enabled(&parquet::schema::types::ColumnPath::from(col))
        };
        let unique = file_props(&base, &b);
        assert!(!on(&unique, "id") && !on(&unique, "name"));
        let few = file_props(&base, &repeated);
        assert!(on(&few, "id") && on(&few, "name"));
        let small = file_props(&base, &b.slice(0, 100));
        assert!(
            on(&small, "id") && on(&small, "name"),
            "too few rows to judge"
        );
        assert_eq!(
            distinct_values(b.column(1).as_ref()),
            Some(1333),
            "nulls are not values"
        );
        // Written and read back alike either way.
        for props in [unique, few] {
            let mut w = ArrowWriter::try_new(Vec::new(), schema(), Some(props)).unwrap();
            w.write(&b).unwrap();
            let bytes = Bytes::from(w.into_inner().unwrap());
            let read: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap()
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            assert_eq!(arrow::compute::concat_batches(&schema(), &read).unwrap(), b);
        }
    }

    #[test]
    fn file_names_sort_by_time_and_carry_twelve_digits_of_the_id() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            file_name(1_767_225_600_000, id),
            "part-001767225600000-0123456789ab.parquet"
        );
        let (a, b) = (file_name(999, id), file_name(1_000, id));
        assert!(a < b, "{a} sorts before {b}");
    }

    #[test]
    fn staging_is_per_checkpoint_location_and_hidden_from_readers() {
        let a = staging_dir("s3://checkpoints/orders");
        assert_eq!(
            a,
            staging_dir("s3://checkpoints/orders/"),
            "a trailing slash is the same"
        );
        assert_ne!(a, staging_dir("s3://checkpoints/logs"));
        let hash = a.strip_prefix("_staging/").expect("under _staging/");
        assert_eq!(hash.len(), 16);
        assert!(hash.bytes().all(|c| c.is_ascii_hexdigit()));
        // Stable across versions: recovery finds what an earlier run staged.
        assert_eq!(staging_dir(""), "_staging/cbf29ce484222325");

        let loc = Location::open("s3://gold/tables/t", &StorageConfig::default()).unwrap();
        let file = loc.child("part-1.parquet");
        assert_eq!(
            staging_path(&loc, &a, &file).as_ref(),
            format!("tables/t/{a}/part-1.parquet")
        );
        assert_eq!(
            intent_path(&loc, &a, &file).as_ref(),
            format!("tables/t/{a}/uploads/part-1.parquet.json")
        );
    }

    #[test]
    fn pending_commits_round_trip_through_the_manifest() {
        let all = [
            Staged::Multipart {
                path: "t/part-1.parquet".into(),
                upload_id: "up-1".into(),
                parts: vec!["e1".into(), "e2".into()],
                rows: 3,
                intent: Some("t/_staging/x/orders/0/uploads/part-1.parquet.json".into()),
            },
            Staged::Rename {
                from: "t/_staging/x/part-2.parquet".into(),
                to: "t/part-2.parquet".into(),
                rows: 4,
            },
            Staged::Replace {
                from: "t/_staging/x/part-3.parquet".into(),
                to: "t/data.parquet".into(),
                rows: 5,
                epoch: Some(9),
            },
        ];
        let orders0 = PartitionId::kafka("orders", 0);
        for (s, partition) in all.into_iter().zip([Some(orders0), None, None]) {
            let p = pending("table", partition.clone(), &s);
            assert_eq!(p.node, "table");
            assert_eq!(p.partition, partition);
            // Through the manifest's JSON and back.
            let text = serde_json::to_string(&p).unwrap();
            let back: PendingCommit = serde_json::from_str(&text).unwrap();
            assert_eq!(back, p);
            assert_eq!(staged_of(&back).unwrap(), s);
        }
        // A manifest written by an earlier version reads the same.
        let old: PendingCommit = serde_json::from_value(serde_json::json!({
            "node": "bronze",
            "data": { "kind": "rename", "from": "a", "to": "b", "rows": 2 },
        }))
        .unwrap();
        assert_eq!(
            staged_of(&old).unwrap(),
            Staged::Rename {
                from: "a".into(),
                to: "b".into(),
                rows: 2
            }
        );
        let bad = PendingCommit::new("bronze", serde_json::json!({ "kind": "teleport" }));
        assert!(matches!(staged_of(&bad), Err(e) if e.kind() == engine_api::ErrorKind::Runtime));
    }

    #[tokio::test]
    async fn files_stay_staged_until_commit_and_recovery_removes_the_uncommitted() {
        let dir = TempDir::new("append");
        let mut s = sink(
            serde_json::json!({ "path": dir.url() }),
            "file:///tmp/checkpoints/append",
        )
        .unwrap();
        assert!(s.table().is_some());
        let (p0, p1) = (PartitionId::kafka("t", 0), PartitionId::kafka("t", 1));
        s.write(batch(&[1, 2]), Some(&p0)).await.unwrap();
        s.write(batch(&[]), Some(&p1)).await.unwrap();
        s.write(batch(&[3]), Some(&p0)).await.unwrap();
        s.write(batch(&[4]), Some(&p1)).await.unwrap();
        let mut epoch1 = s.prepare_commit(1).await.unwrap();
        epoch1.sort_by(|a, b| a.partition.cmp(&b.partition));
        assert_eq!(epoch1.len(), 2, "one file per epoch and source partition");
        let mut tos = Vec::new();
        for (pending, (p, expect_rows)) in epoch1.iter().zip([(&p0, 3), (&p1, 1)]) {
            assert_eq!(pending.partition.as_ref(), Some(p));
            let Staged::Rename { from, to, rows } = staged_of(pending).unwrap() else {
                panic!("a local table stages files for a rename");
            };
            assert_eq!(rows, expect_rows);
            let folder = format!(
                "/_staging/{}/{p}/",
                staging_dir("file:///tmp/checkpoints/append").trim_start_matches("_staging/")
            );
            assert!(from.contains(&folder), "{from} is in {folder}");
            tos.push(format!("/{to}"));
        }
        assert!(
            visible(&dir.0).is_empty(),
            "nothing visible before the commit"
        );
        let committer = s.committer();
        committer.commit(&epoch1).await.unwrap();
        let files = visible(&dir.0);
        assert_eq!(files.len(), 2);
        let mut paths: Vec<String> = files
            .iter()
            .map(|f| dir.0.join(f).display().to_string())
            .collect();
        paths.sort();
        tos.sort();
        assert_eq!(paths, tos);
        let mut ids: Vec<i64> = files.iter().flat_map(|f| ids_in(&dir.0.join(f))).collect();
        ids.sort();
        assert_eq!(ids, [1, 2, 3, 4]);
        // Committing again (a restart finishing the last manifest) is harmless.
        committer.commit(&epoch1).await.unwrap();
        assert_eq!(visible(&dir.0), files);

        // Epoch 2 is staged but its manifest is never written: recovery removes its file and
        // keeps what the last manifest (epoch 1) references.
        s.write(batch(&[5, 6]), Some(&p1)).await.unwrap();
        let epoch2 = s.prepare_commit(2).await.unwrap();
        let Staged::Rename { from: staged2, .. } = staged_of(&epoch2[0]).unwrap() else {
            panic!("rename");
        };
        assert!(std::path::Path::new(&format!("/{staged2}")).exists());
        assert_eq!(
            committer.recover(Some(&p0), &[]).await.unwrap(),
            0,
            "partition 0 left nothing staged"
        );
        let p1_committed: Vec<_> = epoch1
            .iter()
            .filter(|p| p.partition.as_ref() == Some(&p1))
            .cloned()
            .collect();
        assert_eq!(
            committer.recover(Some(&p1), &p1_committed).await.unwrap(),
            1
        );
        assert!(!std::path::Path::new(&format!("/{staged2}")).exists());
        assert_eq!(visible(&dir.0), files, "the committed file stays");
        // An epoch with no rows stages nothing.
        assert!(s.prepare_commit(3).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_complete_table_is_one_object_replaced_at_each_commit() {
        let dir = TempDir::new("complete");
        let mut s = sink(
            serde_json::json!({ "path": dir.url(), "mode": "complete" }),
            "file:///tmp/checkpoints/complete",
        )
        .unwrap();
        assert_eq!(s.accepts(), [OutputMode::Complete]);
        let committer = s.committer();
        for (epoch, ids) in [(1, vec![1, 2]), (2, vec![7, 8, 9])] {
            // Rows of two partitions go into the table's one object.
            let (a, b) = ids.split_at(1);
            s.write(batch(a), Some(&PartitionId::kafka("t", 0)))
                .await
                .unwrap();
            s.write(batch(b), Some(&PartitionId::kafka("t", 1)))
                .await
                .unwrap();
            let pending = s.prepare_commit(epoch).await.unwrap();
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].partition, None);
            assert!(matches!(
                staged_of(&pending[0]).unwrap(),
                Staged::Replace { .. }
            ));
            committer.commit(&pending).await.unwrap();
            assert_eq!(visible(&dir.0), ["data.parquet"]);
            assert_eq!(ids_in(&dir.0.join("data.parquet")), ids);
        }
    }

    #[test]
    fn the_preview_column_must_be_in_the_input() {
        let e = sink(
            serde_json::json!({ "path": "file:///tmp/t", "preview_order_by": "total desc" }),
            "file:///tmp/c",
        )
        .err()
        .unwrap();
        assert_eq!(e.key(), Some("preview_order_by"), "{e:?}");
        let message = e.message();
        assert!(message.contains("no column `total`"), "{message}");
        assert!(message.contains("id, name"), "{message}");
        let s = sink(
            serde_json::json!({ "path": "file:///tmp/t", "preview_order_by": "id asc" }),
            "file:///tmp/c",
        )
        .unwrap();
        assert_eq!(s.table().unwrap().preview.order_by.as_deref(), Some("id"));
        assert!(s.table().unwrap().preview.ascending);
    }
}
