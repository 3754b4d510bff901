//! An API key as the coordinator stores it: who it belongs to and what it may do, and the
//! SHA-256 of its secret, never the secret itself.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key may do; each role includes the ones before it (`Read < Submit < Admin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// Reads its tenant's jobs.
    Read,
    /// And submits and cancels them.
    Submit,
    /// Everything, for every tenant.
    Admin,
}

impl KeyRole {
    pub fn name(self) -> &'static str {
        match self {
            KeyRole::Read => "read",
            KeyRole::Submit => "submit",
            KeyRole::Admin => "admin",
        }
    }
}

/// One stored key (`/reelfarm/<cluster>/apikeys/<id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    /// Empty only for an admin key made without a tenant.
    pub tenant: String,
    pub role: KeyRole,
    /// Hex SHA-256 of the key's secret part. The secret has at least 190 bits of randomness,
    /// so a fast hash is enough: there is nothing to brute-force a dictionary against.
    pub secret_sha256: String,
    #[serde(default)]
    pub description: String,
    pub created_ms: u64,
    /// Set when revoked; a revoked key is kept (listed, and its id never reused).
    #[serde(default)]
    pub revoked_ms: Option<u64>,
}

impl ApiKeyRecord {
    /// Whether `secret` is this key's, compared in constant time.
    pub fn matches(&self, secret: &str) -> bool {
        reelfarm_proto::auth::constant_time_eq(
            secret_sha256(secret).as_bytes(),
            self.secret_sha256.as_bytes(),
        )
    }
}

/// What is stored for a secret.
pub fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
