//! Start-up refusals of the authorization configuration, before the engine connects anywhere:
//! signatures required without an entitlements file, and an entitlements file the engine
//! cannot use (the committed dev file still names `dev:` keys). Both exit non-zero with an
//! error naming the knob, or the identity and field.

use std::process::Command;

fn engine(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bridge-engine"));
    for (k, _) in std::env::vars() {
        if k.starts_with("BRIDGE_") {
            cmd.env_remove(k);
        }
    }
    // Nothing listens here: a start-up that got past its configuration would fail to connect
    // (after connect_deadline_ms), with another error.
    cmd.env("BRIDGE_NATS_URL", "nats://127.0.0.1:1")
        .env("BRIDGE_CONNECT_DEADLINE_MS", "100")
        .env("BRIDGE_LOG_FORMAT", "json")
        // Any free port: these engines run in parallel, beside any other on this host.
        .env("BRIDGE_HTTP_LISTEN", "127.0.0.1:0");
    cmd.envs(env.iter().copied());
    cmd.output().expect("bridge-engine runs")
}

#[test]
fn signatures_required_without_an_entitlements_file_fail_naming_the_knob() {
    let out = engine(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("entitlements_file") && err.contains("require_signatures"),
        "{err}"
    );
    assert!(!err.contains("connecting to NATS"), "{err}");
}

#[test]
fn an_unresolved_entitlements_file_fails_naming_the_identity_and_field() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../nats/entitlements.toml");
    let out = engine(&[("BRIDGE_ENTITLEMENTS_FILE", file)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identities.") && err.contains(".nkey"),
        "{err}"
    );
    assert!(err.contains("dev key reference"), "{err}");
    assert!(!err.contains("connecting to NATS"), "{err}");
}

#[test]
fn signatures_off_needs_no_entitlements_file() {
    let out = engine(&[("BRIDGE_REQUIRE_SIGNATURES", "false")]);
    assert!(!out.status.success()); // nothing to connect to
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to NATS"), "{err}");
    assert!(err.contains("require_signatures is off"), "{err}");
    // The HTTP endpoints were up before the connection was tried.
    let listening = err.find("http listening").expect("http listening logged");
    assert!(listening < err.find("connecting to NATS").expect("connect error"));
}
