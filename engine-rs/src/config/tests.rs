//! Tests of the configuration: precedence, knob names, renamed knobs, limits.

use super::*;

/// An unknown key in the file is refused, naming the key.
#[test]
fn unknown_keys_are_rejected() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("e.toml", "engine_id = \"e1\"\nnot_a_knob = 1\n")?;
        let err = Config::load(Some(Path::new("e.toml"))).map(|_| ());
        assert!(format!("{err:?}").contains("not_a_knob"));
        Ok(())
    });
}

/// The environment overrides the file, which overrides the defaults.
#[test]
fn precedence_defaults_file_env() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "e.toml",
            "engine_id = \"from-file\"\npull_batch = 7\n[symbols.AAPL]\nmax_order_qty = \"100\"\nreference_price = \"190.5\"\nseed = [{side = \"sell\", price = \"191\", qty = \"10\", orders = 2}]\n",
        )?;
        jail.set_env("BRIDGE_ENGINE_ID", "from-env");
        jail.set_env("BRIDGE_MAX_INFLIGHT", "7"); // a Python-only knob: ignored here
        jail.set_env("BRIDGE_LOG", "debug");
        let cfg = Config::load(Some(Path::new("e.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(cfg.engine_id, "from-env");
        assert_eq!(cfg.pull_batch, 7);
        assert_eq!(cfg.client_name, "bridge-engine");
        let limits = cfg.limits().map_err(|e| e.to_string())?;
        let aapl = &limits["AAPL"];
        assert_eq!(aapl.max_order_qty, fixed::units(100));
        assert_eq!(
            aapl.seed,
            vec![(Side::Sell, fixed::units(191), fixed::units(10), 2)]
        );
        Ok(())
    });
}

/// Every numeric knob can be set through its environment variable as a plain number,
/// and a decimal-string knob as a plain number too, kept exactly as written.
#[test]
fn every_knob_is_settable_from_the_environment_in_its_natural_form() {
    figment::Jail::expect_with(|jail| {
        let defaults = serde_json::to_value(Config::default()).map_err(|e| e.to_string())?;
        let mut want = defaults.clone();
        let (_, parsed) = Config::knob_names();
        for knob in parsed.iter().filter(|k| k.as_str() != "symbols") {
            let value = match &defaults[knob] {
                // -1 and a larger value both stay valid for every numeric knob.
                serde_json::Value::Number(n) if n.as_i64() == Some(-1) => 7,
                serde_json::Value::Number(n) => n.as_i64().unwrap_or(0) + 3,
                serde_json::Value::Bool(b) => {
                    jail.set_env(format!("BRIDGE_{}", knob.to_uppercase()), !b);
                    want[knob] = (!b).into();
                    continue;
                }
                other => return Err(format!("{knob}: unexpected default {other}").into()),
            };
            jail.set_env(format!("BRIDGE_{}", knob.to_uppercase()), value);
            want[knob] = value.into();
        }
        jail.set_env("BRIDGE_MAX_ORDER_NOTIONAL", "1000");
        want["max_order_notional"] = "1000".into();
        jail.set_env("BRIDGE_ENGINE_ID", "42");
        want["engine_id"] = "42".into();
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(serde_json::to_value(&cfg).map_err(|e| e.to_string())?, want);
        jail.set_env("BRIDGE_MAX_ORDER_NOTIONAL", "1000.10");
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(cfg.max_order_notional, "1000.10");
        assert_eq!(
            cfg.max_notional().map_err(|e| e.to_string())?,
            fixed::parse("1000.1").map_err(|e| e.to_string())?
        );
        Ok(())
    });
}

/// Retry knobs that make no sense are refused, naming the knob.
#[test]
fn nonsensical_retry_knobs_are_rejected() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("BRIDGE_MAX_RECONNECT_ATTEMPTS", "0");
        let err = Config::load(None).map(|_| ());
        assert!(format!("{err:?}").contains("max_reconnect_attempts"));
        jail.set_env("BRIDGE_MAX_RECONNECT_ATTEMPTS", "-1");
        jail.set_env("BRIDGE_RECONNECT_INITIAL_DELAY_MS", "5000");
        let err = Config::load(None).map(|_| ());
        assert!(format!("{err:?}").contains("reconnect_initial_delay_ms"));
        jail.set_env("BRIDGE_RECONNECT_INITIAL_DELAY_MS", "10");
        assert!(Config::load(None).is_ok());
        Ok(())
    });
}

/// A malformed decimal in the file is reported with its field path.
#[test]
fn bad_decimal_names_the_field() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "e.toml",
            "[symbols.X]\nmax_order_qty = \"1e5\"\nreference_price = \"1\"\n",
        )?;
        let err = Config::load(Some(Path::new("e.toml"))).map(|_| ());
        assert!(format!("{err:?}").contains("symbols.X.max_order_qty"));
        Ok(())
    });
}

/// `day_session_end_utc` is a UTC time of day HH:MM:SS, from the file or the environment; any
/// other value fails start-up naming the knob, the value and the expected form.
#[test]
fn day_session_end_is_validated() {
    figment::Jail::expect_with(|jail| {
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(
            cfg.day_session_end()
                .map_err(|e| e.to_string())?
                .to_string(),
            "21:00:00"
        );
        jail.create_file("e.toml", "day_session_end_utc = \"16:30:00\"\n")?;
        let cfg = Config::load(Some(Path::new("e.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(cfg.day_session_end_utc, "16:30:00");
        jail.set_env("BRIDGE_DAY_SESSION_END_UTC", "00:00:05");
        let cfg = Config::load(Some(Path::new("e.toml"))).map_err(|e| e.to_string())?;
        assert_eq!(
            cfg.day_session_end()
                .map_err(|e| e.to_string())?
                .to_string(),
            "00:00:05"
        );
        for bad in ["24:00:00", "4pm", "16:30"] {
            jail.set_env("BRIDGE_DAY_SESSION_END_UTC", bad);
            let err = Config::load(None).map(|_| ()).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("configuration: day_session_end_utc: {bad:?} must be a UTC time of day HH:MM:SS")),
                "{err}"
            );
        }
        Ok(())
    });
}

/// A renamed knob fails start-up naming the new one, in the file or the environment; the
/// client's own `BRIDGE_REQUEST_TIMEOUT_MS` is left to the client.
#[test]
fn renamed_knobs_are_refused_with_their_new_names() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("e.toml", "retry_max_attempts = 5\n")?;
        let err = Config::load(Some(Path::new("e.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("retry_max_attempts was renamed"), "{err}");
        assert!(err.contains("jetstream_retry_max_attempts"), "{err}");
        assert!(err.contains("order_retry_max_attempts"), "{err}");
        jail.create_file("e.toml", "request_timeout_ms = 5\n")?;
        let err = Config::load(Some(Path::new("e.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("jetstream_request_timeout_ms"), "{err}");

        jail.set_env("BRIDGE_REQUEST_TIMEOUT_MS", "5000"); // the client's knob
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        assert_eq!(cfg.jetstream_request_timeout_ms, 2000);
        jail.set_env("BRIDGE_RETRY_DEADLINE_MS", "5000");
        let err = Config::load(None).unwrap_err().to_string();
        assert!(err.contains("set as BRIDGE_RETRY_DEADLINE_MS"), "{err}");
        assert!(err.contains("jetstream_retry_deadline_ms"), "{err}");
        Ok(())
    });
}

/// The printed configuration has exactly the knobs, with paths printed as they are.
#[test]
fn redacted_json_has_every_knob() {
    let cfg = Config {
        nkey_seed_file: Some("/run/secrets/engine.nk".into()),
        ..Config::default()
    };
    let printed = cfg.redacted_json();
    assert_eq!(printed["nkey_seed_file"], "/run/secrets/engine.nk");
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(
        keys(&printed),
        keys(&serde_json::to_value(Config::default()).unwrap())
    );
}

/// The limits of the pure core are the configured ones in fixed point.
#[test]
fn config_converts_into_core_limits() {
    let mut cfg = Config {
        max_order_notional: "2500.5".into(),
        ..Config::default()
    };
    cfg.symbols.insert(
        "AAPL".into(),
        SymbolConfig {
            max_order_qty: "100".into(),
            reference_price: "190.5".into(),
            seed: vec![SeedLevel {
                side: SeedSide::Buy,
                price: "189".into(),
                qty: "2".into(),
                orders: 3,
            }],
        },
    );
    let limits = Limits::try_from(&cfg).unwrap();
    assert_eq!(limits.max_notional, fixed::parse("2500.5").unwrap());
    assert_eq!(
        limits.symbols["AAPL"],
        SymbolLimits {
            max_order_qty: fixed::units(100),
            reference_price: fixed::parse("190.5").unwrap(),
            seed: vec![(Side::Buy, fixed::units(189), fixed::units(2), 3)],
        }
    );
    cfg.max_order_notional = "-1".into();
    assert!(Limits::try_from(&cfg).is_err());
}

/// Signatures required (the default) need an entitlements file: start-up fails naming the
/// knob; with one, or with signatures off, the policy is usable.
#[test]
fn signatures_need_an_entitlements_file() {
    figment::Jail::expect_with(|jail| {
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        assert!(cfg.require_signatures);
        assert_eq!(cfg.signature_window_ms, 30_000);
        let err = cfg.check_authorization().unwrap_err().to_string();
        assert!(err.contains("entitlements_file"), "{err}");
        assert!(err.contains("require_signatures"), "{err}");
        jail.set_env("BRIDGE_REQUIRE_SIGNATURES", "false");
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        assert!(!cfg.require_signatures);
        assert!(cfg.check_authorization().is_ok());
        jail.set_env("BRIDGE_REQUIRE_SIGNATURES", "true");
        jail.set_env("BRIDGE_ENTITLEMENTS_FILE", "/etc/bridge/entitlements.toml");
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        assert!(cfg.check_authorization().is_ok());
        jail.set_env("BRIDGE_SIGNATURE_WINDOW_MS", "0");
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        assert!(cfg.check_authorization().is_err());
        Ok(())
    });
}

/// Neither the printed configuration nor its Debug form can hold a secret: the seed is read
/// from its file into a `Secret` at connect time, and only the path is configuration.
#[test]
fn config_printing_shows_paths_not_secrets() {
    figment::Jail::expect_with(|jail| {
        let seed = "SUAMKZH6ZB2NYB5VEOVW4IQSYMW5O42GO4ZU5YHZYOGXWOF5NDPKVQYNIM";
        jail.create_file("engine.nk", seed)?;
        jail.set_env("BRIDGE_NKEY_SEED_FILE", "engine.nk");
        let cfg = Config::load(None).map_err(|e| e.to_string())?;
        let shown = format!("{cfg:?} {}", cfg.redacted_json());
        assert!(
            shown.contains("engine.nk") && !shown.contains(seed),
            "{shown}"
        );
        let secret =
            crate::secret::Secret::read_file(Path::new("engine.nk")).map_err(|e| e.to_string())?;
        assert_eq!(format!("{secret:?} {secret}"), "[REDACTED] [REDACTED]");
        Ok(())
    });
}
