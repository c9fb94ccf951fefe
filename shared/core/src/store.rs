//! Object storage under a registry root: a local folder or `s3://bucket/prefix`.
//! Keys are '/'-separated and relative to the root; callers build them from
//! validated version names and fixed file names only.
//!
//! Both backends offer the two primitives the shared active-state object needs:
//! a conditional GET (unchanged since this ETag?) and a conditional PUT (create only
//! if absent, or replace only if the ETag still matches).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Parallel ranged GETs: the first range (which also tells the object's size), and
/// at most this many equal ranges of at least `RANGE_CHUNK` for the rest, all at
/// once. A version's three large files then load over about a dozen streams, enough
/// to fill a Lambda's network share; more, smaller ranges only add requests (and on
/// moto, which copies the whole object for every range, cost 60 ms per range of a
/// 100 MB object).
const RANGE_CHUNK: u64 = 8 << 20;
const RANGE_CONCURRENCY: usize = 4;

type GetError = aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object exists at the key (the key's full location, for messages).
    #[error("{0} does not exist")]
    NotFound(String),
    /// A conditional write's precondition failed (the key).
    #[error("{0} was changed by another writer (precondition failed)")]
    Conflict(String),
    /// The location is unsupported, or storage failed or could not be reached.
    #[error("storage unavailable at {location}: {detail}")]
    Unavailable {
        /// The store's location (folder path or `s3://bucket/prefix`).
        location: String,
        /// What went wrong.
        detail: String,
    },
}

/// An object's bytes and its entity tag.
#[derive(Debug, Clone)]
pub struct Object {
    /// The object's content.
    pub bytes: Vec<u8>,
    /// S3's ETag, or a hash of the content for a folder store.
    pub etag: String,
}

/// The condition for a conditional write.
#[derive(Debug, Clone, Copy)]
pub enum Precondition<'a> {
    /// Create only; fail if the object exists (If-None-Match: *).
    Absent,
    /// Replace only if the current ETag is this one (If-Match).
    Matches(&'a str),
}

/// A registry root.
#[derive(Debug, Clone)]
pub enum Store {
    /// A folder on the local filesystem; keys are paths under it.
    Local(PathBuf),
    /// An S3 bucket and key prefix.
    S3(Arc<S3Root>),
}

/// A bucket and prefix; the client is built on first use (loading credentials and
/// region is async, opening a registry is not).
#[derive(Debug)]
pub struct S3Root {
    bucket: String,
    /// Key prefix without a trailing slash ("" for the bucket root).
    prefix: String,
    client: tokio::sync::OnceCell<aws_sdk_s3::Client>,
}

impl S3Root {
    /// The client, built on first use; without a region (none in the environment,
    /// the profile or the instance metadata) one clear error instead of the SDK's.
    async fn client(&self) -> Result<&aws_sdk_s3::Client, StoreError> {
        self.client
            .get_or_try_init(|| async {
                let config = aws_config::load_from_env().await;
                if config.region().is_none() {
                    return Err(StoreError::Unavailable {
                        location: format!("s3://{}/{}", self.bucket, self.prefix),
                        detail: "no AWS region is set: set AWS_REGION (or AWS_DEFAULT_REGION, or a region in the AWS profile)".into(),
                    });
                }
                let mut s3 = aws_sdk_s3::config::Builder::from(&config);
                if std::env::var_os("AWS_ENDPOINT_URL").is_some()
                    || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
                {
                    // Local S3 servers (moto, MinIO) serve path-style URLs only.
                    s3 = s3.force_path_style(true);
                }
                Ok(aws_sdk_s3::Client::from_conf(s3.build()))
            })
            .await
    }

    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

fn local_etag(bytes: &[u8]) -> String {
    crate::hash::hex(&Sha256::digest(bytes)[..16])
}

impl Store {
    /// Opens `s3://bucket/prefix` (credentials, region and `AWS_ENDPOINT_URL` from the
    /// environment, as every AWS SDK does) or a folder path.
    pub fn open(location: &str) -> Result<Store, StoreError> {
        let Some(rest) = location.strip_prefix("s3://") else {
            if location.contains("://") {
                return Err(StoreError::Unavailable {
                    location: location.into(),
                    detail: "only folder paths and s3://bucket/prefix are supported".into(),
                });
            }
            return Ok(Store::Local(PathBuf::from(location)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.len() < 3 {
            return Err(StoreError::Unavailable {
                location: location.into(),
                detail: "bucket names have at least 3 characters".into(),
            });
        }
        Ok(Store::S3(Arc::new(S3Root {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            client: tokio::sync::OnceCell::new(),
        })))
    }

    /// A human-readable location.
    pub fn location(&self) -> String {
        match self {
            Store::Local(p) => p.display().to_string(),
            Store::S3(r) if r.prefix.is_empty() => format!("s3://{}", r.bucket),
            Store::S3(r) => format!("s3://{}/{}", r.bucket, r.prefix),
        }
    }

    /// The local root folder, for a folder registry.
    pub fn local_root(&self) -> Option<&Path> {
        match self {
            Store::Local(p) => Some(p),
            Store::S3(_) => None,
        }
    }

    fn unavailable(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            location: self.location(),
            detail: detail.to_string(),
        }
    }

    /// `key` with the store's location, as an operator would look for it.
    fn shown(&self, key: &str) -> String {
        match key {
            "" => self.location(),
            k => format!("{}/{k}", self.location().trim_end_matches('/')),
        }
    }

    fn io(&self, key: &str, e: std::io::Error) -> StoreError {
        if e.kind() == std::io::ErrorKind::NotFound {
            StoreError::NotFound(self.shown(key))
        } else {
            self.unavailable(format!("{key}: {e}"))
        }
    }

    /// Reads an object. On S3 a large object (a model's factors) is fetched as
    /// parallel ranged GETs (an 8 MiB first range, then up to four equal ones), each
    /// streamed straight into its part of one buffer: one request stream is bounded
    /// by its own bandwidth, several are not.
    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        match self {
            Store::S3(r) => self.get_ranged(r, key).await,
            // No ETag: hashing a model's files here would cost as much as the
            // checksum the registry computes over them anyway.
            Store::Local(root) => tokio::fs::read(root.join(key))
                .await
                .map_err(|e| self.io(key, e)),
        }
    }

    async fn get_ranged(&self, r: &S3Root, key: &str) -> Result<Vec<u8>, StoreError> {
        let client = r.client().await?.clone();
        let full_key = r.key(key);
        // The first range also says the object's size (Content-Range: bytes 0-N/SIZE).
        let first = client
            .get_object()
            .bucket(&r.bucket)
            .key(&full_key)
            .range(format!("bytes=0-{}", RANGE_CHUNK - 1))
            .send()
            .await;
        let first = match first {
            Ok(out) => out,
            // 416: an empty object has no byte 0; read it whole.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Ok(self
                    .get_object(key, None)
                    .await?
                    .expect("unconditional get")
                    .bytes)
            }
            Err(e) => return Err(self.get_error(key, e)),
        };
        let size = first
            .content_range()
            .and_then(|c| c.rsplit('/').next())
            .and_then(|t| t.parse::<u64>().ok());
        let etag = first.e_tag().map(str::to_string);
        let head = first
            .body
            .collect()
            .await
            .map_err(|e| self.unavailable(e))?
            .into_bytes();
        let Some(size) = size.filter(|&n| n > head.len() as u64) else {
            return Ok(Vec::from(head));
        };
        let size = usize::try_from(size)
            .map_err(|_| self.unavailable(format!("GET {key}: {size} bytes")))?;
        let mut out = vec![0u8; size];
        out[..head.len()].copy_from_slice(&head);
        let rest = size - head.len();
        let parts = rest
            .div_ceil(RANGE_CHUNK as usize)
            .clamp(1, RANGE_CONCURRENCY);
        let chunk = rest.div_ceil(parts);
        // Each range streams its body frames straight into its own slice of `out`.
        let ranges = out[head.len()..]
            .chunks_mut(chunk)
            .enumerate()
            .map(|(i, slice)| {
                let start = head.len() + i * chunk;
                let end = start + slice.len();
                // If-Match: a version rewritten mid-read fails (412) rather than
                // mixing two objects' bytes.
                let req = client
                    .get_object()
                    .bucket(&r.bucket)
                    .key(&full_key)
                    .range(format!("bytes={start}-{}", end - 1))
                    .set_if_match(etag.clone());
                async move {
                    let mut body = req.send().await.map_err(|e| self.get_error(key, e))?.body;
                    let mut filled = 0;
                    while let Some(frame) = body.next().await {
                        let frame =
                            frame.map_err(|e| self.unavailable(format!("GET {key}: {e}")))?;
                        let Some(dst) = slice.get_mut(filled..filled + frame.len()) else {
                            filled += frame.len();
                            break;
                        };
                        dst.copy_from_slice(&frame);
                        filled += frame.len();
                    }
                    if filled != slice.len() {
                        return Err(self.unavailable(format!(
                            "GET {key}: range {start}-{} returned {filled} bytes",
                            end - 1
                        )));
                    }
                    Ok(())
                }
            });
        futures_util::future::try_join_all(ranges).await?;
        Ok(out)
    }

    /// A GET's error as a [`StoreError`]: 404 / NoSuchKey is `NotFound`, the rest
    /// (412 included: the object changed while it was read) `Unavailable`.
    fn get_error(&self, key: &str, e: GetError) -> StoreError {
        let status = e.raw_response().map(|r| r.status().as_u16());
        if status == Some(404) || e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
            return StoreError::NotFound(self.shown(key));
        }
        self.unavailable(format!(
            "GET {key}: {}",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        ))
    }

    /// Reads an object unless its ETag is still `etag` (then `None`).
    pub async fn get_object(
        &self,
        key: &str,
        etag: Option<&str>,
    ) -> Result<Option<Object>, StoreError> {
        match self {
            Store::Local(root) => {
                let bytes = tokio::fs::read(root.join(key))
                    .await
                    .map_err(|e| self.io(key, e))?;
                let tag = local_etag(&bytes);
                Ok((etag != Some(tag.as_str())).then_some(Object { bytes, etag: tag }))
            }
            Store::S3(r) => {
                let req = r
                    .client()
                    .await?
                    .get_object()
                    .bucket(&r.bucket)
                    .key(r.key(key))
                    .set_if_none_match(etag.map(str::to_string));
                match req.send().await {
                    Ok(out) => {
                        let tag = out.e_tag().unwrap_or_default().to_string();
                        let body = out.body.collect().await.map_err(|e| self.unavailable(e))?;
                        Ok(Some(Object {
                            // No copy when the body arrived as one buffer.
                            bytes: Vec::from(body.into_bytes()),
                            etag: tag,
                        }))
                    }
                    // The SDK surfaces 304 as an error.
                    Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 304) => {
                        Ok(None)
                    }
                    Err(e) => Err(self.get_error(key, e)),
                }
            }
        }
    }

    /// Keys under `dir` (recursive), relative to `dir`.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Local(root) => {
                let base = root.join(dir);
                if !tokio::fs::try_exists(&base)
                    .await
                    .map_err(|e| self.io(dir, e))?
                {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                let mut stack = vec![(base, String::new())];
                while let Some((path, rel)) = stack.pop() {
                    let mut rd = tokio::fs::read_dir(&path)
                        .await
                        .map_err(|e| self.io(dir, e))?;
                    while let Some(e) = rd.next_entry().await.map_err(|e| self.io(dir, e))? {
                        let name = format!("{rel}{}", e.file_name().to_string_lossy());
                        if e.file_type().await.map_err(|e| self.io(dir, e))?.is_dir() {
                            stack.push((e.path(), format!("{name}/")));
                        } else {
                            out.push(name);
                        }
                    }
                }
                Ok(out)
            }
            Store::S3(r) => {
                let full = format!("{}/", r.key(dir.trim_end_matches('/')));
                Ok(self.s3_list(r, &full, false).await?.0)
            }
        }
    }

    /// Names of the top-level "folders" under the root.
    pub async fn list_dirs(&self) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Local(root) => {
                let mut rd = tokio::fs::read_dir(root)
                    .await
                    .map_err(|e| self.io("", e))?;
                let mut out = Vec::new();
                while let Some(e) = rd.next_entry().await.map_err(|e| self.io("", e))? {
                    if e.file_type().await.map_err(|e| self.io("", e))?.is_dir() {
                        out.push(e.file_name().to_string_lossy().to_string());
                    }
                }
                Ok(out)
            }
            Store::S3(r) => {
                let full = if r.prefix.is_empty() {
                    String::new()
                } else {
                    format!("{}/", r.prefix)
                };
                Ok(self.s3_list(r, &full, true).await?.1)
            }
        }
    }

    /// Lists keys under `full` (an S3 key prefix ending in '/'), relative to it:
    /// (objects, "folders" when `folders` groups by '/').
    async fn s3_list(
        &self,
        r: &S3Root,
        full: &str,
        folders: bool,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let mut req = r
            .client()
            .await?
            .list_objects_v2()
            .bucket(&r.bucket)
            .prefix(full);
        if folders {
            req = req.delimiter("/");
        }
        let mut pages = req.into_paginator().send();
        let (mut keys, mut dirs) = (Vec::new(), Vec::new());
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                self.unavailable(format!(
                    "LIST {full}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key()?.strip_prefix(full))
                    .map(str::to_string),
            );
            dirs.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix()?.strip_prefix(full))
                    .map(|d| d.trim_end_matches('/').to_string()),
            );
        }
        Ok((keys, dirs))
    }

    /// Writes an object (unconditionally). Local writes go through a temporary file
    /// and a rename, so readers never see half a file.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<String, StoreError> {
        match self {
            Store::Local(root) => {
                let path = root.join(key);
                if let Some(parent) = path.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| self.io(key, e))?;
                }
                let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
                let tag = local_etag(&bytes);
                tokio::fs::write(&tmp, bytes)
                    .await
                    .map_err(|e| self.io(key, e))?;
                tokio::fs::rename(&tmp, &path)
                    .await
                    .map_err(|e| self.io(key, e))?;
                Ok(tag)
            }
            Store::S3(r) => self.put_s3(r, key, bytes, None).await,
        }
    }

    async fn put_s3(
        &self,
        r: &S3Root,
        key: &str,
        bytes: Vec<u8>,
        cond: Option<Precondition<'_>>,
    ) -> Result<String, StoreError> {
        let mut req = r
            .client()
            .await?
            .put_object()
            .bucket(&r.bucket)
            .key(r.key(key))
            .body(bytes.into());
        match cond {
            Some(Precondition::Absent) => req = req.if_none_match("*"),
            Some(Precondition::Matches(tag)) => req = req.if_match(tag),
            None => {}
        }
        match req.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or_default().to_string()),
            Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                Some(412) | Some(409) => Err(StoreError::Conflict(key.to_string())),
                _ => Err(self.unavailable(format!(
                    "PUT {key}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))),
            },
        }
    }

    /// Writes an object only if `cond` holds; `Conflict` otherwise. Returns the new ETag.
    pub async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        cond: Precondition<'_>,
    ) -> Result<String, StoreError> {
        match self {
            Store::S3(r) => self.put_s3(r, key, bytes, Some(cond)).await,
            Store::Local(root) => {
                // Writers on one machine serialise on a lock file; the check and the
                // rename happen while it is held.
                let _lock = LocalLock::acquire(root.join(format!("{key}.lock")))
                    .await
                    .map_err(|e| self.io(key, e))?;
                let current = match tokio::fs::read(root.join(key)).await {
                    Ok(b) => Some(local_etag(&b)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(self.io(key, e)),
                };
                let ok = match cond {
                    Precondition::Absent => current.is_none(),
                    Precondition::Matches(tag) => current.as_deref() == Some(tag),
                };
                if !ok {
                    return Err(StoreError::Conflict(key.to_string()));
                }
                self.put(key, bytes).await
            }
        }
    }
}

/// An exclusive lock file, removed on drop. A lock older than 30 s is taken to be
/// left behind by a crashed writer.
struct LocalLock(PathBuf);

impl LocalLock {
    async fn acquire(path: PathBuf) -> std::io::Result<LocalLock> {
        for _ in 0..500 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(LocalLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(30));
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "lock held for over 5 s",
        ))
    }
}

impl Drop for LocalLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_conditional_writes_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap()).unwrap();
        let t1 = s
            .put_if("active.json", b"one".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        assert!(matches!(
            s.put_if("active.json", b"x".to_vec(), Precondition::Absent)
                .await,
            Err(StoreError::Conflict(_))
        ));
        let t2 = s
            .put_if("active.json", b"two".to_vec(), Precondition::Matches(&t1))
            .await
            .unwrap();
        assert!(matches!(
            s.put_if("active.json", b"three".to_vec(), Precondition::Matches(&t1))
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert!(s
            .get_object("active.json", Some(&t2))
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            s.get_object("active.json", Some(&t1))
                .await
                .unwrap()
                .unwrap()
                .bytes,
            b"two"
        );
        assert!(matches!(s.get("nope").await, Err(StoreError::NotFound(_))));
        s.put("v1/als/a.npy", b"a".to_vec()).await.unwrap();
        s.put("v1/als/sub/b", b"b".to_vec()).await.unwrap();
        let mut keys = s.list("v1/als").await.unwrap();
        keys.sort();
        assert_eq!(keys, vec!["a.npy", "sub/b"]);
        assert_eq!(s.list_dirs().await.unwrap(), vec!["v1"]);
    }
}
