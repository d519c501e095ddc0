"""What the numbers were measured on: software versions, machine and date."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

from bridge_dev.server import REPO_ROOT, nats_server_binary


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip() or "unknown"


def _dist(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _crates(lock: Path, names: tuple[str, ...]) -> dict[str, str]:
    try:
        packages = tomllib.loads(lock.read_text(encoding="utf-8")).get("package", [])
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    return {p["name"]: p["version"] for p in packages if p.get("name") in names}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": _run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "nats_server": _run([str(nats_server_binary()), "--version"]),
        "rustc": _run(["rustc", "--version"]),
        "python_packages": {
            name: _dist(name)
            for name in ("nats-py", "protobuf", "pydantic", "grpcio", "uvloop", "hdrhistogram")
        },
        "crates": _crates(
            REPO_ROOT / "Cargo.lock", ("async-nats", "tonic", "prost", "tokio", "rustls")
        ),
        "machine": {
            "cpu_model": _cpu_model(),
            "logical_cores": os.cpu_count(),
            "kernel": f"{platform.system()} {platform.release()}",
            "arch": platform.machine(),
        },
    }
