//! The object store, read as a reader of the tables would: listings, Parquet files, and the
//! multipart uploads a writer left open.

use crate::stack::{env_or, s3_endpoint};
use arrow::array::RecordBatch;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::process::Command;
use std::sync::Arc;

/// A client of the bucket of an `s3://bucket/prefix` URL, and the prefix.
pub fn store_for(url: &str) -> (Arc<dyn ObjectStore>, Path) {
    let rest = url.strip_prefix("s3://").expect("s3 url");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let s3 = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(s3_endpoint())
        .with_region(env_or("AWS_REGION", "us-east-1"))
        .with_access_key_id(env_or("AWS_ACCESS_KEY_ID", "minioadmin"))
        .with_secret_access_key(env_or("AWS_SECRET_ACCESS_KEY", "minioadmin"))
        .with_allow_http(true)
        .build()
        .expect("s3 client");
    (Arc::new(s3), Path::from(prefix))
}

/// Every object under a prefix, hidden folders included.
pub async fn list_all(url: &str) -> Vec<Path> {
    let (store, prefix) = store_for(url);
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    metas.into_iter().map(|m| m.location).collect()
}

/// Every object under a prefix, hidden folders included, with its bytes. An object deleted
/// between the listing and its read is left out.
pub async fn all_objects(url: &str) -> Vec<(String, Vec<u8>)> {
    let (store, _) = store_for(url);
    let mut out = Vec::new();
    for path in list_all(url).await {
        match store.get(&path).await {
            Ok(got) => out.push((path.to_string(), got.bytes().await.expect("bytes").to_vec())),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => panic!("get {path}: {e}"),
        }
    }
    out
}

async fn get(store: &Arc<dyn ObjectStore>, path: &Path) -> Bytes {
    store
        .get(path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes")
}

/// Lists a table as a reader would: every object under the prefix, skipping `_`/`.` folders.
pub async fn list_table_files(url: &str) -> Vec<Path> {
    table_file_sizes(url)
        .await
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

/// The table's files, as [`list_table_files`] finds them, with their sizes in bytes.
pub async fn table_file_sizes(url: &str) -> Vec<(Path, u64)> {
    let (store, prefix) = store_for(url);
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    metas
        .into_iter()
        .filter(|m| {
            let rel = m
                .location
                .as_ref()
                .strip_prefix(prefix.as_ref())
                .unwrap_or(m.location.as_ref());
            !rel.split('/')
                .any(|p| p.starts_with('_') || p.starts_with('.'))
        })
        .map(|m| (m.location, m.size))
        .collect()
}

/// Reads every committed Parquet file of a table.
pub async fn read_table(url: &str) -> Vec<RecordBatch> {
    read_table_files(url)
        .await
        .into_iter()
        .flat_map(|(_, batches)| batches)
        .collect()
}

/// Reads every committed Parquet file of a table, file by file, with each file's path.
pub async fn read_table_files(url: &str) -> Vec<(Path, Vec<RecordBatch>)> {
    let (store, _) = store_for(url);
    let mut out = Vec::new();
    for path in list_table_files(url).await {
        assert!(
            path.as_ref().ends_with(".parquet"),
            "unexpected object in table {url}: {path}"
        );
        let reader = ParquetRecordBatchReaderBuilder::try_new(get(&store, &path).await)
            .expect("parquet")
            .build()
            .expect("reader");
        let batches = reader.map(|b| b.expect("batch")).collect();
        out.push((path, batches));
    }
    out
}

/// Incomplete multipart uploads under `prefix` in `bucket`, as S3's ListMultipartUploads says.
pub fn incomplete_uploads(bucket: &str, prefix: &str) -> usize {
    let key = env_or("AWS_ACCESS_KEY_ID", "minioadmin");
    let secret = env_or("AWS_SECRET_ACCESS_KEY", "minioadmin");
    let region = env_or("AWS_REGION", "us-east-1");
    let url = format!(
        "{}/{bucket}?prefix={}&uploads=",
        s3_endpoint(),
        prefix.replace('/', "%2F")
    );
    let out = Command::new("curl")
        .args([
            "-sS",
            "--aws-sigv4",
            &format!("aws:amz:{region}:s3"),
            "--user",
            &format!("{key}:{secret}"),
            &url,
        ])
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("ListMultipartUploadsResult"),
        "unexpected answer: {body}"
    );
    body.matches("<Upload>").count()
}
