//! The dashboard's access token: 32 random bytes, hex, in a file only its owner can read.
//! Never logged; compared in constant time.

use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use rand::RngCore;
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the dashboard token {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the dashboard token {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} can be read by other users (mode {mode:o}): run `chmod 600 {path}` (the token opens the dashboard)"
    )]
    Readable { path: String, mode: u32 },
    #[error(
        "{path} holds no token (at least 16 characters, no spaces): delete it and a new one is made at start"
    )]
    Invalid { path: String },
}

/// The token, redacted in `Debug`.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Whether `candidate` is the token (constant time in its content).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.trim().as_bytes()).into()
    }
}

/// A fresh random hex string of `bytes` bytes (tokens, session ids).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Reads the token from `path`, or creates the file (mode 0600) with a new one.
pub fn load_or_create(path: &Path) -> Result<Token, TokenError> {
    let p = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(TokenError::Readable { path: p, mode });
            }
            let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                path: p.clone(),
                source,
            })?;
            let t = text.trim();
            if t.len() < 16 || t.contains(char::is_whitespace) {
                return Err(TokenError::Invalid { path: p });
            }
            Ok(Token(t.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let create = |source| TokenError::Create {
                path: p.clone(),
                source,
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(create)?;
            }
            let token = random_hex(32);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(create)?;
            writeln!(f, "{token}").map_err(create)?;
            tracing::info!(token_file = %p, "a new dashboard token was written");
            Ok(Token(token))
        }
        Err(source) => Err(TokenError::Read { path: p, source }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn created_0600_read_back_and_compared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dashboard.token");
        let t = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(t.matches(text.trim()) && again.matches(text.trim()));
        assert!(!t.matches("wrong") && !t.matches(""));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dashboard.token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            load_or_create(&path)
                .unwrap()
                .matches("0123456789abcdef0123")
        );
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(TokenError::Invalid { .. })
        ));
    }
}
