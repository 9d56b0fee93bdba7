//! The ledger: the account as the risk manager keeps it between two reads of the exchange,
//! and the booking rules it shares with the backtester. Pure (the clock is passed in, the
//! journal's answer too), so the risk manager's actor only reads the exchange, answers
//! requests and publishes; every rule here is table-tested below.
//!
//! What it holds beside the [`Book`] the rules judge against:
//! - **provisional entries**: an approved entry counts as an open position from its
//!   approval (its unrounded quantity at the intent's reference price) until its fill,
//!   its exit, the router's word that it was not placed, or [`PROVISIONAL_FOR`]; so a
//!   burst of approvals cannot exceed the limits before the exchange shows them;
//! - **pending exits**: an exit approved and not yet booked; a reversal's entry by the
//!   same owner waits for it ([`entry_turn`], the rule the backtester follows too);
//! - **owners**: the strategy whose entry opened each position (one owner per position);
//! - **exact** positions (read from the exchange or built from fills) against an
//!   approval's guess, whose closing fills cannot be booked;
//! - per symbol, when the last account read saw its position (a fill it already holds is
//!   not booked twice), and when the newest fill was booked (a read that started before
//!   it does not replace the book).
//!
//! The backtester books by the same rules: the book's aggregates are a [`Tally`] of its
//! positions, an approval's provisional position holding what [`Tally::approve`] holds,
//! and the backtester keeps a tally itself (one run is 20 million bar-steps a second: it
//! cannot afford a map of positions per judgement), approving, filling and releasing
//! through the same calls; a reversal's entry is judged after its exit by [`entry_turn`]
//! in both.
//!
//! [`Tally`]: crate::Tally
//! [`Tally::approve`]: crate::Tally::approve

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use rust_decimal::Decimal;
use shardbot_protocol::{
    Fill, IntentAction, IntentId, OrderIntent, Position, Refusal, RiskDecision, Symbol,
    TimestampMs, TradingMode,
};

use crate::{Book, TradingSettings, decide};

/// An approved entry not yet visible in the exchange's positions counts as open this long
/// at most.
pub const PROVISIONAL_FOR: Duration = Duration::from_secs(15);

/// When an entry signal is judged: the rule for a reversal, one home for the risk manager
/// and the backtester.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryTurn {
    /// Judged now, on the balance as it stands.
    Now,
    /// Judged once the exit before it has filled and is booked, on the balance that exit
    /// left: never sized on a balance without that exit's PnL, never netted against a
    /// position still open.
    AfterExit,
}

/// An entry waits for the exit pending on its symbol when that exit closes the entrant's
/// own position (a reversal). Another strategy's entry does not wait: the position is not
/// its own, and the rules refuse it at once (one owner per position).
pub fn entry_turn(exit_pending: bool, held_by_entrant: bool) -> EntryTurn {
    if exit_pending && held_by_entrant {
        EntryTurn::AfterExit
    } else {
        EntryTurn::Now
    }
}

/// One read of the account from the exchange.
#[derive(Debug, Clone)]
pub struct AccountRead {
    /// When the read started.
    pub started: Instant,
    /// The positions it showed (size above zero).
    pub positions: Vec<Position>,
    /// Per position, the exchange's `updatedTime`: fills executed no later are in it.
    pub updated: Vec<(Symbol, TimestampMs)>,
    pub realised_today: Decimal,
    pub simulated_balance: Decimal,
}

/// What became of a fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillBooked {
    /// The last account read holds it already.
    AlreadyRead,
    /// Booked into the balance and the position.
    Booked,
    /// Not booked: no account read yet, or a closing fill of a guessed position.
    NotBooked,
}

/// What [`Ledger::foresee`] can say of a close's entry before the whole close is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreseen {
    /// Approved whatever is still to come: approve it now.
    Approved,
    /// Refused whatever is still to come.
    Refused(Refusal),
    /// What is still to come decides.
    Undecided,
}

#[derive(Debug, Clone, Default)]
pub struct Ledger {
    book: Book,
    /// Approved entries not yet filled: when, the guess, and the intent.
    provisional: HashMap<Symbol, (Instant, Position, IntentId)>,
    /// Symbols whose exit was approved (when) and not yet booked.
    exiting: HashMap<Symbol, Instant>,
    owners: HashMap<Symbol, String>,
    exact: HashSet<Symbol>,
    read_at: HashMap<Symbol, TimestampMs>,
    last_booked: Option<Instant>,
    /// Whether the account was read from the exchange at least once.
    read: bool,
}

impl Ledger {
    pub fn new(mode: TradingMode) -> Ledger {
        Ledger {
            book: Book {
                mode,
                ..Book::default()
            },
            ..Ledger::default()
        }
    }

    /// What the rules judge against.
    pub fn book(&self) -> &Book {
        &self.book
    }

    pub fn mode(&self) -> TradingMode {
        self.book.mode
    }

    pub fn set_mode(&mut self, mode: TradingMode) {
        self.book.mode = mode;
    }

    pub fn set_simulated_balance(&mut self, balance: Decimal) {
        self.book.simulated_balance = balance;
    }

    /// Positions open or approved: a new simulated balance needs none.
    pub fn open_or_approved(&self) -> usize {
        self.book.positions.len() + self.provisional.len()
    }

    /// The positions, by symbol.
    pub fn positions(&self) -> Vec<Position> {
        let mut positions: Vec<Position> = self.book.positions.values().cloned().collect();
        positions.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        positions
    }

    /// Takes a read of the account, unless it started before the newest booked fill (it
    /// lacks that fill; the read that fill asks for replaces the book). The approvals not
    /// yet on the exchange stay counted; exits the read shows done end. Returns whether
    /// the book was replaced.
    pub fn on_read(&mut self, read: AccountRead, now: Instant) -> bool {
        self.read = true;
        if self.last_booked.is_some_and(|t| read.started < t) {
            return false;
        }
        let mut positions: HashMap<Symbol, Position> = read
            .positions
            .into_iter()
            .map(|p| (p.symbol.clone(), p))
            .collect();
        self.exact = positions.keys().cloned().collect();
        self.read_at = read.updated.into_iter().collect();
        self.provisional.retain(|s, (t, _, _)| {
            now.duration_since(*t) < PROVISIONAL_FOR && !positions.contains_key(s)
        });
        self.exiting
            .retain(|s, t| now.duration_since(*t) < PROVISIONAL_FOR && positions.contains_key(s));
        for (s, (_, p, _)) in &self.provisional {
            positions.insert(s.clone(), p.clone());
        }
        self.book.positions = positions;
        self.book.realised_today = read.realised_today;
        self.book.simulated_balance = read.simulated_balance;
        true
    }

    /// Whether the account was read from the exchange yet (nothing is approved before).
    pub fn is_read(&self) -> bool {
        self.read
    }

    /// Names each position's owner: the one known here, else `lookup`'s (the journal's
    /// newest entry of the symbol still open). Owners of positions gone are forgotten.
    pub fn stamp_owners(&mut self, mut lookup: impl FnMut(&Symbol) -> Option<String>) {
        self.owners
            .retain(|s, _| self.book.positions.contains_key(s));
        for (symbol, p) in &mut self.book.positions {
            if !self.owners.contains_key(symbol)
                && let Some(owner) = lookup(symbol)
            {
                self.owners.insert(symbol.clone(), owner);
            }
            p.strategy = self.owners.get(symbol).cloned();
        }
    }

    /// Whether `intent` is a reversal's entry that waits for its exit's booking
    /// ([`entry_turn`]).
    pub fn awaits_exit(&self, intent: &OrderIntent) -> bool {
        matches!(intent.action, IntentAction::Enter { .. })
            && entry_turn(
                self.exiting.contains_key(&intent.symbol),
                self.book
                    .positions
                    .get(&intent.symbol)
                    .is_some_and(|p| p.strategy.as_deref() == Some(intent.strategy.as_str())),
            ) == EntryTurn::AfterExit
    }

    /// Whether the position a waiting entry's exit closes is gone from the book.
    pub fn exit_booked(&self, symbol: &Symbol) -> bool {
        !self.book.positions.contains_key(symbol)
    }

    /// Judges `intent` by the rules and books the approval: an entry counts open at once
    /// (its owner is its strategy), an exit ends its approval's provisional position and is
    /// pending until booked. The same intent again (the router retries one whose order did
    /// not go through) is judged as the first time, not refused for its own approval.
    pub fn approve(
        &mut self,
        settings: &TradingSettings,
        intent: &OrderIntent,
        now_ms: TimestampMs,
        now: Instant,
    ) -> RiskDecision {
        let repeat = self
            .provisional
            .get(&intent.symbol)
            .is_some_and(|(_, _, id)| *id == intent.intent_id);
        let d = if repeat {
            let mut book = self.book.clone();
            book.positions.remove(&intent.symbol);
            decide(settings, &book, intent, now_ms)
        } else {
            decide(settings, &self.book, intent, now_ms)
        };
        match &d {
            RiskDecision::Approved {
                qty,
                leverage,
                reduce_only: false,
                side,
                ..
            } => {
                let p = Position {
                    symbol: intent.symbol.clone(),
                    side: *side,
                    size: *qty,
                    avg_price: intent.reference_price,
                    mark_price: None,
                    leverage: *leverage,
                    unrealised_pnl: Decimal::ZERO,
                    liq_price: None,
                    stop_loss: intent.stop_loss,
                    take_profit: intent.take_profit,
                    updated_ms: now_ms,
                    strategy: Some(intent.strategy.clone()),
                };
                self.owners
                    .insert(intent.symbol.clone(), intent.strategy.clone());
                self.exiting.remove(&intent.symbol);
                self.book.positions.insert(intent.symbol.clone(), p.clone());
                self.provisional
                    .insert(intent.symbol.clone(), (now, p, intent.intent_id.clone()));
            }
            RiskDecision::Approved { .. } => {
                self.provisional.remove(&intent.symbol);
                self.exiting.insert(intent.symbol.clone(), now);
            }
            RiskDecision::Refused { .. } => {}
        }
        d
    }

    /// A bar close's entry judged on this ledger as if the close's entries that arrived
    /// were all of it (call it on a copy, the close's arrived entries in the rules' order):
    /// what the judgement of the whole close will say whatever of it is still to come, if
    /// that is already certain. `to_come_before`: how many of the close's entries ranked
    /// before this one may still come (`u32::MAX`: not known).
    /// - Refused here: entries still to come only take room (each entry's margin is the
    ///   same), so the limits refuse it then too; a symbol's own reasons are its own.
    /// - Approved here with room for it and every entry still to come ranked before it
    ///   ([`crate::room`], never more than the rules approve): approved then too.
    pub fn foresee(
        &mut self,
        settings: &TradingSettings,
        intent: &OrderIntent,
        to_come_before: u32,
        now_ms: TimestampMs,
        now: Instant,
    ) -> Foreseen {
        let room = self.book.room(settings);
        match self.approve(settings, intent, now_ms, now) {
            RiskDecision::Refused { refusal, .. } => Foreseen::Refused(refusal),
            RiskDecision::Approved { .. } if room.is_some_and(|r| r > to_come_before) => {
                Foreseen::Approved
            }
            RiskDecision::Approved { .. } => Foreseen::Undecided,
        }
    }

    /// An approved entry the router did not place: its provisional position ends (unless
    /// a later approval or a fill replaced it). Returns whether anything changed.
    pub fn unplaced(&mut self, intent_id: &IntentId, symbol: &Symbol) -> bool {
        if self
            .provisional
            .get(symbol)
            .is_none_or(|(_, _, id)| id != intent_id)
        {
            return false;
        }
        self.provisional.remove(symbol);
        if !self.exact.contains(symbol) {
            self.book.positions.remove(symbol);
            self.owners.remove(symbol);
        }
        true
    }

    /// A fill of the account ([`Book::book_fill`]), booked at once unless the last read
    /// holds it already. A booked fill makes the position the fills' (no longer an
    /// approval's guess) or ends it.
    pub fn fill(&mut self, f: &Fill, now: Instant) -> FillBooked {
        if !f.is_funding()
            && self
                .read_at
                .get(&f.symbol)
                .is_some_and(|read| f.exec_time_ms <= *read)
        {
            return FillBooked::AlreadyRead;
        }
        if !self.read || !self.book.book_fill(f, self.exact.contains(&f.symbol)) {
            return FillBooked::NotBooked;
        }
        self.read_at.remove(&f.symbol);
        self.last_booked = Some(now);
        self.provisional.remove(&f.symbol);
        if self.book.positions.contains_key(&f.symbol) {
            self.exact.insert(f.symbol.clone());
        } else {
            self.exact.remove(&f.symbol);
        }
        FillBooked::Booked
    }

    /// The symbol's position was closed by its stop-loss at `now_ms`: a guessed position
    /// is gone (one read from the exchange is closed by the stop's own fill, which books
    /// its PnL), and the cooldown starts.
    pub fn stopped_out(&mut self, symbol: &Symbol, now_ms: TimestampMs) {
        self.provisional.remove(symbol);
        if !self.exact.contains(symbol) {
            self.book.positions.remove(symbol);
        }
        self.book.stopped_out_at.insert(symbol.clone(), now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use rust_decimal_macros::dec;
    use shardbot_protocol::{Interval, Side};

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    use crate::test_settings as settings;

    /// An intent of the bar opening at `bar` (its id follows from its fields).
    fn intent(bar: i64, symbol: &str, strategy: &str, action: IntentAction) -> OrderIntent {
        OrderIntent::new(
            strategy,
            sym(symbol),
            Interval::M5,
            bar,
            action,
            dec!(100),
            None,
            None,
            0,
        )
    }

    fn enter(bar: i64, symbol: &str, strategy: &str) -> OrderIntent {
        intent(
            bar,
            symbol,
            strategy,
            IntentAction::Enter { side: Side::Buy },
        )
    }

    fn exit(bar: i64, symbol: &str, strategy: &str) -> OrderIntent {
        intent(bar, symbol, strategy, IntentAction::Exit)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// A close's entries decided as they arrive (each partial judgement deciding only
        /// what [`Ledger::foresee`] calls certain, the rest at the end) get the decisions
        /// of the whole close judged at once in the rules' order, whatever the arrival
        /// order: the entries a limit cuts are the backtest's.
        #[test]
        fn deciding_what_is_certain_as_a_close_arrives_is_judging_it_whole(
            n in 1usize..14,
            max_open in 1u32..8,
            margin_pct in proptest::sample::select(vec![dec!(10), dec!(35), dec!(100)]),
            held_mask in 0u32..(1 << 14),
            order in proptest::collection::vec(0usize..1000, 14),
            batches in proptest::collection::vec(1usize..4, 14),
            reported in proptest::bool::ANY,
        ) {
            let settings = TradingSettings {
                sizing: crate::Sizing::Fixed(dec!(20)),
                max_open_positions: max_open,
                max_margin_use_pct: margin_pct,
                fee_rate: dec!(0.00055),
                ..settings()
            };
            let symbols: Vec<String> = (0..n).map(|k| format!("S{k:02}USDT")).collect();
            // Some symbols hold a position already (refused for their own reason), one
            // more outside the close.
            let mut positions: Vec<Position> = symbols
                .iter()
                .enumerate()
                .filter(|(k, _)| held_mask & (1 << k) != 0)
                .map(|(_, s)| position(s, Side::Buy, dec!(0.1), Some("trend_following")))
                .collect();
            positions.push(position("ZZZUSDT", Side::Sell, dec!(0.1), None));
            let now = Instant::now();
            let mut start = Ledger::new(TradingMode::Normal);
            start.on_read(read(now, positions, &[]), now);
            let entries: Vec<OrderIntent> = symbols.iter().map(|s| enter(7, s, "trend_following")).collect();

            // The whole close at once, in the rules' order.
            let mut whole = start.clone();
            let mut ranked = entries.clone();
            crate::judging_order(&mut ranked);
            let reference: Vec<(String, bool)> = ranked
                .iter()
                .map(|i| (i.symbol.to_string(), approved(&whole.approve(&settings, i, 0, now))))
                .collect();

            // As it arrives: in `order`, a few at a time.
            let mut arrival: Vec<usize> = (0..n).collect();
            arrival.sort_by_key(|k| order[*k]);
            let mut live = start.clone();
            let mut held: Vec<OrderIntent> = Vec::new();
            let mut decided: Vec<(String, bool)> = Vec::new();
            let mut next = 0;
            let mut b = 0;
            while next < n {
                let take = batches[b % batches.len()].min(n - next);
                b += 1;
                held.extend(arrival[next..next + take].iter().map(|k| entries[*k].clone()));
                next += take;
                crate::judging_order(&mut held);
                let to_come: Vec<&String> = {
                    let mut v: Vec<&String> = arrival[next..].iter().map(|k| &symbols[*k]).collect();
                    v.sort();
                    v
                };
                let mut copy = live.clone();
                let mut undecided = Vec::new();
                for i in held.drain(..) {
                    let before = if reported {
                        u32::try_from(to_come.partition_point(|s| s.as_str() < i.symbol.as_str())).unwrap()
                    } else {
                        u32::MAX
                    };
                    match copy.foresee(&settings, &i, before, 0, now) {
                        Foreseen::Approved => {
                            let d = live.approve(&settings, &i, 0, now);
                            proptest::prop_assert!(approved(&d), "{d:?}");
                            decided.push((i.symbol.to_string(), true));
                        }
                        Foreseen::Refused(_) => decided.push((i.symbol.to_string(), false)),
                        Foreseen::Undecided => undecided.push(i),
                    }
                }
                held = undecided;
            }
            // The close complete: the rest in the rules' order.
            crate::judging_order(&mut held);
            for i in held {
                let d = live.approve(&settings, &i, 0, now);
                decided.push((i.symbol.to_string(), approved(&d)));
            }
            decided.sort();
            let mut reference = reference;
            reference.sort();
            proptest::prop_assert_eq!(decided, reference);
        }
    }

    fn position(symbol: &str, side: Side, size: Decimal, strategy: Option<&str>) -> Position {
        Position {
            symbol: sym(symbol),
            side,
            size,
            avg_price: dec!(100),
            mark_price: None,
            leverage: dec!(1),
            unrealised_pnl: Decimal::ZERO,
            liq_price: None,
            stop_loss: None,
            take_profit: None,
            updated_ms: 0,
            strategy: strategy.map(str::to_owned),
        }
    }

    fn read(at: Instant, positions: Vec<Position>, updated: &[(&str, i64)]) -> AccountRead {
        AccountRead {
            started: at,
            positions,
            updated: updated.iter().map(|(s, t)| (sym(s), *t)).collect(),
            realised_today: Decimal::ZERO,
            simulated_balance: dec!(1000),
        }
    }

    fn fill(symbol: &str, side: Side, qty: Decimal, closed: Decimal, t: i64) -> Fill {
        Fill {
            exec_id: format!("e{t}"),
            order_id: "o".into(),
            order_link_id: String::new(),
            symbol: sym(symbol),
            side,
            exec_qty: qty,
            exec_price: dec!(110),
            exec_value: qty * dec!(110),
            exec_fee: dec!(0.1),
            fee_rate: None,
            is_maker: false,
            closed_size: closed,
            exec_time_ms: t,
            exec_type: "Trade".into(),
            stop_order_type: None,
        }
    }

    fn approved(d: &RiskDecision) -> bool {
        matches!(d, RiskDecision::Approved { .. })
    }

    /// A ledger whose last read shows a long BTCUSDT of 1, updated at `updated_ms`.
    fn holding_btc(t0: Instant, updated_ms: i64) -> Ledger {
        let mut l = ledger(t0);
        l.on_read(
            read(
                t0,
                vec![position("BTCUSDT", Side::Buy, dec!(1), None)],
                &[("BTCUSDT", updated_ms)],
            ),
            t0,
        );
        l
    }

    fn ledger(t0: Instant) -> Ledger {
        let mut l = Ledger::new(TradingMode::Normal);
        l.on_read(read(t0, vec![], &[]), t0);
        l
    }

    #[rstest]
    #[case::an_entry_from_flat(false, false, EntryTurn::Now)]
    #[case::another_strategys_exit_pending(true, false, EntryTurn::Now)]
    #[case::a_reversal(true, true, EntryTurn::AfterExit)]
    #[case::held_and_no_exit(false, true, EntryTurn::Now)]
    fn when_an_entry_is_judged(
        #[case] exit_pending: bool,
        #[case] held_by_entrant: bool,
        #[case] turn: EntryTurn,
    ) {
        assert_eq!(entry_turn(exit_pending, held_by_entrant), turn);
    }

    #[test]
    fn nothing_is_booked_before_the_first_read() {
        let t0 = Instant::now();
        let mut l = Ledger::new(TradingMode::Normal);
        assert!(!l.is_read());
        assert_eq!(
            l.fill(&fill("BTCUSDT", Side::Buy, dec!(1), dec!(0), 1), t0),
            FillBooked::NotBooked
        );
        l.on_read(read(t0, vec![], &[]), t0);
        assert!(l.is_read());
    }

    /// An approval counts open at once: with room for one position, a second entry of the
    /// same close is refused before the exchange shows the first.
    #[test]
    fn an_approved_entry_counts_open_until_the_exchange_shows_it() {
        let t0 = Instant::now();
        let mut l = ledger(t0);
        let s = TradingSettings {
            max_open_positions: 1,
            ..settings()
        };
        assert!(approved(&l.approve(&s, &enter(1, "BTCUSDT", "x"), 0, t0)));
        assert!(!approved(&l.approve(&s, &enter(2, "ETHUSDT", "x"), 0, t0)));
        // Asked again (a retry), the same intent is approved again, not refused for itself.
        assert!(approved(&l.approve(&s, &enter(1, "BTCUSDT", "x"), 0, t0)));
        assert_eq!(l.open_or_approved(), 2, "the book's and the approval's");
        // A read without it keeps it counted, for 15 s.
        l.on_read(read(t0, vec![], &[]), t0 + Duration::from_secs(1));
        assert_eq!(l.positions().len(), 1);
        l.on_read(read(t0, vec![], &[]), t0 + PROVISIONAL_FOR);
        assert!(l.positions().is_empty());
    }

    /// The ledger's approvals hold what the backtester's do: entries approved one after
    /// the other leave the book with the exposure of a [`Tally`] that approved the same
    /// quantities at the same reference prices (the backtester's booking), exactly.
    #[test]
    fn approvals_hold_what_the_backtesters_tally_holds() {
        let t0 = Instant::now();
        let mut l = ledger(t0);
        let s = TradingSettings {
            max_open_positions: 10,
            max_margin_use_pct: dec!(100),
            ..settings()
        };
        let mut tally = crate::Tally::default();
        for (bar, symbol, price) in [
            (1, "BTCUSDT", dec!(97123.4)),
            (1, "1000PEPEUSDT", dec!(0.0136374)),
            (1, "ETHUSDT", dec!(3333.33)),
        ] {
            let mut i = enter(bar, symbol, "x");
            i.reference_price = price;
            let exposure = tally.exposure(None, dec!(1000), dec!(0), TradingMode::Normal, None);
            assert_eq!(l.book().exposure(&sym(symbol)), exposure, "{symbol}");
            let RiskDecision::Approved { qty, leverage, .. } = l.approve(&s, &i, 0, t0) else {
                panic!("{symbol} refused");
            };
            tally.approve(qty, price, leverage);
        }
        let after = tally.exposure(None, dec!(1000), dec!(0), TradingMode::Normal, None);
        assert_eq!(l.book().exposure(&sym("SOLUSDT")), after);
        assert_eq!(after.open_positions, 3);
    }

    #[test]
    fn an_entry_the_router_did_not_place_stops_counting() {
        let t0 = Instant::now();
        let mut l = ledger(t0);
        l.approve(&settings(), &enter(1, "BTCUSDT", "x"), 0, t0);
        let id = enter(1, "BTCUSDT", "x").intent_id;
        assert!(!l.unplaced(&enter(2, "BTCUSDT", "x").intent_id, &sym("BTCUSDT")));
        assert!(l.unplaced(&id, &sym("BTCUSDT")));
        assert!(l.positions().is_empty());
        assert!(!l.unplaced(&id, &sym("BTCUSDT")), "said once");
    }

    /// A reversal: the owner's exit approved, its entry waits until the exit's fill is
    /// booked; another strategy's entry does not wait (it is refused, not the owner's).
    #[test]
    fn a_reversals_entry_waits_for_its_exits_booking() {
        let t0 = Instant::now();
        let mut l = holding_btc(t0, 5);
        l.stamp_owners(|_| Some("x".into()));
        assert!(!l.awaits_exit(&enter(3, "BTCUSDT", "x")), "no exit pending");
        assert!(approved(&l.approve(
            &settings(),
            &exit(4, "BTCUSDT", "x"),
            0,
            t0
        )));
        assert!(l.awaits_exit(&enter(3, "BTCUSDT", "x")));
        assert!(
            !l.awaits_exit(&enter(3, "BTCUSDT", "y")),
            "not y's position"
        );
        assert!(!l.exit_booked(&sym("BTCUSDT")));
        // The exit's fill: closes the whole position.
        assert_eq!(
            l.fill(&fill("BTCUSDT", Side::Sell, dec!(1), dec!(1), 10), t0),
            FillBooked::Booked
        );
        assert!(l.exit_booked(&sym("BTCUSDT")));
        assert!(!l.awaits_exit(&enter(3, "BTCUSDT", "x")));
        // Its PnL is in the balance the entry is sized from: +10 - 0.1 fee.
        assert_eq!(l.book().simulated_balance, dec!(1009.9));
    }

    /// A fill the last read already holds (executed no later than the position's
    /// `updatedTime`) is not booked again: it doubled a position once.
    #[rstest]
    #[case::held_by_the_read(5, FillBooked::AlreadyRead, dec!(1))]
    #[case::same_millisecond(10, FillBooked::AlreadyRead, dec!(1))]
    #[case::after_the_read(11, FillBooked::Booked, dec!(2))]
    fn a_fill_is_booked_once(#[case] t: i64, #[case] want: FillBooked, #[case] size: Decimal) {
        let t0 = Instant::now();
        let mut l = holding_btc(t0, 10);
        assert_eq!(
            l.fill(&fill("BTCUSDT", Side::Buy, dec!(1), dec!(0), t), t0),
            want
        );
        assert_eq!(l.positions()[0].size, size);
    }

    /// A read that started before the newest booked fill lacks it: the book stays.
    #[test]
    fn a_read_older_than_a_booked_fill_does_not_replace_the_book() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        let mut l = ledger(t0);
        assert_eq!(
            l.fill(&fill("BTCUSDT", Side::Buy, dec!(1), dec!(0), 1), t1),
            FillBooked::Booked
        );
        assert!(!l.on_read(read(t0, vec![], &[]), t1));
        assert_eq!(l.positions().len(), 1);
        assert!(l.on_read(read(t1, vec![], &[]), t1));
        assert!(l.positions().is_empty());
    }

    /// A filled entry's position is the fills' (exact): its exit's fill books the PnL.
    /// A guessed one (approved, not filled) cannot book a closing fill.
    #[test]
    fn an_approvals_guess_gives_way_to_its_fill() {
        let t0 = Instant::now();
        let mut l = ledger(t0);
        let d = l.approve(&settings(), &enter(1, "BTCUSDT", "x"), 0, t0);
        let RiskDecision::Approved { qty, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            l.fill(&fill("BTCUSDT", Side::Sell, qty, qty, 2), t0),
            FillBooked::NotBooked,
            "a closing fill of a guess"
        );
        assert_eq!(
            l.fill(&fill("BTCUSDT", Side::Buy, dec!(2), dec!(0), 3), t0),
            FillBooked::Booked
        );
        let p = &l.positions()[0];
        assert_eq!(
            (p.size, p.avg_price, p.strategy.as_deref()),
            (dec!(2), dec!(110), Some("x"))
        );
        assert_eq!(l.open_or_approved(), 1, "no longer provisional");
        assert_eq!(
            l.fill(&fill("BTCUSDT", Side::Sell, dec!(2), dec!(2), 4), t0),
            FillBooked::Booked
        );
        assert!(l.positions().is_empty());
    }

    #[test]
    fn owners_come_from_the_lookup_once_and_are_forgotten_with_the_position() {
        let t0 = Instant::now();
        let mut l = ledger(t0);
        l.on_read(
            read(t0, vec![position("BTCUSDT", Side::Buy, dec!(1), None)], &[]),
            t0,
        );
        let mut asked = 0;
        l.stamp_owners(|_| {
            asked += 1;
            Some("x".into())
        });
        l.stamp_owners(|_| {
            asked += 1;
            Some("y".into())
        });
        assert_eq!(
            (asked, l.positions()[0].strategy.as_deref()),
            (1, Some("x"))
        );
        l.on_read(read(t0, vec![], &[]), t0);
        l.stamp_owners(|_| None);
        l.on_read(
            read(t0, vec![position("BTCUSDT", Side::Buy, dec!(1), None)], &[]),
            t0,
        );
        l.stamp_owners(|_| None);
        assert_eq!(l.positions()[0].strategy, None, "opened by hand since");
    }

    #[test]
    fn a_stop_out_ends_a_guessed_position_and_starts_the_cooldown() {
        let t0 = Instant::now();
        let mut l = ledger(t0);
        l.approve(&settings(), &enter(1, "BTCUSDT", "x"), 0, t0);
        l.stopped_out(&sym("BTCUSDT"), 77);
        assert!(l.positions().is_empty());
        assert_eq!(l.book().stopped_out_at.get(&sym("BTCUSDT")), Some(&77));
    }
}
