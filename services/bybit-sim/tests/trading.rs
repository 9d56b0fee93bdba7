//! Trading on bybit-sim through the project's own client: place, fill, query, close,
//! exchange-side SL/TP, executions and closed PnL that agree with the wallet to the cent,
//! and each order error produced by the request that should produce it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use common::{client, creds, last_price, qty, settings, start};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use shardbot_bybit::{
    ApiCode,
    models::market::InstrumentInfo,
    rest::{BybitClient, CreateOrder, OrderResolution, Query, TradingStop},
};
use shardbot_protocol::Side;

/// A sim whose clock all but stands still (one sim nanosecond per real second), so the
/// price a test reads is the price its order meets.
async fn setup() -> (BybitClient, Vec<InstrumentInfo>) {
    let url = start(bybit_sim::SimSettings {
        clock_speed: 1e-9,
        ..settings()
    });
    let c = client(&url, creds());
    c.sync_time().await.unwrap();
    let universe = c.usdt_perpetuals().await.unwrap();
    (c, universe)
}

#[tokio::test]
async fn place_fill_query_and_close_with_books_that_agree_to_the_cent() {
    let (c, universe) = setup().await;
    let inst = &universe[42];
    let start_balance = c
        .wallet()
        .await
        .unwrap()
        .coin("USDT")
        .unwrap()
        .wallet_balance;
    c.set_leverage(&inst.symbol, dec!(5)).await.unwrap();
    c.set_leverage(&inst.symbol, dec!(5)).await.unwrap(); // 110043 is success

    let price = last_price(&c, &inst.symbol).await;
    let q = qty(inst, price, dec!(1000));
    let tick = inst.price_filter.tick_size;
    let tp = ((price * dec!(1.5)) / tick).floor() * tick;
    let sl = ((price * dec!(0.5)) / tick).floor() * tick;
    let open =
        CreateOrder::market(&inst.symbol, Side::Buy, q, "sb-open-1").with_tp_sl(Some(tp), Some(sl));
    let id = c.place_order(&open).await.unwrap();
    assert_eq!(id.order_link_id, "sb-open-1");

    // The order, its fill, and the position with its exchange-side TP/SL.
    let OrderResolution::Placed(o) = c.find_order(&inst.symbol, "sb-open-1").await.unwrap() else {
        panic!()
    };
    assert_eq!((o.order_status.as_str(), o.cum_exec_qty), ("Filled", q));
    let fill_price = o.avg_price.unwrap();
    assert_eq!(
        fill_price,
        price + tick,
        "a market buy fills at the ask, one tick through the last"
    );
    let positions = c.positions().await.unwrap();
    let p = positions.iter().find(|p| p.symbol == inst.symbol).unwrap();
    assert_eq!(
        (p.side.as_str(), p.size, p.avg_price),
        ("Buy", q, Some(fill_price))
    );
    assert_eq!((p.take_profit, p.stop_loss), (Some(tp), Some(sl)));
    assert_eq!(p.leverage, Some(dec!(5)));

    // Move the stop, then close reduce-only.
    let new_sl = ((price * dec!(0.6)) / tick).floor() * tick;
    c.raw()
        .position_trading_stop(&TradingStop {
            category: "linear",
            symbol: inst.symbol.clone(),
            tpsl_mode: "Full",
            position_idx: 0,
            take_profit: None,
            stop_loss: Some(new_sl),
            tp_trigger_by: None,
            sl_trigger_by: Some("LastPrice"),
        })
        .await
        .unwrap();
    assert_eq!(c.positions().await.unwrap()[0].stop_loss, Some(new_sl));
    let close = CreateOrder::market(&inst.symbol, Side::Sell, q, "sb-close-1").reduce_only();
    c.place_order(&close).await.unwrap();
    assert!(c.positions().await.unwrap().is_empty());

    let now = c.raw().clock().now_ms();
    let execs = c
        .executions(Some(&inst.symbol), now - 3_600_000, now + 1000)
        .await
        .unwrap();
    let trades: Vec<_> = execs.iter().filter(|e| e.exec_type == "Trade").collect();
    assert_eq!(trades.len(), 2);
    for e in &trades {
        assert_eq!(
            e.exec_fee,
            (e.exec_value * dec!(0.00055)).round_dp(8),
            "taker fee on every fill"
        );
        assert!(!e.is_maker);
    }
    let funding: Decimal = execs
        .iter()
        .filter(|e| e.exec_type == "Funding")
        .map(|e| e.exec_fee)
        .sum();
    let closed = c
        .closed_pnl(Some(&inst.symbol), now - 3_600_000, now + 1000)
        .await
        .unwrap();
    assert_eq!(closed.len(), 1);
    let rec = &closed[0];
    let (entry, exit) = (
        trades.iter().find(|e| e.side == "Buy").unwrap(),
        trades.iter().find(|e| e.side == "Sell").unwrap(),
    );
    assert_eq!(rec.avg_entry_price, entry.exec_price);
    assert_eq!(rec.avg_exit_price, exit.exec_price);
    assert_eq!(rec.closed_size, q);
    let gross = (exit.exec_price - entry.exec_price) * q;
    assert_eq!(
        rec.closed_pnl,
        gross - entry.exec_fee - exit.exec_fee - funding,
        "closed PnL is net of both fees and of the funding paid while open"
    );
    let end_balance = c
        .wallet()
        .await
        .unwrap()
        .coin("USDT")
        .unwrap()
        .wallet_balance;
    assert_eq!(
        end_balance - start_balance,
        rec.closed_pnl,
        "wallet moved by exactly the closed PnL (gross − fees − funding)"
    );
}

#[tokio::test]
async fn an_order_is_found_by_its_link_id_and_a_repeat_is_refused() {
    let (c, universe) = setup().await;
    let inst = &universe[7];
    let price = last_price(&c, &inst.symbol).await;
    let o = CreateOrder::market(
        &inst.symbol,
        Side::Sell,
        qty(inst, price, dec!(200)),
        "sb-dup-1",
    );
    c.place_order(&o).await.unwrap();
    assert!(matches!(
        c.find_order(&inst.symbol, "sb-dup-1").await.unwrap(),
        OrderResolution::Placed(_)
    ));
    assert!(matches!(
        c.find_order(&inst.symbol, "sb-never").await.unwrap(),
        OrderResolution::NotFound
    ));
    let again = c.place_order(&o).await.unwrap_err();
    assert_eq!(again.api_code(), Some(ApiCode::DuplicateOrderLinkId));
    assert_eq!(c.positions().await.unwrap().len(), 1, "still one position");
}

#[tokio::test]
async fn limit_orders_rest_and_can_be_amended_and_cancelled() {
    let (c, universe) = setup().await;
    let inst = &universe[3];
    let tick = inst.price_filter.tick_size;
    let price = last_price(&c, &inst.symbol).await;
    let far = ((price * dec!(0.5)) / tick).floor() * tick;
    let mut o = CreateOrder::market(
        &inst.symbol,
        Side::Buy,
        qty(inst, price, dec!(100)),
        "sb-lim-1",
    );
    o.order_type = "Limit";
    o.price = Some(far);
    c.place_order(&o).await.unwrap();
    let open = c.open_orders().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(
        (open[0].order_status.as_str(), open[0].price),
        ("New", Some(far))
    );
    let cancel = shardbot_bybit::rest::CancelOrder {
        category: "linear",
        symbol: inst.symbol.clone(),
        order_id: None,
        order_link_id: Some("sb-lim-1".into()),
    };
    c.raw().order_cancel(&cancel).await.unwrap();
    assert!(c.open_orders().await.unwrap().is_empty());
    let again = c.raw().order_cancel(&cancel).await.unwrap_err();
    assert_eq!(
        again.api_code(),
        Some(ApiCode::OrderNotFound),
        "110001 for a cancelled order"
    );
}

/// create-batch places each order as create would, in order: one refused (its
/// orderLinkId is taken) while the others go through, each result at its index, found
/// afterwards by its link id. Its budget is its own: with create's ten of this second
/// spent, a batch still goes out at once.
#[tokio::test]
async fn a_batch_places_each_order_and_refuses_one_at_its_index() {
    let (c, universe) = setup().await;
    let mut orders = Vec::new();
    for (k, inst) in universe[10..13].iter().enumerate() {
        let price = last_price(&c, &inst.symbol).await;
        orders.push(CreateOrder::market(
            &inst.symbol,
            Side::Buy,
            qty(inst, price, dec!(100)),
            &format!("sb-batch-{k}"),
        ));
    }
    c.place_order(&orders[1]).await.unwrap();
    let filler = &universe[20];
    let filler_price = last_price(&c, &filler.symbol).await;
    for n in 0..9 {
        let o = CreateOrder::market(
            &filler.symbol,
            Side::Buy,
            qty(filler, filler_price, dec!(10)),
            &format!("sb-fill-{n}"),
        );
        c.place_order(&o).await.unwrap();
    }
    let started = std::time::Instant::now();
    let results = c.place_orders(&orders).await.unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "the batch waited for create's budget: {:?}",
        started.elapsed()
    );
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].as_ref().unwrap().order_link_id, "sb-batch-0");
    assert!(!results[0].as_ref().unwrap().order_id.is_empty());
    assert_eq!(
        results[1].as_ref().unwrap_err().api_code(),
        Some(ApiCode::DuplicateOrderLinkId)
    );
    assert_eq!(results[2].as_ref().unwrap().order_link_id, "sb-batch-2");
    for (k, o) in orders.iter().enumerate() {
        match c
            .find_order(&o.symbol, &format!("sb-batch-{k}"))
            .await
            .unwrap()
        {
            OrderResolution::Placed(found) => assert_eq!(found.symbol, o.symbol),
            OrderResolution::NotFound => panic!("sb-batch-{k} not found"),
        }
    }
    assert_eq!(
        c.positions().await.unwrap().len(),
        4,
        "three symbols and the filler"
    );

    // Eleven orders are not a batch; nothing is sent.
    let eleven = vec![orders[0].clone(); 11];
    assert!(matches!(
        c.place_orders(&eleven).await,
        Err(shardbot_bybit::BybitError::Config(_))
    ));
}

#[tokio::test]
async fn each_order_error_comes_from_the_request_that_should_produce_it() {
    let (c, universe) = setup().await;
    let inst = universe
        .iter()
        .find(|i| i.lot_size_filter.qty_step < dec!(1))
        .unwrap();
    let step = inst.lot_size_filter.qty_step;
    let price = last_price(&c, &inst.symbol).await;
    let code = |e: shardbot_bybit::BybitError| e.api_code();
    let m = |q: Decimal, link: &str| CreateOrder::market(&inst.symbol, Side::Buy, q, link);
    assert_eq!(
        code(c.place_order(&m(step / dec!(10), "e1")).await.unwrap_err()),
        Some(ApiCode::QtyTruncatedToZero)
    );
    assert_eq!(
        code(c.place_order(&m(step * dec!(1.5), "e2")).await.unwrap_err()),
        Some(ApiCode::ParamError)
    );
    // An instrument whose smallest order is worth less than its minimum notional, found
    // from the prices in force, so the 110094 case always runs.
    let prices: std::collections::HashMap<String, Decimal> = c
        .tickers()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.symbol, t.last_price))
        .collect();
    let cheap = universe
        .iter()
        .find(|i| {
            i.lot_size_filter.min_order_qty * prices[&i.symbol]
                < i.lot_size_filter.min_notional_value.unwrap()
        })
        .expect("the universe has an instrument whose minimum qty is under the minimum notional");
    let o = CreateOrder::market(
        &cheap.symbol,
        Side::Buy,
        cheap.lot_size_filter.min_order_qty,
        "e3",
    );
    assert_eq!(
        code(c.place_order(&o).await.unwrap_err()),
        Some(ApiCode::NotionalBelowMinimum)
    );
    // A qty at the end of Decimal's range (it panicked the sim dividing by the step).
    assert_eq!(
        code(c.place_order(&m(Decimal::MAX, "e-huge")).await.unwrap_err()),
        Some(ApiCode::ParamError)
    );
    let over_max = inst.lot_size_filter.max_mkt_order_qty.unwrap() + step;
    assert_eq!(
        code(c.place_order(&m(over_max, "e4")).await.unwrap_err()),
        Some(ApiCode::ParamError),
        "above max market qty"
    );
    c.set_leverage(&inst.symbol, dec!(1)).await.unwrap();
    let huge = qty(inst, price, dec!(200_000)).min(inst.lot_size_filter.max_mkt_order_qty.unwrap());
    assert_eq!(
        code(c.place_order(&m(huge, "e5")).await.unwrap_err()),
        Some(ApiCode::AvailableBalanceInsufficient)
    );
    let too_long = m(qty(inst, price, dec!(100)), &"x".repeat(37));
    assert_eq!(
        code(c.place_order(&too_long).await.unwrap_err()),
        Some(ApiCode::ParamError)
    );
    let reduce = m(qty(inst, price, dec!(100)), "e6").reduce_only();
    assert_eq!(
        code(c.place_order(&reduce).await.unwrap_err()),
        Some(ApiCode::QtyTruncatedToZero),
        "reduce-only with no position"
    );
    let q = Query::new()
        .with("category", "linear")
        .with("symbol", "NOPEUSDT");
    assert_eq!(
        code(c.raw().position_list(&q).await.unwrap_err()),
        Some(ApiCode::ParamError)
    );
}
