//! The artifact store: where task outputs live, shared by all workers (a local or mounted
//! directory). Every file is written under a name unique to its attempt, atomically (temp
//! file + rename), and described by an [`Output`] with its SHA-256; readers check the hash.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One stored file, as reported to the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub kind: String,
    pub uri: String,
    pub sha256: String,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact store {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("artifact {uri} is outside the store or not a file:// uri")]
    BadUri { uri: String },
    #[error("artifact {uri} is corrupt: sha256 {actual}, expected {expected}")]
    Corrupt {
        uri: String,
        actual: String,
        expected: String,
    },
}

/// See the module docs.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: &Path) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
        let root = root.canonicalize().map_err(|e| io(root, e))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `bytes` as `jobs/<job_id>/<name>` and describes it.
    pub fn put(
        &self,
        job_id: &str,
        name: &str,
        kind: &str,
        bytes: &[u8],
    ) -> Result<Output, ArtifactError> {
        let dir = self.root.join("jobs").join(job_id);
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let tmp = path.with_extension(format!("tmp-{:08x}", rand::random::<u32>()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(&path, e)
        })?;
        Ok(Output {
            kind: kind.to_string(),
            uri: format!("file://{}", path.display()),
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
        })
    }

    /// Reads an output back and checks its hash.
    pub fn get(&self, output: &Output) -> Result<Vec<u8>, ArtifactError> {
        let path = self.path_of(&output.uri)?;
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let actual = sha256_hex(&bytes);
        if actual != output.sha256 {
            return Err(ArtifactError::Corrupt {
                uri: output.uri.clone(),
                actual,
                expected: output.sha256.clone(),
            });
        }
        Ok(bytes)
    }

    /// The local path of a `file://` uri inside this store.
    pub fn path_of(&self, uri: &str) -> Result<PathBuf, ArtifactError> {
        let bad = || ArtifactError::BadUri {
            uri: uri.to_string(),
        };
        let path = PathBuf::from(uri.strip_prefix("file://").ok_or_else(bad)?);
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
            || !path.starts_with(&self.root)
        {
            return Err(bad());
        }
        Ok(path)
    }
}

fn io(path: &Path, source: std::io::Error) -> ArtifactError {
    ArtifactError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_then_get_round_trips_and_detects_corruption() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ArtifactStore::open(dir.path()).expect("open");
        let out = store
            .put("0123456789abcdef", "plan.t1a1.json", "plan", b"hello")
            .expect("put");
        assert_eq!(out.bytes, 5);
        assert_eq!(store.get(&out).expect("get"), b"hello");
        std::fs::write(store.path_of(&out.uri).expect("path"), b"tampered").expect("tamper");
        assert!(
            matches!(store.get(&out), Err(ArtifactError::Corrupt { .. })),
            "a changed file is refused"
        );
    }

    #[test]
    fn uris_outside_the_store_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ArtifactStore::open(dir.path()).expect("open");
        assert!(store.path_of("file:///etc/passwd").is_err());
        let sneaky = format!("file://{}/jobs/../../etc/passwd", store.root().display());
        assert!(store.path_of(&sneaky).is_err());
        assert!(store.path_of("s3://bucket/x").is_err());
    }
}
