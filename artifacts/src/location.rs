//! Where the artifact store is: the value of `--artifacts`, and the URIs of the files in it.
//!
//! A store is a directory (`/srv/reelfarm`, `./artifacts`) or an S3-compatible bucket with an
//! optional key prefix (`s3://reelfarm-artifacts/prod`). Every file has a key below the store
//! (`jobs/<job>/<task>.t<term>a<attempt>.h264`) and a URI that names it for everyone else:
//! `file:///srv/reelfarm/jobs/...` or `s3://reelfarm-artifacts/prod/jobs/...`. The URI is
//! what workers report, what the coordinator commits and what clients see in a job's
//! outputs; [`Location::key_of`] maps it back, refusing anything outside the store.

use std::path::{Component, Path as FsPath, PathBuf};

use object_store::path::Path;

/// The URI scheme of S3-compatible stores.
pub const S3_SCHEME: &str = "s3://";
/// The URI scheme of directory stores.
pub const FILE_SCHEME: &str = "file://";

/// A parsed `--artifacts` value. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory; `root` is absolute once the store is open.
    Local { root: PathBuf },
    /// A bucket and the key prefix (no leading or trailing `/`, may be empty) of the store.
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// Parses an `--artifacts` value: `s3://BUCKET[/PREFIX]`, or a directory path.
    pub fn parse(value: &str) -> Result<Location, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err("must name a directory or s3://BUCKET[/PREFIX]".into());
        }
        if let Some(rest) = value.strip_prefix(S3_SCHEME) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket)?;
            let prefix = prefix.trim_matches('/');
            if !prefix.is_empty() {
                Path::parse(prefix).map_err(|e| format!("bad key prefix {prefix:?}: {e}"))?;
                if prefix.split('/').any(|s| s.is_empty()) {
                    return Err(format!("bad key prefix {prefix:?}: empty path segment"));
                }
            }
            return Ok(Location::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some((scheme, _)) = value.split_once("://") {
            return Err(format!(
                "unsupported scheme {scheme}://: use a directory path or s3://BUCKET[/PREFIX]"
            ));
        }
        Ok(Location::Local {
            root: PathBuf::from(value),
        })
    }

    /// Whether this is an S3-compatible bucket.
    pub fn is_s3(&self) -> bool {
        matches!(self, Location::S3 { .. })
    }

    /// The object key (in the backend's namespace) of `key` below the store.
    pub fn object_path(&self, key: &str) -> Result<Path, String> {
        let full = match self {
            Location::S3 { prefix, .. } if !prefix.is_empty() => format!("{prefix}/{key}"),
            _ => key.to_string(),
        };
        checked_path(&full)
    }

    /// The URI of an object key returned by [`Location::object_path`].
    pub fn uri(&self, path: &Path) -> String {
        match self {
            Location::Local { root } => format!("{FILE_SCHEME}{}/{path}", root.display()),
            Location::S3 { bucket, .. } => format!("{S3_SCHEME}{bucket}/{path}"),
        }
    }

    /// The object key of a URI inside this store; an error for any other URI (another
    /// scheme, bucket, prefix or directory, `..` segments).
    pub fn key_of(&self, uri: &str) -> Result<Path, String> {
        let rest = match self {
            Location::Local { root } => {
                let path = uri
                    .strip_prefix(FILE_SCHEME)
                    .ok_or("not a file:// uri of a directory store")?;
                if FsPath::new(path)
                    .components()
                    .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
                {
                    return Err("`..` or `.` in the path".into());
                }
                FsPath::new(path)
                    .strip_prefix(root)
                    .map_err(|_| format!("not under the store's directory {}", root.display()))?
                    .to_str()
                    .ok_or("not UTF-8")?
                    .to_string()
            }
            Location::S3 { bucket, prefix } => {
                let key = uri
                    .strip_prefix(S3_SCHEME)
                    .and_then(|r| r.strip_prefix(bucket.as_str()))
                    .and_then(|r| r.strip_prefix('/'))
                    .ok_or_else(|| format!("not an s3://{bucket}/ uri"))?;
                if !prefix.is_empty() {
                    let below = key
                        .strip_prefix(prefix.as_str())
                        .and_then(|r| r.strip_prefix('/'))
                        .ok_or_else(|| format!("not under the store's prefix {prefix}/"))?;
                    if below.is_empty() {
                        return Err("names the prefix itself".into());
                    }
                }
                key.to_string()
            }
        };
        checked_path(&rest)
    }

    /// The job whose folder (`jobs/<job_id>/`) holds the object `uri` names; `None` for a
    /// URI outside this store or outside every job's folder.
    pub fn job_of(&self, uri: &str) -> Option<String> {
        let key = self.key_of(uri).ok()?.to_string();
        let below = match self {
            Location::S3 { prefix, .. } if !prefix.is_empty() => key
                .strip_prefix(prefix.as_str())?
                .strip_prefix('/')?
                .to_string(),
            _ => key,
        };
        let mut parts = below.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("jobs"), Some(job), Some(name)) if !job.is_empty() && !name.is_empty() => {
                Some(job.to_string())
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local { root } => write!(f, "{}", root.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => {
                write!(f, "{S3_SCHEME}{bucket}")
            }
            Location::S3 { bucket, prefix } => write!(f, "{S3_SCHEME}{bucket}/{prefix}"),
        }
    }
}

/// An object key made only of non-empty, non-`.`/`..` segments, so that it means the same
/// file in a directory store and the same object in a bucket.
fn checked_path(key: &str) -> Result<Path, String> {
    if key.is_empty()
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!("bad key {key:?}: empty, `.` or `..` segment"));
    }
    let path = Path::parse(key).map_err(|e| format!("bad key {key:?}: {e}"))?;
    Ok(path)
}

/// S3 bucket naming rules (the subset every S3-compatible store accepts): 3..=63 characters
/// of `[a-z0-9.-]`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bucket {bucket:?} must be 3..=63 characters of [a-z0-9.-], starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directories_and_buckets_with_prefixes() {
        assert_eq!(
            Location::parse("./artifacts"),
            Ok(Location::Local {
                root: "./artifacts".into()
            })
        );
        assert_eq!(
            Location::parse("s3://reelfarm-artifacts/prod/"),
            Ok(Location::S3 {
                bucket: "reelfarm-artifacts".into(),
                prefix: "prod".into()
            })
        );
        assert_eq!(
            Location::parse("s3://reelfarm-artifacts"),
            Ok(Location::S3 {
                bucket: "reelfarm-artifacts".into(),
                prefix: String::new()
            })
        );
        assert!(
            Location::parse("s3://Bad_Bucket/x").is_err(),
            "capitals and _"
        );
        assert!(Location::parse("s3://b/x").is_err(), "too short");
        assert!(
            Location::parse("s3://bucket/a//b").is_err(),
            "empty segment"
        );
        assert!(Location::parse("gs://bucket/x").is_err(), "other schemes");
        assert!(Location::parse("").is_err());
    }

    #[test]
    fn a_uri_names_the_job_whose_folder_holds_it() {
        let s3 = Location::parse("s3://bucket-1/prod").expect("valid");
        assert_eq!(
            s3.job_of("s3://bucket-1/prod/jobs/00ab/video.mp4")
                .as_deref(),
            Some("00ab")
        );
        assert_eq!(s3.job_of("s3://bucket-1/prod/jobs/00ab"), None);
        assert_eq!(s3.job_of("s3://bucket-1/prod/other/00ab/x"), None);
        assert_eq!(s3.job_of("s3://bucket-2/prod/jobs/00ab/x"), None);
        let local = Location::parse("/srv/art").expect("valid");
        assert_eq!(
            local.job_of("file:///srv/art/jobs/77/a.wav").as_deref(),
            Some("77")
        );
        assert_eq!(local.job_of("file:///srv/art/jobs/../jobs/77/a.wav"), None);
    }

    #[test]
    fn uris_round_trip_and_foreign_uris_are_refused() {
        let s3 = Location::parse("s3://bucket-1/prod").expect("valid");
        let path = s3
            .object_path("jobs/abc/plan.t1a1.json")
            .expect("valid key");
        let uri = s3.uri(&path);
        assert_eq!(uri, "s3://bucket-1/prod/jobs/abc/plan.t1a1.json");
        assert_eq!(s3.key_of(&uri), Ok(path));
        for foreign in [
            "s3://bucket-2/prod/jobs/abc/x",
            "s3://bucket-1/other/jobs/abc/x",
            "s3://bucket-1/prod",
            "s3://bucket-1/prod/jobs/../../x",
            "file:///prod/jobs/abc/x",
        ] {
            assert!(
                s3.key_of(foreign).is_err(),
                "{foreign} is outside the store"
            );
        }

        let local = Location::Local {
            root: "/srv/reelfarm".into(),
        };
        let path = local.object_path("jobs/abc/x.mp4").expect("valid key");
        let uri = local.uri(&path);
        assert_eq!(uri, "file:///srv/reelfarm/jobs/abc/x.mp4");
        assert_eq!(local.key_of(&uri), Ok(path));
        for foreign in [
            "file:///etc/passwd",
            "file:///srv/reelfarm/jobs/../../../etc/passwd",
            "file:///srv/reelfarm-other/jobs/x",
            "s3://bucket/x",
        ] {
            assert!(
                local.key_of(foreign).is_err(),
                "{foreign} is outside the store"
            );
        }
    }
}
