//! The risk-manager actor: the [`Book`] kept current from the exchange, the rules of
//! `shardbot-risk` applied to every intent, and the kill switch.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use actix::{Actor, AsyncContext, Context, Handler, Message};
use rust_decimal::Decimal;
use shardbot_bus::ReplyTo;
use shardbot_bus::{Publisher, Requester};
use shardbot_bybit::{
    models::{
        account::WalletAccount,
        position::{ClosedPnl, PositionInfo},
    },
    rest::BybitClient,
};
use shardbot_protocol::{
    BalanceSnapshot, ControlCommand, ControlReply, ErrorReply, IntentAction, IntentId, OrderIntent,
    PositionSnapshot, Refusal, RefusalCode, RiskDecision, RiskReply, RiskRequest, RiskStatus,
    RouterReply, RouterRequest, Symbol, TradingMode, now_ms,
};
use shardbot_risk::{AccountRead, FillBooked, Foreseen, Ledger, TradingSettings};

use crate::state::RiskState;

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub account: String,
    pub state_file: PathBuf,
    /// `trading_settings.json`: read at start, rewritten by `SetTradingSettings`.
    pub settings_file: PathBuf,
    /// With no state file yet (a new account stack), start halted.
    pub start_halted: bool,
    pub sync_every: Duration,
    /// How long a flatten keeps closing positions before it reports what is left.
    pub flatten_deadline_ms: i64,
    /// How often (exchange time) the simulated equity is sampled into the journal.
    pub equity_sample_ms: i64,
}

/// How long a reversal's entry waits for its exit's fill to be booked (a sync that no
/// longer shows the position) before it is refused: well inside the router's request
/// timeout (`bus.request_timeout_ms`, 5 s by default).
const EXIT_BOOKING_WAIT: Duration = Duration::from_secs(3);

/// A reversal's entry waiting for the exit before it to be booked: it is sized from the
/// balance that exit's fill leaves, never from the one before it.
#[derive(Debug)]
struct Parked {
    intent: OrderIntent,
    reply: ReplyTo<RiskReply>,
}

#[derive(Debug)]
pub struct RiskManager {
    cfg: ManagerConfig,
    settings: TradingSettings,
    client: BybitClient,
    publisher: Publisher,
    router: Requester,
    state: Option<RiskState>,
    /// The account stack's journal: the simulated balances set are recorded there.
    journal: shardbot_journal::Journal,
    /// The account between two reads: what the rules judge against, approvals, pending
    /// exits, owners (`shardbot_risk::Ledger`, the pure core).
    ledger: Ledger,
    exchange: Option<WalletAccount>,
    /// Reversals' entries waiting for their exits' booking ([`Ledger::awaits_exit`]).
    parked: Vec<Parked>,
    /// What parked entries were answered (when): the requester resends a request it has
    /// no answer to yet (`bus.request_resend_ms`), and those copies, queued behind the
    /// wait, get the same answer at once instead of waiting again each.
    parked_answers: HashMap<IntentId, (Instant, RiskDecision)>,
    /// When (exchange time) the equity was last sampled into the journal.
    last_equity_sample: Option<i64>,
    /// The flattens started here, by id, with their deadlines and, for a close by hand,
    /// the one position they close.
    flattens: HashMap<String, (i64, Option<Symbol>)>,
    syncing: bool,
    /// A fill arrived while a sync was reading the account: read it again after.
    sync_again: bool,
}

/// What one REST sync read.
#[derive(Debug)]
struct Snapshot {
    /// When the sync started reading.
    started: Instant,
    wallet: WalletAccount,
    positions: Vec<PositionInfo>,
    realised_today: Decimal,
}

/// Today's realised PnL as the risk rules and the dashboard count it: the closed PnL of
/// the trades closed today (Bybit's: their fees and funding included) and what the
/// positions still open have paid so far (Bybit's `curRealisedPnl`: the entry's fee, the
/// funding), so an entry's fee counts when it is paid, not only once its trade closes.
/// (shardbot closes a position whole, so no partial close's PnL is in `curRealisedPnl`
/// that its closed-PnL record would count again; the backtest counts the same way.)
pub fn realised_today(closed: &[ClosedPnl], positions: &[PositionInfo]) -> Decimal {
    let closed: Decimal = closed.iter().map(|c| c.closed_pnl).sum();
    let open: Decimal = positions
        .iter()
        .filter(|p| !p.size.is_zero())
        .filter_map(|p| p.cur_realised_pnl)
        .sum();
    closed + open
}

fn usdt_balance(w: &WalletAccount) -> Decimal {
    w.coin("USDT")
        .map(|c| c.wallet_balance)
        .or(w.total_wallet_balance)
        .unwrap_or_default()
}

impl RiskManager {
    pub fn new(
        cfg: ManagerConfig,
        settings: TradingSettings,
        client: BybitClient,
        publisher: Publisher,
        router: Requester,
        state: Option<RiskState>,
        journal: shardbot_journal::Journal,
    ) -> RiskManager {
        let mode = match &state {
            Some(s) => s.mode,
            None if cfg.start_halted => TradingMode::Halted,
            None => TradingMode::Normal,
        };
        RiskManager {
            cfg,
            settings,
            client,
            publisher,
            router,
            state,
            journal,
            ledger: Ledger::new(mode),
            exchange: None,
            parked: Vec::new(),
            parked_answers: HashMap::new(),
            flattens: HashMap::new(),
            last_equity_sample: None,
            syncing: false,
            sync_again: false,
        }
    }

    fn sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing {
            self.sync_again = true;
            return;
        }
        self.syncing = true;
        self.sync_again = false;
        let client = self.client.clone();
        let addr = ctx.address();
        let started = Instant::now();
        actix::spawn(async move {
            let r = async {
                client.sync_time().await?;
                let now = client.clock().now_ms();
                let midnight = now - now.rem_euclid(86_400_000);
                // Positions before the wallet: a position this read no longer shows was
                // closed before the wallet is read, so its PnL is in the balance read.
                let positions = client.positions().await?;
                let wallet = client.wallet().await?;
                let closed = client.closed_pnl(None, midnight, now).await?;
                let realised_today = realised_today(&closed, &positions);
                Ok::<_, shardbot_bybit::BybitError>(Snapshot {
                    started,
                    wallet,
                    positions,
                    realised_today,
                })
            }
            .await
            .map_err(|e| e.to_string());
            addr.do_send(Synced(r));
        });
    }

    fn on_snapshot(&mut self, snap: Snapshot) {
        let exchange_balance = usdt_balance(&snap.wallet);
        if self.state.is_none() {
            let mut s = RiskState::first(
                &self.cfg.account,
                exchange_balance,
                self.settings.simulated_balance,
                self.client.clock().now_ms(),
            );
            // A mode set before the first sync (start_halted, a command) is kept.
            s.mode = self.ledger.mode();
            match s.save(&self.cfg.state_file) {
                Ok(()) => tracing::info!(
                    exchange_balance = %exchange_balance,
                    simulated_balance = %s.simulated_start,
                    offset = %s.offset,
                    state = %self.cfg.state_file.display(),
                    "simulated balance set"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "cannot persist the simulated balance offset")
                }
            }
            self.record_balance(&s);
            self.state = Some(s);
        }
        let read = AccountRead {
            started: snap.started,
            positions: snap
                .positions
                .iter()
                .filter_map(|p| p.to_position(now_ms()))
                .collect(),
            updated: snap
                .positions
                .iter()
                .filter(|p| !p.size.is_zero())
                .filter_map(|p| Some((Symbol::new(&p.symbol).ok()?, p.updated_time?)))
                .collect(),
            realised_today: snap.realised_today,
            simulated_balance: self
                .state
                .as_ref()
                .map_or(exchange_balance, |s| s.simulated(exchange_balance)),
        };
        // A read older than a fill the book holds leaves the book; the next read replaces it.
        if self.ledger.on_read(read, Instant::now()) {
            self.stamp_owners();
            self.exchange = Some(snap.wallet);
            self.release_parked();
        } else {
            self.exchange = Some(snap.wallet);
        }
        self.sample_equity();
        self.publish();
    }

    /// Samples the simulated balance and equity (open positions marked to market) into
    /// the journal, once per `equity_sample_ms` of exchange time, after a read of the
    /// account: the dashboard's equity curve, which ends at the equity it heads the page
    /// with.
    fn sample_equity(&mut self) {
        let now = self.client.clock().now_ms();
        if self
            .last_equity_sample
            .is_some_and(|last| now - last < self.cfg.equity_sample_ms)
        {
            return;
        }
        let Some(b) = self.balance() else {
            return;
        };
        let sample = shardbot_journal::EquitySample {
            at_ms: now,
            balance: b.simulated_balance,
            equity: b.simulated_equity,
        };
        match self.journal.record_equity(&sample) {
            Ok(()) => self.last_equity_sample = Some(now),
            Err(e) => tracing::warn!(error = %e, "cannot sample the equity into the journal"),
        }
    }

    /// Records the trading settings in force from now (exchange time) in the journal, unless
    /// they are the ones recorded last: `shardbot drift` judges a past window with them.
    fn record_settings(&self) {
        let recorded = serde_json::to_string(&self.settings)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                self.journal
                    .record_trading_settings(self.client.clock().now_ms(), &json)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = recorded {
            tracing::error!(error = %e, "cannot record the trading settings in the journal: a drift report of this time uses today's");
        }
    }

    /// Records a simulated balance in the journal (the base of the figures users see).
    fn record_balance(&self, s: &RiskState) {
        if let Err(e) = self
            .journal
            .record_simulated_balance(&s.simulated_balance())
        {
            tracing::error!(error = %e, "cannot record the simulated balance in the journal: the report's percentages lack this base");
        }
    }

    /// An approved entry the router did not place: its provisional position ends (unless a
    /// later approval or a fill replaced it).
    fn unplaced(&mut self, intent_id: &IntentId, symbol: &Symbol, reason: &str) {
        if self.ledger.unplaced(intent_id, symbol) {
            tracing::info!(%intent_id, %symbol, reason, "approved entry not placed: no longer counted");
            self.publish();
        }
    }

    /// Judges the parked entries whose exits the book now shows done.
    fn release_parked(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        for p in parked {
            if !self.ledger.exit_booked(&p.intent.symbol) {
                self.parked.push(p);
                continue;
            }
            tracing::info!(intent_id = %p.intent.intent_id, symbol = %p.intent.symbol, "the exit before this entry is booked: judging it");
            let d = self.approve(p.intent);
            self.remember_parked_answer(&d);
            let _ = p.reply.send(RiskReply::Decision(d));
        }
    }

    /// A parked entry whose exit was not seen filled in time is refused.
    fn expire_parked(&mut self, id: &IntentId) {
        let Some(i) = self.parked.iter().position(|p| p.intent.intent_id == *id) else {
            return;
        };
        let p = self.parked.swap_remove(i);
        let refusal = Refusal {
            code: RefusalCode::RiskUnavailable,
            reason: format!(
                "the exit of the {} position before this entry was not seen filled within {} s: \
                 the entry is not sized on a balance without that exit's PnL",
                p.intent.symbol,
                EXIT_BOOKING_WAIT.as_secs()
            ),
        };
        tracing::warn!(intent_id = %id, symbol = %p.intent.symbol, reason = refusal.reason, "intent refused");
        let d = RiskDecision::Refused {
            intent_id: p.intent.intent_id,
            refusal,
        };
        self.remember_parked_answer(&d);
        let _ = p.reply.send(RiskReply::Decision(d));
    }

    fn remember_parked_answer(&mut self, d: &RiskDecision) {
        let keep = EXIT_BOOKING_WAIT * 4;
        self.parked_answers.retain(|_, (t, _)| t.elapsed() < keep);
        let id = match d {
            RiskDecision::Approved { intent_id, .. } | RiskDecision::Refused { intent_id, .. } => {
                intent_id.clone()
            }
        };
        self.parked_answers.insert(id, (Instant::now(), d.clone()));
    }

    /// Names each position's owner (the one-owner rule: `shardbot_strategy::Holder`): the
    /// owner known here, else the strategy of the newest entry the journal has for the
    /// symbol, while that entry's position is still open ([`Ledger::stamp_owners`]).
    fn stamp_owners(&mut self) {
        let journal = &self.journal;
        self.ledger
            .stamp_owners(|symbol| match journal.position_owner(symbol.as_str()) {
                Ok(owner) => owner,
                Err(e) => {
                    tracing::warn!(%symbol, error = %e, "cannot read the position's owner from the journal");
                    None
                }
            });
    }

    fn positions(&self) -> PositionSnapshot {
        PositionSnapshot {
            positions: self.ledger.positions(),
            as_of_ms: now_ms(),
        }
    }

    fn balance(&self) -> Option<BalanceSnapshot> {
        let w = self.exchange.as_ref()?;
        let state = self.state.as_ref()?;
        let wallet = usdt_balance(w);
        let equity = w.total_equity.unwrap_or(wallet);
        Some(BalanceSnapshot {
            exchange_wallet_balance: wallet,
            exchange_equity: equity,
            available_balance: w.total_available_balance.unwrap_or_default(),
            offset: state.offset,
            simulated_balance: state.simulated(wallet),
            simulated_equity: state.simulated(wallet) + self.ledger.book().unrealised(),
            as_of_ms: now_ms(),
        })
    }

    fn status(&self) -> RiskStatus {
        RiskStatus {
            mode: self.ledger.mode(),
            open_positions: self.ledger.book().positions.len() as u32,
            max_open_positions: self.settings.max_open_positions,
            daily_pnl: self.ledger.book().daily_pnl(),
            daily_loss_limit: self.settings.daily_loss_limit,
            margin_use_pct: self.ledger.book().margin_use_pct().round_dp(2),
            max_margin_use_pct: self.settings.max_margin_use_pct,
            as_of_ms: now_ms(),
        }
    }

    fn publish(&mut self) {
        let pos = self.positions();
        let status = self.status();
        let r = self
            .publisher
            .publish(&pos)
            .and_then(|_| self.publisher.publish(&status));
        let r = match self.balance() {
            Some(b) => r.and_then(|_| self.publisher.publish(&b)),
            None => r,
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot publish the risk state");
        }
    }

    /// The answer a parked intent got, while a resent copy of it may still come.
    fn parked_answer(&self, id: &IntentId) -> Option<RiskDecision> {
        self.parked_answers
            .get(id)
            .filter(|(t, _)| t.elapsed() < EXIT_BOOKING_WAIT * 4)
            .map(|(_, d)| d.clone())
    }

    /// One intent of an `ApproveMany`: a resent one's earlier answer, `None` for a
    /// reversal's entry that must wait for its exit's booking (asked again alone, it
    /// waits here), else judged now.
    fn approve_in_batch(&mut self, intent: OrderIntent) -> Option<RiskDecision> {
        match self.answered_apart(&intent) {
            Some(answer) => answer,
            None => Some(self.approve(intent)),
        }
    }

    /// An intent of a batch not judged there: a resent one's earlier answer, or `None`
    /// for a reversal's entry that must wait for its exit's booking.
    fn answered_apart(&self, intent: &OrderIntent) -> Option<Option<RiskDecision>> {
        if let Some(d) = self.parked_answer(&intent.intent_id) {
            return Some(Some(d));
        }
        self.ledger.awaits_exit(intent).then_some(None)
    }

    /// A bar close's partial judgement (`ApproveMany`'s `to_come_before`), `intents` in
    /// the rules' order: the close's entries are judged on a copy of the ledger as if the
    /// rest of the close were what has arrived, and an entry's decision is given only
    /// where the entries still to come cannot change it (`Ledger::foresee`); a certain
    /// approval is then made for real. The others (`None`) are asked again as the close
    /// comes in, and judged in full once it is complete, so the entries a limit cuts are
    /// the ones the backtest's order cuts, whatever order they arrived in (property-tested
    /// in `shardbot_risk`'s ledger). Exits and intents that do not wait for their close
    /// are judged as usual, on both the ledger and the copy.
    fn judge_what_is_certain(
        &mut self,
        intents: Vec<OrderIntent>,
        to_come_before: &HashMap<IntentId, u32>,
    ) -> HashMap<IntentId, Option<RiskDecision>> {
        let mut copy = self.ledger.clone();
        let mut decided = HashMap::with_capacity(intents.len());
        for intent in intents {
            let id = intent.intent_id.clone();
            let now_ms = self.client.clock().now_ms();
            if !intent.waits_for_its_close() || self.exchange.is_none() {
                let d = self.approve_in_batch(intent.clone());
                if matches!(d, Some(RiskDecision::Approved { .. })) {
                    copy.approve(&self.settings, &intent, now_ms, Instant::now());
                }
                decided.insert(id, d);
                continue;
            }
            // A reversal's entry is judged once its exit is booked, after its close.
            if let Some(answer) = self.answered_apart(&intent) {
                decided.insert(id, answer);
                continue;
            }
            let before = to_come_before.get(&id).copied().unwrap_or(u32::MAX);
            let d = match copy.foresee(&self.settings, &intent, before, now_ms, Instant::now()) {
                Foreseen::Refused(refusal) => {
                    tracing::info!(intent_id = %id, symbol = %intent.symbol, code = ?refusal.code, reason = refusal.reason, "intent refused (whatever of its close is still to come)");
                    Some(RiskDecision::Refused {
                        intent_id: id.clone(),
                        refusal,
                    })
                }
                Foreseen::Approved => Some(self.approve(intent)),
                Foreseen::Undecided => None,
            };
            decided.insert(id, d);
        }
        decided
    }

    fn approve(&mut self, intent: OrderIntent) -> RiskDecision {
        if self.exchange.is_none() {
            return RiskDecision::Refused {
                intent_id: intent.intent_id,
                refusal: Refusal {
                    code: RefusalCode::RiskUnavailable,
                    reason: "the risk manager has not read the account from the exchange yet"
                        .into(),
                },
            };
        }
        if intent.action == IntentAction::Exit {
            // The owner as of now: an entry the router journalled since the last sync.
            self.stamp_owners();
        }
        let d = self.ledger.approve(
            &self.settings,
            &intent,
            self.client.clock().now_ms(),
            Instant::now(),
        );
        match &d {
            RiskDecision::Approved {
                qty,
                reduce_only: false,
                ..
            } => {
                tracing::info!(intent_id = %intent.intent_id, symbol = %intent.symbol, qty = %qty, "entry approved");
            }
            RiskDecision::Approved { .. } => {
                tracing::info!(intent_id = %intent.intent_id, symbol = %intent.symbol, "exit approved");
            }
            RiskDecision::Refused { refusal, .. } => {
                tracing::info!(intent_id = %intent.intent_id, symbol = %intent.symbol, code = ?refusal.code, reason = refusal.reason, "intent refused");
            }
        }
        d
    }

    fn set_mode(&mut self, mode: TradingMode) {
        self.ledger.set_mode(mode);
        if let Some(s) = self.state.as_mut() {
            s.mode = mode;
            if let Err(e) = s.save(&self.cfg.state_file) {
                tracing::error!(error = %e, "cannot persist the trading mode");
            }
        }
        tracing::warn!(?mode, "kill switch");
        self.publish();
    }

    fn control(&mut self, cmd: ControlCommand) -> ControlReply {
        match cmd {
            ControlCommand::Halt => self.set_mode(TradingMode::Halted),
            ControlCommand::ReduceOnly => self.set_mode(TradingMode::ReduceOnly),
            ControlCommand::Resume => self.set_mode(TradingMode::Normal),
            // Answered in the Query handler: it asks the router (see `flatten`).
            ControlCommand::FlattenAll => self.set_mode(TradingMode::Halted),
        }
        ControlReply {
            mode: self.ledger.mode(),
            message: format!("trading mode is now {:?}", self.ledger.mode()),
            flatten: None,
        }
    }

    /// Starts the flatten `id` on the router (entries stopped, every position closed until
    /// the exchange shows none or the deadline passes; the trading mode is already Halted),
    /// or the close by hand of one position (nothing else changes), or asks where it
    /// stands; the reply goes out when the router answers.
    fn flatten(&mut self, id: String, control: bool, reply: ReplyTo<RiskReply>) {
        let Some((deadline_ms, symbol)) = self.flattens.get(&id).cloned() else {
            let _ = reply.send(RiskReply::Error(ErrorReply {
                message: format!(
                    "no flatten {id} was started by this risk manager (restarted since?): \
                     run `shardbot risk flatten` again; it starts from what the exchange shows"
                ),
            }));
            return;
        };
        let mode = self.ledger.mode();
        let router = self.router.clone();
        let secs = self.cfg.flatten_deadline_ms / 1000;
        let (lead, again) = match &symbol {
            None => ("halted, but ".to_owned(), "flatten again"),
            Some(s) => (format!("close {s}: "), "close it again"),
        };
        actix::spawn(async move {
            let asked = router
                .request_async::<_, RouterReply>(RouterRequest::Flatten {
                    flatten_id: id.clone(),
                    deadline_ms,
                    symbol,
                })
                .await;
            let answer = match asked {
                Ok(RouterReply::Flatten(report)) if control => RiskReply::Control(ControlReply {
                    mode,
                    message: format!(
                        "halted; the router closes every position the exchange shows, until \
                         flat or for {} s ({})",
                        secs,
                        report.summary()
                    ),
                    flatten: Some(*report),
                }),
                Ok(RouterReply::Flatten(report)) => RiskReply::Flatten(*report),
                Ok(other) => RiskReply::Error(ErrorReply {
                    message: format!("{lead}the router answered the flatten with {other:?}"),
                }),
                Err(e) => {
                    tracing::error!(flatten_id = id, error = %e, "flatten: the router does not answer; nothing is being closed");
                    RiskReply::Error(ErrorReply {
                        message: format!(
                            "{lead}the router does not answer ({e}): NOTHING IS BEING \
                             CLOSED; {again} once the router is back"
                        ),
                    })
                }
            };
            let _ = reply.send(answer);
        });
    }

    fn trading_settings(&self) -> RiskReply {
        match serde_json::to_string(&self.settings) {
            Ok(json) => RiskReply::TradingSettings { json },
            Err(e) => RiskReply::Error(ErrorReply {
                message: format!("cannot encode the trading settings: {e}"),
            }),
        }
    }

    /// Validates `json`, writes it to the settings file (atomically) and applies it. A
    /// changed simulated balance sets the offset afresh, which needs a flat account: with
    /// positions open, their PnL would land in neither the old nor the new balance.
    fn set_trading_settings(&mut self, json: &str) -> Result<(), String> {
        let file = self.cfg.settings_file.display().to_string();
        let new: TradingSettings =
            serde_json::from_str(json).map_err(|e| format!("not valid trading settings: {e}"))?;
        new.validate("the new trading settings")
            .map_err(|e| e.to_string())?;
        let rebase = new.simulated_balance != self.settings.simulated_balance;
        if rebase {
            let open = self.ledger.open_or_approved();
            if open > 0 {
                return Err(format!(
                    "the simulated balance can be changed only with no position open ({open} open): flatten first"
                ));
            }
            if self.exchange.is_none() {
                return Err(
                    "the wallet has not been read from the exchange yet: try again in a moment"
                        .into(),
                );
            }
        }
        let text = serde_json::to_string_pretty(&new).map_err(|e| e.to_string())?;
        let tmp = self.cfg.settings_file.with_extension("json.tmp");
        std::fs::write(&tmp, format!("{text}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.cfg.settings_file))
            .map_err(|e| format!("cannot write {file}: {e}"))?;
        if rebase && let Some(w) = self.exchange.as_ref() {
            let exchange_balance = usdt_balance(w);
            let mode = self.ledger.mode();
            let mut s = RiskState::first(
                &self.cfg.account,
                exchange_balance,
                new.simulated_balance,
                self.client.clock().now_ms(),
            );
            s.mode = mode;
            s.save(&self.cfg.state_file)
                .map_err(|e| format!("cannot persist the new simulated balance: {e}"))?;
            self.ledger
                .set_simulated_balance(s.simulated(exchange_balance));
            tracing::info!(simulated_balance = %new.simulated_balance, offset = %s.offset, "simulated balance set afresh");
            self.record_balance(&s);
            self.state = Some(s);
        }
        tracing::info!(settings = %file, "trading settings replaced");
        self.settings = new;
        self.record_settings();
        self.publish();
        Ok(())
    }

    fn answer(&mut self, req: RiskRequest) -> RiskReply {
        match req {
            RiskRequest::Approve(intent) => RiskReply::Decision(self.approve(intent)),
            RiskRequest::ApproveMany {
                mut intents,
                to_come_before,
            } => {
                // Answered in the order asked; judged in the rules' order, whatever order
                // the router sent them in.
                let asked: Vec<IntentId> = intents.iter().map(|i| i.intent_id.clone()).collect();
                let partial: Option<HashMap<IntentId, u32>> =
                    to_come_before.map(|v| asked.iter().cloned().zip(v).collect());
                shardbot_risk::judging_order(&mut intents);
                let mut decided: HashMap<IntentId, Option<RiskDecision>> = match partial {
                    None => intents
                        .into_iter()
                        .map(|i| (i.intent_id.clone(), self.approve_in_batch(i)))
                        .collect(),
                    Some(before) => self.judge_what_is_certain(intents, &before),
                };
                RiskReply::Decisions {
                    decisions: asked
                        .iter()
                        .map(|id| decided.remove(id).flatten())
                        .collect(),
                }
            }
            RiskRequest::Positions if self.exchange.is_none() => RiskReply::Error(ErrorReply {
                message: "positions not read from the exchange yet".into(),
            }),
            RiskRequest::Positions => RiskReply::Positions(self.positions()),
            RiskRequest::Balance => match self.balance() {
                Some(b) => RiskReply::Balance(b),
                None => RiskReply::Error(ErrorReply {
                    message: "the wallet has not been read from the exchange yet".into(),
                }),
            },
            RiskRequest::Status => RiskReply::Status(self.status()),
            RiskRequest::Control(cmd) => RiskReply::Control(self.control(cmd)),
            // Asked of the router, answered when it answers: see the Query handler.
            RiskRequest::Flatten { flatten_id } => RiskReply::Error(ErrorReply {
                message: format!("flatten {flatten_id}: ask through the risk manager's queries"),
            }),
            RiskRequest::Close { symbol } => RiskReply::Error(ErrorReply {
                message: format!("close {symbol}: ask through the risk manager's queries"),
            }),
            RiskRequest::TradingSettings => self.trading_settings(),
            RiskRequest::Unplaced {
                intent_id,
                symbol,
                reason,
            } => {
                self.unplaced(&intent_id, &symbol, &reason);
                RiskReply::Status(self.status())
            }
            RiskRequest::SetTradingSettings { json } => match self.set_trading_settings(&json) {
                Ok(()) => self.trading_settings(),
                Err(message) => RiskReply::Error(ErrorReply { message }),
            },
        }
    }
}

impl Actor for RiskManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.record_settings();
        self.sync(ctx);
        ctx.run_interval(self.cfg.sync_every, |act, ctx| act.sync(ctx));
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Synced(Result<Snapshot, String>);

impl Handler<Synced> for RiskManager {
    type Result = ();

    fn handle(&mut self, msg: Synced, ctx: &mut Context<Self>) {
        self.syncing = false;
        match msg.0 {
            Ok(s) => self.on_snapshot(s),
            Err(e) => tracing::warn!(error = %e, "cannot read the account from the exchange"),
        }
        // What this sync read may predate a fill heard meanwhile: the workers must not
        // act on it until the next periodic sync.
        if self.sync_again {
            self.sync(ctx);
        }
    }
}

/// A fill of the account (from the router's events): booked at once (balance and position,
/// as the exchange books it: [`shardbot_risk::Book::book_fill`]), so a reversal's entry
/// waiting for its exit is sized from the balance that exit left; then the account is
/// read again.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Filled(pub shardbot_protocol::Fill);

impl Handler<Filled> for RiskManager {
    type Result = ();

    fn handle(&mut self, msg: Filled, ctx: &mut Context<Self>) {
        let f = &msg.0;
        match self.ledger.fill(f, Instant::now()) {
            FillBooked::AlreadyRead => {
                tracing::debug!(symbol = %f.symbol, exec_id = f.exec_id, "the last account read holds this fill already");
            }
            FillBooked::Booked => {
                self.stamp_owners();
                tracing::info!(symbol = %f.symbol, exec_qty = %f.exec_qty, closed = %f.closed_size, price = %f.exec_price, simulated_balance = %self.ledger.book().simulated_balance, "fill booked");
                self.release_parked();
            }
            FillBooked::NotBooked => {}
        }
        self.sync(ctx);
    }
}

/// A position of this symbol was closed by its stop-loss (from the router's order events).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StoppedOut(pub Symbol);

impl Handler<StoppedOut> for RiskManager {
    type Result = ();

    fn handle(&mut self, msg: StoppedOut, ctx: &mut Context<Self>) {
        let now = self.client.clock().now_ms();
        tracing::info!(symbol = %msg.0, cooldown_min = self.settings.cooldown_after_stop_min, "stopped out; cooldown starts");
        // The stop closed the whole position: it is gone now, whatever the last sync (or
        // an approval not yet seen on the exchange) said.
        // (A position read from the exchange is closed by the stop's own fill, which books
        // its PnL; only a guessed one goes here.)
        self.ledger.stopped_out(&msg.0, now);
        self.publish();
        self.sync(ctx);
    }
}

/// A request from the REP thread.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Query {
    pub request: RiskRequest,
    pub reply: ReplyTo<RiskReply>,
}

impl Handler<Query> for RiskManager {
    type Result = ();

    fn handle(&mut self, msg: Query, ctx: &mut Context<Self>) {
        if let RiskRequest::Approve(intent) = &msg.request
            && let Some(d) = self.parked_answer(&intent.intent_id)
        {
            // A resent copy of a request that waited: the answer it got.
            let _ = msg.reply.send(RiskReply::Decision(d));
            return;
        }
        if let RiskRequest::Approve(intent) = &msg.request
            && self.ledger.awaits_exit(intent)
        {
            tracing::info!(intent_id = %intent.intent_id, symbol = %intent.symbol, "a reversal's entry waits for its exit's fill to be booked");
            let id = intent.intent_id.clone();
            self.parked.push(Parked {
                intent: intent.clone(),
                reply: msg.reply,
            });
            self.sync(ctx);
            ctx.run_later(EXIT_BOOKING_WAIT, move |act, _| act.expire_parked(&id));
            return;
        }
        match msg.request {
            RiskRequest::Control(ControlCommand::FlattenAll) => {
                self.control(ControlCommand::FlattenAll);
                // This machine's clock, as the router's deadline is (the exchange's may
                // be a replay's, years behind).
                let now = now_ms();
                let id = format!("k{now}");
                self.flattens
                    .insert(id.clone(), (now + self.cfg.flatten_deadline_ms, None));
                self.flatten(id, true, msg.reply);
            }
            RiskRequest::Close { symbol } => {
                let now = now_ms();
                let id = format!("c{now}-{symbol}");
                tracing::warn!(%symbol, flatten_id = id, "close by hand");
                self.flattens.insert(
                    id.clone(),
                    (now + self.cfg.flatten_deadline_ms, Some(symbol)),
                );
                self.flatten(id, false, msg.reply);
            }
            RiskRequest::Flatten { flatten_id } => self.flatten(flatten_id, false, msg.reply),
            request => {
                let _ = msg.reply.send(self.answer(request));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rust_decimal_macros::dec;

    fn position(size: &str, cur_realised: &str) -> PositionInfo {
        serde_json::from_value(serde_json::json!({
            "symbol": "BTCUSDT", "side": if size == "0" { "" } else { "Buy" }, "size": size,
            "avgPrice": "100000", "curRealisedPnl": cur_realised,
        }))
        .unwrap()
    }

    fn closed(pnl: &str) -> ClosedPnl {
        serde_json::from_value(serde_json::json!({
            "symbol": "ETHUSDT", "orderId": "o1", "side": "Sell", "qty": "1",
            "closedSize": "1", "avgEntryPrice": "3000", "avgExitPrice": "3010",
            "cumEntryValue": "3000", "cumExitValue": "3010",
            "closedPnl": pnl, "createdTime": "1", "updatedTime": "2",
        }))
        .unwrap()
    }

    /// Today's PnL counts an open position's entry fee and funding (curRealisedPnl), a
    /// flat row's leftover not, and the trades closed today with their fees.
    #[test]
    fn todays_pnl_counts_what_the_open_positions_paid() {
        assert_eq!(realised_today(&[], &[]), dec!(0));
        assert_eq!(
            realised_today(&[closed("8.35")], &[position("0.002", "-0.11")]),
            dec!(8.24)
        );
        assert_eq!(
            realised_today(
                &[closed("8.35"), closed("-3.2")],
                &[
                    position("0", "-5"),
                    position("0.002", "-0.11"),
                    position("1", "-0.0201")
                ]
            ),
            dec!(5.0199)
        );
    }
}
