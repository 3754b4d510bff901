//! # reelfarm artifact store
//!
//! Where task outputs live, shared by the coordinator and every worker: a crate below both
//! wings, so the coordinator reads and checks outputs without linking the worker's pipeline.
//!
//! One interface over two backends of the `object_store` crate, chosen by `--artifacts`:
//! a directory (`LocalFileSystem`; local, or a shared volume mounted on every pod) or an
//! S3-compatible bucket (`AmazonS3`: AWS, MinIO, Ceph RGW, R2...).
//!
//! - [`location`]: the `--artifacts` value, object keys and the URIs that name them
//!   (`file:///...`, `s3://bucket/prefix/...`).
//! - [`config`]: the flags shared by both binaries ([`StoreConfig`]) and the backend they
//!   select.
//! - [`ArtifactStore`] (here): put, get, read by URI, check.
//!
//! Exactly-once comes from the names, not the store: every attempt writes under a name of its
//! own (`jobs/<job>/<task>.t<term>a<attempt>...`), so two attempts never write the same
//! object, and only the attempt the coordinator commits is the job's. A write is atomic in
//! both backends (a temporary file renamed into place; a single S3 PUT) and described by an
//! [`Output`] with its SHA-256, which every reader checks.

pub mod config;
pub mod location;

use std::sync::Arc;

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use sha2::{Digest, Sha256};

pub use config::StoreConfig;
pub use location::Location;

/// One stored file, as a worker reports it and the coordinator records it (the same JSON
/// in the durable job records as before the type moved here).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Output {
    pub kind: String,
    pub uri: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact store configuration: {0}")]
    Config(String),
    #[error("artifact store {store}: {source}")]
    Backend {
        store: String,
        #[source]
        source: object_store::Error,
    },
    #[error("artifact {uri} not found in the artifact store {store}")]
    NotFound { uri: String, store: String },
    #[error("artifact {uri} is not in the artifact store {store}: {reason}")]
    BadUri {
        uri: String,
        store: String,
        reason: String,
    },
    #[error("artifact name {name:?} of job {job_id:?}: {reason}")]
    BadName {
        job_id: String,
        name: String,
        reason: String,
    },
    #[error("artifact {uri} is corrupt: sha256 {actual}, expected {expected}")]
    Corrupt {
        uri: String,
        actual: String,
        expected: String,
    },
    #[error("artifact {uri} has {actual} bytes, expected {expected}")]
    WrongSize {
        uri: String,
        actual: u64,
        expected: u64,
    },
    #[error("artifact {uri} has {bytes} bytes; at most {max} are read")]
    TooLarge { uri: String, bytes: u64, max: u64 },
    #[error("artifact store {store}: {source}")]
    Io {
        store: String,
        #[source]
        source: std::io::Error,
    },
}

/// Hashing this many bytes or more runs on a blocking thread, not on the async reactor
/// (SHA-256 does roughly 0.5-1 GB/s, so 64 KiB is well under a millisecond).
const HASH_INLINE_MAX: usize = 64 * 1024;

/// See the module docs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    location: Location,
    backend: Arc<dyn ObjectStore>,
}

impl ArtifactStore {
    /// Opens the store the flags name, and checks that it answers (a directory is created if
    /// missing; a bucket is listed at the prefix), so a wrong bucket, endpoint or credentials
    /// stop the binary at start with the reason rather than failing every task.
    pub async fn open(config: &StoreConfig) -> Result<Self, ArtifactError> {
        let location = config.validate().map_err(ArtifactError::Config)?;
        let (location, backend) = config.backend(location).map_err(ArtifactError::Config)?;
        let store = Self { location, backend };
        let prefix = match &store.location {
            Location::S3 { prefix, .. } if !prefix.is_empty() => {
                Some(object_store::path::Path::from(prefix.as_str()))
            }
            _ => None,
        };
        store
            .backend
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(|source| store.backend_error(source))?;
        Ok(store)
    }

    /// Where the store is (a directory, absolute; or a bucket and prefix).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Writes `bytes` as `jobs/<job_id>/<name>` (atomically: readers see all of it or
    /// nothing) and describes it.
    pub async fn put(
        &self,
        job_id: &str,
        name: &str,
        kind: &str,
        bytes: Vec<u8>,
    ) -> Result<Output, ArtifactError> {
        let path = self
            .location
            .object_path(&format!("jobs/{job_id}/{name}"))
            .map_err(|reason| ArtifactError::BadName {
                job_id: job_id.to_string(),
                name: name.to_string(),
                reason,
            })?;
        let len = bytes.len() as u64;
        let bytes = Bytes::from(bytes);
        let sha256 = sha256_off_reactor(bytes.clone()).await;
        self.backend
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|source| self.backend_error(source))?;
        if let Location::Local { root } = &self.location {
            // LocalFileSystem renames a complete temporary file into place but does not
            // flush it; the coordinator commits this output as durable, so flush it first.
            let file = root.join(path.as_ref());
            tokio::task::spawn_blocking(move || std::fs::File::open(file)?.sync_all())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r)
                .map_err(|source| ArtifactError::Io {
                    store: self.location.to_string(),
                    source,
                })?;
        }
        Ok(Output {
            kind: kind.to_string(),
            uri: self.location.uri(&path),
            sha256,
            bytes: len,
        })
    }

    /// Reads an output back and checks its SHA-256.
    pub async fn get(&self, output: &Output) -> Result<Vec<u8>, ArtifactError> {
        let bytes = self.read(&output.uri, None).await?;
        let actual = sha256_off_reactor(bytes.clone()).await;
        if actual != output.sha256 {
            return Err(ArtifactError::Corrupt {
                uri: output.uri.clone(),
                actual,
                expected: output.sha256.clone(),
            });
        }
        Ok(Vec::from(bytes))
    }

    /// Reads the file a URI of this store names, refusing one larger than `max_bytes`
    /// (checked before reading). No hash to check: for callers that were handed a bare URI.
    pub async fn read_uri(&self, uri: &str, max_bytes: u64) -> Result<Vec<u8>, ArtifactError> {
        self.read(uri, Some(max_bytes)).await.map(Vec::from)
    }

    /// The job whose outputs folder holds `uri` (see [`Location::job_of`]): how a
    /// VerifyContent by URI is confined to the caller's tenant.
    pub fn job_of_uri(&self, uri: &str) -> Option<String> {
        self.location.job_of(uri)
    }

    /// Checks that the file `uri` names exists in this store with `bytes` bytes: what the
    /// coordinator asks before committing a worker's result, so a worker writing somewhere
    /// else (another bucket, a pod-local directory) is caught at once.
    pub async fn check(&self, uri: &str, bytes: u64) -> Result<(), ArtifactError> {
        let path = self.key_of(uri)?;
        let meta = self
            .backend
            .head(&path)
            .await
            .map_err(|e| self.read_error(uri, e))?;
        if meta.size != bytes {
            return Err(ArtifactError::WrongSize {
                uri: uri.to_string(),
                actual: meta.size,
                expected: bytes,
            });
        }
        Ok(())
    }

    /// Every object under `jobs/<job_id>/`: its URI and size. For the coordinator's
    /// collector of files from attempts that were never committed.
    pub async fn list_job(&self, job_id: &str) -> Result<Vec<(String, u64)>, ArtifactError> {
        use futures::TryStreamExt as _;
        let prefix = self
            .location
            .object_path(&format!("jobs/{job_id}"))
            .map_err(|reason| ArtifactError::BadName {
                job_id: job_id.to_string(),
                name: String::new(),
                reason,
            })?;
        let objects: Vec<_> = self
            .backend
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|source| self.backend_error(source))?;
        Ok(objects
            .into_iter()
            .map(|o| (self.location.uri(&o.location), o.size))
            .collect())
    }

    /// The object key a URI of this store names (e.g. `jobs/<job>/<name>` under the
    /// prefix): two URIs name the same object when their keys are equal.
    pub fn object_key(&self, uri: &str) -> Result<String, ArtifactError> {
        self.key_of(uri).map(|p| p.to_string())
    }

    /// Deletes the object `uri` names; one already gone is not an error.
    pub async fn delete(&self, uri: &str) -> Result<(), ArtifactError> {
        let path = self.key_of(uri)?;
        match self.backend.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.backend_error(source)),
        }
    }

    async fn read(&self, uri: &str, max_bytes: Option<u64>) -> Result<Bytes, ArtifactError> {
        let path = self.key_of(uri)?;
        if let Some(max) = max_bytes {
            let meta = self
                .backend
                .head(&path)
                .await
                .map_err(|e| self.read_error(uri, e))?;
            if meta.size > max {
                return Err(ArtifactError::TooLarge {
                    uri: uri.to_string(),
                    bytes: meta.size,
                    max,
                });
            }
        }
        let got = self
            .backend
            .get(&path)
            .await
            .map_err(|e| self.read_error(uri, e))?;
        got.bytes().await.map_err(|e| self.read_error(uri, e))
    }

    fn key_of(&self, uri: &str) -> Result<object_store::path::Path, ArtifactError> {
        self.location
            .key_of(uri)
            .map_err(|reason| ArtifactError::BadUri {
                uri: uri.to_string(),
                store: self.location.to_string(),
                reason,
            })
    }

    fn read_error(&self, uri: &str, source: object_store::Error) -> ArtifactError {
        match source {
            object_store::Error::NotFound { .. } => ArtifactError::NotFound {
                uri: uri.to_string(),
                store: self.location.to_string(),
            },
            source => self.backend_error(source),
        }
    }

    fn backend_error(&self, source: object_store::Error) -> ArtifactError {
        ArtifactError::Backend {
            store: self.location.to_string(),
            source,
        }
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn sha256_off_reactor(bytes: Bytes) -> String {
    if bytes.len() < HASH_INLINE_MAX {
        return sha256_hex(&bytes);
    }
    tokio::task::spawn_blocking(move || sha256_hex(&bytes))
        .await
        .expect("hashing does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn local_store(dir: &std::path::Path) -> ArtifactStore {
        ArtifactStore::open(&StoreConfig::local(dir.join("store")))
            .await
            .expect("open a directory store")
    }

    #[tokio::test]
    async fn lists_only_one_jobs_objects_and_deletes_by_uri() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = local_store(dir.path()).await;
        let kept = store
            .put(
                "0123456789abcdef",
                "plan.t1a2.json",
                "plan",
                b"kept".to_vec(),
            )
            .await
            .expect("put");
        let orphan = store
            .put(
                "0123456789abcdef",
                "plan.t1a1.json",
                "plan",
                b"orphan".to_vec(),
            )
            .await
            .expect("put");
        // A job whose id extends the first one's must not be listed with it.
        store
            .put(
                "0123456789abcdef0",
                "plan.t1a1.json",
                "plan",
                b"other".to_vec(),
            )
            .await
            .expect("put");
        let mut listed = store.list_job("0123456789abcdef").await.expect("list");
        listed.sort();
        let mut expected = vec![(kept.uri.clone(), 4), (orphan.uri.clone(), 6)];
        expected.sort();
        assert_eq!(listed, expected);
        store.delete(&orphan.uri).await.expect("delete");
        store
            .delete(&orphan.uri)
            .await
            .expect("deleting twice is fine");
        assert_eq!(
            store.list_job("0123456789abcdef").await.expect("list"),
            [(kept.uri.clone(), 4)]
        );
        assert_eq!(store.get(&kept).await.expect("kept"), b"kept");
    }

    #[tokio::test]
    async fn put_then_get_round_trips_under_the_attempt_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = local_store(dir.path()).await;
        let out = store
            .put(
                "0123456789abcdef",
                "plan.t1a1.json",
                "plan",
                b"hello".to_vec(),
            )
            .await
            .expect("put");
        assert_eq!(out.bytes, 5);
        assert_eq!(out.sha256, sha256_hex(b"hello"));
        let root = dir.path().join("store").canonicalize().expect("root");
        let file = root.join("jobs/0123456789abcdef/plan.t1a1.json");
        assert_eq!(out.uri, format!("file://{}", file.display()));
        assert_eq!(std::fs::read(&file).expect("the file is there"), b"hello");
        assert_eq!(store.get(&out).await.expect("get"), b"hello");
        store
            .check(&out.uri, out.bytes)
            .await
            .expect("the output exists with its size");
    }

    #[tokio::test]
    async fn nested_names_and_large_files_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = local_store(dir.path()).await;
        let big: Vec<u8> = (0..3 * HASH_INLINE_MAX).map(|i| (i % 251) as u8).collect();
        let out = store
            .put("job-1", "assemble.t1a2/video.mp4", "video", big.clone())
            .await
            .expect("put");
        assert_eq!(out.sha256, sha256_hex(&big));
        assert_eq!(store.get(&out).await.expect("get"), big);
    }

    #[tokio::test]
    async fn a_changed_file_is_refused_as_corrupt() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = local_store(dir.path()).await;
        let out = store
            .put("job-1", "plan.t1a1.json", "plan", b"hello".to_vec())
            .await
            .expect("put");
        let path = out.uri.strip_prefix("file://").expect("a file uri");
        std::fs::write(path, b"tampered").expect("tamper");
        let err = store.get(&out).await.expect_err("a changed file");
        assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err}");
        let err = store
            .check(&out.uri, out.bytes)
            .await
            .expect_err("a changed size");
        assert!(matches!(err, ArtifactError::WrongSize { .. }), "{err}");
    }

    #[tokio::test]
    async fn missing_outputs_are_not_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = local_store(dir.path()).await;
        let out = store
            .put("job-1", "plan.t1a1.json", "plan", b"x".to_vec())
            .await
            .expect("put");
        let missing = Output {
            uri: out.uri.replace("t1a1", "t1a2"),
            ..out
        };
        let err = store
            .check(&missing.uri, missing.bytes)
            .await
            .expect_err("never written");
        assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");
        let err = store.get(&missing).await.expect_err("never written");
        assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");
    }

    #[tokio::test]
    async fn uris_outside_the_store_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = local_store(dir.path()).await;
        std::fs::write(dir.path().join("secret"), b"x").expect("a file beside the store");
        let root = store.location().to_string();
        for uri in [
            "file:///etc/passwd".to_string(),
            format!("file://{root}/jobs/../../secret"),
            format!("file://{}/secret", dir.path().display()),
            "s3://bucket/x".to_string(),
        ] {
            let err = store.read_uri(&uri, 1024).await.expect_err(&uri);
            assert!(matches!(err, ArtifactError::BadUri { .. }), "{uri}: {err}");
        }
    }

    #[tokio::test]
    async fn read_uri_refuses_files_over_the_limit_before_reading() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = local_store(dir.path()).await;
        let out = store
            .put("job-1", "video.mp4", "video", vec![7; 100])
            .await
            .expect("put");
        assert_eq!(
            store
                .read_uri(&out.uri, 100)
                .await
                .expect("at the limit")
                .len(),
            100
        );
        let err = store
            .read_uri(&out.uri, 99)
            .await
            .expect_err("over the limit");
        assert!(matches!(err, ArtifactError::TooLarge { .. }), "{err}");
    }

    #[tokio::test]
    async fn bad_names_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = local_store(dir.path()).await;
        for name in ["../escape", "a//b", ""] {
            let err = store
                .put("job-1", name, "plan", b"x".to_vec())
                .await
                .expect_err(name);
            assert!(
                matches!(err, ArtifactError::BadName { .. }),
                "{name}: {err}"
            );
        }
    }
}
