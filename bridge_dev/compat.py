"""The previous contract's peers, built from its release commit, for the N-1 tests.

Contract 1.0 was released at commit :data:`RELEASED_COMMIT` (schemas/CHANGELOG.md). The N-1
tests (tests/integration/test_compat_n1.py) run the current engine against the 1.0 client and
the current client against the 1.0 engine, both exactly as that commit has them:

* the 1.0 engine: ``git archive`` of the commit's Cargo workspace (``Cargo.toml``,
  ``Cargo.lock``, ``engine-rs``, ``schemas``, ``bench/rs``, ``bridge/jetstream``) into
  ``.dev/compat/1.0/src``, its engine package renamed ``bridge-engine-1-0`` (package, binary and
  lock entry; the library keeps its name), built into the repository's own ``target/``
  (``target/release/bridge-engine-1-0``). Only that binary is built, with the bench package
  selected too: the dependencies are then unified with the same features as the current
  workspace's build and reused from ``target/``, so only the engine crate itself compiles
  (selecting the engine alone recompiles about fifteen dependencies with fewer features). No
  other output is written over: the current engine, its library and the bench binaries keep
  theirs.
* the 1.0 client: the commit's ``bridge/`` package in ``.dev/compat/1.0/py``, run in a
  subprocess with ``PYTHONPATH`` pointing there (same virtualenv: 1.0's dependencies are the
  current ones). It cannot share a process with the current ``bridge``: both register the same
  full names (``bridge.v1.NewOrder``, ...) in protobuf's one descriptor pool.

``./dev setup`` runs ``python -m bridge_dev.compat setup``: it extracts and builds once and
then skips (a stamp names the commit; the binary must exist). The commit must be in the clone's
history: a shallow clone is deepened once (``git fetch --unshallow``), else setup fails saying
so.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

from bridge_dev.server import REPO_ROOT

RELEASED_VERSION = "1.0"
RELEASED_COMMIT = "9c8e34f8df8b893c6b49967e841d836073864158"
"""The commit contract 1.0 was released at (its protos, client and engine)."""
COMPAT_DIR = REPO_ROOT / ".dev" / "compat" / RELEASED_VERSION
ENGINE_SOURCE = COMPAT_DIR / "src"
"""The 1.0 Cargo workspace, extracted (the engine's config is ``engine-rs/config/dev.toml``)."""
CLIENT_PATH = COMPAT_DIR / "py"
"""``PYTHONPATH`` of a 1.0 client: holds the commit's ``bridge/``."""
ENGINE_PACKAGE = "bridge-engine-1-0"
ENGINE_BINARY = REPO_ROOT / "target" / "release" / ENGINE_PACKAGE
ENGINE_CONFIG = ENGINE_SOURCE / "engine-rs" / "config" / "dev.toml"
_STAMP = COMPAT_DIR / "extracted"
_WORKSPACE = ["Cargo.toml", "Cargo.lock", "engine-rs", "schemas", "bench/rs", "bridge/jetstream"]
_SETUP = "run ./dev setup (it builds the 1.0 engine and extracts the 1.0 client)"


class CompatError(RuntimeError):
    """The released commit or what is built from it is not available."""


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, check=False)


def ensure_commit() -> None:
    """The released commit is in this clone's history: else deepen a shallow clone once, else
    :class:`CompatError` saying what to do."""
    if _git("cat-file", "-e", f"{RELEASED_COMMIT}^{{commit}}").returncode == 0:
        return
    shallow = _git("rev-parse", "--is-shallow-repository").stdout.strip() == b"true"
    if shallow:
        print(f"fetching the full history for contract {RELEASED_VERSION}", file=sys.stderr)
        _git("fetch", "--unshallow")
        if _git("cat-file", "-e", f"{RELEASED_COMMIT}^{{commit}}").returncode == 0:
            return
    raise CompatError(
        f"contract {RELEASED_VERSION}'s release commit {RELEASED_COMMIT[:7]} is not in this "
        f"clone's history{' (shallow clone; `git fetch --unshallow` failed)' if shallow else ''}"
        ": the N-1 tests build the previous engine and client from it. Clone the repository "
        "with its history (no --depth), or fetch that commit."
    )


def _archive(paths: Sequence[str], into: Path) -> None:
    """``git archive`` of ``paths`` at the released commit, unpacked into ``into``."""
    done = _git("archive", "--format=tar", RELEASED_COMMIT, *paths)
    if done.returncode != 0:
        raise CompatError(f"git archive failed: {done.stderr.decode(errors='replace')}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        # Extraction filters came with Python 3.11.4 (and security releases of older ones); the
        # archive is this repository's own, so without them it is extracted as it is.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)


def _rename_engine(source: Path) -> None:
    """The engine package (and its binary and lock entry) renamed :data:`ENGINE_PACKAGE`, so
    that its outputs in the shared ``target/`` never replace the current engine's."""
    manifest = source / "engine-rs" / "Cargo.toml"
    lock = source / "Cargo.lock"
    for path in (manifest, lock):
        text = path.read_text("utf-8")
        renamed = text.replace('name = "bridge-engine"\n', f'name = "{ENGINE_PACKAGE}"\n')
        if renamed == text:
            raise CompatError(f"{path}: no package or binary named bridge-engine to rename")
        path.write_text(renamed, "utf-8")


def extract() -> bool:
    """Extract the 1.0 engine workspace and client (unless the stamp says they are); True when
    it extracted."""
    if _STAMP.is_file() and _STAMP.read_text("utf-8").strip() == RELEASED_COMMIT:
        return False
    ensure_commit()
    shutil.rmtree(COMPAT_DIR, ignore_errors=True)
    _archive(_WORKSPACE, ENGINE_SOURCE)
    _rename_engine(ENGINE_SOURCE)
    _archive(["bridge"], CLIENT_PATH)
    _STAMP.write_text(RELEASED_COMMIT + "\n", "utf-8")
    return True


def build(*, force: bool = False) -> Path:
    """Build the 1.0 engine into the shared ``target/`` (skipped when it is there and the
    sources were not extracted anew); its path."""
    extracted = extract()
    if ENGINE_BINARY.is_file() and not extracted and not force:
        return ENGINE_BINARY
    env = dict(os.environ, CARGO_TARGET_DIR=str(REPO_ROOT / "target"))
    command = [
        "cargo",
        "build",
        "--release",
        "--locked",
        "--quiet",
        # the bench package too: the dependencies' features are then the current workspace's
        "-p",
        ENGINE_PACKAGE,
        "-p",
        "bridge-bench",
        "--bin",
        ENGINE_PACKAGE,
    ]
    if subprocess.run(command, cwd=ENGINE_SOURCE, env=env, check=False).returncode != 0:
        raise CompatError(f"building the {RELEASED_VERSION} engine failed: {' '.join(command)}")
    return ENGINE_BINARY


def engine_binary() -> Path:
    """The 1.0 engine binary; :class:`CompatError` naming ``./dev setup`` if it is missing."""
    if not ENGINE_BINARY.is_file():
        raise CompatError(f"the {RELEASED_VERSION} engine {ENGINE_BINARY} is missing: {_SETUP}")
    return ENGINE_BINARY


def client_path() -> Path:
    """The ``PYTHONPATH`` entry of a 1.0 client; :class:`CompatError` if not extracted."""
    if not (CLIENT_PATH / "bridge" / "__init__.py").is_file():
        raise CompatError(f"the {RELEASED_VERSION} client is not in {CLIENT_PATH}: {_SETUP}")
    return CLIENT_PATH


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["setup"], help="extract and build (once)")
    parser.add_argument("--force", action="store_true", help="build even if up to date")
    ns = parser.parse_args(argv)
    try:
        path = build(force=ns.force)
    except CompatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"contract {RELEASED_VERSION} engine: {path}; client: {CLIENT_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
