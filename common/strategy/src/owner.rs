//! One symbol, one position, one owner: the rule for several strategies on one symbol,
//! applied alike by the strategy workers, the risk manager and the backtester.
//!
//! Bybit's one-way mode holds one position per symbol while every enabled strategy trades
//! every symbol. The position belongs to the strategy whose entry opened it, until it is
//! closed (first come). Only the owner is told it holds the position, and only the
//! owner's signals act on the symbol; the other strategies are told they are flat and
//! their signals are dropped, so one strategy's exit never closes another's position and
//! per-strategy figures stay each strategy's own. On a flat symbol, the first strategy in
//! the roster's order that enters at a bar takes it; the others' entries at that bar are
//! dropped. A position no enabled strategy opened (by hand, or by a strategy since
//! disabled) belongs to none of them: no signal touches it (its stop-loss, take-profit and
//! the kill switch still do).

use crate::{Holding, Signal};

/// Who holds a symbol's position, as the strategies on it see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// No position.
    Flat,
    /// Opened by the strategy at this index of the roster.
    Strategy(usize),
    /// Opened by hand, or by a strategy not in the roster.
    Other,
}

impl Holder {
    /// The holder of a position opened by `owner` (`None`: unknown), among the roster's
    /// `names`, in order.
    pub fn of<'a>(
        held: bool,
        owner: Option<&str>,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Holder {
        if !held {
            return Holder::Flat;
        }
        owner
            .and_then(|o| names.into_iter().position(|n| n == o))
            .map_or(Holder::Other, Holder::Strategy)
    }

    /// The position strategy `i` is told it holds, when the symbol's is `held`.
    pub fn told(self, i: usize, held: Holding) -> Holding {
        match self {
            Holder::Strategy(k) if k == i => held,
            _ => Holding::Flat,
        }
    }
}

/// The strategy whose signals act at this bar, given every strategy's signals in the
/// roster's order: the owner's while a position is held; on a flat symbol the first that
/// enters; none for a position no strategy owns.
pub fn acting<S: AsRef<[Signal]>>(holder: Holder, signals: &[S]) -> Option<usize> {
    match holder {
        Holder::Strategy(k) => (k < signals.len()).then_some(k),
        Holder::Other => None,
        Holder::Flat => signals
            .iter()
            .position(|s| s.as_ref().iter().any(|x| matches!(x, Signal::Enter { .. }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Direction;
    use rstest::rstest;

    fn enter() -> Signal {
        Signal::Enter {
            direction: Direction::Long,
            stop_loss: None,
            take_profit: None,
        }
    }

    #[rstest]
    #[case::flat_nobody_moves(Holder::Flat, vec![vec![], vec![]], None)]
    #[case::flat_first_entry_wins(Holder::Flat, vec![vec![enter()], vec![enter()]], Some(0))]
    #[case::flat_second_enters_alone(Holder::Flat, vec![vec![], vec![enter()]], Some(1))]
    #[case::flat_an_exit_is_no_claim(Holder::Flat, vec![vec![Signal::Exit], vec![enter()]], Some(1))]
    #[case::owner_exits(Holder::Strategy(1), vec![vec![enter()], vec![Signal::Exit]], Some(1))]
    #[case::owner_reverses(Holder::Strategy(0), vec![vec![Signal::Exit, enter()], vec![enter()]], Some(0))]
    #[case::owner_silent_others_ignored(Holder::Strategy(0), vec![vec![], vec![Signal::Exit, enter()]], Some(0))]
    #[case::hand_opened_nobody(Holder::Other, vec![vec![Signal::Exit], vec![enter()]], None)]
    #[case::owner_gone_from_roster(Holder::Strategy(5), vec![vec![Signal::Exit]], None)]
    fn only_the_owner_or_the_first_entry_acts(
        #[case] holder: Holder,
        #[case] signals: Vec<Vec<Signal>>,
        #[case] want: Option<usize>,
    ) {
        assert_eq!(acting(holder, &signals), want);
    }

    #[rstest]
    #[case::flat(false, Some("a"), Holder::Flat)]
    #[case::owned_by_b(true, Some("b"), Holder::Strategy(1))]
    #[case::unknown_owner(true, None, Holder::Other)]
    #[case::owner_not_enabled(true, Some("c"), Holder::Other)]
    fn the_holder_of_a_position(
        #[case] held: bool,
        #[case] owner: Option<&str>,
        #[case] want: Holder,
    ) {
        assert_eq!(Holder::of(held, owner, ["a", "b"]), want);
    }

    #[test]
    fn only_the_owner_is_told_it_holds() {
        let h = Holder::Strategy(1);
        assert_eq!(h.told(1, Holding::Long), Holding::Long);
        assert_eq!(h.told(0, Holding::Long), Holding::Flat);
        assert_eq!(Holder::Other.told(0, Holding::Short), Holding::Flat);
        assert_eq!(Holder::Flat.told(0, Holding::Flat), Holding::Flat);
    }
}
