//! Checkpoint manifests in the object store.
//!
//! `<checkpoint>/manifests/<epoch>.json` holds, per committed epoch, the source position (Kafka
//! offsets), the operator state objects and the sinks' staged output. It is written with
//! put-if-absent: that write is the commit point, and a second engine that tries to commit the
//! same epoch of the same pipeline is refused.

use engine_api::Location;
use engine_api::{EngineError, Epoch, PendingCommit, Result, StorageConfig};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub pipeline: String,
    pub epoch: Epoch,
    pub created_at: String,
    /// The source position after this epoch (for Kafka: the next offset per partition).
    pub position: serde_json::Value,
    /// Operator state objects, by node.
    pub state: BTreeMap<String, String>,
    /// Staged sink output that this epoch makes visible.
    pub pending: Vec<PendingCommit>,
}

impl Manifest {
    pub fn new(
        pipeline: &str,
        epoch: Epoch,
        position: serde_json::Value,
        state: BTreeMap<String, String>,
        pending: Vec<PendingCommit>,
    ) -> Self {
        Manifest {
            version: 1,
            pipeline: pipeline.to_string(),
            epoch,
            created_at: chrono::Utc::now().to_rfc3339(),
            position,
            state,
            pending,
        }
    }
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

    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    pub async fn check(&self) -> Result<()> {
        self.location
            .check()
            .await
            .map_err(|e| e.context("checkpoint location"))
    }

    /// The newest committed manifest, if any.
    pub async fn latest(&self) -> Result<Option<Manifest>> {
        let prefix = self.location.child("manifests");
        let metas: Vec<_> = self
            .location
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.location.explain(e))?;
        let Some(newest) = metas
            .iter()
            .filter(|m| m.location.as_ref().ends_with(".json"))
            .max_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()))
        else {
            return Ok(None);
        };
        let bytes = self.read(newest.location.as_ref()).await?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            EngineError::runtime(format!("corrupt manifest {}: {e}", newest.location))
        })?;
        if m.pipeline != self.pipeline {
            return Err(EngineError::config(format!(
                "the checkpoint at {} belongs to pipeline `{}`, not `{}`; give each pipeline its own checkpoint location",
                self.location.url, m.pipeline, self.pipeline
            )));
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
        let path = self
            .location
            .child(&format!("state/{epoch:020}/{node}.bin"));
        self.location
            .store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.location.explain(e))?;
        Ok(path.to_string())
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
                    let dead_here = h.host == me.host
                        && !std::path::Path::new(&format!("/proc/{}", h.pid)).exists();
                    if !dead_here && age < LOCK_STALE.as_millis() as i64 && h.owner != me.owner {
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
        let path = self.location.child(&manifest_name(m.epoch));
        let body = serde_json::to_vec_pretty(m).expect("serialisable");
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .location
            .store
            .put_opts(&path, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(EngineError::config(format!(
                "epoch {} of pipeline `{}` was already committed at {}: another engine is running this pipeline with the same checkpoint; stop it, or give this one its own checkpoint location",
                m.epoch, self.pipeline, self.location.url
            ))),
            Err(e) => Err(self.location.explain(e)),
        }
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

    /// Gives the lock up (a clean stop).
    pub async fn release(self) {
        let _ = self.location.store.delete(&self.path).await;
    }
}
