//! Configuration layering and validation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::{collections::HashMap, io::Write};

use rstest::rstest;
use shardbot_bus::BusOptions;
use shardbot_service::{Settings, SettingsError};

fn file(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

fn no_env() -> Option<HashMap<String, String>> {
    Some(HashMap::new())
}

#[test]
fn defaults_load_and_validate() {
    let s = Settings::load_with_env(None, no_env()).unwrap();
    let common = s.common().unwrap();
    assert_eq!(common.log.level, "info");
    assert_eq!(common.heartbeat.interval_ms, 1000);
    assert_eq!(
        common.endpoints.heartbeat_of("strategy-worker", "1-4"),
        "ipc:///tmp/shardbot/hb-strategy-worker-1-4.pub"
    );
}

#[test]
fn the_documented_bus_defaults_are_the_code_defaults() {
    // default.toml is the configuration reference users read; BusOptions::default() is what
    // tests and tools use. They must not drift apart.
    let s = Settings::load_with_env(None, no_env()).unwrap();
    assert_eq!(s.common().unwrap().bus, BusOptions::default());
}

#[test]
fn a_local_file_overrides_defaults_and_env_overrides_the_file() {
    let local = file("[log]\nlevel = \"debug\"\n[heartbeat]\ninterval_ms = 200\n");
    let s = Settings::load_with_env(Some(local.path()), no_env()).unwrap();
    let c = s.common().unwrap();
    assert_eq!(c.log.level, "debug");
    assert_eq!(c.heartbeat.interval_ms, 200);
    assert_eq!(
        c.log.dir.to_str(),
        Some("var/log"),
        "untouched keys keep their defaults"
    );

    let env = HashMap::from([
        (
            "SHARDBOT__HEARTBEAT__INTERVAL_MS".to_owned(),
            "250".to_owned(),
        ),
        (
            "SHARDBOT__ENDPOINTS__MARKET_DATA_PUB".to_owned(),
            "tcp://10.0.0.5:7001".to_owned(),
        ),
        ("SHARDBOT__LOG__JSON".to_owned(), "true".to_owned()),
    ]);
    let s = Settings::load_with_env(Some(local.path()), Some(env)).unwrap();
    let c = s.common().unwrap();
    assert_eq!(c.heartbeat.interval_ms, 250);
    assert_eq!(c.endpoints.market_data_pub, "tcp://10.0.0.5:7001");
    assert!(c.log.json);
    assert_eq!(c.log.level, "debug");
}

#[test]
fn a_service_reads_its_own_section() {
    #[derive(serde::Deserialize, Debug)]
    struct Worker {
        strategies: Vec<String>,
    }
    let local = file("[worker]\nstrategies = [\"trend_following\", \"mean_reversion\"]\n");
    let s = Settings::load_with_env(Some(local.path()), no_env()).unwrap();
    let w: Worker = s.section("worker").unwrap();
    assert_eq!(w.strategies, ["trend_following", "mean_reversion"]);
    let err = s.section::<Worker>("nonexistent").unwrap_err();
    assert!(err.to_string().contains("[nonexistent]"), "{err}");
}

#[rstest]
#[case::unknown_key("[bus]\npub_send_bufer = 10\n", "pub_send_bufer")]
#[case::buffer_too_big("[bus]\npub_send_buffer = 100000\n", "bus.pub_send_buffer")]
#[case::bad_endpoint(
    "[endpoints]\nrisk_manager_rep = \"http://x\"\n",
    "endpoints.risk_manager_rep"
)]
#[case::shared_heartbeat("[endpoints]\nheartbeat = \"ipc:///tmp/hb\"\n", "{service}")]
#[case::bad_level("[log]\nlevel = \"lots[\"\n", "log.level")]
#[case::zero_interval("[heartbeat]\ninterval_ms = 0\n", "heartbeat.interval_ms")]
#[case::wrong_type("[heartbeat]\ninterval_ms = \"soon\"\n", "interval_ms")]
fn bad_config_is_refused_naming_what_to_fix(#[case] toml: &str, #[case] names: &str) {
    let local = file(toml);
    let err = Settings::load_with_env(Some(local.path()), no_env())
        .and_then(|s| s.common())
        .unwrap_err();
    assert!(
        err.to_string().contains(names),
        "`{err}` should name `{names}`"
    );
}

#[test]
fn malformed_toml_names_the_file() {
    let local = file("[log\nlevel = ");
    let err = Settings::load_with_env(Some(local.path()), no_env()).unwrap_err();
    assert!(matches!(err, SettingsError::Load(_)));
    let name = local.path().file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn a_missing_file_is_an_error_not_silently_defaults() {
    let err =
        Settings::load_with_env(Some("/nonexistent/shardbot.toml".as_ref()), no_env()).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/shardbot.toml"),
        "{err}"
    );
}

#[test]
fn keys_that_nothing_reads_are_named_wherever_they_are() {
    let f = file("[risk]\nacount = \"x\"\n[log]\nlevel = \"debug\"\n[nosuch]\na = 1\n");
    let env = HashMap::from([("SHARDBOT__ROUTER__REREAD_HOUR".to_owned(), "3".to_owned())]);
    let s = Settings::load_with_env(Some(f.path()), Some(env)).unwrap();
    assert_eq!(
        s.unknown_keys().unwrap(),
        ["nosuch", "risk.acount", "router.reread_hour"]
    );
    let clean = Settings::load_with_env(None, no_env()).unwrap();
    assert!(clean.unknown_keys().unwrap().is_empty());
}

#[test]
fn every_setting_is_in_the_configuration_reference() {
    fn keys(table: &config::Map<String, config::Value>, path: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let key = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match v.clone().into_table() {
                Ok(t) => keys(&t, &key, out),
                // lists of tables ([[sim.accounts]]) are described as a whole
                Err(_) => out.push(key),
            }
        }
    }
    let defaults: config::Map<String, config::Value> = config::Config::builder()
        .add_source(config::File::from_str(
            shardbot_service::DEFAULT_TOML,
            config::FileFormat::Toml,
        ))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    let mut all = Vec::new();
    keys(&defaults, "", &mut all);
    let doc_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| k.as_str() != "sim.accounts" && !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} does not describe {missing:?}",
        doc_path.display()
    );
    assert!(all.len() > 60, "{all:?}");
}

#[test]
fn the_example_configurations_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let s = Settings::load_with_env(Some(&path), no_env()).unwrap();
        assert!(s.unknown_keys().unwrap().is_empty(), "{}", path.display());
        s.common()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 3, "examples in {}", dir.display());
}
