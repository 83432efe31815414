//! Maintenance of a Delta table, run by the engine that writes it, at most every
//! `maintenance_every`, after a commit: compaction, then vacuum.
//!
//! - **Compaction** bin-packs the small files of each partition folder into files near
//!   `target_file_mb`, and commits the rewrite as one `OPTIMIZE` entry whose removes and adds
//!   carry `dataChange = false`: a streaming reader of the table skips it, a batch reader sees
//!   the same rows before and after. When another writer took the log version first, the commit
//!   is rebuilt on the new snapshot only if every file it removes is still in it; otherwise the
//!   rewrite is dropped (its new files are never referenced, and vacuum removes them).
//! - **Vacuum** deletes data files no version newer than `file_retention` references: those
//!   removed (by compaction or a complete table's replacement) longer ago than that, and files
//!   of epochs that never committed. A file younger than the retention is never touched, which
//!   also keeps files whose commit is in flight.
//! - **Log cleanup** deletes log entries and checkpoints older than `log_retention` that come
//!   before the newest checkpoint older than it, so the table can always be read from a
//!   checkpoint.
//!
//! One run at a time per table across every process: a lease object,
//! `<table>/_engine/maintenance.json`, taken with put-if-absent (or by replacing an expired
//! one with `If-Match`). The lease is an optimisation: the conflict check above is what keeps
//! two compactions from both removing a file.

use super::{DeltaTable, Engine, NewFile, add_files, kernel_error, latest_snapshot};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use bytes::Bytes;
use delta_kernel::SnapshotRef;
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::engine_data::FilteredEngineData;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};
use engine_api::{EngineError, Result};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// How long a lease holds when its holder does not give it back (a crash).
const LEASE: Duration = Duration::from_secs(15 * 60);
/// The most bytes one compaction run rewrites, bounding its memory and time.
const MAX_RUN_BYTES: u64 = 1024 * 1024 * 1024;

/// The settings of a table's maintenance.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// How often maintenance runs; `None`: never.
    pub(crate) every: Option<Duration>,
    /// A log checkpoint every this many commits (compaction commits count too).
    pub(crate) checkpoint_interval: u64,
    pub(crate) target_bytes: u64,
    pub(crate) file_retention: Duration,
    pub(crate) log_retention: Duration,
    pub(crate) props: WriterProperties,
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Report {
    /// Files compacted away, and the files written in their place.
    pub(crate) compacted: usize,
    pub(crate) written: usize,
    /// Data files and log objects vacuum deleted.
    pub(crate) vacuumed: usize,
    pub(crate) log_removed: usize,
}

/// A data file of the table's latest version.
#[derive(Debug, Clone)]
struct Live {
    /// As the log names it: relative, URI-encoded.
    path: String,
    size: u64,
    partition: Vec<(String, Option<String>)>,
}

/// The live files of `snapshot`.
fn live_files(engine: &Engine, snapshot: &SnapshotRef) -> Result<Vec<Live>> {
    let mut out = Vec::new();
    for_each_scan_row(engine, snapshot, |_, live| {
        out.push(live);
        false
    })?;
    Ok(out)
}

/// Calls `f` with every live file of `snapshot`, and gives the scan's rows, with those for
/// which `f` said true selected, to `selected` (a transaction's `remove_files`).
fn for_each_scan_row(
    engine: &Engine,
    snapshot: &SnapshotRef,
    mut f: impl FnMut(usize, Live) -> bool,
) -> Result<Vec<FilteredEngineData>> {
    let what = "listing the table's files";
    let scan = snapshot
        .clone()
        .scan_builder()
        .build()
        .map_err(|e| kernel_error(what, e))?;
    let mut chosen = Vec::new();
    for meta in scan
        .scan_metadata(engine.as_ref())
        .map_err(|e| kernel_error(what, e))?
    {
        let meta = meta.map_err(|e| kernel_error(what, e))?;
        let (data, selection) = meta.scan_files.into_parts();
        let batch = data
            .any_ref()
            .downcast_ref::<ArrowEngineData>()
            .ok_or_else(|| EngineError::runtime("the kernel's scan rows are not Arrow"))?
            .record_batch();
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| EngineError::runtime(format!("scan rows without `{name}`")))
        };
        let (paths, sizes, constants) = (
            column("path")?,
            column("size")?,
            column("fileConstantValues")?,
        );
        let paths = paths.as_string::<i32>();
        let sizes = sizes.as_primitive::<Int64Type>();
        let values = constants
            .as_struct()
            .column_by_name("partitionValues")
            .cloned()
            .ok_or_else(|| EngineError::runtime("scan rows without partition values"))?;
        let values = values.as_map();
        let mut picked = vec![false; batch.num_rows()];
        for (i, pick) in picked.iter_mut().enumerate() {
            if !selection.get(i).copied().unwrap_or(true) || paths.is_null(i) {
                continue;
            }
            let entries = values.value(i);
            let (k, v) = (
                entries.column(0).as_string::<i32>(),
                entries.column(1).as_string::<i32>(),
            );
            let partition = (0..entries.len())
                .map(|j| {
                    (
                        k.value(j).to_string(),
                        (!v.is_null(j)).then(|| v.value(j).to_string()),
                    )
                })
                .collect();
            *pick = f(
                i,
                Live {
                    path: paths.value(i).to_string(),
                    size: sizes.value(i).max(0) as u64,
                    partition,
                },
            );
        }
        chosen.push(
            FilteredEngineData::try_new(data, picked)
                .map_err(|e| kernel_error("selecting files", e))?,
        );
    }
    Ok(chosen)
}

/// Groups of small files of one partition each, whose sizes add up to about `target` at most;
/// only groups of two files or more, and at most [`MAX_RUN_BYTES`] in all.
fn bins(files: Vec<Live>, target: u64) -> Vec<Vec<Live>> {
    let mut by_partition: BTreeMap<Vec<(String, Option<String>)>, Vec<Live>> = BTreeMap::new();
    for f in files.into_iter().filter(|f| f.size < target / 2) {
        by_partition.entry(f.partition.clone()).or_default().push(f);
    }
    let mut out = Vec::new();
    let mut total = 0;
    for (_, mut files) in by_partition {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut bin: Vec<Live> = Vec::new();
        let mut size = 0;
        for f in files {
            if size + f.size > target && !bin.is_empty() {
                out.push(std::mem::take(&mut bin));
                size = 0;
            }
            size += f.size;
            bin.push(f);
        }
        out.push(bin);
    }
    out.retain(|b| b.len() > 1);
    out.retain(|b| {
        total += b.iter().map(|f| f.size).sum::<u64>();
        total <= MAX_RUN_BYTES
    });
    out
}

impl DeltaTable {
    /// The object of a file the log names (relative, URI-encoded).
    fn object(&self, log_path: &str) -> Result<Path> {
        let mut path = self.location.prefix.clone();
        for part in log_path.split('/') {
            let name = crate::hive::unescape(part);
            let part = object_store::path::PathPart::parse(&name).map_err(|e| {
                EngineError::runtime(format!("a file of the log is not a valid object name: {e}"))
            })?;
            path = path.join(part);
        }
        Ok(path)
    }

    /// Takes the maintenance lease for `owner`; false when another holds it.
    async fn take_lease(&self, owner: &str) -> Result<bool> {
        let path = self.location.child("_engine/maintenance.json");
        let store = &self.location.store;
        let now = chrono::Utc::now().timestamp_millis();
        let mode = match store.get(&path).await {
            Ok(r) => {
                let e_tag = r.meta.e_tag.clone();
                let body = r.bytes().await.map_err(|e| self.location.explain(e))?;
                let held: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if held["until_ms"].as_i64().is_some_and(|until| until > now)
                    && held["owner"].as_str() != Some(owner)
                {
                    return Ok(false);
                }
                PutMode::Update(UpdateVersion {
                    e_tag,
                    version: None,
                })
            }
            Err(object_store::Error::NotFound { .. }) => PutMode::Create,
            Err(e) => return Err(self.location.explain(e)),
        };
        let lease = serde_json::json!({
            "owner": owner,
            "until_ms": now + LEASE.as_millis() as i64,
        });
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        let payload = PutPayload::from(lease.to_string());
        match store.put_opts(&path, payload.clone(), opts).await {
            Ok(_) => Ok(true),
            // A local table cannot replace conditionally: the expired lease is removed, then
            // taken if still absent.
            Err(object_store::Error::NotImplemented { .. }) => {
                let _ = store.delete(&path).await;
                let create = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                Ok(store.put_opts(&path, payload, create).await.is_ok())
            }
            Err(object_store::Error::Precondition { .. })
            | Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.location.explain(e)),
        }
    }

    async fn give_lease_back(&self) {
        let path = self.location.child("_engine/maintenance.json");
        let _ = self.location.store.delete(&path).await;
    }

    /// One maintenance run: compaction, vacuum, log cleanup, under the lease. `None` when
    /// another process holds the lease.
    pub(crate) async fn maintain(
        &self,
        settings: &Settings,
        owner: &str,
    ) -> Result<Option<Report>> {
        if !self.take_lease(owner).await? {
            return Ok(None);
        }
        let result = self.maintain_leased(settings).await;
        self.give_lease_back().await;
        result.map(Some)
    }

    async fn maintain_leased(&self, settings: &Settings) -> Result<Report> {
        let mut report = Report::default();
        let (compacted, written) = self.compact(settings).await?;
        report.compacted = compacted;
        report.written = written;
        report.vacuumed = self.vacuum(settings.file_retention).await?;
        report.log_removed = self.clean_log(settings.log_retention).await?;
        Ok(report)
    }

    /// Compacts small files (see the module's documentation). Returns how many files were
    /// replaced and by how many.
    pub(crate) async fn compact(&self, settings: &Settings) -> Result<(usize, usize)> {
        let target = settings.target_bytes;
        let planned = self
            .blocking(move |engine, url| {
                let snapshot = latest_snapshot(&engine, &url, "reading the table")?;
                Ok(bins(live_files(&engine, &snapshot)?, target))
            })
            .await?;
        let (mut removed, mut added) = (0, 0);
        for bin in planned {
            let Some(new) = self.rewrite(&bin, &settings.props).await? else {
                continue;
            };
            let gone: HashSet<String> = bin.iter().map(|f| f.path.clone()).collect();
            let n = gone.len();
            let interval = settings.checkpoint_interval;
            let committed = self
                .blocking(move |engine, url| commit_rewrite(&engine, &url, &gone, &new, interval))
                .await?;
            if committed {
                removed += n;
                added += 1;
            }
        }
        Ok((removed, added))
    }

    /// Writes the rows of `bin`'s files into one new file in their folder. `None` when a file
    /// is gone already (vacuumed after another compaction).
    async fn rewrite(&self, bin: &[Live], props: &WriterProperties) -> Result<Option<NewFile>> {
        let mut writer: Option<ArrowWriter<Vec<u8>>> = None;
        let mut rows = 0;
        for f in bin {
            let path = self.object(&f.path)?;
            let bytes = match self.location.store.get(&path).await {
                Ok(r) => r.bytes().await.map_err(|e| self.location.explain(e))?,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.location.explain(e)),
            };
            let bad =
                |e: &dyn std::fmt::Display| EngineError::runtime(format!("compacting {path}: {e}"));
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
                .map_err(|e| bad(&e))?
                .build()
                .map_err(|e| bad(&e))?;
            for batch in reader {
                let batch: RecordBatch = batch.map_err(|e| bad(&e))?;
                rows += batch.num_rows();
                if writer.is_none() {
                    writer = Some(
                        ArrowWriter::try_new(Vec::new(), batch.schema(), Some(props.clone()))
                            .map_err(|e| bad(&e))?,
                    );
                }
                writer
                    .as_mut()
                    .expect("made above")
                    .write(&batch)
                    .map_err(|e| bad(&e))?;
            }
        }
        let Some(writer) = writer else {
            return Ok(None);
        };
        let data = Bytes::from(
            writer
                .into_inner()
                .map_err(|e| EngineError::runtime(format!("compacting: {e}")))?,
        );
        let first = &bin[0].path;
        let folder = first.rsplit_once('/').map(|(d, _)| d);
        let name = crate::parquet_sink::file_name(
            crate::parquet_sink::now_ms(),
            &uuid::Uuid::new_v4().simple().to_string(),
        );
        let log_path = match folder {
            Some(d) => format!("{d}/{name}"),
            None => name,
        };
        let path = self.object(&log_path)?;
        let size = data.len() as i64;
        self.location
            .store
            .put(&path, PutPayload::from(data))
            .await
            .map_err(|e| self.location.explain(e))?;
        Ok(Some(NewFile {
            path: log_path,
            partition: bin[0].partition.clone(),
            size,
            modified_ms: chrono::Utc::now().timestamp_millis(),
            rows: rows as i64,
        }))
    }

    /// Deletes data files no version within `retention` references. Returns how many.
    pub(crate) async fn vacuum(&self, retention: Duration) -> Result<usize> {
        let live: HashSet<Path> = self
            .blocking(|engine, url| {
                let snapshot = latest_snapshot(&engine, &url, "reading the table")?;
                Ok(live_files(&engine, &snapshot)?
                    .into_iter()
                    .map(|f| f.path)
                    .collect::<Vec<_>>())
            })
            .await?
            .iter()
            .map(|p| self.object(p))
            .collect::<Result<_>>()?;
        let cutoff = chrono::Utc::now() - retention;
        let objects: Vec<_> = self
            .location
            .store
            .list(Some(&self.location.prefix))
            .try_collect()
            .await
            .map_err(|e| self.location.explain(e))?;
        let prefix = self.location.prefix.as_ref();
        let mut deleted = 0;
        for o in objects {
            let rel = o
                .location
                .as_ref()
                .strip_prefix(prefix)
                .unwrap_or(o.location.as_ref())
                .trim_start_matches('/');
            let hidden = rel
                .split('/')
                .any(|p| p.starts_with('_') || p.starts_with('.'));
            if hidden
                || !rel.ends_with(".parquet")
                || live.contains(&o.location)
                || o.last_modified > cutoff
            {
                continue;
            }
            match self.location.store.delete(&o.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                Err(e) => return Err(self.location.explain(e)),
            }
        }
        Ok(deleted)
    }

    /// Deletes log entries and checkpoints older than `retention` that come before the newest
    /// checkpoint older than it. Returns how many objects.
    pub(crate) async fn clean_log(&self, retention: Duration) -> Result<usize> {
        let log = self.location.child("_delta_log");
        let objects: Vec<_> = self
            .location
            .store
            .list(Some(&log))
            .try_collect()
            .await
            .map_err(|e| self.location.explain(e))?;
        let cutoff = chrono::Utc::now() - retention;
        let version = |o: &object_store::ObjectMeta| -> Option<u64> {
            let name = o.location.filename()?;
            let digits = name.split('.').next()?;
            (digits.len() == 20).then(|| digits.parse().ok()).flatten()
        };
        let Some(keep_from) = objects
            .iter()
            .filter(|o| o.last_modified <= cutoff)
            .filter(|o| {
                o.location
                    .filename()
                    .is_some_and(|n| n.contains(".checkpoint."))
            })
            .filter_map(version)
            .max()
        else {
            return Ok(0);
        };
        let mut deleted = 0;
        for o in &objects {
            if version(o).is_some_and(|v| v < keep_from) && o.last_modified <= cutoff {
                match self.location.store.delete(&o.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
                    Err(e) => return Err(self.location.explain(e)),
                }
            }
        }
        Ok(deleted)
    }
}

/// Commits one rewrite: removes `gone`, adds `new`, `dataChange = false`. Rebuilt on a newer
/// snapshot while every file of `gone` is still live there; false when one is not (another
/// compaction, or a complete table's replacement, came first).
fn commit_rewrite(
    engine: &Engine,
    url: &url::Url,
    gone: &HashSet<String>,
    new: &NewFile,
    checkpoint_interval: u64,
) -> Result<bool> {
    for _ in 0..super::COMMIT_ATTEMPTS {
        let snapshot = latest_snapshot(engine, url, "reading the table")?;
        let mut found = 0;
        let removes = for_each_scan_row(engine, &snapshot, |_, live| {
            let hit = gone.contains(&live.path);
            found += usize::from(hit);
            hit
        })?;
        if found != gone.len() {
            return Ok(false);
        }
        let mut txn = snapshot
            .clone()
            .update_table(UpdateTableOperation::Optimize, super::ENGINE_INFO, false)
            .build(engine.as_ref(), Box::new(FileSystemCommitter::new()))
            .map_err(|e| kernel_error("starting a compaction commit", e))?;
        for r in removes {
            txn.remove_files(r);
        }
        txn.add_files(add_files(std::slice::from_ref(new))?);
        match txn
            .commit(engine.as_ref())
            .map_err(|e| kernel_error("committing a compaction", e))?
        {
            CommitResult::Committed(c) => {
                super::checkpoint_if_due(engine, &c, checkpoint_interval);
                return Ok(true);
            }
            CommitResult::Conflicted(_) | CommitResult::Retryable(_) => {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_sink::tests::TempDir;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_process_at_a_time_holds_the_lease() {
        let dir = TempDir::new("delta-lease");
        let location = crate::store::Location::open(&dir.url(), &Default::default()).unwrap();
        let schema = std::sync::Arc::new(delta_kernel::schema::StructType::try_new([]).unwrap());
        let table = DeltaTable::new(&location, schema, Vec::new()).unwrap();
        assert!(table.take_lease("a").await.unwrap());
        assert!(!table.take_lease("b").await.unwrap(), "a holds it");
        assert!(table.take_lease("a").await.unwrap(), "its holder renews it");
        // An expired lease (its holder crashed) is taken over.
        let path = location.child("_engine/maintenance.json");
        let expired = serde_json::json!({ "owner": "a", "until_ms": 0 }).to_string();
        location
            .store
            .put(&path, PutPayload::from(expired))
            .await
            .unwrap();
        assert!(table.take_lease("b").await.unwrap());
        table.give_lease_back().await;
        assert!(table.take_lease("c").await.unwrap(), "given back");
    }

    fn live(path: &str, size: u64, dt: &str) -> Live {
        Live {
            path: path.into(),
            size,
            partition: vec![("dt".into(), Some(dt.into()))],
        }
    }

    #[test]
    fn small_files_of_one_partition_are_packed_up_to_the_target() {
        let files = vec![
            live("a/1", 10, "a"),
            live("a/2", 20, "a"),
            live("a/3", 30, "a"),
            live("a/4", 45, "a"),
            live("a/big", 60, "a"), // not small: at least half the target
            live("b/1", 10, "b"),   // alone in its partition
            live("c/1", 5, "c"),
            live("c/2", 5, "c"),
        ];
        let packed = bins(files, 100);
        let got: Vec<Vec<&str>> = packed
            .iter()
            .map(|b| b.iter().map(|f| f.path.as_str()).collect())
            .collect();
        assert_eq!(got, [vec!["a/1", "a/2", "a/3"], vec!["c/1", "c/2"]]);
    }
}
