//! Every message that crosses a process boundary survives MessagePack unchanged, and every
//! published message decodes from a frame by its topic alone.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use proptest::prelude::*;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde::{Serialize, de::DeserializeOwned};
use shardbot_protocol::*;

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

fn bar() -> Bar {
    Bar {
        symbol: sym("BTCUSDT"),
        interval: Interval::M5,
        open_time_ms: 1_758_672_000_000,
        open: dec!(112233.4),
        high: dec!(112500.00),
        low: dec!(111999.9),
        close: dec!(112345.6),
        volume: dec!(123.456),
        turnover: dec!(13870000.1234),
        published_ms: None,
        stamps: Default::default(),
    }
}

fn ticker() -> Ticker {
    Ticker {
        symbol: sym("ETHUSDT"),
        last_price: dec!(4123.45),
        mark_price: Some(dec!(4123.50)),
        index_price: Some(dec!(4123.1)),
        bid1_price: Some(dec!(4123.44)),
        ask1_price: Some(dec!(4123.45)),
        funding_rate: Some(dec!(0.0001)),
        next_funding_time_ms: Some(1_758_700_800_000),
        volume_24h: Some(dec!(1234567.89)),
        turnover_24h: None,
        ts_ms: 1_758_672_000_123,
    }
}

fn intent() -> OrderIntent {
    OrderIntent::new(
        "trend_following",
        sym("SOLUSDT"),
        Interval::M5,
        1_758_672_000_000,
        IntentAction::Enter { side: Side::Sell },
        dec!(201.37),
        Some(dec!(205.00)),
        Some(dec!(190.5)),
        1_758_672_300_010,
    )
}

fn order_event() -> OrderEvent {
    OrderEvent {
        order_id: "fd4300ae-7847-404e-b947-b46980a4d140".into(),
        order_link_id: intent().intent_id.order_link_id(),
        intent_id: Some(intent().intent_id),
        symbol: sym("SOLUSDT"),
        side: Side::Sell,
        order_type: OrderType::Market,
        status: OrderStatus::Filled,
        qty: dec!(1.3),
        price: Some(dec!(195.3)),
        avg_price: Some(dec!(201.35)),
        cum_exec_qty: dec!(1.3),
        cum_exec_fee: dec!(0.14396525),
        reduce_only: false,
        take_profit: Some(dec!(190.5)),
        stop_loss: Some(dec!(205.00)),
        reject_reason: None,
        stop_order_type: None,
        updated_ms: 1_758_672_300_200,
    }
}

fn fill() -> Fill {
    Fill {
        exec_id: "7e2ae69c-4edf-5800-a352-893d52b446aa".into(),
        order_id: "fd4300ae-7847-404e-b947-b46980a4d140".into(),
        order_link_id: "sb-x".into(),
        symbol: sym("SOLUSDT"),
        side: Side::Sell,
        exec_qty: dec!(1.3),
        exec_price: dec!(201.35),
        exec_value: dec!(261.755),
        exec_fee: dec!(0.14396525),
        fee_rate: Some(dec!(0.00055)),
        is_maker: false,
        closed_size: Decimal::ZERO,
        exec_time_ms: 1_758_672_300_150,
        exec_type: "Trade".into(),
        stop_order_type: None,
    }
}

fn positions() -> PositionSnapshot {
    PositionSnapshot {
        positions: vec![Position {
            symbol: sym("SOLUSDT"),
            side: Side::Sell,
            size: dec!(1.3),
            avg_price: dec!(201.35),
            mark_price: Some(dec!(201.0)),
            leverage: dec!(10),
            unrealised_pnl: dec!(0.455),
            liq_price: Some(dec!(221.48)),
            stop_loss: Some(dec!(205)),
            take_profit: None,
            updated_ms: 1,
            strategy: Some("mean_reversion".into()),
        }],
        as_of_ms: 2,
    }
}

fn balance() -> BalanceSnapshot {
    BalanceSnapshot {
        exchange_wallet_balance: dec!(100000.12345678),
        exchange_equity: dec!(100001.5),
        available_balance: dec!(99000),
        offset: dec!(99000.12345678),
        simulated_balance: dec!(1000),
        simulated_equity: dec!(1001.37654322),
        as_of_ms: 3,
    }
}

fn risk() -> RiskStatus {
    RiskStatus {
        mode: TradingMode::ReduceOnly,
        open_positions: 3,
        max_open_positions: 10,
        daily_pnl: dec!(-12.5),
        daily_loss_limit: dec!(50),
        margin_use_pct: dec!(12.25),
        max_margin_use_pct: dec!(50),
        as_of_ms: 4,
    }
}

fn heartbeat() -> Heartbeat {
    Heartbeat {
        service: "strategy-worker".into(),
        instance: "1-4".into(),
        pid: 4242,
        version: "0.1.0".into(),
        started_ms: 10,
        now_ms: 20,
        state: ServiceState::Degraded {
            reason: "gateway unreachable".into(),
        },
        metrics: [("ws_reconnects_total".to_owned(), 3)].into(),
        links: Vec::new(),
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = encode("test value", value).unwrap();
    let back: T = decode("test value", &bytes).unwrap();
    assert_eq!(&back, value);
}

#[test]
fn every_published_message_round_trips() {
    round_trip(&bar());
    round_trip(&ticker());
    round_trip(&order_event());
    round_trip(&fill());
    round_trip(&positions());
    round_trip(&balance());
    round_trip(&risk());
    round_trip(&heartbeat());
    for state in [
        ServiceState::Starting,
        ServiceState::Running,
        ServiceState::Stopping,
    ] {
        round_trip(&Heartbeat {
            state,
            ..heartbeat()
        });
    }
}

#[test]
fn every_request_and_reply_round_trips() {
    let hreq = HistoryRequest {
        symbol: sym("BTCUSDT"),
        interval: Interval::M5,
        start_ms: Some(1),
        end_ms: None,
        limit: 500,
    };
    round_trip(&GatewayRequest::History(hreq));
    round_trip(&GatewayRequest::Universe);
    round_trip(&GatewayReply::History(HistoryResponse {
        symbol: sym("BTCUSDT"),
        interval: Interval::M5,
        bars: vec![bar(), bar()],
        epoch: 99,
        last_seq: Some(17),
    }));
    round_trip(&GatewayReply::Universe(UniverseResponse {
        instruments: vec![Instrument {
            symbol: sym("BTCUSDT"),
            tick_size: dec!(0.10),
            qty_step: dec!(0.001),
            min_order_qty: dec!(0.001),
            max_market_order_qty: dec!(119.000),
            min_notional: dec!(5),
            max_leverage: dec!(100.00),
            funding_interval_min: 480,
        }],
        as_of_ms: 5,
    }));
    round_trip(&GatewayReply::Error(ErrorReply {
        message: "unknown symbol".into(),
    }));

    round_trip(&RouterRequest::Submit(intent()));
    round_trip(&RouterReply::Placed {
        intent_id: intent().intent_id,
        order_link_id: intent().intent_id.order_link_id(),
        order_id: "abc".into(),
        duplicate: true,
    });
    round_trip(&RouterReply::Refused {
        intent_id: intent().intent_id,
        refusal: Refusal {
            code: RefusalCode::BelowMinNotional,
            reason: "4.2 < 5 USDT".into(),
        },
    });
    round_trip(&RouterReply::Error(ErrorReply {
        message: "x".into(),
    }));

    for req in [
        RiskRequest::Approve(intent()),
        RiskRequest::ApproveMany {
            intents: vec![intent(), intent()],
            to_come_before: None,
        },
        RiskRequest::ApproveMany {
            intents: vec![intent().of_shard("1/4".parse().unwrap())],
            to_come_before: Some(vec![12]),
        },
        RiskRequest::Positions,
        RiskRequest::Balance,
        RiskRequest::Status,
        RiskRequest::Control(ControlCommand::Halt),
        RiskRequest::Control(ControlCommand::ReduceOnly),
        RiskRequest::Control(ControlCommand::Resume),
        RiskRequest::Control(ControlCommand::FlattenAll),
    ] {
        round_trip(&req);
    }
    for rep in [
        RiskReply::Decision(RiskDecision::Approved {
            intent_id: intent().intent_id,
            qty: dec!(0.0123),
            leverage: dec!(5),
            reduce_only: false,
            side: Side::Sell,
        }),
        RiskReply::Decision(RiskDecision::Refused {
            intent_id: intent().intent_id,
            refusal: Refusal {
                code: RefusalCode::DailyLossLimit,
                reason: "-50 reached".into(),
            },
        }),
        RiskReply::Decisions {
            decisions: vec![
                None,
                Some(RiskDecision::Approved {
                    intent_id: intent().intent_id,
                    qty: dec!(0.5),
                    leverage: dec!(2),
                    reduce_only: true,
                    side: Side::Buy,
                }),
            ],
        },
        RiskReply::Positions(positions()),
        RiskReply::Balance(balance()),
        RiskReply::Status(risk()),
        RiskReply::Control(ControlReply {
            mode: TradingMode::Halted,
            message: "ok".into(),
            flatten: None,
        }),
        RiskReply::Control(ControlReply {
            mode: TradingMode::Halted,
            message: "halted".into(),
            flatten: Some(flatten_report()),
        }),
        RiskReply::Flatten(flatten_report()),
        RiskReply::Error(ErrorReply {
            message: "e".into(),
        }),
    ] {
        round_trip(&rep);
    }
}

fn flatten_report() -> FlattenReport {
    FlattenReport {
        flatten_id: "k1700000000000".into(),
        started_ms: 1_700_000_000_000,
        deadline_ms: 1_700_000_060_000,
        finished_ms: Some(1_700_000_001_500),
        flat: false,
        rounds: 3,
        orders_placed: 4,
        entries_stopped: 1,
        left: vec![OpenPosition {
            symbol: Symbol::new("BTCUSDT").unwrap(),
            side: Side::Sell,
            size: Decimal::new(12_345, 3),
        }],
        errors: vec!["close BTCUSDT Buy 12.345: 110007".into()],
        symbol: None,
    }
}

#[test]
fn router_requests_and_replies_round_trip() {
    round_trip(&RouterRequest::Flatten {
        flatten_id: "k1".into(),
        deadline_ms: 5,
        symbol: None,
    });
    round_trip(&RouterRequest::Flatten {
        flatten_id: "c1-BTCUSDT".into(),
        deadline_ms: 5,
        symbol: Some(Symbol::new("BTCUSDT").unwrap()),
    });
    round_trip(&RouterReply::Flatten(Box::new(flatten_report())));
    round_trip(&RouterReply::Flatten(Box::new(FlattenReport {
        symbol: Some(Symbol::new("BTCUSDT").unwrap()),
        ..flatten_report()
    })));
    round_trip(&RouterRequest::Parameters {
        json: r#"{"strategies":["trend_following"],"parameters":{}}"#.into(),
    });
    round_trip(&RouterReply::Recorded { new: true });
    round_trip(&RouterRequest::CloseProgress(CloseProgress {
        shard: "2/4".parse().unwrap(),
        interval: Interval::M5,
        bar_open_time_ms: 1_700_000_000_000,
        undecided: 148,
        pending: vec![
            Symbol::new("BTCUSDT").unwrap(),
            Symbol::new("ETHUSDT").unwrap(),
        ],
    }));
    round_trip(&RiskRequest::Flatten {
        flatten_id: "k1".into(),
    });
    round_trip(&RiskRequest::Close {
        symbol: Symbol::new("1000PEPEUSDT").unwrap(),
    });
}

/// The kill switch's flatten and a position's close by hand say which they are.
#[test]
fn a_flatten_and_a_close_say_which_they_are() {
    let mut r = flatten_report();
    r.left.clear();
    r.flat = true;
    assert_eq!(
        r.summary(),
        "flatten k1700000000000: FLAT after 3 reads and 4 orders"
    );
    r.symbol = Some(Symbol::new("BTCUSDT").unwrap());
    r.flatten_id = "c1700000000000-BTCUSDT".into();
    assert_eq!(
        r.summary(),
        "close BTCUSDT (c1700000000000-BTCUSDT): FLAT after 3 reads and 4 orders"
    );
}

fn frame_of<T: Publish>(msg: &T, seq: u64) -> Vec<u8> {
    let env = Envelope {
        seq,
        epoch: 77,
        sent_ns: 123,
        msg,
    };
    encode_frame(&msg.topic().to_string(), &env).unwrap()
}

#[test]
fn every_published_message_decodes_from_its_frame() {
    let cases: Vec<(Vec<u8>, Event)> = vec![
        (frame_of(&bar(), 1), Event::Bar(bar())),
        (frame_of(&ticker(), 2), Event::Ticker(ticker())),
        (frame_of(&order_event(), 3), Event::Order(order_event())),
        (frame_of(&fill(), 4), Event::Fill(fill())),
        (frame_of(&positions(), 5), Event::Positions(positions())),
        (frame_of(&balance(), 6), Event::Balance(balance())),
        (frame_of(&risk(), 7), Event::Risk(risk())),
        (frame_of(&heartbeat(), 8), Event::Heartbeat(heartbeat())),
    ];
    for (i, (frame, event)) in cases.into_iter().enumerate() {
        let got = decode_frame(&frame).unwrap();
        assert_eq!(got.event, event);
        assert_eq!(got.seq, i as u64 + 1);
        assert_eq!(got.epoch, 77);
        assert_eq!(got.sent_ns, 123);
    }
}

#[test]
fn frame_starts_with_the_raw_topic() {
    let frame = frame_of(&bar(), 1);
    assert!(frame.starts_with(b"bar.44.BTCUSDT.5|"));
    let (topic, body) = split_frame(&frame).unwrap();
    assert_eq!(topic, "bar.44.BTCUSDT.5");
    // the body is MessagePack (a map), not text
    assert_eq!(body[0] & 0xf0, 0x80);
}

#[test]
fn bad_frames_are_clear_errors() {
    assert!(matches!(
        decode_frame(b"no terminator"),
        Err(FrameError::NoTopic)
    ));
    assert!(matches!(
        decode_frame(b"weird.topic|\x80"),
        Err(FrameError::Topic(_))
    ));
    let err = decode_frame(b"pos|\x92\x01").unwrap_err();
    assert!(err.to_string().contains("position snapshot"), "{err}");
    // a bar body under a heartbeat topic is refused, not mis-read
    let mut frame = b"hb.a.b|".to_vec();
    frame.extend(
        encode(
            "bar",
            &Envelope {
                seq: 1,
                epoch: 1,
                sent_ns: 1,
                msg: bar(),
            },
        )
        .unwrap(),
    );
    assert!(decode_frame(&frame).is_err());
}

#[test]
fn a_newer_publisher_with_extra_fields_is_still_understood() {
    // Rolling restarts: an older subscriber must tolerate fields it does not know.
    #[derive(Serialize)]
    struct NewerHeartbeat<'a> {
        service: &'a str,
        instance: &'a str,
        pid: u32,
        version: &'a str,
        started_ms: i64,
        now_ms: i64,
        state: ServiceState,
        load_avg: f64,
    }
    let newer = NewerHeartbeat {
        service: "risk-manager",
        instance: "main",
        pid: 1,
        version: "9.9.9",
        started_ms: 1,
        now_ms: 2,
        state: ServiceState::Running,
        load_avg: 0.5,
    };
    let bytes = encode("newer", &newer).unwrap();
    let hb: Heartbeat = decode("heartbeat", &bytes).unwrap();
    assert_eq!(hb.service, "risk-manager");
}

proptest! {
    /// Decimal prices survive the wire exactly, whatever their scale.
    #[test]
    fn decimals_are_lossless(mantissa in any::<i64>(), scale in 0u32..=18) {
        let price = Decimal::new(mantissa, scale);
        let b = Bar { open: price, high: price, low: price, close: price, ..bar() };
        let bytes = encode("bar", &b).unwrap();
        let back: Bar = decode("bar", &bytes).unwrap();
        prop_assert_eq!(back.close, price);
        prop_assert_eq!(back.close.to_string(), price.to_string());
    }
}
