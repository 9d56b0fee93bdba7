//! `api_accounts.json`: the exchange accounts a stack can trade, with their keys.
//!
//! ```json
//! {"accounts": [
//!   {"name": "mydemo", "environment": "demo", "api_key": "...", "api_secret": "..."},
//!   {"name": "main", "environment": "live", "api_key": "...", "secret_file": "/run/keys/main"}
//! ]}
//! ```
//!
//! The secret is kept in the file itself or, with `secret_file`, in a file of its own (a
//! secrets manager's mount, say). Both must be readable by their owner only (mode 0600):
//! a file that others can read is refused, never used. The file is written 0600 from the
//! start (never created wider, then narrowed). Secrets are [`Secret`]s: no `Debug`,
//! `Display` or log line shows them.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{Credentials, Environment, Secret};

/// Everything that can be wrong with the accounts file; each message names the file and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("the accounts file {} does not exist (add an account: shardbot accounts add NAME --environment demo)", path.display())]
    Missing { path: PathBuf },
    #[error("{} is readable by other users (mode {mode:04o}); it holds API secrets: chmod 600 {}", path.display(), path.display())]
    Permissions { path: PathBuf, mode: u32 },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid accounts file: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no account {name:?} in {} (it has: {known})", path.display())]
    NoSuchAccount {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error("account {name:?}: {why}")]
    Invalid { name: String, why: String },
}

/// One exchange account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    pub environment: Environment,
    pub api_key: String,
    /// The secret, in this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_secret: Option<Secret>,
    /// Or a file holding only the secret (also mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

impl Account {
    /// Checks what can be checked without the exchange.
    pub fn validate(&self) -> Result<(), AccountsError> {
        let invalid = |why: &str| {
            Err(AccountsError::Invalid {
                name: self.name.clone(),
                why: why.to_owned(),
            })
        };
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return invalid("names are letters, digits, '-' and '_' (they name files and folders)");
        }
        if self.environment == Environment::Sim {
            return invalid("sim accounts live in bybit-sim's configuration ([[sim.accounts]])");
        }
        if self.api_key.trim().is_empty() {
            return invalid("api_key is empty");
        }
        match (&self.api_secret, &self.secret_file) {
            (Some(s), None) if !s.expose().trim().is_empty() => Ok(()),
            (None, Some(_)) => Ok(()),
            (Some(_), Some(_)) => invalid("give api_secret or secret_file, not both"),
            _ => invalid("no secret: give api_secret or secret_file"),
        }
    }

    /// The key and its secret (read from `secret_file` if that is where it is).
    pub fn credentials(&self) -> Result<Credentials, AccountsError> {
        self.validate()?;
        let secret = match (&self.api_secret, &self.secret_file) {
            (Some(s), _) => s.expose().to_owned(),
            (None, Some(f)) => read_private(f)?.trim().to_owned(),
            (None, None) => String::new(),
        };
        Ok(Credentials::new(self.api_key.clone(), secret))
    }
}

/// The accounts file's contents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountsFile {
    #[serde(default)]
    pub accounts: Vec<Account>,
}

/// An account's name and environment: what a list shows, without its key or secret.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AccountName {
    pub name: String,
    pub environment: Environment,
}

#[derive(Deserialize)]
struct NamesOnly {
    #[serde(default)]
    accounts: Vec<AccountName>,
}

impl AccountsFile {
    /// The accounts' names and environments, for a list (the dashboard's): keys and
    /// secrets are skipped by the parser, never held in a value (a missing file has none).
    pub fn names(path: &Path) -> Result<Vec<AccountName>, AccountsError> {
        let text = match read_private(path) {
            Err(AccountsError::Missing { .. }) => return Ok(Vec::new()),
            other => other?,
        };
        let names: NamesOnly =
            serde_json::from_str(&text).map_err(|source| AccountsError::Parse {
                path: path.to_owned(),
                source,
            })?;
        Ok(names.accounts)
    }
}

/// Refuses a file that anyone but its owner may read or write.
#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), AccountsError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AccountsError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &Path, _: &fs::Metadata) -> Result<(), AccountsError> {
    Ok(())
}

fn read_private(path: &Path) -> Result<String, AccountsError> {
    let meta = fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => AccountsError::Missing {
            path: path.to_owned(),
        },
        _ => AccountsError::Read {
            path: path.to_owned(),
            source,
        },
    })?;
    check_private(path, &meta)?;
    fs::read_to_string(path).map_err(|source| AccountsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl AccountsFile {
    /// Reads the file; refuses it if others can read it.
    pub fn load(path: &Path) -> Result<AccountsFile, AccountsError> {
        let text = read_private(path)?;
        let file: AccountsFile =
            serde_json::from_str(&text).map_err(|source| AccountsError::Parse {
                path: path.to_owned(),
                source,
            })?;
        for a in &file.accounts {
            a.validate()?;
        }
        Ok(file)
    }

    /// Reads the file, or an empty one if it does not exist yet.
    pub fn load_or_empty(path: &Path) -> Result<AccountsFile, AccountsError> {
        match AccountsFile::load(path) {
            Err(AccountsError::Missing { .. }) => Ok(AccountsFile::default()),
            other => other,
        }
    }

    pub fn get(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The account called `name`, or an error listing the ones there are.
    pub fn account(&self, name: &str, path: &Path) -> Result<&Account, AccountsError> {
        self.get(name).ok_or_else(|| AccountsError::NoSuchAccount {
            name: name.to_owned(),
            path: path.to_owned(),
            known: if self.accounts.is_empty() {
                "no accounts".to_owned()
            } else {
                self.accounts
                    .iter()
                    .map(|a| format!("{} ({})", a.name, a.environment.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
    }

    /// Writes the file atomically, mode 0600 from creation on.
    pub fn save(&self, path: &Path) -> Result<(), AccountsError> {
        let write = |source| AccountsError::Write {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).map_err(|source| AccountsError::Parse {
            path: path.to_owned(),
            source,
        })?;
        let tmp = path.with_extension("json.tmp");
        // A leftover temporary file (a crash mid-save) may have any mode: it goes, and the
        // new one is created 0600, never readable by others even for a moment.
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(write(e)),
        }
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(write)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(write)?;
        fs::rename(&tmp, path).map_err(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> Account {
        Account {
            name: name.into(),
            environment: Environment::Demo,
            api_key: "key-1".into(),
            api_secret: Some(Secret::new("very-secret-value")),
            secret_file: None,
        }
    }

    #[test]
    fn names_are_listed_without_keys_or_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api_accounts.json");
        assert_eq!(
            AccountsFile::names(&path).unwrap(),
            Vec::new(),
            "no file yet"
        );
        let mut live = account("mylive");
        live.environment = Environment::Live;
        AccountsFile {
            accounts: vec![account("mydemo"), live],
        }
        .save(&path)
        .unwrap();
        let names = AccountsFile::names(&path).unwrap();
        assert_eq!(
            names
                .iter()
                .map(|a| (a.name.as_str(), a.environment))
                .collect::<Vec<_>>(),
            [("mydemo", Environment::Demo), ("mylive", Environment::Live)]
        );
        let shown = format!("{names:?}");
        assert!(
            !shown.contains("very-secret-value") && !shown.contains("key-1"),
            "{shown}"
        );
        // The same owner-only rule as for reading the keys.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                AccountsFile::names(&path),
                Err(AccountsError::Permissions { .. })
            ));
        }
    }

    #[test]
    fn saved_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api_accounts.json");
        let file = AccountsFile {
            accounts: vec![account("mydemo")],
        };
        // A temporary file left by a crash, readable by everyone: not reused as it is.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let tmp = path.with_extension("json.tmp");
            fs::write(&tmp, "{}").unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        }
        file.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let back = AccountsFile::load(&path).unwrap();
        assert_eq!(back, file);
        let c = back
            .account("mydemo", &path)
            .unwrap()
            .credentials()
            .unwrap();
        assert_eq!(
            (c.api_key.as_str(), c.secret.expose()),
            ("key-1", "very-secret-value")
        );
        let err = back.account("other", &path).unwrap_err().to_string();
        assert!(
            err.contains("no account \"other\"") && err.contains("mydemo (demo)"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api_accounts.json");
        AccountsFile {
            accounts: vec![account("mydemo")],
        }
        .save(&path)
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = AccountsFile::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("readable by other users (mode 0644)") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains("very-secret-value"));
    }

    #[test]
    fn a_missing_file_says_how_to_make_one() {
        let err = AccountsFile::load(Path::new("/nonexistent/api_accounts.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist") && err.contains("shardbot accounts add"));
        assert!(
            AccountsFile::load_or_empty(Path::new("/nonexistent/a.json"))
                .unwrap()
                .accounts
                .is_empty()
        );
    }

    #[test]
    fn secrets_never_print() {
        let a = account("mydemo");
        assert!(!format!("{a:?}").contains("very-secret-value"));
    }

    #[test]
    fn invalid_accounts_are_named() {
        let mut a = account("my demo");
        assert!(a.validate().unwrap_err().to_string().contains("names are"));
        a.name = "ok".into();
        a.api_secret = None;
        assert!(a.validate().unwrap_err().to_string().contains("no secret"));
        a.environment = Environment::Sim;
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .contains("sim accounts")
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_is_read_and_held_to_the_same_rule() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "from-a-file\n").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let mut a = account("x");
        a.api_secret = None;
        a.secret_file = Some(secret.clone());
        assert_eq!(a.credentials().unwrap().secret.expose(), "from-a-file");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            a.credentials(),
            Err(AccountsError::Permissions { mode: 0o640, .. })
        ));
    }
}
