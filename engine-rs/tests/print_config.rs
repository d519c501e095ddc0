//! `bridge-engine --print-config`: the effective configuration (defaults < file <
//! environment) as JSON on stdout, exit 0, with exactly the configuration's knobs.

use std::process::Command;

use bridge_engine::config::Config;

fn print_config(file: Option<&str>, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridge-engine"));
    cmd.arg("--print-config");
    if let Some(f) = file {
        cmd.args(["--config", f]);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("BRIDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("bridge-engine runs")
}

#[test]
fn prints_the_effective_configuration_as_json() {
    let dir = std::env::temp_dir().join(format!("print-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("engine.toml");
    std::fs::write(&file, "engine_id = \"from-file\"\npull_batch = 7\n").unwrap();
    let out = print_config(
        file.to_str(),
        &[
            ("BRIDGE_PULL_BATCH", "9"),
            ("BRIDGE_NKEY_SEED_FILE", "/secrets/engine.nk"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let fields = serde_json::to_value(Config::default()).unwrap();
    assert_eq!(keys(&printed), keys(&fields));
    assert_eq!(printed["engine_id"], "from-file");
    assert_eq!(printed["pull_batch"], 9);
    assert_eq!(printed["nkey_seed_file"], "/secrets/engine.nk");
    assert_eq!(printed["jetstream_retry_max_attempts"], 1000);
    // Signatures are required by default, within a 30 s window; the file is a path (printed
    // as is), and --print-config works without one.
    assert_eq!(printed["require_signatures"], true);
    assert_eq!(printed["signature_window_ms"], 30_000);
    assert_eq!(printed["entitlements_file"], serde_json::Value::Null);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_renamed_knob_fails_naming_the_new_one() {
    let out = print_config(None, &[("BRIDGE_RETRY_MAX_ATTEMPTS", "3")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retry_max_attempts was renamed"), "{err}");
    assert!(err.contains("jetstream_retry_max_attempts"), "{err}");
}
