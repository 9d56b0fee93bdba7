//! Finding the running account stack a command talks to (`risk`, `reconcile`, `health`)
//! or reads (`report`, `trades`: its journal), the way `scripts/stack` lays them out: each
//! account's services listen in their own folder of the ipc folder (`$SHARDBOT_STACK_IPC`,
//! default `/tmp/shardbot`), e.g. `ipc:///tmp/shardbot/sim/risk-manager.rep`, and keep
//! their journal in their folder of the state folder (`$SHARDBOT_STACK_RUN`, default `var`
//! of the checkout, where the commands are run from), e.g. `var/sim/journal.sqlite`. An
//! account stack counts as running when its risk manager's socket has a listener (a socket
//! file left by a killed process has not).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use shardbot_service::Endpoints;

/// The ipc folder `scripts/stack` uses (the same variable and default).
pub fn ipc_dir() -> PathBuf {
    std::env::var_os("SHARDBOT_STACK_IPC")
        .map_or_else(|| PathBuf::from("/tmp/shardbot"), PathBuf::from)
}

/// `--account`, shared by the commands that talk to a running stack or read its journal.
#[derive(Args, Debug, Clone)]
pub struct AccountArg {
    /// The account stack, as started by `scripts/stack up --account NAME`: its services,
    /// or its journal (`$SHARDBOT_STACK_RUN/NAME/journal.sqlite`, default `var/NAME/...`).
    /// Default: the one account stack running on this machine (an error names them when
    /// there are several; for the journal, with none running, the one in that folder);
    /// with `--config`, the endpoints and journal of that file.
    #[arg(long, global = true, value_name = "NAME")]
    pub account: Option<String>,
}

/// An account name as `scripts/stack` takes it (it names folders and sockets).
fn valid_account(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("--account {name:?}: account names are letters, digits, '-' and '_'");
    }
    Ok(())
}

/// The accounts whose stack runs under `ipc`, sorted: those whose risk manager listens
/// ([`shardbot_bus::ipc`]: a socket file left by a killed process does not count).
pub fn running(ipc: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(ipc) else {
        return Vec::new();
    };
    // The kernel's table, read once for every folder.
    let listening = shardbot_bus::ipc::listening();
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter(|e| {
            let url = format!("ipc://{}", e.path().join("risk-manager.rep").display());
            shardbot_bus::ipc::may_listen(&url, listening.as_ref())
        })
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// The endpoints of account `name`'s stack under `ipc`, as `scripts/stack` sets them.
pub fn endpoints_of(ipc: &Path, name: &str, base: &Endpoints) -> Endpoints {
    let at = |file: &str| format!("ipc://{}/{name}/{file}", ipc.display());
    Endpoints {
        order_router_pub: at("order-router.pub"),
        order_router_rep: at("order-router.rep"),
        risk_manager_pub: at("risk-manager.pub"),
        risk_manager_rep: at("risk-manager.rep"),
        reconciler_rep: at("reconciler.rep"),
        heartbeat: at("hb-{service}-{instance}.pub"),
        ..base.clone()
    }
}

/// Which endpoints a command uses: `--account NAME`'s stack; else, with a configuration
/// given (`--config`, `SHARDBOT_CONFIG` or `SHARDBOT__ENDPOINTS__*`), its endpoints; else
/// the one stack running; else the default endpoints if services started by hand listen
/// there (`by_hand`). `running` lists the stacks found.
pub fn choose(
    account: Option<&str>,
    configured: bool,
    ipc: &Path,
    running: &[String],
    by_hand: bool,
    base: &Endpoints,
) -> anyhow::Result<Endpoints> {
    let found = || {
        if running.is_empty() {
            format!(
                "no account stack is running here (none in {})",
                ipc.display()
            )
        } else {
            format!("running here: {}", running.join(", "))
        }
    };
    match account {
        Some(name) => {
            valid_account(name)?;
            if !running.iter().any(|r| r == name) {
                bail!("the account stack '{name}' is not running: {}", found());
            }
            Ok(endpoints_of(ipc, name, base))
        }
        None if configured => Ok(base.clone()),
        None => match running {
            [one] => Ok(endpoints_of(ipc, one, base)),
            [] if by_hand => Ok(base.clone()),
            [] => bail!(
                "{}: start one with `scripts/stack up`, or name the endpoints with --config",
                found()
            ),
            _ => bail!(
                "several account stacks are running ({}): say which with --account NAME",
                running.join(", ")
            ),
        },
    }
}

/// The endpoints a command that talks to a running stack uses ([`choose`], with the
/// running stacks found under the ipc folder).
pub fn resolve(
    account: &AccountArg,
    config: Option<&Path>,
    base: &Endpoints,
) -> anyhow::Result<Endpoints> {
    let ipc = ipc_dir();
    let by_hand = shardbot_bus::ipc::may_listen(
        &base.risk_manager_rep,
        shardbot_bus::ipc::listening().as_ref(),
    );
    choose(
        account.account.as_deref(),
        configured(config),
        &ipc,
        &running(&ipc),
        by_hand,
        base,
    )
}

/// The heartbeat template of the market group (market-data, bybit-sim) of the stacks
/// under `ipc`, shared by every account stack.
pub fn market_heartbeat(ipc: &Path) -> String {
    format!("ipc://{}/hb-{{service}}-{{instance}}.pub", ipc.display())
}

/// The state folder `scripts/stack` uses (the same variable; its default, the checkout's
/// `var`, relative to where the command runs).
pub fn run_dir() -> PathBuf {
    std::env::var_os("SHARDBOT_STACK_RUN").map_or_else(|| PathBuf::from("var"), PathBuf::from)
}

/// Which journal a command reads: `--account NAME`'s (running or not); else, with a
/// configuration given, its `journal.file`; else the one account stack running's; else,
/// with none running, the one account's journal in the state folder (`on_disk`); else the
/// configured default (`default`).
pub fn choose_journal(
    account: Option<&str>,
    configured: bool,
    run: &Path,
    running: &[String],
    on_disk: &[String],
    default: &Path,
) -> anyhow::Result<PathBuf> {
    let of = |name: &str| run.join(name).join("journal.sqlite");
    match account {
        Some(name) => {
            valid_account(name)?;
            Ok(of(name))
        }
        None if configured => Ok(default.to_owned()),
        None => match (running, on_disk) {
            ([one], _) => Ok(of(one)),
            ([], [one]) => Ok(of(one)),
            ([], []) => Ok(default.to_owned()),
            ([], several) => bail!(
                "journals of several account stacks are in {} ({}): say which with --account NAME",
                run.display(),
                several.join(", ")
            ),
            (several, _) => bail!(
                "several account stacks are running ({}): say which with --account NAME",
                several.join(", ")
            ),
        },
    }
}

/// The accounts with a journal in the state folder `run`, sorted.
pub fn journals_in(run: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(run) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("journal.sqlite").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// Whether the endpoints come from the user's configuration rather than the defaults.
pub fn configured(config: Option<&Path>) -> bool {
    config.is_some() || std::env::vars().any(|(k, _)| k.starts_with("SHARDBOT__ENDPOINTS__"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn base() -> Endpoints {
        Endpoints {
            market_data_pub: "ipc:///tmp/shardbot/market-data.pub".into(),
            market_data_rep: "ipc:///tmp/shardbot/market-data.rep".into(),
            order_router_pub: "ipc:///x/order-router.pub".into(),
            order_router_rep: "ipc:///x/order-router.rep".into(),
            risk_manager_pub: "ipc:///x/risk-manager.pub".into(),
            risk_manager_rep: "ipc:///x/risk-manager.rep".into(),
            reconciler_rep: "ipc:///x/reconciler.rep".into(),
            heartbeat: "ipc:///x/hb-{service}-{instance}.pub".into(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_one_running_stack_is_the_default() {
        let ipc = Path::new("/run/sb");
        let e = choose(None, false, ipc, &names(&["sim"]), false, &base()).unwrap();
        assert_eq!(e.risk_manager_rep, "ipc:///run/sb/sim/risk-manager.rep");
        assert_eq!(e.reconciler_rep, "ipc:///run/sb/sim/reconciler.rep");
        assert_eq!(
            e.market_data_rep,
            base().market_data_rep,
            "the market's stay"
        );
    }

    #[test]
    fn an_account_is_chosen_by_name_and_a_wrong_one_names_the_running() {
        let ipc = Path::new("/run/sb");
        let running = names(&["demo", "sim"]);
        let e = choose(Some("demo"), false, ipc, &running, false, &base()).unwrap();
        assert_eq!(e.risk_manager_rep, "ipc:///run/sb/demo/risk-manager.rep");
        let err = choose(Some("live1"), false, ipc, &running, false, &base()).unwrap_err();
        assert!(
            err.to_string()
                .contains("'live1' is not running: running here: demo, sim"),
            "{err}"
        );
        let err = choose(Some("../etc"), false, ipc, &running, false, &base()).unwrap_err();
        assert!(err.to_string().contains("letters, digits"), "{err}");
    }

    #[test]
    fn several_running_need_a_name_and_none_says_where_it_looked() {
        let ipc = Path::new("/run/sb");
        let err = choose(None, false, ipc, &names(&["demo", "sim"]), false, &base()).unwrap_err();
        assert!(
            err.to_string()
                .contains("several account stacks are running (demo, sim)"),
            "{err}"
        );
        let err = choose(None, false, ipc, &[], false, &base()).unwrap_err();
        assert!(err.to_string().contains("none in /run/sb"), "{err}");
    }

    #[test]
    fn a_configuration_given_keeps_its_endpoints() {
        let e = choose(
            None,
            true,
            Path::new("/run/sb"),
            &names(&["a", "b"]),
            false,
            &base(),
        )
        .unwrap();
        assert_eq!(e, base());
    }

    /// Services started by hand on the default endpoints, no stack folder: those.
    #[test]
    fn services_started_by_hand_are_found_on_the_default_endpoints() {
        let ipc = Path::new("/run/sb");
        assert_eq!(
            choose(None, false, ipc, &[], true, &base()).unwrap(),
            base()
        );
        let e = choose(None, false, ipc, &names(&["sim"]), true, &base()).unwrap();
        assert_eq!(e.risk_manager_rep, "ipc:///run/sb/sim/risk-manager.rep");
    }

    #[test]
    fn the_journal_read_is_the_stacks_the_way_scripts_stack_keeps_it() {
        let run = Path::new("/srv/sb/var");
        let default = Path::new("var/journal.sqlite");
        let pick = |account, configured, running: &[&str], on_disk: &[&str]| {
            choose_journal(
                account,
                configured,
                run,
                &names(running),
                &names(on_disk),
                default,
            )
        };
        let at = |name: &str| run.join(name).join("journal.sqlite");
        // The one running, though another account's journal is on disk.
        assert_eq!(
            pick(None, false, &["sim"], &["demo", "sim"]).unwrap(),
            at("sim")
        );
        // Named: that account's, running or not.
        assert_eq!(
            pick(Some("demo"), false, &["sim"], &[]).unwrap(),
            at("demo")
        );
        // A configuration given: its journal.file.
        assert_eq!(pick(None, true, &["sim"], &["sim"]).unwrap(), default);
        // None running: the one on disk; none at all: the configured default.
        assert_eq!(pick(None, false, &[], &["sim"]).unwrap(), at("sim"));
        assert_eq!(pick(None, false, &[], &[]).unwrap(), default);
        let err = pick(None, false, &["a", "b"], &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("several account stacks are running (a, b)"),
            "{err}"
        );
        let err = pick(None, false, &[], &["a", "b"]).unwrap_err();
        assert!(err.to_string().contains("/srv/sb/var (a, b)"), "{err}");
        let err = pick(Some("../x"), false, &[], &[]).unwrap_err();
        assert!(err.to_string().contains("letters, digits"), "{err}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_a_listening_socket_counts_as_running() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("live")).unwrap();
        std::fs::create_dir(dir.path().join("stale")).unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let _listener =
            std::os::unix::net::UnixListener::bind(dir.path().join("live/risk-manager.rep"))
                .unwrap();
        drop(
            std::os::unix::net::UnixListener::bind(dir.path().join("stale/risk-manager.rep"))
                .unwrap(),
        );
        assert_eq!(running(dir.path()), names(&["live"]));
        assert!(running(&dir.path().join("nowhere")).is_empty());
    }
}
