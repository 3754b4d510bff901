//! Tenants: whom a job is for. The tenant is the unit of fair share (`scheduler::queue`),
//! of the per-tenant active-job limit, of idempotency keys and of the result cache, and
//! its name becomes part of store keys; so every name, from a request or from a flag, is
//! checked by the one rule below.

/// Longest tenant name in characters: a DNS label's limit, so a name fits in a label.
pub const MAX_CHARS: usize = 63;

/// A name that breaks the tenant rule. Its message states the rule and the name given;
/// the caller puts the field or flag in front of it (`spec.tenant must be ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1..={max} characters of [a-z0-9-], not starting or ending with '-', got {0:?}", max = MAX_CHARS)]
pub(crate) struct InvalidTenant(pub(crate) String);

/// The tenant rule: `[a-z0-9-]`, 1..=[`MAX_CHARS`] characters, not starting or ending
/// with '-'.
pub(crate) fn validate(name: &str) -> Result<(), InvalidTenant> {
    let ok = !name.is_empty()
        && name.len() <= MAX_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(InvalidTenant(name.to_string()))
    }
}
