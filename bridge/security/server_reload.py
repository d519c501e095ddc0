"""Applying rendered accounts to a running nats-server: write ``accounts.conf``, reload, confirm.

A reload is a configuration reload of the running process (``nats-server --signal reload=<pid>``
sends it SIGHUP): no restart, connections of identities that stay keep their connection, those
of a removed identity are closed by the server. The server shows that it applied a reload by a
new ``config_load_time`` in its ``/varz`` (it does not change when the reload failed, e.g. on a
configuration error; the server logs why).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bridge.security import server_auth
from bridge.security.entitlements import Entitlements

ACCOUNTS_FILE = "accounts.conf"
"""The rendered file's name in the runtime configuration directory (included by nats.conf)."""

_POLL_INTERVAL_S = 0.02


class ReloadError(RuntimeError):
    """The server could not be signalled, or did not confirm the reload in time."""


@dataclass(frozen=True)
class Changes:
    """What a new rendering changes, identity by identity (header lines compared)."""

    added: dict[str, str]
    removed: dict[str, str]
    changed: dict[str, tuple[str, str]]

    @property
    def none(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def lines(self) -> list[str]:
        """One human-readable line per change (or one saying there is none)."""
        if self.none:
            return ["no identity changed"]
        out = [f"added   {name}: {desc}" for name, desc in sorted(self.added.items())]
        out += [f"removed {name}: {desc}" for name, desc in sorted(self.removed.items())]
        out += [
            f"changed {name}: {_fields_diff(old, new)}"
            for name, (old, new) in sorted(self.changed.items())
        ]
        return out


def _fields(description: str) -> dict[str, str]:
    return dict(part.partition("=")[::2] for part in description.split())


def _fields_diff(old: str, new: str) -> str:
    """``accounts DESK-A -> DESK-A,DESK-C`` for the fields of an identity line that differ."""
    before, after = _fields(old), _fields(new)
    keys = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    return "; ".join(f"{k} {before.get(k, '-')} -> {after.get(k, '-')}" for k in keys)


def diff(old_text: str, new_text: str) -> Changes:
    """The identities a new rendering adds, removes or changes against an old one (pure)."""
    old = server_auth.rendered_identities(old_text)
    new = server_auth.rendered_identities(new_text)
    return Changes(
        added={n: d for n, d in new.items() if n not in old},
        removed={n: d for n, d in old.items() if n not in new},
        changed={n: (old[n], d) for n, d in new.items() if n in old and old[n] != d},
    )


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one rename (the server never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_accounts(config_dir: Path, entitlements: Entitlements, *, source: str) -> Changes:
    """Render ``entitlements`` to ``<config_dir>/accounts.conf`` (atomically); return what
    changed against the file it replaces (everything is "added" when there was none)."""
    path = config_dir / ACCOUNTS_FILE
    new_text = server_auth.render(entitlements, source=source)
    try:
        old_text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old_text = ""
    write_atomic(path, new_text)
    return diff(old_text, new_text)


def read_pid(pid: str) -> int:
    """A process id given as a number or as the path of a pid file (nats-server ``--pid``)."""
    text = pid.strip()
    if not text.isdigit():
        try:
            text = Path(text).read_text(encoding="ascii").strip()
        except OSError as exc:
            raise ReloadError(f"--pid {pid}: neither a process id nor a readable pid file") from exc
    if not text.isdigit():
        raise ReloadError(f"--pid {pid}: pid file does not hold a process id ({text[:20]!r})")
    return int(text)


def signal_reload(pid: int) -> None:
    """Ask nats-server ``pid`` to reload its configuration (SIGHUP, as ``--signal reload``)."""
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadError(f"no process {pid}: is nats-server running?") from None
    except PermissionError:
        raise ReloadError(f"not allowed to signal process {pid} (run as its user)") from None


def config_load_time(monitor_url: str, timeout: float = 2.0) -> str:
    """The server's ``config_load_time`` from ``<monitor_url>/varz``."""
    try:
        with urllib.request.urlopen(f"{monitor_url.rstrip('/')}/varz", timeout=timeout) as resp:
            varz = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ReloadError(f"cannot read {monitor_url}/varz: {exc}") from exc
    value = varz.get("config_load_time")
    if not isinstance(value, str):
        raise ReloadError(f"{monitor_url}/varz has no config_load_time")
    return value


def wait_reloaded(
    monitor_url: str,
    before: str,
    timeout: float,
    *,
    failed: Callable[[], str | None] | None = None,
) -> str:
    """Until ``config_load_time`` differs from ``before`` (the reload was applied); return it.

    Raises :class:`ReloadError` after ``timeout`` seconds, or as soon as ``failed`` (e.g. a look
    at the server's log) returns why: the reload failed and the server keeps its previous
    configuration (it logs ``Failed to reload server configuration``)."""
    deadline = time.monotonic() + timeout
    while True:
        now = config_load_time(monitor_url)
        if now != before:
            return now
        reason = failed() if failed is not None else None
        if reason is not None:
            raise ReloadError(f"the server refused the new configuration: {reason}")
        if time.monotonic() > deadline:
            raise ReloadError(
                f"the server did not apply the reload within {timeout:.1f}s (config_load_time "
                f"still {before}); its log says why (`Failed to reload server configuration`)"
            )
        time.sleep(_POLL_INTERVAL_S)


def reload(pid: int, monitor_url: str | None, *, timeout: float = 10.0) -> str | None:
    """Signal the reload; with ``monitor_url``, wait until the server applied it and return its
    new ``config_load_time`` (else None: check the server's log)."""
    before = config_load_time(monitor_url) if monitor_url else None
    signal_reload(pid)
    if monitor_url is None or before is None:
        return None
    return wait_reloaded(monitor_url, before, timeout)
