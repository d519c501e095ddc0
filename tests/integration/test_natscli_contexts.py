"""The natscli contexts ``./dev setup`` writes (bridge_dev.natscli.write_contexts), as the pinned
natscli reads them: both contexts with absolute paths into the credentials root, bridge-operator
selected unless the user selected a context of their own, re-running changes nothing. No server:
test_runbook_commands.py uses them against live ones."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bridge_dev import natscli
from bridge_dev.pki import DevCredentials

pytestmark = pytest.mark.skipif(
    not natscli.NATS_CLI.exists(), reason="natscli missing: run ./dev setup (.dev/bin/nats)"
)
URL = "tls://127.0.0.1:4999,tls://127.0.0.1:5999"


def nats(home: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env.update(XDG_CONFIG_HOME=str(home), HOME=str(home))
    done = subprocess.run(
        [str(natscli.NATS_CLI), *args], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def context(home: Path, name: str) -> Any:
    return json.loads(nats(home, "context", "info", name, "--json"))


def test_both_contexts_are_written_and_bridge_operator_selected(
    dev_creds: DevCredentials, tmp_path: Path
) -> None:
    lines = natscli.write_contexts(dev_creds, URL, home=tmp_path / "nats")
    assert lines[-1] == "nats context selected: bridge-operator"
    listed = json.loads(nats(tmp_path, "context", "ls", "--json"))
    assert {c["name"] for c in listed} >= {"bridge-operator", "bridge-system"}
    for name, identity in (("bridge-operator", "operator"), ("bridge-system", "operator-system")):
        info = context(tmp_path, name)
        who = dev_creds.identity(identity)
        assert info["url"] == URL
        assert (info["cert"], info["key"], info["nkey"]) == (
            str(who.cert_file),
            str(who.key_file),
            str(who.seed_file),
        )
        assert info["ca"] == str(dev_creds.ca_file)
        assert Path(info["nkey"]).is_absolute()
        assert info["inbox_prefix"] == who.inbox_prefix
    assert context(tmp_path, "bridge-system")["inbox_prefix"] == "_INBOX.sysadmin"
    assert json.loads(nats(tmp_path, "context", "show", "--json"))["name"] == "bridge-operator"

    again = natscli.write_contexts(dev_creds, URL, home=tmp_path / "nats")
    assert all("up to date" in line for line in again[:2]), again
    assert again[-1] == "nats context selected: bridge-operator (kept)"


def test_a_selection_of_the_users_own_is_kept(dev_creds: DevCredentials, tmp_path: Path) -> None:
    nats(tmp_path, "context", "save", "mine", "--server", "nats://127.0.0.1:4222", "--select")
    lines = natscli.write_contexts(dev_creds, URL, home=tmp_path / "nats")
    assert lines[-1] == "nats context selected: mine (kept)"
    assert (tmp_path / "nats" / "context.txt").read_text(encoding="utf-8").strip() == "mine"
