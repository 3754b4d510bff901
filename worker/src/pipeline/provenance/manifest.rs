//! The signed provenance manifest: a small JSON statement that the clip is AI-generated, by
//! which generator and model, for which job and spec, signed with Ed25519 (`ed25519-dalek`).
//!
//! The signing key is derived from the farm secret (`sha256(KEY_CONTEXT || secret)` as the
//! Ed25519 seed), so every worker of a farm signs with the same key without distributing one,
//! and `verify` needs only the secret. The manifest binds the video by `content_sha256`, the
//! SHA-256 of the MP4's `mdat` payload (every coded sample), so editing either the manifest or
//! the media invalidates it. Nothing time-dependent is signed: the same job gives the same
//! bytes. It travels inside the MP4 as a top-level `uuid` box ([`MANIFEST_UUID`]) and as
//! manifest.json beside it.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pipeline::ClipSpec;

/// Tool that made the clip, written into every manifest.
pub const GENERATOR: &str = concat!("reelfarm-worker/", env!("CARGO_PKG_VERSION"));
/// Name of the generating model: the reference pipeline (scene parser, physics, diffusion).
pub const MODEL_NAME: &str = "reelfarm-reference-pipeline";
/// Version tag of this manifest's schema.
pub const FORMAT: &str = "reelfarm.manifest.v1";
/// Domain separation for deriving the signing key from the farm secret.
const KEY_CONTEXT: &[u8] = b"reelfarm/provenance/manifest-signing-key/v1";
/// The `uuid` box user type of our manifest: fixed random bytes generated once for reelfarm.
pub const MANIFEST_UUID: [u8; 16] = [
    0x7a, 0x2c, 0x91, 0x4e, 0x0b, 0xd3, 0x4f, 0x61, 0x9c, 0x55, 0x1e, 0x83, 0xa7, 0x30, 0xf4, 0x12,
];

/// What the manifest states. Field order is the canonical JSON order (serde follows it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// Always true: everything this farm makes is AI-generated.
    pub ai_generated: bool,
    pub generator: String,
    pub model: String,
    pub job_id: String,
    /// SHA-256 (hex) of the canonical spec JSON ([`spec_sha256`]).
    pub spec_sha256: String,
    /// SHA-256 (hex) of the MP4's `mdat` payload.
    pub content_sha256: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: u32,
    pub audio: bool,
    /// Name of the invisible watermark scheme carried by every frame.
    pub watermark: String,
    /// The open model that made the clip (then `model` is its folder name); absent for the
    /// reference pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_model: Option<ModelProvenance>,
}

/// What the manifest says about the open model that made a clip: which weights, exactly,
/// and the parameters that are not in the spec's reference fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelProvenance {
    pub name: String,
    pub family: String,
    /// SHA-256 over the model folder's weights and configs (see `models::host`).
    pub weights_sha256: String,
    pub sampler: String,
    pub steps: u32,
    pub guidance_scale: f64,
    pub negative_prompt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guide_strength: Option<f64>,
}

/// A manifest with its signature, as stored in the MP4 and in manifest.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub manifest: Manifest,
    /// Ed25519 public key (hex) of the farm that signed it.
    pub public_key: String,
    /// Ed25519 signature (hex) of the canonical JSON of `manifest`.
    pub signature: String,
}

/// SHA-256 (hex) of the canonical JSON of a spec: serde_json of [`ClipSpec`], fields in
/// declaration order, no whitespace.
pub fn spec_sha256(spec: &ClipSpec) -> String {
    let json = serde_json::to_vec(spec).expect("ClipSpec is plain data");
    hex::encode(Sha256::digest(json))
}

/// The farm's signing key, derived from its secret.
pub fn signing_key(farm_secret: &[u8]) -> SigningKey {
    let mut hasher = Sha256::new();
    hasher.update(KEY_CONTEXT);
    hasher.update(farm_secret);
    SigningKey::from_bytes(&hasher.finalize().into())
}

fn canonical(manifest: &Manifest) -> Vec<u8> {
    serde_json::to_vec(manifest).expect("Manifest is plain data")
}

/// Signs `manifest` with the key derived from `farm_secret`.
pub fn sign(manifest: Manifest, farm_secret: &[u8]) -> SignedManifest {
    let key = signing_key(farm_secret);
    let signature = key.sign(&canonical(&manifest));
    SignedManifest {
        manifest,
        public_key: hex::encode(key.verifying_key().to_bytes()),
        signature: hex::encode(signature.to_bytes()),
    }
}

impl SignedManifest {
    /// True when the signature is valid for this farm's key (a manifest signed by another key,
    /// even validly, is not ours).
    pub fn signature_valid(&self, farm_secret: &[u8]) -> bool {
        let ours: VerifyingKey = signing_key(farm_secret).verifying_key();
        if hex::encode(ours.to_bytes()) != self.public_key {
            return false;
        }
        let Ok(sig_bytes) = hex::decode(&self.signature) else {
            return false;
        };
        let Ok(sig_array) = <[u8; 64]>::try_from(sig_bytes.as_slice()) else {
            return false;
        };
        ours.verify(
            &canonical(&self.manifest),
            &Signature::from_bytes(&sig_array),
        )
        .is_ok()
    }

    /// Serialized form stored in the MP4's uuid box.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("SignedManifest is plain data")
    }

    /// Parses the stored form; `None` when it is not a signed manifest.
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            ai_generated: true,
            generator: GENERATOR.into(),
            model: MODEL_NAME.into(),
            job_id: "0123456789abcdef".into(),
            spec_sha256: "00".repeat(32),
            content_sha256: "11".repeat(32),
            width: 160,
            height: 96,
            fps: 24,
            frames: 24,
            audio: true,
            watermark: "test".into(),
            open_model: None,
        }
    }

    #[test]
    fn signature_verifies_with_the_same_secret_only() {
        let signed = sign(sample(), b"farm-a");
        assert!(signed.signature_valid(b"farm-a"));
        assert!(
            !signed.signature_valid(b"farm-b"),
            "another farm's key must not verify"
        );
    }

    #[test]
    fn any_edit_of_the_manifest_breaks_the_signature() {
        let mut signed = sign(sample(), b"farm-a");
        signed.manifest.ai_generated = false;
        assert!(!signed.signature_valid(b"farm-a"));
    }

    #[test]
    fn signing_is_deterministic() {
        assert_eq!(
            sign(sample(), b"s").to_json(),
            sign(sample(), b"s").to_json()
        );
    }
}
