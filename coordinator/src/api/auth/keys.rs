//! The key ring: every replica's copy of the stored API keys, refreshed from the store every
//! [`REFRESH`], so that a key revoked through any replica stops working on all of them
//! within seconds. Lookups are in memory (an interceptor cannot wait on etcd); writes go to
//! the store first and then to this replica's copy at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rand::distr::{Alphanumeric, SampleString};
use reelfarm_proto::auth::{bearer_token, ApiKeyToken};
use tokio_util::sync::CancellationToken;

use super::Caller;
use crate::model::api_key::secret_sha256;
use crate::model::{now_ms, ApiKeyRecord, KeyRole};
use crate::state::{StateStore, StoreError, StoreResult};

/// How often each replica reloads the keys: the bound on how long a revoked key keeps
/// working on a replica that did not revoke it.
pub const REFRESH: Duration = Duration::from_secs(1);
/// Characters of a new key's id and secret (lowercase hex-like id; 48 alphanumerics carry
/// about 285 bits).
const NEW_ID_CHARS: usize = 16;
const NEW_SECRET_CHARS: usize = 48;

/// Why a request's credential was not accepted (each becomes UNAUTHENTICATED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this API needs an API key: send `authorization: Bearer KEY` (reelfarm --api-key, or \
         REELFARM_API_KEY)"
    )]
    Missing,
    #[error("the authorization header is not `Bearer rfk_<id>_<secret>`")]
    Malformed,
    #[error("the API key presented is not valid")]
    Unknown,
    #[error("API key {0} was revoked")]
    Revoked(String),
}

/// See the module docs.
pub struct KeyRing {
    store: Arc<dyn StateStore>,
    /// Off: every caller is an anonymous admin (`--insecure`, or a loopback farm without
    /// keys).
    enabled: bool,
    keys: RwLock<HashMap<String, ApiKeyRecord>>,
}

impl KeyRing {
    /// Loads the keys, stores the bootstrap admin key if it is new, and keeps refreshing
    /// until `shutdown`. Authentication is on when a bootstrap key is given or the store
    /// holds keys, unless `insecure`.
    pub async fn start(
        store: Arc<dyn StateStore>,
        bootstrap: Option<ApiKeyToken>,
        insecure: bool,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        if let Some(key) = &bootstrap {
            bootstrap_key(store.as_ref(), key).await?;
        }
        let stored = store
            .api_keys()
            .await
            .map_err(|e| anyhow::anyhow!("reading the API keys: {e}"))?;
        let enabled = !insecure && (bootstrap.is_some() || !stored.is_empty());
        if insecure && !stored.is_empty() {
            tracing::warn!(
                keys = stored.len(),
                "--insecure: the stored API keys are ignored, every caller acts as an admin"
            );
        }
        let ring = Arc::new(Self {
            store,
            enabled,
            keys: RwLock::new(index(stored)),
        });
        let refreshing = ring.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(REFRESH) => {}
                }
                match refreshing.store.api_keys().await {
                    Ok(keys) => *refreshing.keys.write() = index(keys),
                    // Keep the last copy: a store outage must not lock every client out.
                    // A revocation made meanwhile applies once the store answers again.
                    Err(e) => tracing::warn!(error = %e, "refreshing the API keys failed"),
                }
            }
        });
        Ok(ring)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Who presents `header` (an `authorization` value, `None` if absent).
    pub fn authenticate(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        if !self.enabled {
            return Ok(Caller::anonymous());
        }
        let header = header.ok_or(AuthError::Missing)?;
        let token = bearer_token(header)
            .and_then(|t| ApiKeyToken::parse(t).ok())
            .ok_or(AuthError::Malformed)?;
        let keys = self.keys.read();
        let record = keys.get(token.id()).ok_or(AuthError::Unknown)?;
        if !record.matches(token.secret()) {
            return Err(AuthError::Unknown);
        }
        if record.revoked_ms.is_some() {
            return Err(AuthError::Revoked(record.id.clone()));
        }
        Ok(Caller::of_key(record))
    }

    /// Makes and stores a new key; answers its record and the whole key (shown once).
    pub async fn create(
        &self,
        tenant: String,
        role: KeyRole,
        description: String,
    ) -> StoreResult<(ApiKeyRecord, ApiKeyToken)> {
        loop {
            // ThreadRng: ChaCha12 seeded from the OS, a CSPRNG (not held across an await).
            let (id, secret) = {
                let mut rng = rand::rng();
                (
                    Alphanumeric
                        .sample_string(&mut rng, NEW_ID_CHARS)
                        .to_ascii_lowercase(),
                    Alphanumeric.sample_string(&mut rng, NEW_SECRET_CHARS),
                )
            };
            let token = ApiKeyToken::new(&id, &secret).expect("generated keys have the shape");
            let record = ApiKeyRecord {
                id,
                tenant: tenant.clone(),
                role,
                secret_sha256: secret_sha256(&secret),
                description: description.clone(),
                created_ms: now_ms(),
                revoked_ms: None,
            };
            // An id collision (1 in 36^16) draws again rather than overwrite.
            if self.store.create_api_key(&record).await? {
                self.keys.write().insert(record.id.clone(), record.clone());
                return Ok((record, token));
            }
        }
    }

    /// Revokes the key `id`; `None` if there is none.
    pub async fn revoke(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let revoked = self.store.revoke_api_key(id, now_ms()).await?;
        if let Some(r) = &revoked {
            self.keys.write().insert(r.id.clone(), r.clone());
        }
        Ok(revoked)
    }

    /// Every key as stored now (not this replica's copy, which may be a second old).
    pub async fn list(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        self.store.api_keys().await
    }
}

fn index(keys: Vec<ApiKeyRecord>) -> HashMap<String, ApiKeyRecord> {
    keys.into_iter().map(|k| (k.id.clone(), k)).collect()
}

/// Stores `--bootstrap-admin-key-file`'s key unless its id is there already. A revoked
/// bootstrap key stays revoked (the file does not bring it back); an id held by a different
/// secret is an error, not an overwrite.
async fn bootstrap_key(store: &dyn StateStore, key: &ApiKeyToken) -> anyhow::Result<()> {
    let record = ApiKeyRecord {
        id: key.id().to_string(),
        tenant: String::new(),
        role: KeyRole::Admin,
        secret_sha256: secret_sha256(key.secret()),
        description: "bootstrap admin key (--bootstrap-admin-key-file)".into(),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    let unavailable = |e: StoreError| anyhow::anyhow!("storing the bootstrap admin key: {e}");
    if store.create_api_key(&record).await.map_err(unavailable)? {
        tracing::info!(key_id = %record.id, "bootstrap admin key stored");
        return Ok(());
    }
    let stored = store.api_keys().await.map_err(unavailable)?;
    match stored.iter().find(|k| k.id == record.id) {
        Some(k) if !k.matches(key.secret()) => anyhow::bail!(
            "--bootstrap-admin-key-file: key id {} is already taken by another key",
            record.id
        ),
        Some(k) if k.revoked_ms.is_some() => tracing::warn!(
            key_id = %k.id,
            "the bootstrap admin key was revoked; it stays revoked"
        ),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::MemoryStore;

    fn bootstrap() -> ApiKeyToken {
        ApiKeyToken::new("b00757a9", &"B".repeat(40)).unwrap()
    }

    #[tokio::test]
    async fn keys_authenticate_until_revoked_and_only_their_hash_is_stored() {
        let store = Arc::new(MemoryStore::new());
        let stop = CancellationToken::new();
        let ring = KeyRing::start(store.clone(), Some(bootstrap()), false, stop.clone())
            .await
            .unwrap();
        assert!(ring.enabled());
        let admin = ring.authenticate(Some(&bootstrap().bearer())).unwrap();
        assert_eq!(admin.role, KeyRole::Admin);

        let (record, key) = ring
            .create("ads".into(), KeyRole::Submit, "ci".into())
            .await
            .unwrap();
        let caller = ring.authenticate(Some(&key.bearer())).unwrap();
        assert_eq!(
            (caller.tenant.as_deref(), caller.role),
            (Some("ads"), KeyRole::Submit)
        );
        let stored = serde_json::to_string(&store.api_keys().await.unwrap()).unwrap();
        assert!(!stored.contains(key.secret()), "no secret is stored");

        assert_eq!(ring.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(
            ring.authenticate(Some("Bearer nope")).unwrap_err(),
            AuthError::Malformed
        );
        let forged = ApiKeyToken::new(key.id(), &"x".repeat(48)).unwrap();
        assert_eq!(
            ring.authenticate(Some(&forged.bearer())).unwrap_err(),
            AuthError::Unknown
        );

        ring.revoke(&record.id).await.unwrap().unwrap();
        assert_eq!(
            ring.authenticate(Some(&key.bearer())).unwrap_err(),
            AuthError::Revoked(record.id.clone())
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn a_revocation_through_another_replica_applies_within_the_refresh() {
        let store = Arc::new(MemoryStore::new());
        let stop = CancellationToken::new();
        let a = KeyRing::start(store.clone(), Some(bootstrap()), false, stop.clone())
            .await
            .unwrap();
        let b = KeyRing::start(store.clone(), None, false, stop.clone())
            .await
            .unwrap();
        assert!(b.enabled(), "keys in the store turn authentication on");
        let (record, key) = a
            .create("crm".into(), KeyRole::Read, String::new())
            .await
            .unwrap();
        tokio::time::sleep(REFRESH * 2).await;
        assert!(b.authenticate(Some(&key.bearer())).is_ok());
        a.revoke(&record.id).await.unwrap();
        tokio::time::sleep(REFRESH * 2).await;
        assert!(matches!(
            b.authenticate(Some(&key.bearer())),
            Err(AuthError::Revoked(_))
        ));
        stop.cancel();
    }

    #[tokio::test]
    async fn the_bootstrap_key_is_stored_once_and_a_taken_id_is_an_error() {
        let store = Arc::new(MemoryStore::new());
        let stop = CancellationToken::new();
        KeyRing::start(store.clone(), Some(bootstrap()), false, stop.clone())
            .await
            .unwrap();
        KeyRing::start(store.clone(), Some(bootstrap()), false, stop.clone())
            .await
            .expect("the same key again is fine");
        assert_eq!(store.api_keys().await.unwrap().len(), 1);
        let impostor = ApiKeyToken::new("b00757a9", &"C".repeat(40)).unwrap();
        let e = KeyRing::start(store.clone(), Some(impostor), false, stop.clone())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("already taken"), "{e}");
        // --insecure ignores stored keys: everyone is an anonymous admin.
        let open = KeyRing::start(store, None, true, stop.clone())
            .await
            .unwrap();
        assert_eq!(open.authenticate(None).unwrap().role, KeyRole::Admin);
        stop.cancel();
    }
}
