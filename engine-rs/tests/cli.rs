//! `bridge-engine`'s command line (clap): `--help`, `--version`, `--config` (or
//! `BRIDGE_CONFIG_FILE`), `--print-config`, `--check-ready`, and a bad argument, on the real
//! binary. The container files use these exact names.

use std::process::{Command, Output};

fn engine(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridge-engine"));
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("BRIDGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("bridge-engine runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_option_and_exits_0() {
    let out = engine(&["--help"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    assert!(help.contains("Usage: bridge-engine"), "{help}");
    for option in [
        "--config <FILE>",
        "--print-config",
        "--check-ready <URL>",
        "--help",
        "--version",
        "BRIDGE_CONFIG_FILE",
    ] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}

#[test]
fn version_is_the_crates_and_exits_0() {
    let out = engine(&["--version"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("bridge-engine {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn config_comes_from_the_option_or_the_environment() {
    let dir = std::env::temp_dir().join(format!("engine-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("engine.toml");
    std::fs::write(&file, "engine_id = \"from-file\"\n").unwrap();
    let path = file.to_str().unwrap();
    for out in [
        engine(&["--config", path, "--print-config"], &[]),
        engine(&[&format!("--config={path}"), "--print-config"], &[]),
        engine(&["--print-config"], &[("BRIDGE_CONFIG_FILE", path)]),
    ] {
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(printed["engine_id"], "from-file");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bad_argument_exits_2_naming_it_and_pointing_at_help() {
    for args in [&["--frobnicate"][..], &["--config"][..], &["extra"][..]] {
        let out = engine(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("error:"), "{args:?}: {err}");
        assert!(err.contains("try '--help'"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn check_ready_of_a_closed_port_exits_1_with_one_line() {
    // Port 9 (discard) on loopback: nothing listens there in the test environment.
    let out = engine(&["--check-ready", "http://127.0.0.1:9/readyz"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert_eq!(
        text(&out.stderr).trim().lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}
