//! Object store access for sinks and checkpoints: `s3://bucket/prefix` (AWS, MinIO, SeaweedFS
//! and other S3-compatible servers, path-style, plain HTTP allowed) and `file:///path`.

use crate::{EngineError, Result, StorageConfig, local_stack_hint};
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
        // Messages never repeat the URL: a secret pasted into the wrong key must not show.
        let parsed = url::Url::parse(url).map_err(|_| {
            EngineError::config("not a URL; use s3://bucket/prefix or file:///absolute/path")
        })?;
        match parsed.scheme() {
            "s3" | "s3a" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| {
                        EngineError::config("the URL names no bucket; use s3://bucket/prefix")
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
                let s3 = Arc::new(b.build().map_err(|_| {
                    EngineError::config(
                        "cannot open the S3 location: check the URL and the [storage] settings",
                    )
                })?);
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
                // Rooted at `/` with the folder as prefix: nothing is created until something
                // is written (the local store creates parent folders on write), so `engine
                // validate` leaves the disk alone.
                if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(EngineError::config(
                        "a file URL needs an absolute path: file:///absolute/path",
                    ));
                }
                Ok(Location {
                    url: url.to_string(),
                    store: Arc::new(LocalFileSystem::new()),
                    s3: None,
                    prefix: Path::from(parsed.path().trim_matches('/')),
                    bucket: None,
                    endpoint: "local filesystem".into(),
                })
            }
            _ => Err(EngineError::config(
                "unsupported URL scheme; use s3://bucket/prefix or file:///absolute/path",
            )),
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
                "object store at {} did not answer within 25 s for `{}`; check the [storage] endpoint (S3_ENDPOINT in the shipped pipelines) and that the server is running{}",
                self.endpoint,
                self.url,
                local_stack_hint(&self.endpoint, "scripts/stack up starts the local one")
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
                "bucket `{bucket}` does not exist at {}; create it or fix the path `{}`{}",
                self.endpoint,
                self.url,
                local_stack_hint(&self.endpoint, "scripts/stack up creates bronze and gold")
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
                "cannot reach the object store at {} for `{}`; check the [storage] endpoint (S3_ENDPOINT in the shipped pipelines) and that the server is running{}",
                self.endpoint,
                self.url,
                local_stack_hint(&self.endpoint, "scripts/stack up starts the local one")
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
        assert!(e.to_string().contains("unsupported URL scheme"));
        let e = Location::open("not a url", &StorageConfig::default()).unwrap_err();
        assert!(e.to_string().starts_with("not a URL"));
        for (url, secret) in [("hunter2:x", "hunter2"), ("/tmp/hunter2", "hunter2")] {
            let e = Location::open(url, &StorageConfig::default()).unwrap_err();
            assert!(!e.to_string().contains(secret), "{e}");
        }
    }

    #[test]
    fn opening_a_file_location_touches_nothing() {
        let dir = std::env::temp_dir().join(format!("engine-store-{}", std::process::id()));
        let url = format!("file://{}/a/b", dir.display());
        let loc = Location::open(&url, &StorageConfig::default()).unwrap();
        assert!(!dir.exists(), "open created {}", dir.display());
        assert_eq!(
            loc.child("x.parquet").as_ref(),
            format!(
                "{}/a/b/x.parquet",
                dir.display().to_string().trim_start_matches('/')
            )
        );
    }
}
