//! `shardbot accounts add|list|edit|remove|test`: the accounts file (`api_accounts.json`,
//! owner-only) that `exchange.account` and `scripts/stack up --account NAME` pick from.
//! Secrets are read from SHARDBOT_API_SECRET or standard input, never from the command
//! line (where `ps` and the shell history would see them), and never printed.

use std::{
    io::{BufRead, IsTerminal},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use shardbot_bybit::{Account, AccountsFile, Environment, ExchangeSettings, Secret, masked_key};
use shardbot_service::Settings;

#[derive(Args, Debug)]
pub struct AccountsArgs {
    /// Local configuration file (its `exchange.accounts_file` says which file; URL
    /// overrides apply to `test`). SHARDBOT_CONFIG works too.
    #[arg(long, env = "SHARDBOT_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The accounts file, instead of the configured one.
    #[arg(long, global = true, value_name = "FILE")]
    file: Option<PathBuf>,
    #[command(subcommand)]
    command: AccountsCommand,
}

#[derive(Subcommand, Debug)]
enum AccountsCommand {
    /// Every account: name, environment, key (masked), where its secret is.
    List,
    /// One account: name, environment, key (masked), where its secret is. Fails, naming
    /// the fix, if the file is missing, readable by others, or has no such account
    /// (bybit-sim's own accounts, `[[sim.accounts]]`, are shown too).
    Show { name: String },
    /// Add an account. The secret comes from SHARDBOT_API_SECRET, else from standard
    /// input (one line), unless --secret-file names a file holding it.
    Add {
        name: String,
        /// demo (Bybit Demo Trading), live (real money) or testnet.
        #[arg(long)]
        environment: Environment,
        #[arg(long)]
        api_key: String,
        /// A file (mode 0600) holding only the secret, read when a service starts.
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// Change an account's key, secret (--new-secret reads it as `add` does), secret file
    /// or environment.
    Edit {
        name: String,
        #[arg(long)]
        environment: Option<Environment>,
        #[arg(long)]
        api_key: Option<String>,
        #[arg(long)]
        new_secret: bool,
        #[arg(long, value_name = "FILE")]
        secret_file: Option<PathBuf>,
    },
    /// Remove an account.
    Remove { name: String },
    /// Sign in to the account's exchange with its keys: server time, the key's account
    /// and wallet. A wrong key or a key of another environment fails here, not later.
    Test { name: String },
}

/// One line typed at the terminal, not echoed: echo is turned off *before* the prompt is
/// shown (so nothing typed after the prompt can be echoed) and restored afterwards, even
/// when the read fails. (rpassword shows its prompt first and turns echo off after, so a
/// fast typist's first characters could still appear.)
fn read_without_echo(stdin: &std::io::Stdin, name: &str) -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let saved = tcgetattr(stdin).context("reading the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(stdin, OptionalActions::Now, &quiet).context("turning the terminal's echo off")?;
    eprint!("API secret of {name} (not shown as you type): ");
    std::io::Write::flush(&mut std::io::stderr()).ok();
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let restored = tcsetattr(stdin, OptionalActions::Now, &saved);
    read.context("reading the secret from the terminal")?;
    restored.context("turning the terminal's echo back on")?;
    Ok(line)
}

/// The secret from SHARDBOT_API_SECRET, else one line of standard input.
fn read_secret(name: &str) -> anyhow::Result<Secret> {
    if let Ok(s) = std::env::var("SHARDBOT_API_SECRET")
        && !s.trim().is_empty()
    {
        return Ok(Secret::new(s.trim()));
    }
    let stdin = std::io::stdin();
    let line = if stdin.is_terminal() {
        read_without_echo(&stdin, name)?
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the secret from standard input")?;
        line
    };
    let secret = line.trim();
    if secret.is_empty() {
        bail!("no secret: set SHARDBOT_API_SECRET or pass it on standard input");
    }
    Ok(Secret::new(secret))
}

fn where_secret(a: &Account) -> String {
    match &a.secret_file {
        Some(f) => format!("file {}", f.display()),
        None => "in the accounts file".to_owned(),
    }
}

pub fn run(args: AccountsArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let exchange: ExchangeSettings = settings.section("exchange")?;
    let path = args.file.clone().unwrap_or_else(|| {
        PathBuf::from(if exchange.accounts_file.trim().is_empty() {
            "api_accounts.json"
        } else {
            exchange.accounts_file.as_str()
        })
    });
    match args.command {
        AccountsCommand::List => list(&path),
        AccountsCommand::Show { name } => {
            let found = AccountsFile::load(&path).and_then(|f| f.account(&name, &path).cloned());
            match found {
                Ok(a) => println!(
                    "{} {} {} {}",
                    a.name,
                    a.environment.as_str(),
                    masked_key(&a.api_key),
                    where_secret(&a)
                ),
                Err(e) => {
                    // bybit-sim's own accounts ([[sim.accounts]] of the configuration)
                    let Some((n, key, _)) = settings.sim_account(&name) else {
                        return Err(e.into());
                    };
                    println!("{n} sim {} [[sim.accounts]]", masked_key(&key));
                }
            }
            Ok(())
        }
        AccountsCommand::Add {
            name,
            environment,
            api_key,
            secret_file,
        } => {
            let mut file = AccountsFile::load_or_empty(&path)?;
            if file.get(&name).is_some() {
                bail!(
                    "{} already has an account {name:?} (change it with `shardbot accounts edit`)",
                    path.display()
                );
            }
            let api_secret = match secret_file {
                Some(_) => None,
                None => Some(read_secret(&name)?),
            };
            let account = Account {
                name: name.clone(),
                environment,
                api_key,
                api_secret,
                secret_file,
            };
            account.validate()?;
            file.accounts.push(account);
            file.save(&path)?;
            println!(
                "added {name} ({}) to {} (mode 0600); check the keys with `shardbot accounts test {name}`",
                environment.as_str(),
                path.display()
            );
            Ok(())
        }
        AccountsCommand::Edit {
            name,
            environment,
            api_key,
            new_secret,
            secret_file,
        } => {
            let mut file = AccountsFile::load(&path)?;
            file.account(&name, &path)?;
            let secret = new_secret.then(|| read_secret(&name)).transpose()?;
            let Some(a) = file.accounts.iter_mut().find(|a| a.name == name) else {
                bail!("no account {name:?}");
            };
            let mut changed = Vec::new();
            if let Some(e) = environment {
                a.environment = e;
                changed.push("environment");
            }
            if let Some(k) = api_key {
                a.api_key = k;
                changed.push("api key");
            }
            if let Some(s) = secret {
                a.api_secret = Some(s);
                a.secret_file = None;
                changed.push("secret");
            }
            if let Some(f) = secret_file {
                a.secret_file = Some(f);
                a.api_secret = None;
                changed.push("secret file");
            }
            if changed.is_empty() {
                bail!(
                    "nothing to change: give --environment, --api-key, --new-secret or --secret-file"
                );
            }
            a.validate()?;
            file.save(&path)?;
            println!("{name}: changed {}", changed.join(", "));
            Ok(())
        }
        AccountsCommand::Remove { name } => {
            let mut file = AccountsFile::load(&path)?;
            file.account(&name, &path)?;
            file.accounts.retain(|a| a.name != name);
            file.save(&path)?;
            println!("removed {name} from {}", path.display());
            Ok(())
        }
        AccountsCommand::Test { name } => test(&path, exchange, &name),
    }
}

fn list(path: &Path) -> anyhow::Result<()> {
    let file = AccountsFile::load_or_empty(path)?;
    if file.accounts.is_empty() {
        println!(
            "no accounts in {} (add one: shardbot accounts add NAME --environment demo --api-key KEY)",
            path.display()
        );
        return Ok(());
    }
    println!("{:<20} {:<8} {:<10} secret", "name", "env", "key");
    for a in &file.accounts {
        let env = match a.environment {
            Environment::Live => "LIVE",
            e => e.as_str(),
        };
        println!(
            "{:<20} {:<8} {:<10} {}",
            a.name,
            env,
            masked_key(&a.api_key),
            where_secret(a)
        );
    }
    Ok(())
}

fn test(path: &Path, mut exchange: ExchangeSettings, name: &str) -> anyhow::Result<()> {
    let file = AccountsFile::load(path)?;
    let account = file.account(name, path)?;
    let credentials = account.credentials()?;
    if exchange.environment != account.environment {
        // The URL overrides of the configuration belong to its own environment.
        exchange.rest_url.clear();
    }
    exchange.environment = account.environment;
    let urls = exchange.urls()?;
    let client = exchange.client(Some(credentials))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let offset = client
            .sync_time()
            .await
            .with_context(|| format!("{} is unreachable", urls.rest))?;
        let info = client.account_info().await.with_context(|| {
            format!(
                "{name}: the {} exchange refused key {}",
                account.environment.as_str(),
                masked_key(&account.api_key)
            )
        })?;
        let wallet = client.wallet().await?;
        println!(
            "{name} ({}, {}): key {} accepted; clock offset {:+} ms; margin mode {}; equity {} USDT",
            account.environment.as_str(),
            urls.rest,
            masked_key(&account.api_key),
            -offset,
            info.margin_mode,
            wallet
                .total_equity
                .map_or_else(|| "?".to_owned(), |e| e.round_dp(2).to_string())
        );
        Ok(())
    })
}
