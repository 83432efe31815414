//! `delta`: a Delta Lake table, written through `delta_kernel` over the same object store.
//!
//! Data files are written exactly as the `parquet` sink writes them (staged per source
//! partition, Hive folders from `partition_by`, multipart uploads on S3), then each commit of
//! the engine becomes one commit of the table's log:
//! - the log entry adds the epoch's files with their partition values and row counts, and
//!   carries a `txn` action: app id `engine/<pipeline>/<checkpoint hash>/<node>/<partition>`
//!   (`all` for output that mixes partitions), version the number of the engine's commit point
//!   ([`PendingCommit::version`]: the partition chain's sequence number, or the finalizer's
//!   epoch). Before committing, the latest snapshot's version of that app id is read: a commit
//!   made already (before a crash, or by the partition's previous owner) is not made again;
//! - several processes append to one table at once (one per partition owner): a commit whose
//!   log version another writer took is rebuilt on the new snapshot and retried, after reading
//!   the app ids again. Fencing is the partition chain's, as for plain Parquet: a fenced
//!   writer's commit point was never written, so it never reaches the log;
//! - a complete-mode table (an aggregate's whole result) is replaced by one commit that removes
//!   every file of the snapshot and adds the new one;
//! - a log checkpoint is written every `checkpoint_interval` commits (10, Delta's default).
//!
//! Readers see an epoch's files all at once, or none of them, through the log; files that were
//! written but never committed are invisible, and removed by vacuum after the retention.

use crate::parquet_sink::{ParquetCommitter, ParquetSink, ParquetSinkConfig};
use crate::store::Location;
use arrow::array::{
    Array, ArrayRef, Int64Array, MapBuilder, MapFieldNames, RecordBatch, StringArray,
    StringBuilder, StructArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::schema::StructType;
use delta_kernel::transaction::create_table::create_table;
use delta_kernel::transaction::data_layout::DataLayout;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};
use delta_kernel::{EngineData, Snapshot, SnapshotRef};
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use delta_kernel_default_engine::{DefaultEngine, DefaultEngineBuilder};
use engine_api::{
    BuildContext, Committer, EngineError, Epoch, Input, OutputMode, PartitionId, PendingCommit,
    Result, Sink, SinkConfig, TableFormat, TableInfo,
};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod maintenance;

/// What the log's `commitInfo` names as the writer.
const ENGINE_INFO: &str = concat!("engine/", env!("CARGO_PKG_VERSION"));

/// How many times a commit is rebuilt when other writers took the log version it wanted.
const COMMIT_ATTEMPTS: usize = 20;

/// `type = "delta"`: the `parquet` sink's settings, plus the Delta-only ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct DeltaSinkConfig(pub ParquetSinkConfig);

impl SinkConfig for DeltaSinkConfig {
    fn build(self, ctx: &BuildContext, input: &Input) -> Result<Box<dyn Sink>> {
        let config = self.0;
        let checkpoint_interval = config.checkpoint_interval.unwrap_or(10);
        engine_api::check_range("checkpoint_interval", checkpoint_interval, 1, 100_000)?;
        let day = Duration::from_secs(24 * 3600);
        let every = match config.maintenance_every.as_deref().unwrap_or("10m") {
            "off" => None,
            text => Some(engine_api::parse_duration(
                "maintenance_every",
                text,
                Duration::from_secs(10),
                day,
            )?),
        };
        let file_retention = engine_api::parse_duration(
            "file_retention",
            config.file_retention.as_deref().unwrap_or("7d"),
            // Younger files may belong to a commit in flight.
            Duration::from_secs(5 * 60),
            3650 * day,
        )?;
        let log_retention = engine_api::parse_duration(
            "log_retention",
            config.log_retention.as_deref().unwrap_or("30d"),
            Duration::from_secs(3600),
            3650 * day,
        )?;
        let mut sink = config.table_sink(ctx, input, TableFormat::Delta)?;
        let settings = maintenance::Settings {
            every,
            checkpoint_interval,
            target_bytes: sink.target_bytes as u64,
            file_retention,
            log_retention,
            props: sink.props.clone(),
        };
        // The table's columns: the data files' (cast to Delta's types), then the partition
        // columns, which live in the log and the folder names only.
        let writable = writable_schema(&input.schema);
        let mut fields: Vec<Field> = sink
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let partition_columns: Vec<String> = match &sink.partitioning {
            Some(p) => p
                .columns(&writable)
                .into_iter()
                .map(|f| {
                    let name = f.name().clone();
                    fields.push(f);
                    name
                })
                .collect(),
            None => Vec::new(),
        };
        let schema = StructType::try_from_arrow(&Schema::new(fields)).map_err(|e| {
            EngineError::config(format!(
                "node `{}`: a Delta table cannot hold this input: {e}",
                ctx.node
            ))
        })?;
        let table = Arc::new(DeltaTable::new(
            &sink.location,
            Arc::new(schema),
            partition_columns,
        )?);
        let app = format!(
            "engine/{}/{}/{}",
            ctx.pipeline,
            crate::parquet_sink::owner_id(&ctx.checkpoint),
            ctx.node
        );
        let node = ctx.node.clone();
        sink.committer = Arc::new(DeltaCommitter {
            files: sink.files_committer.clone(),
            table: table.clone(),
            app,
            replace: sink.mode == OutputMode::Complete,
            checkpoint_interval,
            maintenance: Arc::new(Maintainer {
                settings,
                owner: uuid::Uuid::new_v4().simple().to_string(),
                last: Mutex::new(Instant::now()),
                running: AtomicBool::new(false),
                compacted: metrics::counter!("engine_table_files_compacted_total", "node" => node.clone()),
                vacuumed: metrics::counter!("engine_table_files_vacuumed_total", "node" => node),
            }),
        });
        Ok(Box::new(DeltaSink {
            inner: sink,
            table,
            checkpoint_interval,
        }))
    }
}

/// Delta's types for an input schema: timestamps in microseconds (UTC), unsigned integers
/// widened, every string type as a string. Nested types are mapped inside.
pub(crate) fn writable_schema(input: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = input.fields().iter().map(|f| writable_field(f)).collect();
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}

fn writable_field(f: &Field) -> Field {
    f.clone().with_data_type(writable_type(f.data_type()))
}

fn writable_type(t: &DataType) -> DataType {
    match t {
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Float16 => DataType::Float32,
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
            DataType::List(Arc::new(writable_field(f)))
        }
        DataType::Struct(fields) => DataType::Struct(Fields::from(
            fields.iter().map(|f| writable_field(f)).collect::<Vec<_>>(),
        )),
        other => other.clone(),
    }
}

/// `batch` with its columns cast to `schema` (from [`writable_schema`]).
pub(crate) fn cast_batch(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// A Delta table at a location, and the kernel engine that reads and commits it.
pub(crate) struct DeltaTable {
    location: Location,
    /// The table's root as the kernel wants it: `s3://bucket/prefix/` (trailing slash).
    url: url::Url,
    schema: Arc<StructType>,
    partition_columns: Vec<String>,
    /// Made on first use, on the runtime that uses it.
    engine: OnceLock<Arc<DefaultEngine<TokioMultiThreadExecutor>>>,
}

type Engine = Arc<DefaultEngine<TokioMultiThreadExecutor>>;

fn kernel_error(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::runtime(format!("{what}: {e}"))
}

/// The latest snapshot of the table at `url`; errors say `what` was being done.
fn latest_snapshot(engine: &Engine, url: &url::Url, what: &str) -> Result<SnapshotRef> {
    Snapshot::builder_for(url.as_str())
        .build(engine.as_ref())
        .map_err(|e| kernel_error(what, e))
}

impl DeltaTable {
    fn new(
        location: &Location,
        schema: Arc<StructType>,
        partition_columns: Vec<String>,
    ) -> Result<Self> {
        let scheme = if location.s3.is_some() { "s3" } else { "file" };
        let host = location.bucket.as_deref().unwrap_or("");
        let url = url::Url::parse(&format!("{scheme}://{host}/{}/", location.prefix))
            .map_err(|e| EngineError::invalid("path", format!("not a table location: {e}")))?;
        Ok(DeltaTable {
            location: location.clone(),
            url,
            schema,
            partition_columns,
            engine: OnceLock::new(),
        })
    }

    fn engine(&self) -> Engine {
        self.engine
            .get_or_init(|| {
                let exec = TokioMultiThreadExecutor::new(tokio::runtime::Handle::current());
                Arc::new(
                    DefaultEngineBuilder::new(self.location.store.clone())
                        .with_task_executor(Arc::new(exec))
                        .build(),
                )
            })
            .clone()
    }

    /// Runs `f`, which calls the kernel (whose calls block), on a blocking thread.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Engine, url::Url) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (engine, url) = (self.engine(), self.url.clone());
        tokio::task::spawn_blocking(move || f(engine, url))
            .await
            .map_err(|e| EngineError::runtime(format!("delta commit task failed: {e}")))?
    }

    /// Whether the table has a log (any object under `_delta_log/`).
    async fn exists(&self) -> Result<bool> {
        let log = self.location.child("_delta_log");
        let mut listing = self.location.store.list(Some(&log));
        match futures::StreamExt::next(&mut listing).await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(self.location.explain(e)),
        }
    }

    /// Creates the table (version 0: schema, partition columns, properties) unless it exists,
    /// and checks that an existing table has this sink's columns.
    async fn create_or_check(&self, checkpoint_interval: u64) -> Result<()> {
        if !self.exists().await? {
            if self.location.s3.is_none() {
                // The kernel wants a local table's folder to exist.
                let dir = format!("/{}", self.location.prefix);
                tokio::fs::create_dir_all(&dir).await.map_err(|e| {
                    EngineError::runtime(format!("creating the table's folder {dir}: {e}"))
                })?;
            }
            let (schema, columns) = (self.schema.clone(), self.partition_columns.clone());
            let created = self
                .blocking(move |engine, url| {
                    let interval = checkpoint_interval.to_string();
                    let mut builder = create_table(url.as_str(), schema, ENGINE_INFO, true)
                        .with_table_properties([("delta.checkpointInterval", interval.as_str())]);
                    if !columns.is_empty() {
                        builder = builder.with_data_layout(DataLayout::partitioned(columns));
                    }
                    let txn = builder
                        .build(engine.as_ref(), Box::new(FileSystemCommitter::new()))
                        .map_err(|e| kernel_error("creating the Delta table", e))?;
                    match txn
                        .commit(engine.as_ref())
                        .map_err(|e| kernel_error("creating the Delta table", e))?
                    {
                        CommitResult::Committed(_) => Ok(true),
                        // Another process created it first.
                        _ => Ok(false),
                    }
                })
                .await?;
            if created {
                tracing::info!(table = %self.location.url, "delta table created");
                return Ok(());
            }
        }
        let snapshot = self.snapshot().await?;
        let (have, want) = (snapshot.schema(), self.schema.clone());
        if have.as_ref() != want.as_ref() {
            let names = |s: &StructType| {
                s.fields()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(EngineError::config(format!(
                "the Delta table at {} has other columns than this pipeline writes (table: {}; pipeline: {}); write to a new path, or move the old table away",
                self.location.url,
                names(&have),
                names(&want)
            )));
        }
        Ok(())
    }

    /// The table's latest snapshot.
    async fn snapshot(&self) -> Result<SnapshotRef> {
        let what = format!("reading the Delta table at {}", self.location.url);
        self.blocking(move |engine, url| latest_snapshot(&engine, &url, &what))
            .await
    }

    /// The path of `file` in the log: relative to the table's root, each segment
    /// percent-encoded as a URI path segment (a Hive folder's `%` becomes `%25`).
    fn relative(&self, file: &Path) -> Result<String> {
        let key = file.as_ref();
        let prefix = self.location.prefix.as_ref();
        let rel = key
            .strip_prefix(prefix)
            .map(|r| r.trim_start_matches('/'))
            .filter(|_| !prefix.is_empty())
            .unwrap_or(key);
        let mut u = url::Url::parse("s3://x/").expect("valid");
        u.path_segments_mut()
            .map_err(|_| EngineError::runtime("cannot build a log path"))?
            .extend(rel.split('/'));
        Ok(u.path().trim_start_matches('/').to_string())
    }
}

/// Every row of the latest version of the Delta table at `url`, partition columns included, as
/// the kernel reads it: for `engine report`, and for tests.
pub async fn read_table(
    url: &str,
    storage: &engine_api::StorageConfig,
) -> Result<Vec<RecordBatch>> {
    let location = Location::open(url, storage)?;
    let empty = StructType::try_new([]).map_err(|e| kernel_error("schema", e))?;
    let table = DeltaTable::new(&location, Arc::new(empty), Vec::new())?;
    let what = format!("reading the Delta table at {url}");
    table
        .blocking(move |engine, url| {
            let read = || -> delta_kernel::KernelResult<Vec<RecordBatch>> {
                let scan = Snapshot::builder_for(url.as_str())
                    .build(engine.as_ref())?
                    .scan_builder()
                    .build()?;
                let engine: Arc<dyn delta_kernel::Engine> = engine;
                let mut out = Vec::new();
                for data in scan.execute(engine)? {
                    out.push(ArrowEngineData::try_from_engine_data(data?)?.into());
                }
                Ok(out)
            };
            read().map_err(|e| kernel_error(&what, e))
        })
        .await
}

/// A data file an epoch adds to the table.
#[derive(Debug, Clone)]
struct NewFile {
    /// Relative to the table's root, URI-encoded.
    path: String,
    partition: Vec<(String, Option<String>)>,
    size: i64,
    modified_ms: i64,
    rows: i64,
}

/// The kernel's add-file rows for `files` (the schema of `Transaction::add_files_schema`).
fn add_files(files: &[NewFile]) -> Result<Box<dyn EngineData>> {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut values = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for f in files {
        for (k, v) in &f.partition {
            values.keys().append_value(k);
            values.values().append_option(v.as_deref());
        }
        values.append(true)?;
    }
    let values = values.finish();
    let stats_fields = Fields::from(vec![Field::new("numRecords", DataType::Int64, true)]);
    let stats = StructArray::try_new(
        stats_fields.clone(),
        vec![Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.rows))) as ArrayRef],
        Some(NullBuffer::new_valid(files.len())),
    )?;
    let schema = Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("partitionValues", values.data_type().clone(), false),
        Field::new("size", DataType::Int64, false),
        Field::new("modificationTime", DataType::Int64, false),
        Field::new("stats", DataType::Struct(stats_fields), true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|f| f.path.as_str()),
            )),
            Arc::new(values),
            Arc::new(Int64Array::from_iter_values(files.iter().map(|f| f.size))),
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|f| f.modified_ms),
            )),
            Arc::new(stats),
        ],
    )?;
    Ok(Box::new(ArrowEngineData::new(batch)))
}

/// Selects every file of `snapshot` for removal in `txn` (a complete table's replacement).
fn remove_all(
    engine: &Engine,
    snapshot: &SnapshotRef,
    txn: &mut delta_kernel::transaction::Transaction,
) -> Result<()> {
    let scan = snapshot
        .clone()
        .scan_builder()
        .build()
        .map_err(|e| kernel_error("listing the table's files", e))?;
    for meta in scan
        .scan_metadata(engine.as_ref())
        .map_err(|e| kernel_error("listing the table's files", e))?
    {
        let meta = meta.map_err(|e| kernel_error("listing the table's files", e))?;
        txn.remove_files(meta.scan_files);
    }
    Ok(())
}

/// The rows of one engine commit point for this sink: its app id and version, and its files.
struct Group {
    app: String,
    version: i64,
    files: Vec<NewFile>,
}

/// Commits staged files to the table's log (see the module's documentation).
pub struct DeltaCommitter {
    files: Arc<ParquetCommitter>,
    table: Arc<DeltaTable>,
    /// `engine/<pipeline>/<checkpoint hash>/<node>`; the partition follows.
    app: String,
    /// Complete mode: each commit replaces every file.
    replace: bool,
    checkpoint_interval: u64,
    maintenance: Arc<Maintainer>,
}

/// Runs the table's maintenance in the background, at most every `settings.every`.
struct Maintainer {
    settings: maintenance::Settings,
    /// This process, in the maintenance lease.
    owner: String,
    /// When the last run started (or the sink was built).
    last: Mutex<Instant>,
    running: AtomicBool,
    /// `engine_table_files_compacted_total` and `engine_table_files_vacuumed_total`.
    compacted: metrics::Counter,
    vacuumed: metrics::Counter,
}

impl Maintainer {
    /// Starts a run on `table` in the background if one is due and none is running here.
    fn maybe_run(self: &Arc<Self>, table: &Arc<DeltaTable>) {
        let Some(every) = self.settings.every else {
            return;
        };
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if last.elapsed() < every || self.running.swap(true, Ordering::SeqCst) {
                return;
            }
            *last = Instant::now();
        }
        let (me, table) = (self.clone(), table.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            match table.maintain(&me.settings, &me.owner).await {
                Ok(Some(r)) => {
                    me.compacted.increment(r.compacted as u64);
                    me.vacuumed.increment(r.vacuumed as u64);
                    tracing::info!(table = %table.location.url, compacted = r.compacted, written = r.written,
                        vacuumed = r.vacuumed, log_removed = r.log_removed, ms = started.elapsed().as_millis() as u64,
                        "delta maintenance");
                }
                Ok(None) => {
                    tracing::debug!(table = %table.location.url, "delta maintenance skipped: another process holds the lease");
                }
                Err(e) => {
                    tracing::warn!(table = %table.location.url, error = %e, "delta maintenance failed; it runs again later");
                }
            }
            me.running.store(false, Ordering::SeqCst);
        });
    }
}

impl DeltaCommitter {
    fn app_id(&self, partition: Option<&PartitionId>) -> String {
        match partition {
            Some(p) => format!("{}/{p}", self.app),
            None => format!("{}/all", self.app),
        }
    }

    /// The app id and version `p` commits under.
    fn txn_of(&self, p: &PendingCommit) -> Result<(String, i64)> {
        let version = p.version.ok_or_else(|| {
            EngineError::runtime(format!(
                "output of `{}` has no commit number; it was staged by an engine without Delta support",
                p.node
            ))
        })?;
        Ok((self.app_id(p.partition.as_ref()), version as i64))
    }

    /// The items of `pending` whose commit the table's log does not have yet, and the snapshot
    /// that says so (the commit's first attempt starts from it).
    async fn not_in_log(
        &self,
        pending: &[PendingCommit],
    ) -> Result<(Vec<PendingCommit>, SnapshotRef)> {
        let mut apps: BTreeMap<String, Option<i64>> = BTreeMap::new();
        for p in pending {
            apps.insert(self.txn_of(p)?.0, None);
        }
        let what = format!("reading the Delta table at {}", self.table.location.url);
        let (apps, snapshot) = self
            .table
            .blocking(move |engine, url| {
                let snapshot = latest_snapshot(&engine, &url, &what)?;
                for (app, done) in apps.iter_mut() {
                    *done = snapshot
                        .get_app_id_version(app, engine.as_ref())
                        .map_err(|e| kernel_error(&what, e))?;
                }
                Ok((apps, snapshot))
            })
            .await?;
        let mut todo = Vec::new();
        for p in pending {
            let (app, version) = self.txn_of(p)?;
            if apps[&app].is_none_or(|done| done < version) {
                todo.push(p.clone());
            }
        }
        Ok((todo, snapshot))
    }

    /// The files of `pending`, grouped by commit point, with their sizes read from the store.
    async fn groups(&self, pending: &[PendingCommit]) -> Result<Vec<Group>> {
        let mut groups: BTreeMap<(String, i64), Vec<NewFile>> = BTreeMap::new();
        for p in pending {
            let key = self.txn_of(p)?;
            let (path, rows) = crate::parquet_sink::committed_file(p)?;
            let meta = self.table.location.store.head(&path).await.map_err(|e| {
                self.table
                    .location
                    .explain(e)
                    .context(format!("reading {path}"))
            })?;
            let rel = self.table.relative(&path)?;
            let folder = path
                .as_ref()
                .rsplit_once('/')
                .map(|(dir, _)| dir)
                .unwrap_or("")
                .strip_prefix(self.table.location.prefix.as_ref())
                .unwrap_or("")
                .to_string();
            let partition = if self.table.partition_columns.is_empty() {
                Vec::new()
            } else {
                crate::hive::values(folder.trim_start_matches('/'))
            };
            groups.entry(key).or_default().push(NewFile {
                path: rel,
                partition,
                size: meta.size as i64,
                modified_ms: meta.last_modified.timestamp_millis(),
                rows: rows as i64,
            });
        }
        Ok(groups
            .into_iter()
            .map(|((app, version), files)| Group {
                app,
                version,
                files,
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Committer for DeltaCommitter {
    async fn commit(&self, pending: &[PendingCommit]) -> Result<()> {
        // What the log has already is done: its files may have been compacted away and
        // vacuumed since (a partition idle for longer than the retention finishes its last
        // commit point again at every restart).
        let (pending, snapshot) = self.not_in_log(pending).await?;
        if pending.is_empty() {
            return Ok(());
        }
        // The data files first: completed uploads are invisible until the log names them.
        self.files.commit(&pending).await?;
        let groups = self.groups(&pending).await?;
        if groups.is_empty() {
            return Ok(());
        }
        let (replace, interval) = (self.replace, self.checkpoint_interval);
        let table = self.table.location.url.clone();
        let committed = self
            .table
            .blocking(move |engine, url| {
                commit_groups(&engine, &url, snapshot, &groups, replace, interval)
            })
            .await
            .map_err(|e| e.context(format!("committing to the Delta table at {table}")))?;
        if let Some(version) = committed {
            tracing::debug!(table = %self.table.location.url, version, "delta commit");
        }
        self.maintenance.maybe_run(&self.table);
        Ok(())
    }

    async fn abort(&self, pending: &[PendingCommit]) {
        self.files.abort(pending).await
    }

    async fn recover(
        &self,
        partition: Option<&PartitionId>,
        committed: &[PendingCommit],
    ) -> Result<usize> {
        self.files.recover(partition, committed).await
    }
}

/// Commits the groups not in the log yet as one log entry, starting from `snapshot`; rebuilt on
/// the latest snapshot while other writers take the version it wanted. Returns the version
/// written, `None` when every group was committed already.
fn commit_groups(
    engine: &Engine,
    url: &url::Url,
    snapshot: SnapshotRef,
    groups: &[Group],
    replace: bool,
    checkpoint_interval: u64,
) -> Result<Option<u64>> {
    let mut wait = Duration::from_millis(20);
    let mut first = Some(snapshot);
    for _ in 0..COMMIT_ATTEMPTS {
        let snapshot = match first.take() {
            Some(s) => s,
            None => latest_snapshot(engine, url, "reading the table")?,
        };
        let mut todo = Vec::new();
        for g in groups {
            let done = snapshot
                .get_app_id_version(&g.app, engine.as_ref())
                .map_err(|e| kernel_error("reading the table's transaction ids", e))?;
            if done.is_none_or(|v| v < g.version) {
                todo.push(g);
            }
        }
        if todo.is_empty() {
            return Ok(None);
        }
        let mut builder =
            snapshot
                .clone()
                .update_table(UpdateTableOperation::StreamingUpdate, ENGINE_INFO, true);
        if !replace {
            builder = builder.with_blind_append();
        }
        let mut txn = builder
            .build(engine.as_ref(), Box::new(FileSystemCommitter::new()))
            .map_err(|e| kernel_error("starting a commit", e))?;
        let mut files = Vec::new();
        for g in &todo {
            txn = txn.with_transaction_id(g.app.clone(), g.version);
            files.extend(g.files.iter().cloned());
        }
        if replace {
            remove_all(engine, &snapshot, &mut txn)?;
        }
        txn.add_files(add_files(&files)?);
        match txn
            .commit(engine.as_ref())
            .map_err(|e| kernel_error("committing", e))?
        {
            CommitResult::Committed(c) => {
                checkpoint_if_due(engine, &c, checkpoint_interval);
                return Ok(Some(c.commit_version()));
            }
            CommitResult::Conflicted(_) | CommitResult::Retryable(_) => {
                // Jitter, so that writers that collided do not collide again.
                std::thread::sleep(wait + Duration::from_millis(fastrand::u64(0..20)));
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
    Err(EngineError::runtime(format!(
        "{COMMIT_ATTEMPTS} attempts in a row found the log version taken by other writers"
    )))
}

/// Writes a log checkpoint after `committed` once `interval` commits have passed since the last.
fn checkpoint_if_due(
    engine: &Engine,
    committed: &delta_kernel::transaction::CommittedTransaction,
    interval: u64,
) {
    if committed.post_commit_stats().commits_since_checkpoint >= interval
        && let Some(s) = committed.post_commit_snapshot()
    {
        // Best effort: a missing checkpoint only makes readers replay more JSON.
        if let Err(e) = s.clone().checkpoint(engine.as_ref(), None) {
            tracing::warn!(version = committed.commit_version(), error = %e, "could not write a delta log checkpoint; readers replay the JSON entries instead");
        }
    }
}

/// The Delta sink: the `parquet` sink's file writing, with table creation on open and the
/// [`DeltaCommitter`] as its committer.
pub struct DeltaSink {
    inner: ParquetSink,
    table: Arc<DeltaTable>,
    checkpoint_interval: u64,
}

#[async_trait::async_trait]
impl Sink for DeltaSink {
    async fn open(&mut self) -> Result<()> {
        self.inner.open().await?;
        self.table.create_or_check(self.checkpoint_interval).await
    }

    async fn check(&mut self) -> Result<()> {
        self.inner.check().await
    }

    async fn write(&mut self, batch: RecordBatch, partition: Option<&PartitionId>) -> Result<()> {
        self.inner.write(batch, partition).await
    }

    async fn prepare_commit(&mut self, epoch: Epoch) -> Result<Vec<PendingCommit>> {
        self.inner.prepare_commit(epoch).await
    }

    fn committer(&self) -> Arc<dyn Committer> {
        self.inner.committer()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn accepts(&self) -> Vec<OutputMode> {
        self.inner.accepts()
    }

    fn table(&self) -> Option<TableInfo> {
        self.inner.table()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_sink::tests::{TempDir, ctx};
    use arrow::array::{AsArray, TimestampMillisecondArray};
    use arrow::datatypes::Int64Type;
    use parquet::file::properties::WriterProperties;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    /// Rows `ids`, the event time of id `i` being `i` hours after 2026-01-01T00:00Z.
    fn batch(ids: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from_iter(
                    ids.iter().map(|i| (i % 3 != 0).then(|| format!("n{i}"))),
                )),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        ids.iter().map(|i| 1_767_225_600_000 + i * 3_600_000),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap()
    }

    fn sink(config: serde_json::Value, checkpoint: &str) -> Box<dyn Sink> {
        let cfg: DeltaSinkConfig = serde_json::from_value(config).unwrap();
        cfg.build(&ctx(checkpoint), &Input::new(schema())).unwrap()
    }

    /// (id, dt) of every row a reader of the table's latest version gets, sorted.
    async fn rows(url: &str) -> Vec<(i64, Option<String>)> {
        let mut out = Vec::new();
        for b in read_table(url, &Default::default()).await.unwrap() {
            let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
            let dt = b
                .column_by_name("dt")
                .map(|c| cast(c, &DataType::Utf8).unwrap());
            for i in 0..b.num_rows() {
                let dt = dt
                    .as_ref()
                    .map(|d| d.as_string::<i32>())
                    .filter(|d| !d.is_null(i))
                    .map(|d| d.value(i).to_string());
                out.push((ids.value(i), dt));
            }
        }
        out.sort();
        out
    }

    /// The log's commit files, by version.
    fn log_versions(dir: &std::path::Path) -> Vec<u64> {
        let mut v: Vec<u64> = std::fs::read_dir(dir.join("_delta_log"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".json").and_then(|n| n.parse().ok())
            })
            .collect();
        v.sort();
        v
    }

    /// Stages `ids` of partition `p`, as the runtime would, and numbers the commit `version`.
    async fn stage(
        sink: &mut Box<dyn Sink>,
        ids: &[i64],
        p: Option<&PartitionId>,
        epoch: Epoch,
        version: u64,
    ) -> Vec<PendingCommit> {
        sink.write(batch(ids), p).await.unwrap();
        let mut pending = sink.prepare_commit(epoch).await.unwrap();
        for c in &mut pending {
            c.version = Some(version);
        }
        pending
    }

    fn expected(
        ids: impl IntoIterator<Item = i64>,
        partitioned: bool,
    ) -> Vec<(i64, Option<String>)> {
        let mut v: Vec<_> = ids
            .into_iter()
            .map(|i| {
                let day = 1 + i / 24;
                (i, partitioned.then(|| format!("2026-01-{day:02}")))
            })
            .collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_commit_point_lands_once_in_the_log_with_its_partition_values() {
        let dir = TempDir::new("delta-append");
        let config = serde_json::json!({
            "path": dir.url(),
            "partition_by": { "time": "ts", "format": "dt=%Y-%m-%d" },
        });
        let mut s = sink(config.clone(), "cp");
        s.open().await.unwrap();
        assert_eq!(log_versions(&dir.0), [0], "the table is created on open");
        let (p0, p1) = (PartitionId::new("t@0"), PartitionId::new("t@1"));
        let committer = s.committer();
        // Rows of two days from partition 0, one day from partition 1, each its own commit.
        let a = stage(&mut s, &[1, 2, 30], Some(&p0), 1, 5).await;
        let b = stage(&mut s, &[3, 4], Some(&p1), 1, 2).await;
        assert_eq!(a.len(), 2, "one file per day folder");
        committer.commit(&a).await.unwrap();
        committer.commit(&b).await.unwrap();
        assert_eq!(log_versions(&dir.0), [0, 1, 2]);
        assert_eq!(rows(&dir.url()).await, expected([1, 2, 3, 4, 30], true));
        // Made again (a restart finishing the last commit point, or a new owner's claim): the
        // log already has them.
        committer.commit(&a).await.unwrap();
        let again = sink(config.clone(), "cp");
        again.committer().commit(&b).await.unwrap();
        assert_eq!(log_versions(&dir.0), [0, 1, 2], "nothing committed twice");
        // The next commit point of partition 0 does land.
        let c = stage(&mut s, &[5], Some(&p0), 2, 6).await;
        committer.commit(&c).await.unwrap();
        assert_eq!(rows(&dir.url()).await, expected([1, 2, 3, 4, 5, 30], true));
        // Another pipeline (another checkpoint) writing the same table has its own app ids.
        let mut other = sink(config, "other-cp");
        other.open().await.unwrap();
        let d = stage(&mut other, &[6], Some(&p0), 1, 6).await;
        other.committer().commit(&d).await.unwrap();
        assert_eq!(
            rows(&dir.url()).await,
            expected([1, 2, 3, 4, 5, 6, 30], true)
        );
        let log =
            std::fs::read_to_string(dir.0.join("_delta_log/00000000000000000001.json")).unwrap();
        assert!(
            log.contains(r#""appId":"engine/test/"#) && log.contains(r#"/table/t@0","version":5"#),
            "{log}"
        );
        assert!(log.contains(r#"{\"numRecords\":2}"#), "{log}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_complete_table_is_replaced_by_one_commit() {
        let dir = TempDir::new("delta-complete");
        let config = serde_json::json!({ "path": dir.url(), "mode": "complete" });
        let mut s = sink(config, "cp");
        s.open().await.unwrap();
        let committer = s.committer();
        for (epoch, ids) in [(1, vec![1, 2, 3]), (2, vec![1, 2, 3, 4]), (3, vec![7])] {
            let pending = stage(&mut s, &ids, None, epoch, epoch).await;
            committer.commit(&pending).await.unwrap();
            committer.commit(&pending).await.unwrap();
            assert_eq!(rows(&dir.url()).await, expected(ids, false));
        }
        assert_eq!(log_versions(&dir.0), [0, 1, 2, 3]);
        let last =
            std::fs::read_to_string(dir.0.join("_delta_log/00000000000000000003.json")).unwrap();
        assert_eq!(last.matches(r#"{"remove":"#).count(), 1, "{last}");
        assert_eq!(last.matches(r#"{"add":"#).count(), 1, "{last}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_checkpoint_is_written_every_interval() {
        let dir = TempDir::new("delta-checkpoint");
        let config = serde_json::json!({ "path": dir.url(), "checkpoint_interval": 3 });
        let mut s = sink(config, "cp");
        s.open().await.unwrap();
        let committer = s.committer();
        let p = PartitionId::new("t@0");
        for v in 1..=7 {
            let pending = stage(&mut s, &[v as i64], Some(&p), v, v).await;
            committer.commit(&pending).await.unwrap();
        }
        let mut checkpoints: Vec<String> = std::fs::read_dir(dir.0.join("_delta_log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".checkpoint."))
            .collect();
        checkpoints.sort();
        assert_eq!(
            checkpoints,
            [
                "00000000000000000003.checkpoint.parquet",
                "00000000000000000006.checkpoint.parquet"
            ]
        );
        assert_eq!(rows(&dir.url()).await, expected(1..=7, false));
    }

    /// Sets the modification time of every file under `dir` (recursively) that `pick` accepts
    /// to `ago` in the past.
    fn backdate(dir: &std::path::Path, ago: Duration, pick: &dyn Fn(&std::path::Path) -> bool) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                backdate(&path, ago, pick);
            } else if pick(&path) {
                let f = std::fs::File::options().write(true).open(&path).unwrap();
                f.set_modified(std::time::SystemTime::now() - ago).unwrap();
            }
        }
    }

    fn data_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() && !name.starts_with('_') {
                out.extend(data_files(&path));
            } else if name.ends_with(".parquet") {
                out.push(path);
            }
        }
        out.sort();
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_keeps_every_row_while_appends_go_on_and_vacuum_removes_only_what_is_old_and_unreferenced()
     {
        let dir = TempDir::new("delta-compact");
        let config = serde_json::json!({
            "path": dir.url(),
            "partition_by": { "time": "ts", "format": "dt=%Y-%m-%d" },
            "checkpoint_interval": 4,
        });
        let mut s = sink(config, "cp");
        s.open().await.unwrap();
        let committer = s.committer();
        let p = PartitionId::new("t@0");
        // 8 commits of two rows each, on two days: 8 small files per day.
        let mut first = Vec::new();
        for v in 0..8i64 {
            let pending = stage(&mut s, &[v, 24 + v], Some(&p), v as u64 + 1, v as u64 + 1).await;
            committer.commit(&pending).await.unwrap();
            if v == 0 {
                first = pending;
            }
        }
        let before = rows(&dir.url()).await;
        assert_eq!(data_files(&dir.0).len(), 16);
        let table = DeltaTable::new(
            &Location::open(&dir.url(), &Default::default()).unwrap(),
            Arc::new(StructType::try_new([]).unwrap()),
            Vec::new(),
        )
        .unwrap();
        let settings = maintenance::Settings {
            every: None,
            checkpoint_interval: 4,
            target_bytes: 1024 * 1024,
            file_retention: Duration::from_secs(300),
            log_retention: Duration::from_secs(3600),
            props: WriterProperties::builder().build(),
        };
        // Compaction while two more commits append (one of them on a third day).
        let append = async {
            for v in 8..10i64 {
                let pending =
                    stage(&mut s, &[v, 48 + v], Some(&p), v as u64 + 1, v as u64 + 1).await;
                committer.commit(&pending).await.unwrap();
            }
        };
        let (compacted, ()) = tokio::join!(table.compact(&settings), append);
        let (removed, added) = compacted.unwrap();
        assert_eq!((removed, added), (16, 2), "each day's 8 files into one");
        let mut want = before.clone();
        want.extend(expected([8, 9, 56, 57], true));
        want.sort();
        assert_eq!(
            rows(&dir.url()).await,
            want,
            "every row once, before and after"
        );
        let last = log_versions(&dir.0).into_iter().max().unwrap();
        let optimize: Vec<String> = (1..=last)
            .map(|v| {
                std::fs::read_to_string(dir.0.join(format!("_delta_log/{v:020}.json"))).unwrap()
            })
            .filter(|t| t.contains("OPTIMIZE"))
            .collect();
        assert_eq!(optimize.len(), 2, "one commit per rewritten file");
        let optimize = optimize.concat();
        assert_eq!(
            optimize.matches(r#""dataChange":false"#).count(),
            18,
            "{optimize}"
        );
        assert!(!optimize.contains(r#""dataChange":true"#), "{optimize}");
        // The 16 old files stay for readers of older versions until the retention passes.
        let old: Vec<_> = data_files(&dir.0);
        assert_eq!(old.len(), 16 + 2 + 4);
        assert_eq!(table.vacuum(settings.file_retention).await.unwrap(), 0);
        backdate(&dir.0, Duration::from_secs(3600), &|p| {
            p.extension().is_some_and(|e| e == "parquet")
        });
        assert_eq!(table.vacuum(settings.file_retention).await.unwrap(), 16);
        assert_eq!(data_files(&dir.0).len(), 6);
        assert_eq!(rows(&dir.url()).await, want, "vacuum removes no live file");
        // A commit point finished again (at a restart) whose files were compacted and vacuumed
        // since: the log has it, so nothing is looked for.
        committer.commit(&first).await.unwrap();
        assert_eq!(rows(&dir.url()).await, want);
        // Log entries before the newest checkpoint older than the retention go; the table still
        // reads the same.
        backdate(
            &dir.0.join("_delta_log"),
            Duration::from_secs(7200),
            &|_| true,
        );
        let removed = table.clean_log(settings.log_retention).await.unwrap();
        assert!(removed >= 8, "{removed} log objects removed");
        let newest_checkpoint = std::fs::read_dir(dir.0.join("_delta_log"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".checkpoint.parquet")?
                    .parse::<u64>()
                    .ok()
            })
            .max();
        assert_eq!(log_versions(&dir.0).first().copied(), newest_checkpoint);
        assert_eq!(rows(&dir.url()).await, want);
    }

    #[test]
    fn delta_only_settings_are_refused_on_a_parquet_table() {
        let cfg: ParquetSinkConfig = serde_json::from_value(
            serde_json::json!({ "path": "file:///tmp/x", "log_retention": "1d" }),
        )
        .unwrap();
        let e = cfg
            .build(&ctx("cp"), &Input::new(schema()))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("log_retention") && e.contains("Delta tables only"),
            "{e}"
        );
    }
}
