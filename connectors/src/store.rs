//! Object store access for sinks and checkpoints: `s3://bucket/prefix` (AWS, MinIO, SeaweedFS
//! and other S3-compatible servers, path-style, plain HTTP allowed) and `file:///path`.

use engine_api::{EngineError, Result, StorageConfig};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use std::sync::Arc;
use std::time::Duration;

/// An object store opened at a URL's prefix.
#[derive(Clone)]
pub struct Location {
    /// The URL as the user wrote it, for messages.
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    /// Set for S3, whose multipart uploads stage files until commit.
    pub s3: Option<Arc<AmazonS3>>,
    /// The prefix inside the store (no leading or trailing slash).
    pub prefix: Path,
    /// The bucket, for S3.
    pub bucket: Option<String>,
    pub endpoint: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl Location {
    /// Opens `url` with the pipeline's storage settings. No I/O happens here.
    pub fn open(url: &str, storage: &StorageConfig) -> Result<Location> {
        let parsed = url::Url::parse(url).map_err(|e| {
            EngineError::config(format!(
                "bad URL `{url}`: {e}; use s3://bucket/prefix or file:///absolute/path"
            ))
        })?;
        match parsed.scheme() {
            "s3" | "s3a" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| {
                        EngineError::config(format!(
                            "`{url}` names no bucket; use s3://bucket/prefix"
                        ))
                    })?
                    .to_string();
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&bucket)
                    .with_region(&storage.region)
                    .with_virtual_hosted_style_request(!storage.path_style)
                    .with_retry(RetryConfig {
                        backoff: BackoffConfig {
                            init_backoff: Duration::from_millis(100),
                            max_backoff: Duration::from_secs(5),
                            base: 2.0,
                        },
                        max_retries: 8,
                        retry_timeout: Duration::from_secs(20),
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(Duration::from_secs(5))
                            .with_timeout(Duration::from_secs(60))
                            .with_allow_http(storage.endpoint.starts_with("http://")),
                    );
                if !storage.endpoint.is_empty() {
                    b = b.with_endpoint(&storage.endpoint);
                }
                if !storage.access_key_id.is_empty() {
                    b = b
                        .with_access_key_id(&storage.access_key_id)
                        .with_secret_access_key(storage.secret_access_key.expose());
                }
                let s3 = Arc::new(
                    b.build()
                        .map_err(|e| EngineError::config(format!("cannot open `{url}`: {e}")))?,
                );
                Ok(Location {
                    url: url.to_string(),
                    store: s3.clone(),
                    s3: Some(s3),
                    prefix: Path::from(parsed.path().trim_matches('/')),
                    bucket: Some(bucket),
                    endpoint: if storage.endpoint.is_empty() {
                        "AWS S3".into()
                    } else {
                        storage.endpoint.clone()
                    },
                })
            }
            "file" => {
                let dir = parsed.path();
                std::fs::create_dir_all(dir).map_err(|e| {
                    EngineError::config(format!("cannot create directory `{dir}`: {e}"))
                })?;
                let fs = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| EngineError::config(format!("cannot open `{url}`: {e}")))?;
                Ok(Location {
                    url: url.to_string(),
                    store: Arc::new(fs),
                    s3: None,
                    prefix: Path::default(),
                    bucket: None,
                    endpoint: "local filesystem".into(),
                })
            }
            other => Err(EngineError::config(format!(
                "unsupported URL scheme `{other}` in `{url}`; use s3://bucket/prefix or file:///absolute/path"
            ))),
        }
    }

    /// The path of `name` under this location's prefix.
    pub fn child(&self, name: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in name.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Checks that the store answers and accepts our credentials, with a clear error if not.
    pub async fn check(&self) -> Result<()> {
        let probe = self.child("_engine_probe_does_not_exist");
        match tokio::time::timeout(Duration::from_secs(25), self.store.head(&probe)).await {
            Err(_) => Err(EngineError::unavailable(format!(
                "object store at {} did not answer within 25 s for `{}`; check S3_ENDPOINT and that the server is running (scripts/stack up)",
                self.endpoint, self.url
            ))),
            Ok(Ok(_)) | Ok(Err(object_store::Error::NotFound { .. })) => {
                // A missing object is fine, but a missing bucket also reads as NotFound on some
                // servers: list the prefix to tell them apart.
                self.check_bucket().await
            }
            Ok(Err(e)) => Err(self.explain(e)),
        }
    }

    async fn check_bucket(&self) -> Result<()> {
        match self.store.list_with_delimiter(Some(&self.prefix)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// Turns an object store error into one line saying what is wrong and what to do.
    pub fn explain(&self, e: object_store::Error) -> EngineError {
        let text = e.to_string();
        let bucket = self.bucket.as_deref().unwrap_or("?");
        if text.contains("NoSuchBucket") || text.contains("bucket does not exist") {
            EngineError::config(format!(
                "bucket `{bucket}` does not exist at {}; create it (scripts/stack up creates bronze and gold) or fix the path `{}`",
                self.endpoint, self.url
            ))
        } else if text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
            || text.contains("403")
        {
            EngineError::unavailable(format!(
                "object store at {} rejected the credentials for `{}`; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                self.endpoint, self.url
            ))
        } else if text.contains("onnect")
            || text.contains("timed out")
            || text.contains("error sending request")
        {
            EngineError::unavailable(format!(
                "cannot reach the object store at {} for `{}`; check S3_ENDPOINT and that the server is running (scripts/stack up)",
                self.endpoint, self.url
            ))
        } else {
            EngineError::runtime(format!(
                "object store error on `{}`: {}",
                self.url,
                first_line(&text)
            ))
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_split_into_bucket_and_prefix() {
        let loc =
            Location::open("s3://bronze/kafka/commandes/", &StorageConfig::default()).unwrap();
        assert_eq!(loc.bucket.as_deref(), Some("bronze"));
        assert_eq!(loc.prefix.as_ref(), "kafka/commandes");
        assert_eq!(
            loc.child("part-1.parquet").as_ref(),
            "kafka/commandes/part-1.parquet"
        );
    }

    #[test]
    fn bad_urls_are_config_errors() {
        let e = Location::open("gs://x/y", &StorageConfig::default()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("unsupported URL scheme `gs`"));
        let e = Location::open("not a url", &StorageConfig::default()).unwrap_err();
        assert!(e.to_string().contains("bad URL"));
    }
}
