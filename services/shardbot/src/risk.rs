//! `shardbot risk show|halt|reduce-only|resume|flatten|close`: the running risk manager, over
//! the bus: the account stack named by `--account`, the one running, or the endpoints of
//! `--config` (see `stacks`).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use shardbot_bus::Requester;
use shardbot_protocol::{ControlCommand, FlattenReport, RiskReply, RiskRequest, Symbol};
use shardbot_service::Settings;

#[derive(Args, Debug)]
pub struct RiskArgs {
    /// Local configuration file (as the services use it; SHARDBOT_CONFIG works too).
    #[arg(long, env = "SHARDBOT_CONFIG", global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    account: crate::stacks::AccountArg,
    #[command(subcommand)]
    command: RiskCommand,
}

#[derive(Subcommand, Debug)]
enum RiskCommand {
    /// Trading mode, limits and how close the account is to them, balances and positions.
    Show,
    /// Kill switch: no new entries (exits still allowed).
    Halt,
    /// Kill switch: only orders that reduce a position.
    ReduceOnly,
    /// Back to normal trading.
    Resume,
    /// Kill switch: halt, stop every entry not yet sent, then close every position the
    /// exchange shows (reduce-only market orders through the order router), reading the
    /// account again until it is flat or `risk.flatten_deadline_ms` (a minute by default)
    /// has passed. Waits for the end and prints what is left; exits with status 3 when the
    /// account is not flat (or could not be read).
    Flatten,
    /// Close one position by hand: reduce-only market orders through the order router
    /// until the exchange shows it gone or `risk.flatten_deadline_ms` has passed. The
    /// trading mode and every other position stay as they are (a strategy may enter the
    /// symbol again at a later close). Waits for the end; exit status 3 when it is still
    /// open.
    Close {
        /// The position's symbol, e.g. BTCUSDT.
        symbol: String,
    },
}

fn ask(req: &Requester, r: RiskRequest) -> anyhow::Result<RiskReply> {
    let reply = req
        .request_within::<_, RiskReply>(&r, Duration::from_secs(5))
        .with_context(|| format!("no answer from the risk manager at {}", req.url()))?;
    if let RiskReply::Error(e) = &reply {
        bail!("the risk manager says: {}", e.message);
    }
    Ok(reply)
}

/// Polls a flatten until it ends, printing each change; not flat at the end is an error
/// (exit status 3), so a script or an operator cannot miss it.
fn follow_flatten(req: &Requester, mut report: FlattenReport) -> anyhow::Result<()> {
    let mut shown = String::new();
    while !report.done() {
        std::thread::sleep(Duration::from_millis(500));
        match ask(
            req,
            RiskRequest::Flatten {
                flatten_id: report.flatten_id.clone(),
            },
        )? {
            RiskReply::Flatten(r) => report = r,
            other => bail!("unexpected answer about the flatten: {other:?}"),
        }
        let line = report.summary();
        if line != shown {
            println!("{line}");
            shown = line;
        }
    }
    if report.flat {
        return Ok(());
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.rounds == 0 {
        eprintln!(
            "NOT KNOWN TO BE FLAT: the exchange could not be read; check the positions by hand \
             or run `shardbot risk flatten` again"
        );
    } else {
        eprintln!(
            "NOT FLAT: {} position(s) still open; close them by hand or run `shardbot risk \
             {}` again",
            report.left.len(),
            report
                .symbol
                .as_ref()
                .map_or_else(|| "flatten".to_owned(), |s| format!("close {s}"))
        );
    }
    std::process::exit(3);
}

pub fn run(args: RiskArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref())?;
    let common = settings.common()?;
    let endpoints =
        crate::stacks::resolve(&args.account, args.config.as_deref(), &common.endpoints)?;
    let req = Requester::dial(&endpoints.risk_manager_rep, &common.bus)?;
    if let RiskCommand::Close { symbol } = &args.command {
        let symbol = Symbol::new(symbol.to_uppercase())
            .with_context(|| format!("{symbol:?} is not a symbol (e.g. BTCUSDT)"))?;
        return match ask(&req, RiskRequest::Close { symbol })? {
            RiskReply::Flatten(report) => {
                println!("{}", report.summary());
                follow_flatten(&req, report)
            }
            other => bail!("unexpected answer to the close: {other:?}"),
        };
    }
    let cmd = match args.command {
        RiskCommand::Show => None,
        RiskCommand::Halt => Some(ControlCommand::Halt),
        RiskCommand::ReduceOnly => Some(ControlCommand::ReduceOnly),
        RiskCommand::Resume => Some(ControlCommand::Resume),
        RiskCommand::Flatten => Some(ControlCommand::FlattenAll),
        RiskCommand::Close { .. } => None,
    };
    if let Some(c) = cmd {
        if let RiskReply::Control(r) = ask(&req, RiskRequest::Control(c))? {
            println!("{} (mode: {:?})", r.message, r.mode);
            if let Some(report) = r.flatten {
                return follow_flatten(&req, report);
            }
        }
        return Ok(());
    }
    if let RiskReply::Status(s) = ask(&req, RiskRequest::Status)? {
        println!("mode              {:?}", s.mode);
        println!(
            "open positions    {} of at most {}",
            s.open_positions, s.max_open_positions
        );
        println!(
            "today's PnL       {} USDT (daily loss limit {} USDT)",
            s.daily_pnl.round_dp(2),
            s.daily_loss_limit
        );
        println!(
            "margin use        {}% (at most {}%)",
            s.margin_use_pct, s.max_margin_use_pct
        );
    }
    if let RiskReply::Balance(b) = ask(&req, RiskRequest::Balance)? {
        println!(
            "simulated         balance {} USDT, equity {} USDT",
            b.simulated_balance.round_dp(2),
            b.simulated_equity.round_dp(2)
        );
        println!(
            "exchange          wallet {} USDT, equity {} USDT (offset {})",
            b.exchange_wallet_balance.round_dp(2),
            b.exchange_equity.round_dp(2),
            b.offset.round_dp(2)
        );
    }
    if let RiskReply::Positions(p) = ask(&req, RiskRequest::Positions)? {
        if p.positions.is_empty() {
            println!("positions         none");
        }
        for pos in p.positions {
            println!(
                "position          {} {} {} @ {} (unrealised {}, SL {}, TP {})",
                pos.symbol,
                pos.side,
                pos.size,
                pos.avg_price,
                pos.unrealised_pnl.round_dp(2),
                pos.stop_loss.map_or("-".into(), |d| d.to_string()),
                pos.take_profit.map_or("-".into(), |d| d.to_string()),
            );
        }
    }
    Ok(())
}
