//! The HTTP side: login, the page and its assets, the JSON and server-sent-event APIs, the
//! commands a user gives, the CSV export and Prometheus metrics.
//!
//! | route | what |
//! |---|---|
//! | `GET /login`, `POST /login`, `POST /logout` | the token → a session cookie (HttpOnly, SameSite=Strict) |
//! | `GET /` | the dashboard (one page; its sections are `#paper`, `#live`, `#performance`, `#risk`, `#backtests`, `#health`) |
//! | `GET /assets/{file}` | its script, styles and the charting library (uPlot, served from the binary) |
//! | `GET /api/state` | the current view as JSON |
//! | `GET /api/events` | the view pushed as server-sent events, one per refresh |
//! | `POST /api/control` | `{"command": "start" \| "stop" \| "reduce_only" \| "kill"}` to the risk manager |
//! | `POST /api/close` | `{"symbol": "BTCUSDT"}`: close that position by hand (reduce-only, through the router; nothing else changes); answers its `flatten_id` |
//! | `GET /api/bars/{symbol}` | the symbol's newest bars of the strategies' interval (`?limit=`, at most 1000), from the market-data gateway: the price chart |
//! | `GET /api/flatten/{id}` | where the kill switch's flatten, or a close, stands (`done`, `flat`, `summary`, `left`, `errors`) |
//! | `POST /api/settings` | new trading settings (the risk manager validates, writes and applies them) |
//! | `POST /api/notify-test` | a test notification to the `[alerts]` webhook |
//! | `GET /api/trades.csv` | the closed trades, as `shardbot trades --csv` writes them (`?open=1`: open ones too) |
//! | `GET /metrics` | Prometheus text format |
//!
//! Every route but the login needs the session cookie or `Authorization: Bearer TOKEN`.
//! A POST authorised by the cookie must also carry `X-Shardbot: 1`, which a form on
//! another site cannot send (cross-site request forgery).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{
    HttpRequest, HttpResponse, HttpServer,
    cookie::{Cookie, SameSite},
    dev::Server,
    http::header,
    web,
};
use serde::Deserialize;
use shardbot_bus::Requester;
use shardbot_protocol::{
    ControlCommand, GatewayReply, GatewayRequest, HistoryRequest, Interval, RiskReply, RiskRequest,
    Symbol,
};

use crate::{
    collect::{Demand, Published},
    token::Token,
};

const SESSION_COOKIE: &str = "shardbot_session";
/// The longest a request waits for a fresh view (the risk manager's answers bound one
/// gathering to a few seconds).
const FRESH_WAIT: Duration = Duration::from_secs(5);
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
const MAX_SESSIONS: usize = 256;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    token: Token,
    sessions: Arc<Mutex<HashMap<String, Instant>>>,
    view: tokio::sync::watch::Receiver<Arc<Published>>,
    /// Wakes the collector, which gathers nothing while no page is open.
    demand: Demand,
    /// How old a view may be and still answer a request (`dashboard.refresh_ms`).
    refresh: Duration,
    risk: Arc<Requester>,
    /// The market-data gateway (the per-symbol price chart's bars) and the interval the
    /// strategies trade.
    gateway: Arc<Requester>,
    interval: Interval,
    journal_file: PathBuf,
    /// The `[alerts]` webhook notifications go to (the test button's too).
    alerts: shardbot_service::alert::Alerts,
}

/// The services the dashboard asks: the risk manager (commands, the flatten), the
/// market-data gateway (the price chart's bars, of the strategies' `interval`).
#[derive(Debug)]
pub struct Peers {
    pub risk: Arc<Requester>,
    pub gateway: Arc<Requester>,
    pub interval: Interval,
}

impl AppState {
    pub fn new(
        token: Token,
        view: tokio::sync::watch::Receiver<Arc<Published>>,
        demand: Demand,
        refresh: Duration,
        peers: Peers,
        journal_file: PathBuf,
        alerts: shardbot_service::alert::Alerts,
    ) -> AppState {
        AppState {
            token,
            sessions: Arc::new(Mutex::new(HashMap::new())),
            view,
            demand,
            refresh,
            risk: peers.risk,
            gateway: peers.gateway,
            interval: peers.interval,
            journal_file,
            alerts,
        }
    }

    /// The view, gathered within the last refresh: the latest if it is, else a new one
    /// (waited for up to [`FRESH_WAIT`]; the latest if the collector is slower).
    async fn fresh_view(&self) -> Arc<Published> {
        let mut rx = self.view.clone();
        let latest = rx.borrow_and_update().clone();
        if latest.fresh(self.refresh) {
            return latest;
        }
        self.demand.ask();
        match tokio::time::timeout(FRESH_WAIT, rx.changed()).await {
            Ok(Ok(())) => rx.borrow().clone(),
            _ => latest,
        }
    }

    fn bearer(&self, req: &HttpRequest) -> bool {
        req.headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.token.matches(t))
    }

    fn session(&self, req: &HttpRequest) -> bool {
        let Some(c) = req.cookie(SESSION_COOKIE) else {
            return false;
        };
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, at| at.elapsed() < SESSION_TTL);
        s.contains_key(c.value())
    }

    /// Whether the request may read.
    fn may_read(&self, req: &HttpRequest) -> bool {
        self.bearer(req) || self.session(req)
    }

    /// Whether the request may change something (see the module's CSRF note).
    fn may_write(&self, req: &HttpRequest) -> bool {
        self.bearer(req)
            || (self.session(req)
                && req
                    .headers()
                    .get("x-shardbot")
                    .is_some_and(|v| v.as_bytes() == b"1"))
    }

    fn new_session(&self) -> String {
        let id = crate::token::random_hex(32);
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if s.len() >= MAX_SESSIONS
            && let Some(oldest) = s.iter().min_by_key(|(_, at)| **at).map(|(k, _)| k.clone())
        {
            s.remove(&oldest);
        }
        s.insert(id.clone(), Instant::now());
        id
    }
}

/// The page's static files, compiled into the binary (the machine may be offline: nothing
/// comes from a CDN).
fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match name {
        "app.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../assets/app.js"),
        ),
        "app.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../assets/app.css"),
        ),
        "uPlot.iife.min.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../assets/vendor/uPlot.iife.min.js"),
        ),
        "uPlot.min.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../assets/vendor/uPlot.min.css"),
        ),
        _ => return None,
    })
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");

fn json_error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": message }))
}

fn unauthorized() -> HttpResponse {
    json_error(
        actix_web::http::StatusCode::UNAUTHORIZED,
        "log in first (or send Authorization: Bearer TOKEN; the token is in dashboard.token_file)",
    )
}

async fn index(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    if !st.may_read(&req) {
        return HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/login"))
            .finish();
    }
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(INDEX_HTML)
}

async fn login_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(LOGIN_HTML.replace("{{message}}", ""))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(form: web::Form<LoginForm>, st: web::Data<AppState>) -> HttpResponse {
    if !st.token.matches(&form.token) {
        tracing::warn!("dashboard login refused: wrong token");
        return HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(LOGIN_HTML.replace(
                "{{message}}",
                "<p class=\"error\" id=\"login-error\">Wrong token. It is in the file named by dashboard.token_file.</p>",
            ));
    }
    let id = st.new_session();
    tracing::info!("dashboard login");
    let cookie = Cookie::build(SESSION_COOKIE, id)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .finish();
    HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, "/"))
        .finish()
}

async fn logout(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    if let Some(c) = req.cookie(SESSION_COOKIE) {
        st.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(c.value());
    }
    let mut gone = Cookie::new(SESSION_COOKIE, "");
    gone.set_path("/");
    gone.make_removal();
    HttpResponse::SeeOther()
        .cookie(gone)
        .insert_header((header::LOCATION, "/login"))
        .finish()
}

async fn assets(path: web::Path<String>) -> HttpResponse {
    match asset(&path) {
        Some((ctype, body)) => HttpResponse::Ok()
            .content_type(ctype)
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(body),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn state(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    if !st.may_read(&req) {
        return unauthorized();
    }
    let json = st.fresh_view().await.json.clone();
    HttpResponse::Ok()
        .content_type("application/json")
        .body(json)
}

async fn events(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    if !st.may_read(&req) {
        return unauthorized();
    }
    // An open page is a watcher (its receiver): woken, the collector gathers every
    // refresh until the page closes.
    let rx = st.view.clone();
    st.demand.ask();
    let refresh = st.refresh;
    let stream = futures_util::stream::unfold((rx, true), move |(mut rx, first)| async move {
        if first {
            // The first frame is a fresh view, not whatever was gathered last.
            if !rx.borrow().fresh(refresh) {
                let _ = tokio::time::timeout(FRESH_WAIT, rx.changed()).await;
            }
        } else if rx.changed().await.is_err() {
            return None;
        }
        let json = rx.borrow_and_update().json.clone();
        let frame = web::Bytes::from(format!("event: view\ndata: {json}\n\n"));
        Some((Ok::<_, actix_web::Error>(frame), (rx, false)))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream)
}

#[derive(Deserialize)]
struct Control {
    command: String,
}

#[derive(Debug, Deserialize)]
struct Close {
    symbol: String,
}

/// Sends one request to the risk manager off the async threads (the bus is blocking).
async fn ask_risk(st: &AppState, req: RiskRequest) -> Result<RiskReply, String> {
    let risk = st.risk.clone();
    let r = web::block(move || {
        risk.request_within::<_, RiskReply>(&req, Duration::from_secs(5))
            .map_err(|e| format!("the risk manager did not answer: {e}"))
    })
    .await
    .map_err(|e| e.to_string())?;
    match r? {
        RiskReply::Error(e) => Err(format!("the risk manager says: {}", e.message)),
        other => Ok(other),
    }
}

/// `POST /api/notify-test`: a test notification to the webhook, so a user sees where they
/// arrive (nothing secret in it).
async fn notify_test(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    if !st.may_write(&req) {
        return unauthorized();
    }
    if !st.alerts.is_on() {
        return json_error(
            actix_web::http::StatusCode::CONFLICT,
            "no webhook is set: put its URL in [alerts] webhook_url (SHARDBOT__ALERTS__WEBHOOK_URL)",
        );
    }
    st.alerts.send(
        "test",
        "shardbot dashboard: a test notification (fills, stops, mode changes, the daily loss limit and services not running arrive here)",
        serde_json::json!({}),
    );
    HttpResponse::Ok().json(serde_json::json!({ "message": "sent to the webhook" }))
}

async fn control(
    req: HttpRequest,
    body: web::Json<Control>,
    st: web::Data<AppState>,
) -> HttpResponse {
    if !st.may_write(&req) {
        return unauthorized();
    }
    let cmd = match body.command.as_str() {
        "start" => ControlCommand::Resume,
        "stop" => ControlCommand::Halt,
        "reduce_only" => ControlCommand::ReduceOnly,
        "kill" => ControlCommand::FlattenAll,
        other => {
            return json_error(
                actix_web::http::StatusCode::BAD_REQUEST,
                &format!("unknown command {other:?}: start, stop, reduce_only or kill"),
            );
        }
    };
    tracing::warn!(command = body.command, "dashboard command");
    match ask_risk(&st, RiskRequest::Control(cmd)).await {
        Ok(RiskReply::Control(r)) => HttpResponse::Ok().json(serde_json::json!({
            "mode": r.mode, "message": r.message,
            "flatten_id": r.flatten.map(|f| f.flatten_id),
        })),
        Ok(_) => json_error(
            actix_web::http::StatusCode::BAD_GATEWAY,
            "unexpected reply from the risk manager",
        ),
        Err(e) => json_error(actix_web::http::StatusCode::BAD_GATEWAY, &e),
    }
}

/// `POST /api/close`: the close of one position by hand, asked of the risk manager (which
/// has the router close it with reduce-only market orders; the mode and the other positions
/// stay as they are). Answers the id the page follows on `/api/flatten/{id}`.
async fn close(req: HttpRequest, body: web::Json<Close>, st: web::Data<AppState>) -> HttpResponse {
    if !st.may_write(&req) {
        return unauthorized();
    }
    let Ok(symbol) = Symbol::new(body.symbol.trim().to_uppercase()) else {
        return json_error(
            actix_web::http::StatusCode::BAD_REQUEST,
            &format!("{:?} is not a symbol (e.g. BTCUSDT)", body.symbol),
        );
    };
    tracing::warn!(%symbol, "dashboard: close a position by hand");
    match ask_risk(&st, RiskRequest::Close { symbol }).await {
        Ok(RiskReply::Flatten(r)) => HttpResponse::Ok().json(serde_json::json!({
            "flatten_id": r.flatten_id, "message": r.summary(),
        })),
        Ok(_) => json_error(
            actix_web::http::StatusCode::BAD_GATEWAY,
            "unexpected reply from the risk manager",
        ),
        Err(e) => json_error(actix_web::http::StatusCode::BAD_GATEWAY, &e),
    }
}

/// Bars of a symbol's price chart at most.
const CHART_BARS: u32 = 1000;

#[derive(Debug, Deserialize)]
struct BarsQuery {
    limit: Option<u32>,
}

/// `GET /api/bars/{symbol}?limit=N`: the symbol's newest closed bars of the interval the
/// strategies trade, from the market-data gateway's history (its store): the price chart
/// the page marks the trades' entries and exits on.
async fn bars(
    req: HttpRequest,
    symbol: web::Path<String>,
    q: web::Query<BarsQuery>,
    st: web::Data<AppState>,
) -> HttpResponse {
    if !st.may_read(&req) {
        return unauthorized();
    }
    let Ok(symbol) = Symbol::new(symbol.trim().to_uppercase()) else {
        return json_error(
            actix_web::http::StatusCode::BAD_REQUEST,
            &format!("{:?} is not a symbol (e.g. BTCUSDT)", symbol.as_str()),
        );
    };
    let limit = q.limit.unwrap_or(300).clamp(1, CHART_BARS);
    let request = GatewayRequest::History(HistoryRequest {
        symbol: symbol.clone(),
        interval: st.interval,
        start_ms: None,
        end_ms: None,
        limit,
    });
    let gateway = st.gateway.clone();
    let answer = web::block(move || {
        gateway
            .request_within::<_, GatewayReply>(&request, Duration::from_secs(5))
            .map_err(|e| format!("the market-data gateway did not answer: {e}"))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match answer {
        Ok(GatewayReply::History(h)) => HttpResponse::Ok().json(serde_json::json!({
            "symbol": h.symbol,
            "interval": h.interval,
            "interval_ms": h.interval.duration_ms(),
            // open time, open, high, low, close: oldest first.
            "bars": h.bars.iter().map(|b| serde_json::json!([
                b.open_time_ms, b.open, b.high, b.low, b.close
            ])).collect::<Vec<_>>(),
        })),
        Ok(GatewayReply::Error(e)) => json_error(
            actix_web::http::StatusCode::BAD_GATEWAY,
            &format!("the market-data gateway says: {}", e.message),
        ),
        Ok(_) => json_error(
            actix_web::http::StatusCode::BAD_GATEWAY,
            "unexpected reply from the market-data gateway",
        ),
        Err(e) => json_error(actix_web::http::StatusCode::BAD_GATEWAY, &e),
    }
}

/// `GET /api/flatten/{id}`: where the kill switch's flatten (or a close) stands (the page follows it
/// until it ends, FLAT or NOT FLAT with what is still open).
async fn flatten(req: HttpRequest, id: web::Path<String>, st: web::Data<AppState>) -> HttpResponse {
    if !st.may_read(&req) {
        return unauthorized();
    }
    let flatten_id = id.into_inner();
    match ask_risk(&st, RiskRequest::Flatten { flatten_id }).await {
        Ok(RiskReply::Flatten(r)) => HttpResponse::Ok().json(serde_json::json!({
            "done": r.done(), "flat": r.flat, "summary": r.summary(),
            "left": r.left, "errors": r.errors,
        })),
        Ok(_) => json_error(
            actix_web::http::StatusCode::BAD_GATEWAY,
            "unexpected reply from the risk manager",
        ),
        Err(e) => json_error(actix_web::http::StatusCode::BAD_GATEWAY, &e),
    }
}

async fn settings(
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
    st: web::Data<AppState>,
) -> HttpResponse {
    if !st.may_write(&req) {
        return unauthorized();
    }
    let json = body.into_inner().to_string();
    tracing::warn!(settings = %json, "dashboard: new trading settings");
    match ask_risk(&st, RiskRequest::SetTradingSettings { json }).await {
        Ok(RiskReply::TradingSettings { json }) => HttpResponse::Ok()
            .content_type("application/json")
            .body(json),
        Ok(_) => json_error(
            actix_web::http::StatusCode::BAD_GATEWAY,
            "unexpected reply from the risk manager",
        ),
        Err(e) => json_error(actix_web::http::StatusCode::BAD_REQUEST, &e),
    }
}

#[derive(Deserialize)]
struct CsvQuery {
    #[serde(default)]
    open: Option<String>,
}

async fn trades_csv(
    req: HttpRequest,
    q: web::Query<CsvQuery>,
    st: web::Data<AppState>,
) -> HttpResponse {
    if !st.may_read(&req) {
        return unauthorized();
    }
    let with_open = q.open.as_deref().is_some_and(|v| v == "1" || v == "true");
    let file = st.journal_file.clone();
    let r = web::block(move || -> Result<Vec<u8>, String> {
        let j = shardbot_journal::Journal::open(&file)
            .map_err(|e| format!("cannot open the journal: {e}"))?;
        let trades: Vec<_> = j
            .trades()
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|t| with_open || t.is_closed())
            .collect();
        let balances = j.simulated_balances().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        shardbot_journal::write_trades_csv(&trades, &balances, &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    })
    .await;
    match r {
        Ok(Ok(csv)) => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"trades.csv\"",
            ))
            .body(csv),
        Ok(Err(e)) => json_error(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => json_error(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        ),
    }
}

async fn metrics(req: HttpRequest, st: web::Data<AppState>) -> HttpResponse {
    if !st.may_read(&req) {
        return unauthorized();
    }
    let published = st.fresh_view().await;
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render(&published))
}

/// The routes, for the server and for tests.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/assets/{name}", web::get().to(assets))
        .route("/api/state", web::get().to(state))
        .route("/api/events", web::get().to(events))
        .route("/api/control", web::post().to(control))
        .route("/api/close", web::post().to(close))
        .route("/api/notify-test", web::post().to(notify_test))
        .route("/api/flatten/{id}", web::get().to(flatten))
        .route("/api/bars/{symbol}", web::get().to(bars))
        .route("/api/settings", web::post().to(settings))
        .route("/api/trades.csv", web::get().to(trades_csv))
        .route("/metrics", web::get().to(metrics));
}

/// Headers every response carries: no framing, no foreign scripts, no referrer.
fn secure_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

/// Binds `bind` and returns the server (not yet running: spawn or await it).
pub fn server(bind: &str, state: AppState) -> std::io::Result<Server> {
    let data = web::Data::new(state);
    Ok(HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .wrap(secure_headers())
            .configure(routes)
    })
    .workers(2)
    .disable_signals()
    .bind(bind)?
    .run())
}
