//! `shardbot health [SERVICE/INSTANCE ...]`: the last heartbeat of each process, read from
//! the bus (each process publishes its own on `endpoints.heartbeat`). Without names, every
//! process of the stack: those whose heartbeat socket has a listener in the stack's ipc
//! folder (and the market group's). `scripts/stack status` joins this with the
//! supervisor's view (pid, uptime).

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use shardbot_bus::Subscriber;
use shardbot_protocol::{Event, Heartbeat, now_ms};
use shardbot_service::Settings;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Local configuration file (as the services use it; SHARDBOT_CONFIG works too). Its
    /// `endpoints.heartbeat` says where each process publishes.
    #[arg(long, env = "SHARDBOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// How long to listen, at most, in ms (default: 2.5 heartbeat intervals). Returns as
    /// soon as every process named has been heard.
    #[arg(long, value_name = "MS")]
    wait_ms: Option<u64>,
    /// Tab-separated lines (service, instance, state, detail, age ms, pid), for scripts.
    #[arg(long)]
    tsv: bool,
    #[command(flatten)]
    account: crate::stacks::AccountArg,
    /// Processes as SERVICE/INSTANCE, e.g. order-router/main strategy-worker/0-2. Default:
    /// every process publishing a heartbeat in the stack's ipc folder (`ipc://` endpoints).
    #[arg(value_name = "SERVICE/INSTANCE")]
    processes: Vec<String>,
}

fn parse(p: &str) -> anyhow::Result<(String, String)> {
    match p.split_once('/') {
        Some((s, i)) if !s.is_empty() && !i.is_empty() => Ok((s.to_owned(), i.to_owned())),
        _ => bail!("{p:?} is not SERVICE/INSTANCE (e.g. order-router/main)"),
    }
}

/// The process of a heartbeat socket's file name, `hb-{service}-{instance}.pub`: the
/// instance is `main` or `<shard>-<shards>` (the names `scripts/stack` gives).
fn process_of_socket(file: &str) -> Option<(String, String)> {
    let stem = file.strip_prefix("hb-")?.strip_suffix(".pub")?;
    if let Some(service) = stem.strip_suffix("-main") {
        return (!service.is_empty()).then(|| (service.to_owned(), "main".to_owned()));
    }
    let mut parts = stem.rsplitn(3, '-');
    let (n, i, service) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    (digits(n) && digits(i) && !service.is_empty())
        .then(|| (service.to_owned(), format!("{i}-{n}")))
}

/// Every process publishing a heartbeat where `template` (`ipc://DIR/hb-{service}-
/// {instance}.pub`) says: the sockets of DIR that have a listener.
fn discover(template: &str) -> anyhow::Result<Vec<(String, String)>> {
    let Some(dir) = template
        .strip_prefix("ipc://")
        .and_then(|p| p.strip_suffix("/hb-{service}-{instance}.pub"))
    else {
        bail!(
            "the heartbeat endpoint {template} is not an ipc:// folder the processes can be \
             listed from: name them (SERVICE/INSTANCE ...)"
        );
    };
    let listening = shardbot_bus::ipc::listening();
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)
        .with_context(|| format!("listing {dir}"))?
        .flatten()
    {
        let path = e.path();
        let url = format!("ipc://{}", path.display());
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && let Some(p) = process_of_socket(name)
            && shardbot_bus::ipc::may_listen(&url, listening.as_ref())
        {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// State word and its detail (the reason of a degraded state).
pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let common = settings.common()?;
    // The stack as `scripts/stack` laid it out (`--account`, or the one running), unless
    // a configuration names the endpoints: its account services' heartbeats, and the
    // market group's (shared by every account stack).
    let ep = crate::stacks::resolve(&args.account, args.config.as_deref(), &common.endpoints)?;
    let market = if ep == common.endpoints {
        ep.heartbeat.clone()
    } else {
        crate::stacks::market_heartbeat(&crate::stacks::ipc_dir())
    };
    let wanted: Vec<(String, String)> = if args.processes.is_empty() {
        let mut all = discover(&market)?;
        if ep.heartbeat != market {
            // The market group's folder is shared by every account stack: only its own.
            all.retain(|(s, _)| shardbot_service::MARKET_GROUP.contains(&s.as_str()));
            all.extend(discover(&ep.heartbeat)?);
        }
        if all.is_empty() {
            bail!(
                "no process publishes a heartbeat at {} (is the stack up? `scripts/stack status`)",
                ep.heartbeat
            );
        }
        all
    } else {
        args.processes
            .iter()
            .map(|p| parse(p))
            .collect::<anyhow::Result<_>>()?
    };
    let urls: Vec<String> = wanted
        .iter()
        .map(|(s, i)| {
            let template = if shardbot_service::MARKET_GROUP.contains(&s.as_str()) {
                &market
            } else {
                &ep.heartbeat
            };
            template.replace("{service}", s).replace("{instance}", i)
        })
        .collect();
    let sub = Subscriber::dial(&urls, &common.bus)
        .with_context(|| format!("dialing the heartbeat endpoints ({})", urls.join(", ")))?;
    sub.subscribe("hb.")?;
    let wait = Duration::from_millis(
        args.wait_ms
            .unwrap_or(common.heartbeat.interval_ms.saturating_mul(5) / 2),
    );
    let deadline = Instant::now() + wait;
    let mut heard: HashMap<(String, String), Heartbeat> = HashMap::new();
    while heard.len() < wanted.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        if let Some(r) = sub.recv(Some(left))?
            && let Event::Heartbeat(h) = r.event
        {
            let key = (h.service.clone(), h.instance.clone());
            if wanted.contains(&key) {
                heard.insert(key, h);
            }
        }
    }
    let now = now_ms();
    if !args.tsv {
        println!(
            "{:<18} {:<10} {:<10} {:>8} {:>8}  detail",
            "service", "instance", "state", "age", "pid"
        );
    }
    for key in &wanted {
        let (state, detail, age, pid) = match heard.get(key) {
            Some(h) => {
                let (s, d) = h.shown_state();
                let age = now.saturating_sub(h.now_ms).max(0);
                (s, d, age.to_string(), h.pid.to_string())
            }
            None => (
                "silent",
                format!("no heartbeat within {} ms", wait.as_millis()),
                "-".to_owned(),
                "-".to_owned(),
            ),
        };
        if args.tsv {
            println!("{}\t{}\t{state}\t{detail}\t{age}\t{pid}", key.0, key.1);
        } else {
            let age = if age == "-" { age } else { format!("{age} ms") };
            println!(
                "{:<18} {:<10} {:<10} {:>8} {:>8}  {detail}",
                key.0, key.1, state, age, pid
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("hb-order-router-main.pub", Some(("order-router", "main")))]
    #[case("hb-strategy-worker-0-2.pub", Some(("strategy-worker", "0-2")))]
    #[case("hb-strategy-worker-11-12.pub", Some(("strategy-worker", "11-12")))]
    #[case("hb-market-data-main.pub", Some(("market-data", "main")))]
    #[case("hb--main.pub", None)]
    #[case("hb-x-1.pub", None)]
    #[case("order-router.rep", None)]
    #[case("hb-order-router-main.sock", None)]
    fn a_heartbeat_socket_names_its_process(
        #[case] file: &str,
        #[case] want: Option<(&str, &str)>,
    ) {
        let got = process_of_socket(file);
        assert_eq!(got.as_ref().map(|(s, i)| (s.as_str(), i.as_str())), want);
    }

    #[rstest]
    #[case("order-router/main", Some(("order-router", "main")))]
    #[case("strategy-worker/0-2", Some(("strategy-worker", "0-2")))]
    #[case("order-router", None)]
    #[case("/main", None)]
    #[case("order-router/", None)]
    fn processes_are_service_slash_instance(#[case] arg: &str, #[case] want: Option<(&str, &str)>) {
        let got = parse(arg).ok();
        assert_eq!(got.as_ref().map(|(s, i)| (s.as_str(), i.as_str())), want);
    }
}
