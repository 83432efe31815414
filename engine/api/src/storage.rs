use crate::Secret;
use serde::Deserialize;

/// How to reach the object store: the pipeline's `[storage]` table. Sinks and the checkpoint
/// store use it for every `s3://bucket/prefix` URL; `file://` URLs need none of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// S3 endpoint, for MinIO, SeaweedFS and other S3-compatible servers. Empty means AWS.
    #[serde(default)]
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: Secret,
    /// Path-style addressing (`http://host/bucket/key`), what S3-compatible servers expect.
    #[serde(default = "yes")]
    pub path_style: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn yes() -> bool {
    true
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            endpoint: String::new(),
            region: default_region(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            path_style: true,
        }
    }
}
