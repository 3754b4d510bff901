//! The artifact store's flags, shared by `reelfarm-coordinator` and `reelfarm-worker`
//! (flattened into both configurations, so both binaries name the store the same way), and
//! the `object_store` backend they select: `LocalFileSystem` for a directory, `AmazonS3`
//! for an S3-compatible bucket.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::ObjectStore;

use super::location::Location;

/// See the module docs. Every flag also reads a `REELFARM_*` variable; S3 credentials come
/// from the standard AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
/// `AWS_SESSION_TOKEN`), or from web identity / instance credentials when those are unset.
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Artifact store shared by the coordinator and every worker: a directory (local, or a
    /// mounted shared volume), or an S3-compatible bucket as s3://BUCKET[/PREFIX].
    #[arg(
        long = "artifacts",
        env = "REELFARM_ARTIFACTS",
        default_value = "./artifacts",
        value_name = "DIR|s3://BUCKET[/PREFIX]"
    )]
    pub location: String,

    /// S3 region of the bucket [default: AWS_REGION, AWS_DEFAULT_REGION, else us-east-1].
    #[arg(long, env = "REELFARM_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// S3-compatible endpoint URL, e.g. https://minio.storage:9000 (MinIO, Ceph RGW, R2)
    /// [default: AWS, from the region].
    #[arg(long, env = "REELFARM_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// Path-style requests (ENDPOINT/BUCKET/KEY) instead of virtual-hosted ones
    /// (BUCKET.ENDPOINT/KEY); most self-hosted S3-compatible stores need it.
    #[arg(long, env = "REELFARM_S3_FORCE_PATH_STYLE")]
    pub s3_force_path_style: bool,

    /// Allow a plain http:// --s3-endpoint (a test server, or a store on a trusted network):
    /// requests and credentials' signatures then travel unencrypted.
    #[arg(long, env = "REELFARM_S3_ALLOW_HTTP")]
    pub s3_allow_http: bool,
}

impl StoreConfig {
    /// A directory store with no S3 settings (the embedded demo, tests, benchmarks).
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self {
            location: dir.into().display().to_string(),
            s3_region: None,
            s3_endpoint: None,
            s3_force_path_style: false,
            s3_allow_http: false,
        }
    }

    /// Checks the flags together; the message names the flag. Empty values count as unset
    /// (the Helm chart may pass empty variables).
    pub fn validate(&self) -> Result<Location, String> {
        let location = Location::parse(&self.location).map_err(|e| format!("--artifacts: {e}"))?;
        let endpoint = non_empty(&self.s3_endpoint);
        if !location.is_s3() {
            let s3_flags = [
                (non_empty(&self.s3_region).is_some(), "--s3-region"),
                (endpoint.is_some(), "--s3-endpoint"),
                (self.s3_force_path_style, "--s3-force-path-style"),
                (self.s3_allow_http, "--s3-allow-http"),
            ];
            if let Some((_, flag)) = s3_flags.iter().find(|(set, _)| *set) {
                return Err(format!(
                    "{flag} applies to s3:// artifact stores only; --artifacts is the directory {:?}",
                    self.location
                ));
            }
        }
        if let Some(endpoint) = endpoint {
            let (scheme, host) = endpoint.split_once("://").ok_or_else(|| {
                format!("--s3-endpoint must be an http(s):// URL, got {endpoint:?}")
            })?;
            if !matches!(scheme, "http" | "https") || host.is_empty() {
                return Err(format!(
                    "--s3-endpoint must be an http(s):// URL, got {endpoint:?}"
                ));
            }
            if scheme == "http" && !self.s3_allow_http {
                return Err(format!(
                    "--s3-endpoint {endpoint} is plain http: add --s3-allow-http (REELFARM_S3_ALLOW_HTTP=true) to accept an unencrypted connection"
                ));
            }
        }
        Ok(location)
    }

    /// The `object_store` backend of a validated location. A directory is created if missing
    /// and made absolute (URIs name absolute paths).
    pub(super) fn backend(
        &self,
        location: Location,
    ) -> Result<(Location, Arc<dyn ObjectStore>), String> {
        match location {
            Location::Local { root } => {
                std::fs::create_dir_all(&root)
                    .map_err(|e| format!("--artifacts {}: cannot create: {e}", root.display()))?;
                let root = root
                    .canonicalize()
                    .map_err(|e| format!("--artifacts {}: {e}", root.display()))?;
                let fs = LocalFileSystem::new_with_prefix(&root)
                    .map_err(|e| format!("--artifacts {}: {e}", root.display()))?;
                Ok((Location::Local { root }, Arc::new(fs)))
            }
            Location::S3 { bucket, prefix } => {
                let path_style = self.s3_force_path_style;
                // from_env: credentials (keys, session token, web identity, container or
                // instance credentials) as the AWS SDKs find them; the flags below win.
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_virtual_hosted_style_request(!path_style)
                    .with_allow_http(self.s3_allow_http);
                if let Some(region) = non_empty(&self.s3_region) {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = non_empty(&self.s3_endpoint) {
                    // object_store expects a virtual-hosted endpoint to name the bucket.
                    let endpoint = if path_style {
                        endpoint.trim_end_matches('/').to_string()
                    } else {
                        virtual_hosted_endpoint(endpoint, &bucket)
                    };
                    builder = builder.with_endpoint(endpoint);
                }
                let s3 = builder
                    .build()
                    .map_err(|e| format!("--artifacts s3://{bucket}: {e}"))?;
                Ok((Location::S3 { bucket, prefix }, Arc::new(s3)))
            }
        }
    }
}

/// `https://host:port/path` → `https://BUCKET.host:port/path`.
fn virtual_hosted_endpoint(endpoint: &str, bucket: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => endpoint.to_string(),
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(location: &str) -> StoreConfig {
        StoreConfig {
            location: location.into(),
            ..StoreConfig::local("unused")
        }
    }

    #[test]
    fn s3_flags_are_refused_with_a_directory_store() {
        let config = StoreConfig {
            s3_endpoint: Some("https://minio:9000".into()),
            ..StoreConfig::local("/srv/reelfarm")
        };
        let err = config.validate().expect_err("an endpoint without a bucket");
        assert!(err.contains("--s3-endpoint"), "{err}");
        let empty = StoreConfig {
            s3_region: Some(String::new()),
            s3_endpoint: Some(" ".into()),
            ..StoreConfig::local("/srv/reelfarm")
        };
        assert!(empty.validate().is_ok(), "empty values count as unset");
    }

    #[test]
    fn plain_http_endpoints_need_allow_http() {
        let mut config = StoreConfig {
            s3_endpoint: Some("http://127.0.0.1:9000".into()),
            ..s3("s3://bucket-1/prefix")
        };
        let err = config.validate().expect_err("http without --s3-allow-http");
        assert!(err.contains("--s3-allow-http"), "{err}");
        config.s3_allow_http = true;
        assert!(config.validate().is_ok());
        config.s3_endpoint = Some("ftp://x".into());
        assert!(config.validate().is_err());
    }

    #[test]
    fn virtual_hosted_endpoints_name_the_bucket() {
        assert_eq!(
            virtual_hosted_endpoint("https://s3.example.com:9000/", "media"),
            "https://media.s3.example.com:9000"
        );
    }
}
