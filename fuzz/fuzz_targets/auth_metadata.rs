//! Fuzz target: the coordinator's authentication of a request's `authorization` header
//! (`api::auth::KeyRing::authenticate`, which `ApiKeyCheck` runs before every JobService and
//! AdminService RPC) and the parsers of `reelfarm_proto::auth` beneath it.
//!
//! Built once per process: a key ring over a `MemoryStore` holding the bootstrap admin key
//! ([`BOOTSTRAP_ID`], no tenant), a submit key of tenant `ads` and a read key of tenant
//! `crm` that is revoked (both made by `KeyRing::create`, so their secrets are new in every
//! process), and a second ring started afterwards over the same store without a bootstrap
//! key: another replica, which reads every key back from the store.
//!
//! The input is the header value. Empty: no header at all. Else the first byte (`selector`)
//! says how the rest makes the header, so the fuzzer also reaches near-valid keys whose
//! secrets it cannot know: `selector & 3` is 0 for the rest as it is, 1 for a known header
//! followed by the rest, 2 for the rest followed by a known header, 3 for a known header
//! with the rest written over it from `1 + 5 * (selector >> 4)` bytes before its end;
//! `(selector >> 2) & 3` picks the known header (the admin key's, the submit key's, the
//! revoked key's, the join token's). A header that is not UTF-8 is presented as `""`, as the
//! interceptor does with a value that is not visible ASCII. Beyond "no panic":
//!
//! - `authenticate` answers exactly what a model of it says, on both replicas: no header is
//!   `Missing`; a header without a bearer credential (scheme `Bearer` in any case, one space,
//!   then one word; checked against a reimplementation of `bearer_token`) or whose
//!   credential `ApiKeyToken::parse` refuses is `Malformed`; a credential whose `expose()` is
//!   the whole key of a stored, unrevoked key is `Ok` with that key's id, role and tenant
//!   (none for the admin key); the revoked key's is `Revoked(its id)`; anything else is
//!   `Unknown`. So it is `Ok` only for a known, unrevoked key, and a refusal's text names no
//!   more than a key's public id, never the secret presented;
//! - `ApiKeyToken::parse` of the header and of its credential: an accepted key has an id of
//!   8..=32 `[a-z0-9]` and a secret of 32..=128 `[A-Za-z0-9]`, is the input trimmed, parses
//!   again from its `expose()` to the same key, and its `Debug` shows the id only; a refusal
//!   does not repeat the input (of 8 characters or more: it may be a secret), unless the
//!   input is a piece of the fixed text that describes a key's shape;
//! - `JoinToken::admits`, with a fixed token, is true exactly for `Bearer <token>` (scheme in
//!   any case, whitespace around the token ignored); `JoinToken::parse` of the input, when it
//!   accepts, makes a token admitted as `Bearer <the input trimmed>` and never printed.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use reelfarm_coordinator::api::auth::keys::AuthError;
use reelfarm_coordinator::api::auth::{Caller, KeyRing};
use reelfarm_coordinator::model::KeyRole;
use reelfarm_coordinator::state::memory::MemoryStore;
use reelfarm_proto::auth::{bearer_token, ApiKeyToken, JoinToken};
use tokio_util::sync::CancellationToken;

/// The bootstrap admin key (the same in `src/bin/write_seeds.rs`, whose seeds present it).
const BOOTSTRAP_ID: &str = "b00757a9";
const BOOTSTRAP_SECRET: &str = "B00tstrapAdminKeyForFuzzing0123456789xyz";
/// The cluster's join token.
const JOIN_TOKEN: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// A key the rings hold, and what `authenticate` answers for it.
struct Known {
    token: ApiKeyToken,
    answer: Result<Caller, AuthError>,
}

struct Fixture {
    /// Kept so the rings' refresh tasks have their runtime (they run only inside `block_on`,
    /// so after setup every lookup reads what setup left).
    _runtime: tokio::runtime::Runtime,
    ring: Arc<KeyRing>,
    replica: Arc<KeyRing>,
    known: Vec<Known>,
    join: JoinToken,
    /// Headers the selector builds on: admin, submit, revoked, join token.
    headers: [String; 4],
    /// What `ApiKeyToken::parse` says of every malformed key (today).
    shape_error: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let bootstrap = ApiKeyToken::new(BOOTSTRAP_ID, BOOTSTRAP_SECRET).expect("a valid key");
        let (ring, replica, submit, revoked) = runtime.block_on(async {
            let store = Arc::new(MemoryStore::new());
            let shutdown = CancellationToken::new();
            let ring = KeyRing::start(
                store.clone(),
                Some(bootstrap.clone()),
                false,
                shutdown.clone(),
            )
            .await
            .expect("the key ring starts");
            let (submit_record, submit) = ring
                .create("ads".into(), KeyRole::Submit, "fuzz submit key".into())
                .await
                .expect("a key is made");
            let (read_record, revoked) = ring
                .create("crm".into(), KeyRole::Read, "fuzz revoked key".into())
                .await
                .expect("a key is made");
            assert_eq!(submit_record.id, submit.id());
            assert_eq!(read_record.id, revoked.id());
            ring.revoke(revoked.id())
                .await
                .expect("the store answers")
                .expect("the key is there");
            let replica = KeyRing::start(store, None, false, shutdown)
                .await
                .expect("the replica starts");
            (ring, replica, submit, revoked)
        });
        assert!(
            ring.enabled() && replica.enabled(),
            "keys turn authentication on"
        );
        let caller = |id: &str, tenant: Option<&str>, role| Caller {
            key_id: Some(id.to_string()),
            tenant: tenant.map(str::to_string),
            role,
        };
        let known = vec![
            Known {
                answer: Ok(caller(BOOTSTRAP_ID, None, KeyRole::Admin)),
                token: bootstrap,
            },
            Known {
                answer: Ok(caller(submit.id(), Some("ads"), KeyRole::Submit)),
                token: submit,
            },
            Known {
                answer: Err(AuthError::Revoked(revoked.id().to_string())),
                token: revoked,
            },
        ];
        let join = JoinToken::parse(JOIN_TOKEN).expect("a valid join token");
        let headers = [
            known[0].token.bearer(),
            known[1].token.bearer(),
            known[2].token.bearer(),
            join.bearer(),
        ];
        let shape_error = ApiKeyToken::parse("").expect_err("the empty string is no key");
        let fixture = Fixture {
            _runtime: runtime,
            ring,
            replica,
            known,
            join,
            headers,
            shape_error,
        };
        // The setup itself is what the model says: each key as its own client sends it.
        for k in &fixture.known {
            for r in [&fixture.ring, &fixture.replica] {
                assert_eq!(
                    r.authenticate(Some(&k.token.bearer())),
                    k.answer,
                    "{:?}",
                    k.token
                );
            }
        }
        fixture
    })
}

/// `bearer_token`, written again: `Bearer` in any case, one space, then the credential
/// (whitespace around it ignored), one word, not empty.
fn reference_bearer(header: &str) -> Option<&str> {
    let b = header.as_bytes();
    if b.len() < 7 || !b[..6].eq_ignore_ascii_case(b"bearer") || b[6] != b' ' {
        return None;
    }
    let credential = header[7..].trim();
    (!credential.is_empty() && !credential.contains(' ')).then_some(credential)
}

/// What `authenticate(Some(header))` must answer.
fn model(f: &Fixture, header: &str) -> Result<Caller, AuthError> {
    let token = reference_bearer(header)
        .and_then(|c| ApiKeyToken::parse(c).ok())
        .ok_or(AuthError::Malformed)?;
    let whole = token.expose();
    match f.known.iter().find(|k| k.token.expose() == whole) {
        Some(k) => k.answer.clone(),
        None => Err(AuthError::Unknown),
    }
}

fn check_authenticate(f: &Fixture, header: &str) {
    let expected = model(f, header);
    for (name, ring) in [("ring", &f.ring), ("replica", &f.replica)] {
        let got = ring.authenticate(Some(header));
        assert_eq!(got, expected, "{name}, header {header:?}");
    }
    if let (Err(e), Some(Ok(token))) = (&expected, bearer_token(header).map(ApiKeyToken::parse)) {
        assert!(
            !e.to_string().contains(token.secret()),
            "the refusal {e} repeats the secret presented"
        );
    }
}

fn is_id(s: &str) -> bool {
    (8..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn is_secret(s: &str) -> bool {
    (32..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn check_api_key_parse(f: &Fixture, text: &str) {
    match ApiKeyToken::parse(text) {
        Ok(k) => {
            assert!(is_id(k.id()), "id {:?} of {text:?}", k.id());
            assert!(is_secret(k.secret()), "secret {:?} of {text:?}", k.secret());
            assert_eq!(k.expose(), text.trim(), "the key is the input trimmed");
            assert_eq!(ApiKeyToken::parse(&k.expose()), Ok(k.clone()), "round trip");
            assert_eq!(k.bearer(), format!("Bearer {}", k.expose()));
            assert_eq!(
                format!("{k:?}"),
                format!("ApiKeyToken({}, ..)", k.id()),
                "Debug shows the id only"
            );
        }
        Err(e) => {
            assert!(!e.is_empty(), "a refusal says why");
            assert!(
                text.chars().count() < 8 || !e.contains(text) || f.shape_error.contains(text),
                "the refusal {e:?} repeats the input {text:?}"
            );
        }
    }
}

fn check_join_token(f: &Fixture, header: &str) {
    assert_eq!(
        f.join.admits(header),
        reference_bearer(header) == Some(JOIN_TOKEN),
        "admits {header:?}"
    );
    match JoinToken::parse(header) {
        Ok(t) => {
            assert!(t.admits(&format!("Bearer {}", header.trim())), "{header:?}");
            assert_eq!(format!("{t:?}"), "JoinToken(..)", "never printed");
        }
        Err(e) => assert!(!e.is_empty(), "a refusal says why"),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&selector, rest)) = data.split_first() else {
        for ring in [&f.ring, &f.replica] {
            assert_eq!(ring.authenticate(None), Err(AuthError::Missing));
        }
        return;
    };
    let known = f.headers[usize::from((selector >> 2) & 3)].as_bytes();
    let header: Vec<u8> = match selector & 3 {
        0 => rest.to_vec(),
        1 => [known, rest].concat(),
        2 => [rest, known].concat(),
        _ => {
            let at = known
                .len()
                .saturating_sub(1 + 5 * usize::from(selector >> 4));
            let after = known.len().min(at + rest.len());
            [&known[..at], rest, &known[after..]].concat()
        }
    };
    let Ok(header) = std::str::from_utf8(&header) else {
        for ring in [&f.ring, &f.replica] {
            assert_eq!(ring.authenticate(Some("")), Err(AuthError::Malformed));
        }
        return;
    };
    check_authenticate(f, header);
    check_api_key_parse(f, header);
    if let Some(credential) = bearer_token(header) {
        assert_eq!(reference_bearer(header), Some(credential), "{header:?}");
        check_api_key_parse(f, credential);
    } else {
        assert_eq!(reference_bearer(header), None, "{header:?}");
    }
    check_join_token(f, header);
});
