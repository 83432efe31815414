//! Checkpoint manifests in the object store. Two kinds of chain, each written with
//! put-if-absent, so that each write is a commit point that no other process can take:
//!
//! - `<checkpoint>/partitions/<source>/<partition>/<seq>.json`, one chain per source partition:
//!   the partition's position (Kafka: next offset) and the output staged from its rows. The
//!   first entry a process writes for a partition is a *claim* (same position, no new
//!   output): it takes the next sequence number, so the previous owner's next commit fails.
//!   That is the fence.
//! - `<checkpoint>/manifests/<epoch>.json`, the finalizer's chain: the operator state objects
//!   (aggregates, windows), how far it consumed each partition chain, and the output of the
//!   nodes that merge partitions. Version 1 and 2 manifests (written before partition chains)
//!   are read there too.

use engine_api::Location;
use engine_api::{
    EngineError, Epoch, PartitionId, PendingCommit, Result, StorageConfig, TrackerState,
};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest format this engine writes. Version 1 (one source, no event time, no partition
/// keys) is still read.
pub const MANIFEST_VERSION: u32 = 3;

/// What one committed epoch consists of. Everything that belongs to one source partition is
/// keyed by it (`partitions`, and [`PendingCommit::partition`]), so that a partition's share can
/// be handed to another process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default = "v1")]
    pub version: u32,
    pub pipeline: String,
    pub epoch: Epoch,
    pub created_at: String,
    /// Each source's position after this epoch, by source node (for Kafka: the next offset per
    /// partition). A version-1 manifest's single `position` is read under the key `""`, which
    /// [`Manifest::name_v1_position`] gives to the pipeline's only source.
    #[serde(default)]
    pub positions: BTreeMap<String, serde_json::Value>,
    /// Operator state objects, by node (state that spans partitions, such as an aggregate's).
    pub state: BTreeMap<String, String>,
    /// Runtime state per source partition.
    #[serde(default)]
    pub partitions: BTreeMap<PartitionId, PartitionState>,
    /// The watermark each event-time node had sent (ms since the Unix epoch), by node.
    #[serde(default)]
    pub watermarks: BTreeMap<String, i64>,
    /// Staged sink output that this epoch makes visible.
    pub pending: Vec<PendingCommit>,
    /// The process that wrote it, when the finalizer's role can move between processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// A claim takes the finalizer's role over: the previous manifest's state and positions, no
    /// output.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claim: bool,
}

/// What the runtime keeps for one source partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The largest event time seen in this partition, by the node that declares event time.
    #[serde(default)]
    pub max_event_time: BTreeMap<String, i64>,
}

/// A manifest as stored: either version, before [`Manifest::from_stored`] upgrades it.
#[derive(Deserialize)]
struct StoredManifest {
    #[serde(flatten)]
    manifest: Manifest,
    /// Version 1: the one source's position.
    #[serde(default)]
    position: Option<serde_json::Value>,
}

fn v1() -> u32 {
    1
}

impl Manifest {
    pub fn new(pipeline: &str, epoch: Epoch) -> Self {
        Manifest {
            version: MANIFEST_VERSION,
            pipeline: pipeline.to_string(),
            epoch,
            created_at: chrono::Utc::now().to_rfc3339(),
            positions: BTreeMap::new(),
            state: BTreeMap::new(),
            partitions: BTreeMap::new(),
            watermarks: BTreeMap::new(),
            pending: Vec::new(),
            owner: None,
            claim: false,
        }
    }

    /// Parses a stored manifest of either version.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        let stored: StoredManifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let mut m = stored.manifest;
        if m.version > MANIFEST_VERSION {
            return Err(format!(
                "manifest version {} is newer than this engine's {MANIFEST_VERSION}",
                m.version
            ));
        }
        if let Some(p) = stored.position {
            m.positions.entry(String::new()).or_insert(p);
        }
        m.version = MANIFEST_VERSION;
        Ok(m)
    }

    /// Gives a version-1 manifest's single position (under `""`) to the pipeline's source when
    /// it has exactly one; with several it stays unnamed, so no source resumes from it.
    pub fn name_v1_position(&mut self, sources: &[&str]) {
        if let [only] = sources
            && let Some(p) = self.positions.remove("")
        {
            self.positions.entry(only.to_string()).or_insert(p);
        }
    }

    /// The event-time state of `node`, rebuilt from the per-partition entries.
    pub fn tracker_state(&self, node: &str) -> Option<TrackerState> {
        let watermark = self.watermarks.get(node).copied();
        let max_event_time: BTreeMap<PartitionId, i64> = self
            .partitions
            .iter()
            .filter_map(|(p, s)| s.max_event_time.get(node).map(|m| (p.clone(), *m)))
            .collect();
        (watermark.is_some() || !max_event_time.is_empty()).then_some(TrackerState {
            max_event_time,
            watermark,
        })
    }

    /// Records `node`'s event-time state, keyed by partition.
    pub fn set_tracker_state(&mut self, node: &str, state: &TrackerState) {
        for (p, m) in &state.max_event_time {
            self.partitions
                .entry(p.clone())
                .or_default()
                .max_event_time
                .insert(node.to_string(), *m);
        }
        if let Some(w) = state.watermark {
            self.watermarks.insert(node.to_string(), w);
        }
    }
}

/// One entry of a partition's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionManifest {
    pub version: u32,
    pub pipeline: String,
    pub source: String,
    pub partition: PartitionId,
    pub seq: u64,
    /// The process that wrote it: a random id per run.
    pub owner: String,
    /// A claim takes the partition over for `owner`: same position, no new output.
    #[serde(default)]
    pub claim: bool,
    /// The writer's epoch, for diagnostics (epochs count per run).
    pub epoch: Epoch,
    pub created_at: String,
    /// Where reading resumes; `None` before anything was read.
    pub position: Option<serde_json::Value>,
    /// The output staged from this partition's rows that this entry makes visible.
    pub pending: Vec<PendingCommit>,
    /// A claim's copy of the output the entry before it made visible (and, through claims,
    /// the last commit's): finishing it may not have completed when the previous owner
    /// stopped, so whoever comes next finishes it again and keeps it from clean-up. Nothing
    /// reads it as new rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<PendingCommit>,
    /// The owner says the partition is idle: its event time has not advanced for the idle
    /// timeout while this process owned it. The finalizer's watermark stops waiting for it
    /// until an entry says otherwise (a claim, or new rows).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idle: bool,
}

/// A partition's folder name in a chain path: `/` (Kafka's `topic/partition`) becomes `@`,
/// which Kafka topic names cannot hold.
fn partition_segment(p: &PartitionId) -> String {
    p.as_str().replace('/', "@")
}

fn partition_of_segment(seg: &str) -> PartitionId {
    PartitionId::new(seg.replace('@', "/"))
}

pub struct CheckpointStore {
    location: Location,
    pipeline: String,
}

fn manifest_name(epoch: Epoch) -> String {
    format!("manifests/{epoch:020}.json")
}

impl CheckpointStore {
    pub fn open(url: &str, storage: &StorageConfig, pipeline: &str) -> Result<Self> {
        let location = Location::open(url, storage)
            .map_err(|e| e.context("checkpoint location"))?
            .for_checkpoints();
        Ok(CheckpointStore {
            location,
            pipeline: pipeline.to_string(),
        })
    }

    /// The path of epoch `epoch`'s manifest.
    pub fn manifest_path(&self, epoch: Epoch) -> String {
        self.location.child(&manifest_name(epoch)).to_string()
    }

    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    pub async fn check(&self) -> Result<()> {
        self.location
            .check()
            .await
            .map_err(|e| e.context("checkpoint location"))
    }

    /// Every object under `prefix`.
    async fn list(&self, prefix: &Path) -> Result<Vec<object_store::ObjectMeta>> {
        self.location
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| self.location.explain(e))
    }

    /// The newest committed manifest, if any.
    pub async fn latest(&self) -> Result<Option<Manifest>> {
        let prefix = self.location.child("manifests");
        let metas = self.list(&prefix).await?;
        let Some(newest) = metas
            .iter()
            .filter(|m| m.location.as_ref().ends_with(".json"))
            .max_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()))
        else {
            return Ok(None);
        };
        let bytes = self.read(newest.location.as_ref()).await?;
        let m = Manifest::parse(&bytes).map_err(|e| {
            EngineError::runtime(format!("corrupt manifest {}: {e}", newest.location))
        })?;
        if m.pipeline != self.pipeline {
            return Err(self.foreign(&m.pipeline));
        }
        Ok(Some(m))
    }

    pub async fn read(&self, path: &str) -> Result<bytes::Bytes> {
        let r = self
            .location
            .store
            .get(&Path::from(path))
            .await
            .map_err(|e| self.location.explain(e))?;
        r.bytes().await.map_err(|e| self.location.explain(e))
    }

    pub async fn write_state(&self, epoch: Epoch, node: &str, bytes: Vec<u8>) -> Result<String> {
        self.put(&format!("state/{epoch:020}/{node}.bin"), bytes.into())
            .await
    }

    fn chain(&self, source: &str, p: &PartitionId) -> Path {
        self.location
            .child(&format!("partitions/{source}/{}", partition_segment(p)))
    }

    /// The partitions of `source` that have a chain.
    pub async fn chains(&self, source: &str) -> Result<Vec<PartitionId>> {
        let prefix = self.location.child(&format!("partitions/{source}"));
        let listed = self
            .location
            .store
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| self.location.explain(e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(partition_of_segment))
            .collect())
    }

    /// The sequence numbers in partition `p`'s chain, ascending.
    pub async fn partition_seqs(&self, source: &str, p: &PartitionId) -> Result<Vec<u64>> {
        let prefix = self.chain(source, p);
        let metas = self.list(&prefix).await?;
        let mut seqs: Vec<u64> = metas
            .iter()
            .filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Whether partition `p`'s chain has an entry newer than `seq`.
    pub async fn partition_moved_past(
        &self,
        source: &str,
        p: &PartitionId,
        seq: u64,
    ) -> Result<bool> {
        Ok(self
            .partition_seqs(source, p)
            .await?
            .last()
            .is_some_and(|newest| *newest > seq))
    }

    pub async fn partition_manifest(
        &self,
        source: &str,
        p: &PartitionId,
        seq: u64,
    ) -> Result<PartitionManifest> {
        let path = self.chain(source, p).join(format!("{seq:020}.json"));
        let bytes = self.read(path.as_ref()).await?;
        let m: PartitionManifest = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::runtime(format!("corrupt manifest {path}: {e}")))?;
        if m.pipeline != self.pipeline {
            return Err(self.foreign(&m.pipeline));
        }
        Ok(m)
    }

    /// The newest entry of partition `p`'s chain.
    pub async fn partition_latest(
        &self,
        source: &str,
        p: &PartitionId,
    ) -> Result<Option<PartitionManifest>> {
        match self.partition_seqs(source, p).await?.last() {
            Some(seq) => Ok(Some(self.partition_manifest(source, p, *seq).await?)),
            None => Ok(None),
        }
    }

    /// Writes `m` if its sequence number is free in its chain; `false` when another process
    /// took it first (the partition was claimed away: this process is fenced).
    pub async fn commit_partition(&self, m: &PartitionManifest) -> Result<bool> {
        let path = self
            .chain(&m.source, &m.partition)
            .join(format!("{:020}.json", m.seq));
        self.put_if_absent(&path, serde_json::to_vec_pretty(m).expect("serialisable"))
            .await
    }

    /// Writes `body` at `path` unless something is there; `false` when something was.
    async fn put_if_absent(&self, path: &Path, body: Vec<u8>) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .location
            .store
            .put_opts(path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.location.explain(e)),
        }
    }

    /// Removes entries of partition `p`'s chain below `seq` (best effort: a chain's newest
    /// entries are all that restarts and claims read).
    pub async fn prune_partition(&self, source: &str, p: &PartitionId, below: u64) {
        let Ok(seqs) = self.partition_seqs(source, p).await else {
            return;
        };
        for seq in seqs.into_iter().filter(|s| *s < below) {
            self.remove_partition_entry(source, p, seq).await;
        }
    }

    /// Removes entry `seq` of partition `p`'s chain (best effort).
    pub async fn remove_partition_entry(&self, source: &str, p: &PartitionId, seq: u64) {
        let path = self.chain(source, p).join(format!("{seq:020}.json"));
        let _ = self.location.store.delete(&path).await;
    }

    /// Writes an object under the checkpoint location (the exchange between the partitioned
    /// part of a pipeline and its finalizer).
    pub async fn put(&self, name: &str, bytes: bytes::Bytes) -> Result<String> {
        let path = self.location.child(name);
        self.location
            .store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.location.explain(e))?;
        Ok(path.to_string())
    }

    pub async fn delete(&self, path: &str) {
        let _ = self.location.store.delete(&Path::from(path)).await;
    }

    fn foreign(&self, pipeline: &str) -> EngineError {
        EngineError::config(format!(
            "the checkpoint at {} belongs to pipeline `{pipeline}`, not `{}`; give each pipeline its own checkpoint location",
            self.location.url, self.pipeline
        ))
    }

    /// Refuses to start a streaming instance while a live batch run holds the pipeline's lock;
    /// streaming instances share the topic through a consumer group and take no lock.
    pub async fn check_unlocked(&self) -> Result<()> {
        let path = self.location.child("_lock.json");
        let held: Option<LockBody> = match self.location.store.get(&path).await {
            Ok(r) => {
                serde_json::from_slice(&r.bytes().await.map_err(|e| self.location.explain(e))?).ok()
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.location.explain(e)),
        };
        match held {
            Some(h) if h.is_live() => Err(EngineError::config(format!(
                "a batch run of pipeline `{}` holds the checkpoint at {} (pid {} on {}, heartbeat {} s ago); wait for it to finish, or stop it",
                self.pipeline,
                self.location.url,
                h.pid,
                h.host,
                (now_ms() - h.heartbeat_ms) / 1000
            ))),
            _ => Ok(()),
        }
    }

    /// Takes the pipeline's lock, `<checkpoint>/_lock.json`, so that a second engine on the same
    /// pipeline and checkpoint is refused before it touches anything. A lock is taken over when
    /// its owner is a dead process on this host, or when its heartbeat is older than
    /// `LOCK_STALE`. The coordinator renews the heartbeat at each commit and every few seconds.
    pub async fn lock(&self) -> Result<Lock> {
        let path = self.location.child("_lock.json");
        let me = LockBody::mine();
        let body = || PutPayload::from(serde_json::to_vec(&me).expect("serialisable"));
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.location.store.put_opts(&path, body(), create).await {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => {
                let held: Option<LockBody> = match self.location.store.get(&path).await {
                    Ok(r) => serde_json::from_slice(
                        &r.bytes().await.map_err(|e| self.location.explain(e))?,
                    )
                    .ok(),
                    Err(_) => None,
                };
                if let Some(h) = held {
                    let age = now_ms() - h.heartbeat_ms;
                    if h.is_live() && h.owner != me.owner {
                        return Err(EngineError::config(format!(
                            "pipeline `{}` is already running with the checkpoint at {} (pid {} on {}, heartbeat {} s ago); stop it first, or give this run its own checkpoint location; a crashed engine's lock expires {} s after its last heartbeat",
                            self.pipeline,
                            self.location.url,
                            h.pid,
                            h.host,
                            age / 1000,
                            LOCK_STALE.as_secs()
                        )));
                    }
                    tracing::info!(previous_pid = h.pid, previous_host = %h.host, "taking over the lock of an engine that is gone");
                }
                self.location
                    .store
                    .put(&path, body())
                    .await
                    .map_err(|e| self.location.explain(e))?;
            }
            Err(e) => return Err(self.location.explain(e)),
        }
        Ok(Lock {
            location: self.location.clone(),
            path,
            body: me,
        })
    }

    /// Writes the manifest if no manifest exists for its epoch. This is the commit point.
    pub async fn commit(&self, m: &Manifest) -> Result<()> {
        if self.put_manifest(m).await? {
            return Ok(());
        }
        Err(EngineError::config(format!(
            "epoch {} of pipeline `{}` was already committed at {}: another engine is running this pipeline with the same checkpoint; stop it, or give this one its own checkpoint location",
            m.epoch, self.pipeline, self.location.url
        )))
    }

    /// Writes `m` with put-if-absent; `false` when its epoch exists.
    async fn put_manifest(&self, m: &Manifest) -> Result<bool> {
        let path = self.location.child(&manifest_name(m.epoch));
        self.put_if_absent(&path, serde_json::to_vec_pretty(m).expect("serialisable"))
            .await
    }

    /// Takes the finalizer's role for `owner`: writes the next manifest as a claim (the last
    /// one's state, positions and output, to finish again), which fences the previous finalizer, whose next
    /// commit finds its epoch taken. Returns the manifest before the claim, whose output the new
    /// finalizer finishes, and the claim.
    pub async fn claim_finalizer(&self, owner: &str) -> Result<(Option<Manifest>, Manifest)> {
        for _ in 0..5 {
            let latest = self.latest().await?;
            let mut claim = match &latest {
                // The last manifest's output stays in the claim: if this process stops before
                // finishing it, the next holder finishes it, and clean-up keeps it.
                Some(m) => Manifest {
                    epoch: m.epoch + 1,
                    created_at: chrono::Utc::now().to_rfc3339(),
                    ..m.clone()
                },
                None => Manifest::new(&self.pipeline, 1),
            };
            claim.version = MANIFEST_VERSION;
            claim.owner = Some(owner.to_string());
            claim.claim = true;
            if self.put_manifest(&claim).await? {
                return Ok((latest, claim));
            }
        }
        Err(EngineError::runtime(format!(
            "could not take the finalizer's role of pipeline `{}`: its manifests changed 5 times in a row",
            self.pipeline
        )))
    }

    /// Checks that the store refuses a conditional write that must fail, which every fence of
    /// a shared run relies on: a second put-if-absent of one key, and (on S3) a replace whose
    /// ETag does not match. Uses `<checkpoint>/_probe/<owner>`, removed afterwards.
    pub async fn confirm_conditional_writes(&self, owner: &str) -> Result<()> {
        let path = self.location.child(&format!("_probe/{owner}"));
        let first = self.put_if_absent(&path, b"1".to_vec()).await?;
        let second = self.put_if_absent(&path, b"2".to_vec()).await?;
        let mismatch = match &self.location.s3 {
            Some(_) => {
                let opts = PutOptions {
                    mode: PutMode::Update(object_store::UpdateVersion {
                        e_tag: Some("\"not-the-etag\"".into()),
                        version: None,
                    }),
                    ..Default::default()
                };
                match self
                    .location
                    .store
                    .put_opts(&path, PutPayload::from_static(b"3"), opts)
                    .await
                {
                    Err(object_store::Error::Precondition { .. }) => true,
                    Err(object_store::Error::NotImplemented { .. }) => false,
                    Err(e) => return Err(self.location.explain(e)),
                    Ok(_) => false,
                }
            }
            None => true,
        };
        let _ = self.location.store.delete(&path).await;
        if first && !second && mismatch {
            return Ok(());
        }
        Err(EngineError::config(format!(
            "the object store of the checkpoint at {} did not refuse a conditional write that had to fail (a second put-if-absent, or a replace with the wrong ETag); instances that share a pipeline are fenced by such writes, so they cannot run on it: use an S3 server with atomic conditional writes (the README's Scale-out section lists what was tested)",
            self.location.url
        )))
    }

    /// Registers a streaming instance, `<checkpoint>/_members/<owner>.json`, heartbeated like
    /// the lock, so that a batch run can tell whether streaming instances run.
    pub async fn join(&self, owner: &str) -> Result<Lock> {
        let path = self.location.child(&format!("_members/{owner}.json"));
        let body = LockBody {
            owner: owner.to_string(),
            ..LockBody::mine()
        };
        let payload = PutPayload::from(serde_json::to_vec(&body).expect("serialisable"));
        self.location
            .store
            .put(&path, payload)
            .await
            .map_err(|e| self.location.explain(e))?;
        Ok(Lock {
            location: self.location.clone(),
            path,
            body,
        })
    }

    /// Refuses a batch run while live streaming instances are registered.
    pub async fn check_no_members(&self) -> Result<()> {
        let prefix = self.location.child("_members");
        let metas = self.list(&prefix).await?;
        let mut live = Vec::new();
        for m in metas {
            let Ok(bytes) = self.read(m.location.as_ref()).await else {
                continue;
            };
            if let Ok(b) = serde_json::from_slice::<LockBody>(&bytes)
                && b.is_live()
            {
                live.push(format!("pid {} on {}", b.pid, b.host));
            }
        }
        if live.is_empty() {
            return Ok(());
        }
        Err(EngineError::config(format!(
            "pipeline `{}` is running in streaming mode with the checkpoint at {} ({}); a batch run reads every partition alone, so stop the streaming instances first",
            self.pipeline,
            self.location.url,
            live.join(", ")
        )))
    }
}

/// How long after its last heartbeat a lock held by another host is considered abandoned.
pub const LOCK_STALE: std::time::Duration = std::time::Duration::from_secs(30);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockBody {
    owner: String,
    host: String,
    pid: u32,
    heartbeat_ms: i64,
}

impl LockBody {
    /// Whether the engine that wrote it still runs: its heartbeat is recent, and, on this host,
    /// its process exists.
    fn is_live(&self) -> bool {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let dead_here =
            self.host == host && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists();
        !dead_here && now_ms() - self.heartbeat_ms < LOCK_STALE.as_millis() as i64
    }

    fn mine() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        LockBody {
            owner: uuid::Uuid::new_v4().to_string(),
            host,
            pid: std::process::id(),
            heartbeat_ms: now_ms(),
        }
    }
}

/// The pipeline's lock, held while it runs.
pub struct Lock {
    location: Location,
    path: Path,
    body: LockBody,
}

impl Lock {
    /// Renews the heartbeat.
    pub async fn heartbeat(&mut self) -> Result<()> {
        self.body.heartbeat_ms = now_ms();
        let payload = PutPayload::from(serde_json::to_vec(&self.body).expect("serialisable"));
        self.location
            .store
            .put(&self.path, payload)
            .await
            .map_err(|e| self.location.explain(e))?;
        Ok(())
    }

    /// Gives the lock up, unless another engine has taken it over meanwhile.
    pub async fn release(self) {
        let held: Option<LockBody> = match self.location.store.get(&self.path).await {
            Ok(r) => r
                .bytes()
                .await
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok()),
            Err(_) => None,
        };
        if held.is_some_and(|h| h.owner == self.body.owner) {
            let _ = self.location.store.delete(&self.path).await;
        }
    }
}
