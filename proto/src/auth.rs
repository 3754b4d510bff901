//! Credentials on the wire, read the same way by every process of a cluster.
//!
//! A worker proves it belongs to the farm with the cluster's **join token**: a shared secret
//! both the coordinator (`--join-token-file`) and the worker (`--join-token-file`) read from
//! a file (a Kubernetes Secret mounted as one), sent as `authorization: Bearer TOKEN` on
//! the WorkerService stream and checked before anything on the stream is read.

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
        let contents = std::fs::read_to_string(path)
            .map_err(|e| format!("--join-token-file {}: {e}", path.display()))?;
        Self::parse(&contents).map_err(|e| format!("--join-token-file {}: {e}", path.display()))
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
        let (a, b) = (presented.as_bytes(), self.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
}
