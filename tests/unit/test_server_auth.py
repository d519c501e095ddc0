"""The server's accounts rendered from the entitlements (bridge.security.server_auth), the
change report of an apply, and the ``bridge-entitlements`` CLI's check/render (no server)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from bridge import contract
from bridge.security import entitlements as ent
from bridge.security import entitlements_cli, server_auth, server_reload

REPO = Path(__file__).resolve().parents[2]
DEV_FILE = REPO / "nats" / "entitlements.toml"


def _key(name: str) -> str:
    """A syntactically valid public user NKey per name."""
    return "U" + base64.b32encode(hashlib.sha512(name.encode()).digest()).decode()[:55]


def _dev() -> ent.Entitlements:
    return ent.load(DEV_FILE).resolve(_key)


def _user(entitlements: ent.Entitlements, name: str) -> server_auth.User:
    return next(u for u in server_auth.users(entitlements) if u.identity.name == name)


def _block(text: str, nkey: str) -> str:
    """The rendered user block of ``nkey`` (from its nkey line to the next user's comment)."""
    start = text.index(f'nkey: "{nkey}"')
    end = text.find("\n      # ", start)
    return text[start : end if end > 0 else len(text)]


def test_rendering_is_deterministic_and_says_where_it_comes_from() -> None:
    entitlements = _dev()
    shuffled = ent.Entitlements(version=1, identities=tuple(reversed(entitlements.identities)))
    text = server_auth.render(entitlements, source="x/entitlements.toml")
    assert text == server_auth.render(entitlements, source="x/entitlements.toml")
    assert text == server_auth.render(shuffled, source="x/entitlements.toml")
    assert text.startswith("# accounts.conf -- generated from x/entitlements.toml")
    assert "do not edit" in text.splitlines()[0]
    assert "system_account: SYS" in text
    bridge = text[text.index("  BRIDGE {") : text.index("  SYS {")]
    sys_account = text[text.index("  SYS {") :]
    assert "jetstream: enabled" in bridge
    assert "jetstream" not in sys_account
    assert _key("sentinel-system") in sys_account
    assert _key("sentinel-system") not in bridge
    for name in ("orchestrator", "desk-a", "desk-b", "operator", "engine", "sentinel"):
        assert _key(name) in bridge


def test_a_desk_may_use_only_its_own_account_and_inbox() -> None:
    desk_a = _user(_dev(), "desk-a")
    p = desk_a.permissions
    own_inbox = contract.identity_inbox_prefix("orchestrator", _key("desk-a"))
    assert p.publish_allow[:7] == (
        contract.submit("DESK-A"),
        contract.cancel("DESK-A"),
        contract.status("DESK-A"),
        contract.queue("DESK-A"),
        contract.queue_batch("DESK-A"),
        contract.replace("DESK-A"),
        contract.mass_cancel("DESK-A"),
    )
    assert f"$JS.API.CONSUMER.CREATE.EXECUTIONS.*.{contract.executions_for_account('DESK-A')}" in (
        p.publish_allow
    )
    assert p.subscribe_allow == (
        f"{own_inbox}.>",
        contract.executions_for_account("DESK-A"),
        # Market data is public: every desk sees every symbol's book and tape.
        contract.MD_UPDATES_ALL,
        contract.MD_QUOTES_ALL,
        contract.MD_TRADES_ALL,
    )
    # The runtime configuration is read, never written, by an orchestrator.
    assert not any(s.startswith("$KV.") for s in p.publish_allow)
    assert contract.config_applied("client") in p.publish_allow
    assert not any("DESK-B" in s for s in (*p.publish_allow, *p.subscribe_allow))
    assert not p.allow_responses
    assert server_auth.inbox_prefix(desk_a.identity) == own_inbox


def test_every_account_renders_the_wildcard_forms() -> None:
    p = _user(_dev(), "orchestrator").permissions
    assert p.publish_allow[:7] == (
        contract.SUBMIT_ALL,
        contract.CANCEL_ALL,
        contract.STATUS_ALL,
        contract.QUEUE_ALL,
        contract.QUEUE_BATCH_ALL,
        contract.REPLACE_ALL,
        contract.MASS_CANCEL_ALL,
    )
    assert contract.SESSION_ALL in p.publish_allow
    assert contract.EXECUTIONS_ALL in p.subscribe_allow


def test_service_api_engines_answer_operators_discover_orchestrators_only_ping() -> None:
    """The NATS service API: engines serve it, operators use all of it, an orchestrator may
    only ping the engines' service (its readiness check), never INFO/STATS or other services."""
    ping = contract.service_ping(contract.SERVICE_NAME)
    engine = _user(_dev(), "engine").permissions
    assert contract.SERVICE_ALL in engine.subscribe_allow
    assert engine.allow_responses
    assert contract.SERVICE_ALL in _user(_dev(), "operator").permissions.publish_allow
    for name in ("orchestrator", "desk-a", "desk-b"):
        p = _user(_dev(), name).permissions
        assert ping in p.publish_allow
        srv = [s for s in (*p.publish_allow, *p.subscribe_allow) if s.startswith("$SRV")]
        assert srv == [ping], name


def test_several_accounts_are_sorted_and_deduplicated() -> None:
    entitlements = _dev()
    desk_a = entitlements.by_name("desk-a").model_copy(update={"accounts": ("Z-1", "B-2", "Z-1")})
    p = server_auth.permissions(desk_a)
    assert [s for s in p.subscribe_allow if s.startswith(contract.EXECUTIONS_PREFIX)] == [
        contract.executions_for_account("B-2"),
        contract.executions_for_account("Z-1"),
    ]


def test_engine_keeps_its_role_permissions_plus_its_alerts() -> None:
    """The engine's permissions are the role's of the former nats/server.conf (plus alerts and
    its journal, and the partitions' queued orders it re-publishes)."""
    p = _user(_dev(), "engine").permissions
    assert p.publish_allow == (
        "bridge.v1.exec.>",
        "bridge.v1.journal.>",
        "bridge.v1.engine.>",
        "bridge.v1.orders.partition.>",
        "bridge.v1.alerts.engine.>",
        "$JS.API.>",
        "$JS.ACK.ORDERS.>",
        "$KV.bridge_orders.>",
        "$KV.bridge_leases.>",
        "$KV.bridge_sessions.>",
        "bridge.v1.md.book.>",
        "bridge.v1.md.quote.>",
        "bridge.v1.md.trade.>",
        "bridge.v1.config.applied.engine",
        "_INBOX.engine.>",
    )
    assert p.publish_deny == (
        "$JS.API.STREAM.CREATE.>",
        "$JS.API.STREAM.UPDATE.>",
        "$JS.API.STREAM.DELETE.>",
        "$JS.API.STREAM.PURGE.>",
        "$JS.API.CONSUMER.DELETE.ORDERS.>",
    )
    assert p.subscribe_allow == (
        "bridge.v1.orders.submit.*",
        "bridge.v1.orders.cancel.*",
        "bridge.v1.orders.status.*",
        "bridge.v1.orders.replace.*",
        "bridge.v1.orders.mass_cancel.*",
        "bridge.v1.session.>",
        "bridge.v1.engine.>",
        "$SRV.>",
        "bridge.v1.md.snapshot.>",
        "bridge.v1.feed.>",
        "_INBOX.engine.>",
    )
    assert p.allow_responses


def test_operator_administers_but_sends_only_status_and_cancels_of_its_accounts() -> None:
    everything = _user(_dev(), "operator").permissions
    assert everything.publish_allow == (
        "$JS.API.>",
        "$JS.FC.>",
        "$SYS.REQ.>",
        "bridge.v1.orders.status.*",
        "bridge.v1.orders.cancel.*",
        "bridge.v1.orders.mass_cancel.*",
        "_INBOX.operator.>",
        "$SRV.>",
        "$KV.bridge_config.>",
        "bridge.v1.md.snapshot.>",
    )
    assert everything.subscribe_allow == (">",)
    one = _dev().by_name("operator").model_copy(update={"accounts": ("DESK-A",)})
    allowed = server_auth.permissions(one).publish_allow
    assert contract.status("DESK-A") in allowed
    assert contract.cancel("DESK-A") in allowed
    assert contract.mass_cancel("DESK-A") in allowed
    assert contract.STATUS_ALL not in allowed
    assert not any(s.startswith(contract.REPLACE_PREFIX) for s in allowed)
    assert not any(s.startswith(contract.SUBMIT_PREFIX) for s in allowed)


def test_sentinel_and_system_identity_are_least_privilege() -> None:
    sentinel = _user(_dev(), "sentinel").permissions
    assert sentinel.publish_allow == (
        "bridge.v1.alerts.sentinel.>",
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.ALERTS",
        "$JS.API.CONSUMER.INFO.ALERTS.sentinel",
        "$JS.API.CONSUMER.MSG.NEXT.ALERTS.sentinel",
        "$JS.ACK.ALERTS.sentinel.>",
        "_INBOX.sentinel.>",
    )
    assert sentinel.subscribe_allow == ("_INBOX.sentinel.>",)
    system = _user(_dev(), "sentinel-system")
    assert system.account == server_auth.SYSTEM_ACCOUNT
    assert system.permissions.publish_allow == (
        "$SYS.REQ.SERVER.*.KICK",
        "$SYS.REQ.SERVER.PING.CONNZ",
        "$SYS.REQ.SERVER.*.CONNZ",
        "_INBOX.system.>",
    )
    assert system.permissions.subscribe_allow == (contract.SYS_AUTH_ERROR, "_INBOX.system.>")


def test_sysadmin_identity_may_only_run_the_cluster_runbooks_server_commands() -> None:
    """The operators' identity in SYS (natscli context bridge-system): every server's statistics
    (`nats server ls`) and JetStream state (`server report jetstream`, and the meta group that
    `server raft peer-remove` reads) and the removal of a dead server; no connection listing,
    kick or reload, no subject of account BRIDGE."""
    sysadmin = _user(_dev(), "operator-system")
    assert sysadmin.identity.role == "sysadmin"
    assert sysadmin.account == server_auth.SYSTEM_ACCOUNT
    assert sysadmin.permissions.publish_allow == (
        "$SYS.REQ.SERVER.PING",
        "$SYS.REQ.SERVER.*.JSZ",
        "$JS.API.SERVER.REMOVE",
        "_INBOX.sysadmin.>",
    )
    assert sysadmin.permissions.subscribe_allow == ("_INBOX.sysadmin.>",)
    assert not sysadmin.permissions.allow_responses
    text = server_auth.render(_dev(), source="x")
    assert _key("operator-system") in text[text.index("  SYS {") :]


def test_a_dev_key_reference_is_refused_naming_file_identity_and_field() -> None:
    with pytest.raises(ent.EntitlementsError, match=r"^f\.toml: identities\.orchestrator\.nkey: "):
        server_auth.render(ent.load(DEV_FILE), source="f.toml")


def test_changes_name_added_removed_and_changed_identities() -> None:
    before = _dev()
    kept = [
        i.model_copy(update={"accounts": ("DESK-A", "DESK-C")}) if i.name == "desk-a" else i
        for i in before.identities
        if i.name != "desk-b"
    ]
    desk_c = before.by_name("desk-b").model_copy(update={"name": "desk-c", "nkey": _key("c")})
    after = ent.Entitlements(version=1, identities=(*kept, desk_c))
    old = server_auth.render(before, source="f")
    changes = server_reload.diff(old, server_auth.render(after, source="f"))
    assert set(changes.added) == {"desk-c"}
    assert set(changes.removed) == {"desk-b"}
    assert set(changes.changed) == {"desk-a"}
    assert "changed desk-a: accounts DESK-A -> DESK-A,DESK-C" in changes.lines()
    assert server_reload.diff(old, old).lines() == ["no identity changed"]
    assert set(server_reload.diff("", old).added) == {i.name for i in before.identities}


def test_cli_check_lists_identities(capsys: pytest.CaptureFixture[str]) -> None:
    assert entitlements_cli.main(["check", str(DEV_FILE)]) == 0
    out = capsys.readouterr().out
    assert "valid (version 1, 8 identities)" in out
    assert re.search(
        r"desk-a\s+orchestrator\s+server account BRIDGE\s+trading accounts DESK-A", out
    )
    assert "sentinel-system  system" in out
    assert re.search(r"operator-system\s+sysadmin\s+server account SYS", out)
    assert "dev key references" in out


def test_cli_render_writes_the_file_or_names_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(_dev().to_toml(), encoding="utf-8")
    out = tmp_path / "accounts.conf"
    assert (
        entitlements_cli.main(["render", "--entitlements", str(resolved), "--out", str(out)]) == 0
    )
    assert out.read_text("utf-8") == server_auth.render(_dev(), source=str(resolved))
    code = entitlements_cli.main(["render", "--entitlements", str(DEV_FILE), "--out", str(out)])
    assert code == 1
    assert "identities.orchestrator.nkey" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(_dev().to_toml().replace('"DESK-A"', '"a.b"'), encoding="utf-8")
    assert entitlements_cli.main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err
    assert "identities.desk-a.accounts" in err


def test_cli_apply_refuses_a_pid_that_is_not_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(_dev().to_toml(), encoding="utf-8")
    args = ["apply", "--entitlements", str(resolved), "--config-dir", str(tmp_path)]
    assert entitlements_cli.main([*args, "--pid", str(tmp_path / "missing.pid")]) == 1
    assert "neither a process id nor a readable pid file" in capsys.readouterr().err
    assert not (tmp_path / server_reload.ACCOUNTS_FILE).exists()  # nothing written
