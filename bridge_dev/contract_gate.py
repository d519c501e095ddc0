"""The contract's breaking-change gate: ``buf lint`` and ``buf breaking`` (``./dev test`` runs it).

``python -m bridge_dev.contract_gate [check] [--root DIR]``
    Lints every module of ``buf.yaml`` (the contract in ``schemas/``, the engine's private state
    in ``engine-rs/proto/``), then checks both for breaking changes against EVERY release kept
    in the repository: the contract against ``schemas/released/<version>/image.binpb`` (buf
    category FILE, deletions allowed only when reserved), the engine state against
    ``engine-rs/proto/released/<version>/image.binpb`` (WIRE). Prints each command and buf's
    findings; exits non-zero if any step found one. ``--root`` runs it on a copy of the
    repository's schemas (tests/contract/test_buf_gate.py applies a breaking change to one).

``python -m bridge_dev.contract_gate image [VERSION ...]``
    Rebuilds the committed images of the given releases (default: all) from their frozen
    ``.proto`` files (tests/contract/test_buf_gate.py fails when one is stale).

``python -m bridge_dev.contract_gate freeze VERSION``
    Releases the current schemas as VERSION (e.g. v1.1): copies them into
    ``schemas/released/VERSION/`` and ``engine-rs/proto/released/VERSION/`` and builds both
    images. From then on the gate also holds every later change to that version's messages.

buf comes from the ``buf-bin`` wheel of the dev extra (``.venv/bin/buf``). The configuration
has no dependencies and no registry: nothing here needs the network. Why these rules:
schemas/README.md, "The breaking-change gate".
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTRACT_MODULE = "schemas"
"""The contract's buf module (package bridge.v1): a directory relative to the root."""
ENGINE_MODULE = "engine-rs/proto"
"""The engine's private state (package bridge.engine.v1), which imports the contract."""
RELEASED = "released"
"""Under each module: one directory per released version, its frozen .proto files and image."""
IMAGE = "image.binpb"
"""A release's buf image (a FileDescriptorSet of buf's, without source info)."""
_VERSION = re.compile(r"^v(\d+)\.(\d+)$")


class GateError(Exception):
    """The gate could not run (buf missing, a release without its image...)."""


def buf() -> str:
    """The buf executable: the venv's (buf-bin), else one on PATH."""
    beside = Path(sys.executable).parent / "buf"
    if beside.exists():
        return str(beside)
    found = shutil.which("buf")
    if found is None:
        raise GateError("buf not found: ./dev setup installs it (buf-bin, the dev extra)")
    return found


def version_key(version: str) -> tuple[int, int]:
    """``v1.10`` -> (1, 10), so that releases sort by version, not by text."""
    m = _VERSION.match(version)
    if m is None:
        raise GateError(f"{version!r} is not a release version (vMAJOR.MINOR, e.g. v1.0)")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class Release:
    """One released version: its frozen contract and engine state, and their images."""

    version: str
    root: Path

    @property
    def contract_dir(self) -> Path:
        return self.root / CONTRACT_MODULE / RELEASED / self.version

    @property
    def engine_dir(self) -> Path:
        return self.root / ENGINE_MODULE / RELEASED / self.version

    @property
    def contract_image(self) -> Path:
        return self.contract_dir / IMAGE

    @property
    def engine_image(self) -> Path:
        return self.engine_dir / IMAGE


def releases(root: Path = REPO) -> list[Release]:
    """Every release kept under ``schemas/released/``, oldest first."""
    base = root / CONTRACT_MODULE / RELEASED
    found = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    return [Release(v, root) for v in sorted(found, key=version_key)]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _build_config(*module_dirs: str) -> str:
    """A buf.yaml as data: just these directories as modules (no lint/breaking config)."""
    return json.dumps({"version": "v2", "modules": [{"path": d} for d in module_dirs]})


def image_commands(release: Release, out_dir: Path | None = None) -> list[list[str]]:
    """The ``buf build`` commands that make a release's two images from its frozen files (into
    ``out_dir`` instead of beside them if given). The engine's image holds its state file and,
    as imports, the contract files it imports, of the same release."""
    root = release.root
    contract, engine = _rel(release.contract_dir, root), _rel(release.engine_dir, root)
    contract_out = (out_dir / "contract.binpb") if out_dir else release.contract_image
    engine_out = (out_dir / "engine.binpb") if out_dir else release.engine_image
    common = [buf(), "build", "--exclude-source-info"]
    return [
        [*common, "--config", _build_config(contract), "-o", str(contract_out)],
        [
            buf(),
            "build",
            engine,
            "--exclude-source-info",
            "--config",
            _build_config(contract, engine),
            "-o",
            str(engine_out),
        ],
    ]


def build_images(release: Release, out_dir: Path | None = None) -> tuple[Path, Path]:
    """Build a release's images (see :func:`image_commands`); returns (contract, engine)."""
    for cmd in image_commands(release, out_dir):
        proc = subprocess.run(cmd, cwd=release.root, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise GateError(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    if out_dir is None:
        return release.contract_image, release.engine_image
    return out_dir / "contract.binpb", out_dir / "engine.binpb"


def gate_commands(root: Path = REPO) -> list[list[str]]:
    """What the gate runs, in order: lint, then breaking against each release."""
    found = releases(root)
    if not found:
        raise GateError(f"no release under {root / CONTRACT_MODULE / RELEASED}")
    commands = [[buf(), "lint"]]
    for release in found:
        for image in (release.contract_image, release.engine_image):
            if not image.is_file():
                raise GateError(f"{image} is missing: python -m bridge_dev.contract_gate image")
        contract, engine = _rel(release.contract_image, root), _rel(release.engine_image, root)
        commands.append([buf(), "breaking", CONTRACT_MODULE, "--against", contract])
        # The contract files the engine state imports are the contract check's (FILE, stricter
        # than WIRE): not reported twice.
        commands.append(
            [buf(), "breaking", ENGINE_MODULE, "--against", engine, "--exclude-imports"]
        )
    return commands


def check(root: Path = REPO) -> int:
    """Run every gate command in ``root``; print each and its findings. 0 = all passed."""
    failed = 0
    for cmd in gate_commands(root):
        shown = " ".join(["buf", *cmd[1:]])
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)
        status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        print(f"{shown}: {status}")
        for line in (proc.stdout + proc.stderr).splitlines():
            print(f"  {line}")
        failed += proc.returncode != 0
    return 1 if failed else 0


def freeze(version: str, root: Path = REPO) -> Release:
    """Copy the current schemas into the release ``version`` and build its images."""
    version_key(version)
    release = Release(version, root)
    for target in (release.contract_dir, release.engine_dir):
        if target.exists():
            raise GateError(f"{target} exists: a release is frozen once")
    for module, target, package in (
        (CONTRACT_MODULE, release.contract_dir, "bridge"),
        (ENGINE_MODULE, release.engine_dir, "engine"),
    ):
        for proto in sorted((root / module / package).rglob("*.proto")):
            dest = target / proto.relative_to(root / module)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(proto, dest)
    build_images(release)
    return release


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge_dev.contract_gate", description=None)
    sub = parser.add_subparsers(dest="command")
    check_p = sub.add_parser("check", help="buf lint + buf breaking against every release")
    check_p.add_argument("--root", type=Path, default=REPO)
    image_p = sub.add_parser("image", help="rebuild releases' images from their frozen files")
    image_p.add_argument("versions", nargs="*")
    freeze_p = sub.add_parser("freeze", help="release the current schemas as VERSION")
    freeze_p.add_argument("version")
    args = parser.parse_args(argv)
    try:
        if args.command == "image":
            wanted = set(args.versions)
            for release in releases():
                if not wanted or release.version in wanted:
                    for built in build_images(release):
                        print(f"built {_rel(built, REPO)}")
            return 0
        if args.command == "freeze":
            release = freeze(args.version)
            print(
                f"froze {release.version}: {_rel(release.contract_dir, REPO)}, "
                f"{_rel(release.engine_dir, REPO)}"
            )
            return 0
        root = args.root.resolve() if args.command == "check" else REPO
        return check(root)
    except GateError as exc:
        print(f"contract gate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
