"""The package as a user gets it: two checks ``./dev test`` runs before pytest.

``python -m bridge_dev.package_checks minimum-versions``
    Installs the DECLARED MINIMUM of every runtime dependency and of the ``test`` extra
    (``uv pip install --resolution lowest-direct``) into a throwaway venv, fails if a floor
    cannot be installed as declared (another requirement forces a higher one), and runs
    ``tests/unit`` there. A false floor fails here instead of at a user's.

``python -m bridge_dev.package_checks wheel``
    Builds the sdist and, from it, the wheel; installs the wheel into a fresh venv in a temp
    directory outside the repo; checks ``bridge.__version__``, the shipped JetStream definitions
    and that ``bridge_dev`` is not importable there; then runs ``examples/orchestrator.py`` with
    that venv's Python against a local server and engine started here, and stops both.

Both use ``uv`` (a dev dependency) and its cache, and clean up their temp directories.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.version import Version

from bridge_dev.engine import EngineProcess, client_settings, write_client_config
from bridge_dev.pki import ensure_dev_credentials
from bridge_dev.server import REPO_ROOT, LocalNatsServer, _provision_as_operator

PYPROJECT = REPO_ROOT / "pyproject.toml"
EXAMPLE = REPO_ROOT / "examples" / "orchestrator.py"
FINAL_LINE = re.compile(r"^ord-\w+-(\d): (\w+), filled ([\d.]+) at ([\d.]+)$")


class PackageCheckError(RuntimeError):
    """A package check failed (message says which and why)."""


def _uv() -> str:
    """``uv`` next to the running interpreter (the dev venv), else on PATH."""
    here = Path(sys.executable).parent / "uv"
    found = str(here) if here.is_file() else shutil.which("uv")
    if found is None:
        raise PackageCheckError("uv not found: run ./dev setup (uv is a dev dependency)")
    return found


def _run(args: Sequence[str], *, cwd: Path = REPO_ROOT, timeout: float = 600) -> str:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PackageCheckError(
            f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc.stdout


def _clean_env() -> dict[str, str]:
    """The environment without anything that would point Python or the client elsewhere."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BRIDGE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    return project


def declared_requirements() -> list[Requirement]:
    """The runtime dependencies and the ``test`` extra, as pyproject.toml declares them."""
    project = _project()
    reqs = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return [Requirement(r) for r in reqs]


def _floor(req: Requirement) -> Version | None:
    floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
    return max(floors) if floors else None


def _new_venv(path: Path) -> Path:
    _run([_uv(), "venv", "--quiet", "--python", sys.executable, str(path)])
    return path / "bin" / "python"


def _installed(python: Path) -> dict[str, Version]:
    out = _run([_uv(), "pip", "list", "--format", "json", "--python", str(python)])
    return {p["name"].lower().replace("_", "-"): Version(p["version"]) for p in json.loads(out)}


def minimum_versions(work: Path) -> None:
    """Install the declared floors and run the unit tests with them."""
    reqs = declared_requirements()
    python = _new_venv(work / "venv")
    lowest = ["--resolution", "lowest-direct", *map(str, reqs)]
    _run([_uv(), "pip", "install", "--quiet", "--python", str(python), *lowest])
    # The package itself (its metadata gives bridge.__version__), without pulling anything newer.
    wheel_file = build_wheel(work / "dist")
    _run(
        [_uv(), "pip", "install", "--quiet", "--python", str(python), "--no-deps", str(wheel_file)]
    )
    installed = _installed(python)
    wrong = []
    for req in reqs:
        floor, have = _floor(req), installed.get(req.name.lower())
        if floor is not None and have != floor:
            wrong.append(f"{req}: installs {have}, not the floor {floor}")
    if wrong:
        raise PackageCheckError("floors that cannot be installed as declared:\n" + "\n".join(wrong))
    print(
        "installed the floors: " + ", ".join(f"{r.name} {installed[r.name.lower()]}" for r in reqs)
    )
    proc = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"],
        cwd=REPO_ROOT,
        env=_clean_env(),
        timeout=600,
    )
    if proc.returncode != 0:
        raise PackageCheckError(
            f"tests/unit failed with the declared minimum versions ({proc.returncode})"
        )


def build_wheel(out: Path) -> Path:
    """sdist, then the wheel from the sdist (so the sdist is complete too); the wheel's path."""
    _run([_uv(), "build", "--quiet", "--out-dir", str(out)])
    wheels = sorted(out.glob("*.whl"))
    if len(wheels) != 1:
        raise PackageCheckError(f"expected one wheel in {out}, found {wheels}")
    return wheels[0]


def check_wheel_contents(wheel: Path) -> None:
    """The client, its typing marker and the JetStream definitions; no dev tooling."""
    from bridge import jetstream

    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [
        f"bridge/{n}"
        for n in ("py.typed", "__init__.py", *(f"jetstream/{f}" for f in jetstream.ALL_FILES))
        if f"bridge/{n}" not in names
    ]
    extra = sorted(n for n in names if not n.startswith(("bridge/", "nats_execution_bridge-")))
    if missing or extra:
        raise PackageCheckError(f"wheel {wheel.name}: missing {missing}, unexpected {extra}")


IMPORT_CHECK = """
import importlib.metadata, importlib.util, sys
import bridge, bridge.jetstream
assert bridge.__file__.startswith(sys.prefix), bridge.__file__
assert bridge.__version__ == importlib.metadata.version("nats-execution-bridge")
assert importlib.util.find_spec("bridge_dev") is None, "bridge_dev is importable"
for name in bridge.jetstream.ALL_FILES:
    bridge.jetstream.load(name)
print(bridge.__version__)
"""


def run_example(python: Path | str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run examples/orchestrator.py with ``python``, configured by ``config`` alone."""
    env = _clean_env()
    env["BRIDGE_CONFIG_FILE"] = str(config)
    return subprocess.run(
        [str(python), str(EXAMPLE)], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def example_problems(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """What is wrong with the example's run: it must exit 0, the urgent order be ACCEPTED,
    three be queued and all four end FILLED (the engine's seeded liquidity crosses them)."""
    if proc.returncode != 0:
        return [f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"]
    lines = proc.stdout.splitlines()
    problems = []
    if not any(re.fullmatch(r"ord-\w+-0: ACCEPTED NONE", line) for line in lines):
        problems.append("no 'ACCEPTED NONE' line for the urgent order")
    if not any(line.startswith("queued 3 orders") for line in lines):
        problems.append("no 'queued 3 orders' line")
    finals = {m[1]: m[2] for m in map(FINAL_LINE.match, lines) if m}
    if finals != {"0": "FILLED", "1": "FILLED", "2": "FILLED", "3": "FILLED"}:
        problems.append(f"final states {finals}")
    return [f"{p}; output:\n{proc.stdout}" for p in problems]


def wheel(work: Path) -> None:
    """Build, install outside the repo, import, and run the README's example against a server."""
    wheel_file = build_wheel(work / "dist")
    check_wheel_contents(wheel_file)
    python = _new_venv(work / "venv")
    _run([_uv(), "pip", "install", "--quiet", "--python", str(python), str(wheel_file)])
    version = _run([str(python), "-c", IMPORT_CHECK], cwd=work).strip()
    if version != _project()["version"]:
        raise PackageCheckError(
            f"bridge.__version__ {version} != pyproject's {_project()['version']}"
        )
    print(f"{wheel_file.name} installed in {work / 'venv'}: bridge {version}, no bridge_dev")
    creds = ensure_dev_credentials(work / "dev")
    with LocalNatsServer(creds, name="bridge-wheel", log_file=work / "nats.log") as server:
        asyncio.run(_provision_as_operator(server.handle))
        with EngineProcess(server.handle, log_file=work / "engine.log"):
            config = write_client_config(client_settings(server.handle), work / "orch.toml")
            proc = run_example(python, config, work)
    problems = example_problems(proc)
    if problems:
        raise PackageCheckError("examples/orchestrator.py from the wheel: " + "; ".join(problems))
    print(f"examples/orchestrator.py ran with the wheel's venv:\n{proc.stdout.rstrip()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge_dev.package_checks")
    parser.add_argument("check", choices=["minimum-versions", "wheel"])
    args = parser.parse_args(argv)
    check = minimum_versions if args.check == "minimum-versions" else wheel
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"bridge-{args.check}-") as tmp:
        try:
            check(Path(tmp))
        except (PackageCheckError, subprocess.TimeoutExpired) as exc:
            print(f"package check {args.check} FAILED: {exc}", file=sys.stderr)
            return 1
    print(f"package check {args.check}: passed in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
