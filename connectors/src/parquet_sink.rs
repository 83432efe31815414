//! `parquet`: writes a table as Parquet files under an object-store prefix.
//!
//! Files are staged and become visible only when their epoch commits:
//! - on S3, a file is a multipart upload whose parts go up while rows arrive; the upload is
//!   completed after the epoch's manifest is written, and completing it again on restart is safe;
//! - on `file://`, a file is written under `_staging/<owner>/` and renamed into the table on
//!   commit (`<owner>` identifies the pipeline by its checkpoint location).
//!
//! A reader listing the table's prefix therefore never sees a half-written or uncommitted file.
//! One file per epoch (the trigger interval), rolled over at `target_file_mb`.

use crate::store::Location;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use engine_api::{
    BuildContext, Committer, EngineError, Epoch, OutputMode, PendingCommit, Result, Sink,
    SinkConfig, TableInfo, TablePreview,
};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
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
    /// For `engine report` only: the column a gold table's preview is ordered by, largest first,
    /// or smallest first with ` asc` after it (`"ca_total"`, `"rank asc"`).
    #[serde(default)]
    pub preview_order_by: Option<String>,
    /// For `engine report` only: how many rows a gold table's preview shows (default 5).
    #[serde(default)]
    pub preview_rows: Option<usize>,
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
const PART_BYTES: usize = 8 * 1024 * 1024;
/// A row group is flushed once its encoded size in memory passes this, bounding memory.
const ROW_GROUP_BYTES: usize = 16 * 1024 * 1024;

impl SinkConfig for ParquetSinkConfig {
    fn build(self, ctx: &BuildContext) -> Result<Box<dyn Sink>> {
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
                "a parquet table cannot take update mode; use mode = \"append\" or \"complete\", or a console sink",
            ));
        }
        engine_api::check_range("target_file_mb", self.target_file_mb, 1, 5 * 1024)?;
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
        Ok(Box::new(ParquetSink {
            node: ctx.node.clone(),
            committer: Arc::new(ParquetCommitter {
                location: location.clone(),
                staging: staging.clone(),
            }),
            staging,
            location,
            props,
            target_bytes: self.target_file_mb * 1024 * 1024,
            mode: self.mode,
            preview,
            schema: None,
            file: None,
            staged: Vec::new(),
        }))
    }
}

pub struct ParquetSink {
    node: String,
    /// This pipeline's staging folder in the table, `_staging/<owner>`.
    staging: String,
    location: Location,
    committer: Arc<ParquetCommitter>,
    props: WriterProperties,
    target_bytes: usize,
    mode: OutputMode,
    preview: TablePreview,
    schema: Option<SchemaRef>,
    file: Option<OpenFile>,
    staged: Vec<Staged>,
}

/// A file being written.
struct OpenFile {
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Staged {
    Multipart {
        path: String,
        upload_id: String,
        parts: Vec<String>,
        rows: usize,
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
    },
}

impl ParquetSink {
    fn s3(&self) -> Option<&Arc<object_store::aws::AmazonS3>> {
        self.location.s3.as_ref()
    }

    async fn open_file(&mut self) -> Result<()> {
        let schema = self.schema.clone().expect("init sets the schema");
        let name = format!(
            "part-{}-{}.parquet",
            chrono_like_now(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let path = self.location.child(&name);
        let upload = match self.s3() {
            Some(s3) if self.mode == OutputMode::Append => {
                let id = s3
                    .create_multipart(&path)
                    .await
                    .map_err(|e| self.location.explain(e))?;
                // Record the upload before sending parts, so a crash cannot leave an upload that
                // recovery does not know about (`ParquetCommitter::recover` aborts it).
                let intent = serde_json::json!({ "path": path.to_string(), "upload_id": id });
                self.location
                    .store
                    .put(
                        &intent_path(&self.location, &self.staging, &path),
                        PutPayload::from(intent.to_string()),
                    )
                    .await
                    .map_err(|e| self.location.explain(e))?;
                Upload::Multipart {
                    id,
                    parts: Vec::new(),
                }
            }
            _ => Upload::Local,
        };
        let writer = ArrowWriter::try_new(Vec::new(), schema, Some(self.props.clone()))
            .map_err(|e| EngineError::runtime(format!("parquet writer: {e}")))?;
        self.file = Some(OpenFile {
            writer,
            path,
            rows: 0,
            upload,
        });
        Ok(())
    }

    /// Uploads buffered bytes as a part when there are enough of them (or `last`).
    async fn upload_parts(&mut self, last: bool) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let Upload::Multipart { id, parts } = &mut file.upload else {
            return Ok(());
        };
        let buffered = file.writer.inner_mut();
        if buffered.len() < PART_BYTES && !(last && (!buffered.is_empty() || parts.is_empty())) {
            return Ok(());
        }
        let data = Bytes::from(std::mem::take(buffered));
        let s3 = self.location.s3.as_ref().expect("multipart only on S3");
        let part = s3
            .put_part(&file.path, id, parts.len(), PutPayload::from(data))
            .await
            .map_err(|e| self.location.explain(e))?;
        parts.push(part);
        Ok(())
    }

    /// Finishes the open file and records it as staged.
    async fn close_file(&mut self) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.writer
            .finish()
            .map_err(|e| EngineError::runtime(format!("parquet writer: {e}")))?;
        self.upload_parts(true).await?;
        let file = self.file.take().expect("checked above");
        let OpenFile {
            mut writer,
            path,
            rows,
            upload,
        } = file;
        let staged = match upload {
            Upload::Multipart { id, parts } => Staged::Multipart {
                path: path.to_string(),
                upload_id: id,
                parts: parts.into_iter().map(|p| p.content_id).collect(),
                rows,
            },
            Upload::Local => {
                // The whole file goes to `_staging/`, to be renamed (append) or copied over the
                // table's single object (complete) on commit.
                let name = path.filename().unwrap_or("part.parquet").to_string();
                let staging = self.location.child(&format!("{}/{name}", self.staging));
                let data = Bytes::from(std::mem::take(writer.inner_mut()));
                self.location
                    .store
                    .put(&staging, PutPayload::from(data))
                    .await
                    .map_err(|e| self.location.explain(e))?;
                let from = staging.to_string();
                match self.mode {
                    OutputMode::Complete => Staged::Replace {
                        from,
                        to: self.location.child("data.parquet").to_string(),
                        rows,
                    },
                    _ => Staged::Rename {
                        from,
                        to: path.to_string(),
                        rows,
                    },
                }
            }
        };
        self.staged.push(staged);
        Ok(())
    }
}

/// Where the intent record of a multipart upload for `path` lives (hidden from readers).
fn intent_path(location: &Location, staging: &str, path: &Path) -> Path {
    location.child(&format!(
        "{staging}/uploads/{}.json",
        path.filename().unwrap_or("part")
    ))
}

/// A pipeline's staging folder in a table: `_staging/<owner>`, the owner being a stable hash
/// (FNV-1a) of the pipeline's checkpoint location. Recovery cleans only its own folder, so two
/// pipelines writing one table (a mistake, but a possible one) cannot abort each other's uploads.
fn staging_dir(checkpoint: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in checkpoint.trim_end_matches('/').bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("_staging/{h:016x}")
}

/// Milliseconds since the Unix epoch, zero-padded so file names sort by time.
fn chrono_like_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:015}")
}

#[async_trait::async_trait]
impl Sink for ParquetSink {
    fn init(&mut self, input: &SchemaRef) -> Result<()> {
        if let Some(col) = &self.preview.order_by
            && input.index_of(col).is_err()
        {
            let names: Vec<&str> = input.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(EngineError::invalid(
                "preview_order_by",
                format!(
                    "the table has no column `{col}`; its columns are: {}",
                    names.join(", ")
                ),
            ));
        }
        self.schema = Some(input.clone());
        Ok(())
    }

    async fn open(&mut self) -> Result<()> {
        self.check().await
    }

    async fn check(&mut self) -> Result<()> {
        self.location.check().await
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.file.is_none() {
            self.open_file().await?;
        }
        let file = self.file.as_mut().expect("opened above");
        file.rows += batch.num_rows();
        file.writer
            .write(&batch)
            .map_err(|e| EngineError::runtime(format!("parquet writer: {e}")))?;
        if file.writer.in_progress_size() > ROW_GROUP_BYTES {
            file.writer
                .flush()
                .map_err(|e| EngineError::runtime(format!("parquet writer: {e}")))?;
        }
        let size = file.writer.bytes_written() + file.writer.in_progress_size();
        self.upload_parts(false).await?;
        if size >= self.target_bytes && self.mode == OutputMode::Append {
            self.close_file().await?;
        }
        Ok(())
    }

    async fn prepare_commit(&mut self, _epoch: Epoch) -> Result<Vec<PendingCommit>> {
        self.close_file().await?;
        Ok(self
            .staged
            .drain(..)
            .map(|s| PendingCommit {
                node: self.node.clone(),
                data: serde_json::to_value(s).expect("serialisable"),
            })
            .collect())
    }

    fn committer(&self) -> Arc<dyn Committer> {
        self.committer.clone()
    }

    fn describe(&self) -> String {
        match self.mode {
            OutputMode::Complete => format!(
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

#[async_trait::async_trait]
impl Committer for ParquetCommitter {
    async fn recover(&self, committed: &[PendingCommit]) -> Result<usize> {
        // What the last committed manifest references must stay; everything else under
        // `_staging/` was staged by an epoch that never committed.
        let mut keep = std::collections::HashSet::new();
        for p in committed {
            if let Ok(st) = serde_json::from_value::<Staged>(p.data.clone()) {
                match st {
                    Staged::Multipart { upload_id, .. } => keep.insert(upload_id),
                    Staged::Rename { from, .. } | Staged::Replace { from, .. } => keep.insert(from),
                };
            }
        }
        let staging = self.location.child(&self.staging);
        let objects: Vec<_> =
            futures::TryStreamExt::try_collect(self.location.store.list(Some(&staging)))
                .await
                .map_err(|e| self.location.explain(e))?;
        let mut cleaned = 0;
        let intents = format!("/{}/uploads/", self.staging);
        for o in objects {
            let name = o.location.to_string();
            if name.contains(&intents) {
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
                let (Some(path), Some(id)) =
                    (intent["path"].as_str(), intent["upload_id"].as_str())
                else {
                    continue;
                };
                if keep.contains(id) {
                    continue;
                }
                if let Some(s3) = &self.location.s3 {
                    // An upload completed before a crash is already gone: nothing to abort.
                    let _ = s3.abort_multipart(&Path::from(path), &id.to_string()).await;
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

    async fn commit(&self, pending: &[PendingCommit]) -> Result<()> {
        for p in pending {
            let staged: Staged = serde_json::from_value(p.data.clone()).map_err(|e| {
                EngineError::runtime(format!("bad pending commit in manifest: {e}"))
            })?;
            match staged {
                Staged::Multipart {
                    path,
                    upload_id,
                    parts,
                    ..
                } => {
                    let path = Path::from(path);
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
                    let _ = self
                        .location
                        .store
                        .delete(&intent_path(&self.location, &self.staging, &path))
                        .await;
                }
                Staged::Replace { from, to, .. } => {
                    let (from, to) = (Path::from(from), Path::from(to));
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
                    let (from, to) = (Path::from(from), Path::from(to));
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
