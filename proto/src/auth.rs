//! Credentials on the wire, read the same way by every process of a cluster.
//!
//! A worker proves it belongs to the farm with the cluster's **join token**: a shared secret
//! both the coordinator (`--join-token-file`) and the worker (`--join-token-file`) read from
//! a file (a Kubernetes Secret mounted as one), sent as `authorization: Bearer TOKEN` on
//! the WorkerService stream and checked before anything on the stream is read.
//!
//! A client proves who it is with an **API key** ([`ApiKeyToken`]), `rfk_<id>_<secret>`, sent
//! the same way. The id is public (lists, logs, revocation); the secret is random and the
//! coordinator keeps only its SHA-256.

use std::path::Path;

/// The request header every credential travels in.
pub const AUTHORIZATION: &str = "authorization";

/// Shortest join token accepted: 128 bits as hex. A short token could be guessed.
pub const MIN_TOKEN_CHARS: usize = 32;
/// Longest: anything larger is not a token but the wrong file.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// A cluster's join token (never printed: its `Debug` hides it).
#[derive(Clone)]
pub struct JoinToken(String);

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(..)")
    }
}

impl JoinToken {
    /// The token in `contents` (a file's text): one line, surrounding whitespace ignored,
    /// [`MIN_TOKEN_CHARS`]..=[`MAX_TOKEN_CHARS`] visible ASCII characters.
    pub fn parse(contents: &str) -> Result<Self, String> {
        let token = contents.trim();
        if token.len() < MIN_TOKEN_CHARS || token.len() > MAX_TOKEN_CHARS {
            return Err(format!(
                "the join token must be {MIN_TOKEN_CHARS}..={MAX_TOKEN_CHARS} characters, got {} \
                 (make one with `openssl rand -hex 32`)",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the join token must be one line of visible ASCII characters".into());
        }
        Ok(Self(token.to_string()))
    }

    /// The token in the file `path`; the error names the file.
    pub fn read(path: &Path) -> Result<Self, String> {
        parse_flag_file("--join-token-file", path, Self::parse)
    }

    /// [`JoinToken::read`] of a `--join-token-file` that may not be given.
    pub fn read_flag(path: Option<&Path>) -> Result<Option<Self>, String> {
        path.map(Self::read).transpose()
    }

    /// The `authorization` header value that presents it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `header` (an `authorization` value) presents this token. The comparison takes
    /// the same time wherever the first difference is, so timing does not reveal a prefix.
    pub fn admits(&self, header: &str) -> bool {
        let Some(presented) = bearer_token(header) else {
            return false;
        };
        constant_time_eq(presented.as_bytes(), self.0.as_bytes())
    }
}

/// The credential of an `authorization: Bearer CREDENTIAL` header (the scheme is matched
/// without regard to case, as RFC 6750 says); `None` for any other scheme or shape.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, credential) = header.split_once(' ')?;
    let credential = credential.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !credential.is_empty() && !credential.contains(' '))
        .then_some(credential)
}

/// How every API key begins (so a key in a log or a leaked file is recognisable).
pub const API_KEY_PREFIX: &str = "rfk_";
/// Bounds of a key's id (lowercase letters and digits).
pub const API_KEY_ID_CHARS: std::ops::RangeInclusive<usize> = 8..=32;
/// Bounds of a key's secret (letters and digits): at least 32 characters of randomness.
pub const API_KEY_SECRET_CHARS: std::ops::RangeInclusive<usize> = 32..=128;

/// An API key as a client presents it: `rfk_<id>_<secret>` (never printed: `Debug` shows the
/// id only).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyToken {
    id: String,
    secret: String,
}

impl std::fmt::Debug for ApiKeyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeyToken({}, ..)", self.id)
    }
}

impl ApiKeyToken {
    /// A key from its parts (the coordinator makes the secret from a CSPRNG).
    pub fn new(id: &str, secret: &str) -> Result<Self, String> {
        Self::parse(&format!("{API_KEY_PREFIX}{id}_{secret}"))
    }

    /// Reads `rfk_<id>_<secret>`: id 8..=32 of `[a-z0-9]`, secret 32..=128 of `[A-Za-z0-9]`.
    /// The error never repeats the input (it may be someone's secret).
    pub fn parse(text: &str) -> Result<Self, String> {
        let shape = || {
            format!(
                "an API key is {API_KEY_PREFIX}<id>_<secret>: id {}..={} of [a-z0-9], secret {}..={} of [A-Za-z0-9]",
                API_KEY_ID_CHARS.start(),
                API_KEY_ID_CHARS.end(),
                API_KEY_SECRET_CHARS.start(),
                API_KEY_SECRET_CHARS.end()
            )
        };
        let rest = text.trim().strip_prefix(API_KEY_PREFIX).ok_or_else(shape)?;
        let (id, secret) = rest.split_once('_').ok_or_else(shape)?;
        let id_ok = is_api_key_id(id);
        let secret_ok = API_KEY_SECRET_CHARS.contains(&secret.len())
            && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        if !(id_ok && secret_ok) {
            return Err(shape());
        }
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The key in the file `path` (named in the error), for `--bootstrap-admin-key-file`.
    pub fn read(flag: &str, path: &Path) -> Result<Self, String> {
        parse_flag_file(flag, path, Self::parse)
    }

    /// The public part.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part (what the coordinator hashes).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The whole key, as a client sends it.
    pub fn expose(&self) -> String {
        format!("{API_KEY_PREFIX}{}_{}", self.id, self.secret)
    }

    /// The `authorization` header value that presents it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.expose())
    }
}

/// The bytes of the file `path` a flag names; the error names the flag and the file. The one
/// reading of credential and certificate files for every process.
pub fn read_flag_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// `parse` of the text of the file `path` a flag names; errors name the flag and the file.
fn parse_flag_file<T>(
    flag: &str,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, String> {
    let bytes = read_flag_file(flag, path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| format!("{flag} {}: not UTF-8: {e}", path.display()))?;
    parse(text).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// Whether `id` has the shape of an API key's public part: 8..=32 of `[a-z0-9]`.
pub fn is_api_key_id(id: &str) -> bool {
    API_KEY_ID_CHARS.contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether two byte strings are equal, in a time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_file_is_one_line_of_enough_visible_characters() {
        let t = JoinToken::parse(&format!("  {TOKEN}\n")).unwrap();
        assert_eq!(t.bearer(), format!("Bearer {TOKEN}"));
        assert!(format!("{t:?}").contains(".."), "never printed");
        assert!(JoinToken::parse("short")
            .unwrap_err()
            .contains("openssl rand"));
        assert!(JoinToken::parse(&format!("{TOKEN} {TOKEN}")).is_err());
        assert!(JoinToken::parse(&"a".repeat(MAX_TOKEN_CHARS + 1)).is_err());
    }

    #[test]
    fn only_the_same_token_as_a_bearer_credential_is_admitted() {
        let t = JoinToken::parse(TOKEN).unwrap();
        assert!(t.admits(&format!("Bearer {TOKEN}")));
        assert!(t.admits(&format!("bearer {TOKEN}")));
        for wrong in [
            String::new(),
            TOKEN.to_string(),
            format!("Basic {TOKEN}"),
            format!("Bearer {}", &TOKEN[1..]),
            format!("Bearer {TOKEN}0"),
            format!("Bearer {}X", &TOKEN[..TOKEN.len() - 1]),
            "Bearer ".to_string(),
            format!("Bearer {TOKEN} extra"),
        ] {
            assert!(!t.admits(&wrong), "{wrong:?}");
        }
    }

    #[test]
    fn an_api_key_has_its_shape_and_is_never_printed() {
        let secret = "Ab3".repeat(12);
        let k = ApiKeyToken::parse(&format!(" rfk_0a1b2c3d_{secret}\n")).unwrap();
        assert_eq!(k.id(), "0a1b2c3d");
        assert_eq!(k.secret(), secret);
        assert_eq!(k.expose(), format!("rfk_0a1b2c3d_{secret}"));
        assert_eq!(ApiKeyToken::new("0a1b2c3d", &secret).unwrap(), k);
        assert!(!format!("{k:?}").contains(&secret));
        for bad in [
            String::new(),
            format!("0a1b2c3d_{secret}"),
            format!("rfk_0a1b_{secret}"),
            format!("rfk_0A1B2C3D_{secret}"),
            format!("rfk_0a1b2c3d_{}", &secret[..31]),
            format!("rfk_0a1b2c3d_{secret}!"),
            format!("rfk_0a1b2c3d{secret}"),
            format!("rfk_0a1b2c3d_{}", "a".repeat(129)),
        ] {
            let e = ApiKeyToken::parse(&bad).unwrap_err();
            assert!(
                !bad.is_empty() && !e.contains(&bad) || bad.is_empty(),
                "{e}"
            );
        }
    }
}
