//! Failpoints for the fault tests: `ENGINE_FAILPOINTS=after_manifest=abort@3` makes the process
//! abort (as a `kill -9` would) the 3rd time it reaches `after_manifest`. Without the variable
//! a failpoint costs one environment lookup, done once.
//!
//! Points:
//! - the finalizer's (or a single process's) commit: `before_manifest` (sinks have staged the
//!   epoch, nothing committed), `after_manifest` (the manifest is written, staged files not yet
//!   visible), `mid_commit` (some sinks committed; also hit by per-partition commits);
//! - per partition: `before_claim`, `after_claim` (the claim entry is written, the carried output
//!   not yet finished nor the staging cleaned), `before_partition_commit`,
//!   `after_partition_commit` (the chain entry is written, its files not yet visible),
//!   `after_fenced` (a commit found the partition claimed by another instance), `in_release`
//!   (partitions revoked by the group, or lost to a fence);
//! - `after_finalizer_claim`: the finalizer's role was just taken;
//! - in the Parquet sink on S3: `after_upload_created` (a multipart upload exists, its id
//!   recorded nowhere yet).
//!
//! It lives in the API so that connectors can have failpoints too.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

fn specs() -> &'static HashMap<String, u64> {
    static SPECS: OnceLock<HashMap<String, u64>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let mut m = HashMap::new();
        if let Ok(v) = std::env::var("ENGINE_FAILPOINTS") {
            for spec in v.split(',').filter(|s| !s.is_empty()) {
                let (name, action) = spec.split_once('=').unwrap_or((spec, "abort"));
                let nth = action
                    .strip_prefix("abort@")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                m.insert(name.trim().to_string(), nth);
            }
        }
        m
    })
}

/// Aborts the process if the failpoint `name` is armed and this is its n-th hit.
pub fn hit(name: &str) {
    let Some(nth) = specs().get(name) else { return };
    static HITS: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    let count = hits
        .get_or_insert_with(HashMap::new)
        .entry(name.to_string())
        .or_insert(0);
    *count += 1;
    if *count == *nth {
        eprintln!("failpoint `{name}` reached (hit {count}): aborting");
        std::process::abort();
    }
}
