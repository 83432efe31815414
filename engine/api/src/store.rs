//! Object store access for sinks and checkpoints: `s3://bucket/prefix` (AWS, MinIO, SeaweedFS
//! and other S3-compatible servers, path-style, plain HTTP allowed) and `file:///path`.

use crate::{EngineError, Reason, Result, Service, StorageConfig};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::client::{
    HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpRequestBody, HttpResponse,
    ReqwestConnector,
};
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

/// The in-memory stores `memory://NAME` URLs open, by name. Only a store created with
/// [`memory_location`] can be opened (by `engine test`, for its checkpoints): a pipeline file
/// that names `memory://` gets the usual "unsupported URL scheme" error, so no real pipeline
/// can keep its checkpoints where a restart loses them.
static MEMORY_STORES: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, Arc<object_store::memory::InMemory>>>,
> = std::sync::LazyLock::new(Default::default);

fn memory_store(name: &str) -> Option<Arc<dyn ObjectStore>> {
    let stores = MEMORY_STORES.lock().unwrap_or_else(|e| e.into_inner());
    stores.get(name).map(|s| s.clone() as Arc<dyn ObjectStore>)
}

/// Creates an empty in-memory store and returns its URL, `memory://<unique name>`, which
/// [`Location::open`] then accepts. It lives until [`drop_memory_location`].
pub fn memory_location() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("m{}-{n}", std::process::id());
    MEMORY_STORES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            name.clone(),
            Arc::new(object_store::memory::InMemory::new()),
        );
    format!("memory://{name}")
}

/// Frees the store behind a URL [`memory_location`] gave.
pub fn drop_memory_location(url: &str) {
    if let Ok(u) = url::Url::parse(url) {
        MEMORY_STORES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(u.host_str().unwrap_or_default());
    }
}

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
    /// What the location serves, for the kind of its errors: a sink's object store unless
    /// [`Location::for_checkpoints`] says otherwise.
    pub service: Service,
    /// For S3, the HTTP client settings, for the bucket check.
    client_options: Option<ClientOptions>,
    /// For S3, the region requests are signed for.
    region: String,
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
                let client_options = ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(60))
                    .with_allow_http(storage.endpoint.starts_with("http://"));
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
                    .with_client_options(client_options.clone());
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
                    service: Service::ObjectStore,
                    client_options: Some(client_options),
                    region: storage.region.clone(),
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
                    service: Service::ObjectStore,
                    client_options: None,
                    region: String::new(),
                })
            }
            "memory" if memory_store(parsed.host_str().unwrap_or_default()).is_some() => {
                let name = parsed.host_str().unwrap_or_default();
                Ok(Location {
                    url: url.to_string(),
                    store: memory_store(name).expect("checked by the guard"),
                    s3: None,
                    prefix: Path::from(parsed.path().trim_matches('/')),
                    bucket: None,
                    endpoint: "process memory".into(),
                    service: Service::ObjectStore,
                    client_options: None,
                    region: String::new(),
                })
            }
            _ => Err(EngineError::config(
                "unsupported URL scheme; use s3://bucket/prefix or file:///absolute/path",
            )),
        }
    }

    /// The same location, holding the pipeline's checkpoints: its errors are about the
    /// checkpoint store.
    pub fn for_checkpoints(mut self) -> Self {
        self.service = Service::CheckpointStore;
        self
    }

    /// The path of `name` under this location's prefix.
    pub fn child(&self, name: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in name.split('/').filter(|s| !s.is_empty()) {
            p = p.clone().join(part);
        }
        p
    }

    /// Checks that the store answers, accepts our credentials and has the bucket, with a clear
    /// error if not. Reads and writes no data.
    pub async fn check(&self) -> Result<()> {
        let probe = self.child("_engine_probe_does_not_exist");
        let checked = async {
            match self.store.head(&probe).await {
                // A missing object is fine, but a missing bucket also reads as NotFound: ask
                // for the bucket itself.
                Ok(_) | Err(object_store::Error::NotFound { .. }) => self.check_bucket().await,
                Err(e) => Err(self.explain(e)),
            }
        };
        match tokio::time::timeout(CHECK_TIMEOUT, checked).await {
            Ok(checked) => checked,
            Err(_) => Err(self.unavailable(
                Reason::Timeout,
                format!(
                    "object store at {} did not answer within {} s for `{}`; check the [storage] endpoint (S3_ENDPOINT in the shipped pipelines) and that the server is running",
                    self.endpoint,
                    CHECK_TIMEOUT.as_secs(),
                    self.url,
                ),
            )),
        }
    }

    /// For S3, a HeadBucket request, whose status says whether the bucket exists (object_store's
    /// errors for a failed list carry the status only in their text). For a local folder, a
    /// listing of the prefix.
    async fn check_bucket(&self) -> Result<()> {
        let (Some(s3), Some(options)) = (&self.s3, &self.client_options) else {
            return match self.store.list_with_delimiter(Some(&self.prefix)).await {
                Ok(_) => Ok(()),
                Err(e) => Err(self.explain(e)),
            };
        };
        let url = s3
            .signed_url(http::Method::HEAD, &Path::default(), CHECK_TIMEOUT)
            .await
            .map_err(|e| self.explain(e))?;
        let request = http::Request::head(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| {
                EngineError::runtime(format!("cannot build the bucket check for `{}`", self.url))
                    .with_source(e)
            })?;
        let status = self.send(options, request).await?.status();
        match status {
            s if s.is_success() => Ok(()),
            http::StatusCode::NOT_FOUND => Err(self.unavailable(
                Reason::NotFound,
                format!(
                    "bucket `{}` does not exist at {}; create it or fix the path `{}`",
                    self.bucket.as_deref().unwrap_or("?"),
                    self.endpoint,
                    self.url,
                ),
            )),
            http::StatusCode::FORBIDDEN | http::StatusCode::UNAUTHORIZED => {
                Err(self.unavailable(Reason::Denied, self.denied_message()))
            }
            s => Err(EngineError::runtime(format!(
                "object store at {} answered HTTP {s} when asked for the bucket of `{}`",
                self.endpoint, self.url
            ))),
        }
    }

    /// Aborts every multipart upload in progress for the object at exactly `path` (S3 only),
    /// and returns how many there were. Recovery uses it for an upload whose id a crash kept
    /// from being recorded: the intent written before the upload was created names the object,
    /// a fresh key per file. object_store has no call for ListMultipartUploads, so the request
    /// is made here, addressed like the bucket check and signed with object_store's SigV4.
    pub async fn abort_uploads_of(&self, path: &Path) -> Result<usize> {
        let (Some(s3), Some(options)) = (&self.s3, &self.client_options) else {
            return Ok(0);
        };
        // The bucket's URL, path-style or virtual-hosted as object_store addresses it.
        let mut url = s3
            .signed_url(http::Method::GET, &Path::default(), CHECK_TIMEOUT)
            .await
            .map_err(|e| self.explain(e))?;
        url.set_query(None);
        url.query_pairs_mut()
            .append_pair("prefix", path.as_ref())
            .append_pair("uploads", "");
        let credential = s3
            .credentials()
            .get_credential()
            .await
            .map_err(|e| self.explain(e))?;
        let mut request = http::Request::get(url.as_str())
            .body(HttpRequestBody::empty())
            .map_err(|e| {
                EngineError::runtime(format!("cannot list the uploads of `{}`", self.url))
                    .with_source(e)
            })?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| self.explain(e))?;
        let response = self.send(options, request).await?;
        let status = response.status();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if !status.is_success() {
            return Err(EngineError::runtime(format!(
                "object store at {} answered HTTP {status} when asked for the multipart uploads of `{}`",
                self.endpoint, self.url
            )));
        }
        let listed: ListMultipartUploads =
            quick_xml::de::from_reader(body.as_ref()).map_err(|e| {
                EngineError::runtime(format!(
                    "object store at {} answered a list of multipart uploads that does not parse",
                    self.endpoint
                ))
                .with_source(e)
            })?;
        let mut aborted = 0;
        for upload in listed.uploads.iter().filter(|u| u.key == path.as_ref()) {
            s3.abort_multipart(path, &upload.upload_id)
                .await
                .map_err(|e| self.explain(e))?;
            aborted += 1;
        }
        Ok(aborted)
    }

    /// Sends `request` to the S3 server with the location's client settings: for the calls
    /// object_store has no method for (the bucket check, listing multipart uploads).
    async fn send(&self, options: &ClientOptions, request: HttpRequest) -> Result<HttpResponse> {
        let client = ReqwestConnector::default()
            .connect(options)
            .map_err(|e| self.explain(e))?;
        client
            .execute(request)
            .await
            .map_err(|e| self.transport_error(e))
    }

    /// A failed request of [`Location::send`], explained as object_store's own would be.
    fn transport_error(&self, e: HttpError) -> EngineError {
        self.explain(object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })
    }

    /// Turns an object store error into one line saying what is wrong and what to do, of the
    /// kind [`classify`] gives it. The error is kept as the source.
    pub fn explain(&self, e: object_store::Error) -> EngineError {
        match classify(&e) {
            Some(reason) => self.unavailable_error(reason, e),
            None => self.runtime_error(e),
        }
    }

    fn unavailable_error(&self, reason: Reason, e: object_store::Error) -> EngineError {
        let message = match reason {
            Reason::Denied => self.denied_message(),
            _ => format!(
                "cannot reach the object store at {} for `{}`; check the [storage] endpoint (S3_ENDPOINT in the shipped pipelines) and that the server is running",
                self.endpoint, self.url,
            ),
        };
        self.unavailable(reason, message).with_source(e)
    }

    fn runtime_error(&self, e: object_store::Error) -> EngineError {
        EngineError::runtime(format!(
            "object store error on `{}`: {}",
            self.url,
            first_line(&e.to_string())
        ))
        .with_source(e)
    }

    fn denied_message(&self) -> String {
        format!(
            "object store at {} rejected the credentials for `{}`; check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            self.endpoint, self.url
        )
    }

    fn unavailable(&self, reason: Reason, message: String) -> EngineError {
        EngineError::service(self.service, reason, &self.endpoint, message)
    }
}

/// The part of a ListMultipartUploads answer that [`Location::abort_uploads_of`] reads.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploads {
    #[serde(default, rename = "Upload")]
    uploads: Vec<ListedUpload>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedUpload {
    key: String,
    upload_id: String,
}

/// How long [`Location::check`] waits for the store.
const CHECK_TIMEOUT: Duration = Duration::from_secs(25);

/// Why an object store operation failed, when the store is unavailable: by the error's variant
/// (refused or missing credentials), else by the first transport error in its `source()` chain
/// (object_store's [`HttpError`], or an [`std::io::Error`]). `None` for anything else (such as
/// a missing object), which is a failure of the run, not of the service.
///
/// The text is never read. object_store 0.14 gives the HTTP status of a failed request as a
/// variant for object requests (`head`, `get`, `put`: NotFound, PermissionDenied, ...) but only
/// in the text of a `Generic` error for a list, its status held by a private type: a 403 or 404
/// from a list is therefore a failure of the run. [`Location::check`] asks for the bucket with a
/// request whose status it reads.
pub fn classify(e: &object_store::Error) -> Option<Reason> {
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return Some(Reason::Denied);
    }
    let mut next = e.source();
    while let Some(cause) = next {
        if let Some(http) = cause.downcast_ref::<HttpError>() {
            if let Some(reason) = http_reason(http) {
                return Some(reason);
            }
        } else if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && let Some(reason) = io_reason(io.kind())
        {
            return Some(reason);
        }
        next = cause.source();
    }
    None
}

/// The reason for an object_store HTTP error, when its kind says one (a failed connection, a
/// request cut off, a timeout); else the chain below it may.
fn http_reason(e: &HttpError) -> Option<Reason> {
    match e.kind() {
        HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Interrupted => {
            Some(Reason::Unreachable)
        }
        HttpErrorKind::Timeout => Some(Reason::Timeout),
        _ => None,
    }
}

fn io_reason(kind: std::io::ErrorKind) -> Option<Reason> {
    use std::io::ErrorKind as K;
    match kind {
        K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::HostUnreachable
        | K::NetworkUnreachable
        | K::NetworkDown
        | K::AddrNotAvailable => Some(Reason::Unreachable),
        K::TimedOut => Some(Reason::Timeout),
        _ => None,
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

    fn generic(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: source.into(),
        }
    }

    /// An error wrapping another, as object_store's internal retry error wraps the HTTP one.
    #[derive(Debug)]
    struct Wrapper(Box<dyn std::error::Error + Send + Sync>);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Error performing GET")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.0.as_ref())
        }
    }

    #[test]
    fn object_store_errors_are_classified_by_type() {
        use std::io::{Error as IoError, ErrorKind as Io};
        let path = || "p/x".to_string();
        let cases: Vec<(&str, object_store::Error, Option<Reason>)> = vec![
            (
                "refused, deep in the chain",
                generic(Wrapper(Box::new(HttpError::new(
                    HttpErrorKind::Unknown,
                    Wrapper(Box::new(IoError::from(Io::ConnectionRefused))),
                )))),
                Some(Reason::Unreachable),
            ),
            (
                "refused, right below",
                generic(IoError::from(Io::ConnectionRefused)),
                Some(Reason::Unreachable),
            ),
            (
                "connect",
                generic(Wrapper(Box::new(HttpError::new(
                    HttpErrorKind::Connect,
                    IoError::other("dns error"),
                )))),
                Some(Reason::Unreachable),
            ),
            (
                "timeout",
                generic(HttpError::new(HttpErrorKind::Timeout, IoError::other("x"))),
                Some(Reason::Timeout),
            ),
            (
                "io timeout",
                generic(Wrapper(Box::new(IoError::from(Io::TimedOut)))),
                Some(Reason::Timeout),
            ),
            (
                "403",
                object_store::Error::PermissionDenied {
                    path: path(),
                    source: Box::new(IoError::other("x")),
                },
                Some(Reason::Denied),
            ),
            (
                "401",
                object_store::Error::Unauthenticated {
                    path: path(),
                    source: Box::new(IoError::other("x")),
                },
                Some(Reason::Denied),
            ),
            // A missing object is not a missing bucket: only the bucket check says that.
            (
                "404",
                object_store::Error::NotFound {
                    path: path(),
                    source: Box::new(IoError::other("x")),
                },
                None,
            ),
            (
                "a local file",
                generic(IoError::from(Io::PermissionDenied)),
                None,
            ),
            // Text is never read: these say what the old classification matched on.
            (
                "text only",
                generic(
                    "403 Forbidden: <Code>NoSuchBucket</Code> Connection refused, timed out, \
                     error sending request",
                ),
                None,
            ),
        ];
        for (what, e, reason) in cases {
            assert_eq!(classify(&e), reason, "{what}: {e}");
        }
    }

    #[test]
    fn explained_errors_carry_the_kind_service_address_and_source() {
        let storage = StorageConfig {
            endpoint: "http://127.0.0.1:9000".into(),
            ..StorageConfig::default()
        };
        let loc = Location::open("s3://bronze/kafka/x", &storage).unwrap();
        let e = loc.explain(generic(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(
            e.kind(),
            crate::ErrorKind::Unavailable {
                service: Service::ObjectStore,
                reason: Reason::Unreachable
            }
        );
        assert_eq!(e.exit_code(), 3);
        assert_eq!(e.address(), Some("http://127.0.0.1:9000"));
        assert!(
            e.to_string().starts_with(
                "cannot reach the object store at http://127.0.0.1:9000 for `s3://bronze/kafka/x`"
            ),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("the object store error");
        assert!(source.downcast_ref::<object_store::Error>().is_some());

        let e = loc
            .clone()
            .for_checkpoints()
            .explain(object_store::Error::PermissionDenied {
                path: "x".into(),
                source: "403".into(),
            });
        assert_eq!(
            e.kind(),
            crate::ErrorKind::Unavailable {
                service: Service::CheckpointStore,
                reason: Reason::Denied
            }
        );
        assert!(e.to_string().contains("rejected the credentials"), "{e}");

        let e = loc.explain(object_store::Error::NotFound {
            path: "kafka/x/a.parquet".into(),
            source: "404".into(),
        });
        assert_eq!((e.kind(), e.exit_code()), (crate::ErrorKind::Runtime, 1));
        assert!(
            e.to_string()
                .starts_with("object store error on `s3://bronze/kafka/x`: Object at location"),
            "{e}"
        );
    }

    /// Nothing listens on port 1: the check fails as unreachable, without retrying for long.
    #[tokio::test]
    async fn a_store_nobody_answers_for_is_unreachable() {
        let storage = StorageConfig {
            endpoint: "http://127.0.0.1:1".into(),
            access_key_id: "k".into(),
            secret_access_key: crate::Secret::new("s"),
            ..StorageConfig::default()
        };
        let loc = Location::open("s3://bronze/x", &storage)
            .unwrap()
            .for_checkpoints();
        let e = loc.check().await.unwrap_err();
        assert_eq!(
            e.kind(),
            crate::ErrorKind::Unavailable {
                service: Service::CheckpointStore,
                reason: Reason::Unreachable
            },
            "{e}"
        );
    }
}
