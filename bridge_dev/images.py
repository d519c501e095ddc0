"""The bridge's Docker images, built locally from this machine's binaries: nothing is pulled.

=====================  ==========================================================================
``bridge-base:dev``    FROM scratch: the shared libraries ``ldd`` names for the engine and
                       Prometheus, /etc/passwd + /etc/group (user ``bridge``, uid 10001), the CA
                       bundle, a static busybox as ``/bin/wget`` (healthchecks)
``bridge-nats:dev``    FROM scratch: the static ``nats-server`` of the venv and ``/bin/wget``
``bridge-engine:dev``  FROM bridge-base: ``target/release/bridge-engine``
``bridge-prometheus``  FROM bridge-base: Debian's prometheus (``.dev/tools/bin``, ``./dev setup``)
=====================  ==========================================================================

Each image's build context is staged in a temporary directory holding exactly the files its
Dockerfile copies (``docker/*.Dockerfile``, ``engine-rs/Dockerfile``), so no secret of ``.dev/``
and no build output is ever sent to the daemon. A build is skipped when the image already
carries the label :data:`INPUTS_LABEL` with the hash of its inputs (the Dockerfile, every staged
file's content, the base image's id): a warm re-run costs a hash and one ``docker image
inspect`` per image. The legacy builder is used (``DOCKER_BUILDKIT=0``): no buildx here.

busybox comes from Debian's ``busybox-static`` package, downloaded with ``apt-get download``
into ``~/.cache/bridge-dev`` and unpacked into ``.dev/tools/bin`` (as ``./dev setup`` does with
prometheus); a ``busybox`` already there, or a static one on PATH, is used as it is.

CLI: ``python -m bridge_dev.images build [NAME...]`` (all by default), ``... list``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge_dev.prometheus import prometheus_binary
from bridge_dev.server import nats_server_binary

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".dev" / "tools" / "bin"
ENGINE_BINARY = REPO / "target" / "release" / "bridge-engine"
INPUTS_LABEL = "org.execution-bridge.inputs"
BRIDGE_UID = 10001

BASE = "bridge-base:dev"
NATS = "bridge-nats:dev"
ENGINE = "bridge-engine:dev"
PROMETHEUS = "bridge-prometheus:dev"
ALL = (BASE, NATS, ENGINE, PROMETHEUS)

_PASSWD = (
    "root:x:0:0:root:/nonexistent:/sbin/nologin\n"
    f"bridge:x:{BRIDGE_UID}:{BRIDGE_UID}:bridge:/nonexistent:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
)
_GROUP = f"root:x:0:\nbridge:x:{BRIDGE_UID}:\nnogroup:x:65534:\n"
_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_LDD_PATH = re.compile(r"(/\S+)")


class ImageError(RuntimeError):
    """An image could not be built (missing input, docker build failed)."""


@dataclass(frozen=True)
class Built:
    """The outcome for one image: built now, or up to date (skipped)."""

    image: str
    built: bool
    seconds: float


def _run(cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def busybox_binary() -> Path:
    """A static busybox: ``.dev/tools/bin/busybox``, else unpacked from Debian's busybox-static."""
    local = TOOLS / "busybox"
    if local.is_file():
        return local
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        raise ImageError(f"no apt-get/dpkg-deb: put a static busybox at {local}")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bridge-dev"
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob("busybox-static_*.deb"))
    if not debs:
        got = _run(["apt-get", "download", "busybox-static"], cwd=cache)
        if got.returncode != 0 and os.getuid() == 0:
            _run(["apt-get", "update", "-qq"])  # no package lists yet: only root may fetch them
            got = _run(["apt-get", "download", "busybox-static"], cwd=cache)
        debs = sorted(cache.glob("busybox-static_*.deb"))
        if got.returncode != 0 or not debs:
            raise ImageError(f"apt-get download busybox-static failed: {got.stderr.strip()}")
    with tempfile.TemporaryDirectory() as unpacked:
        got = _run(["dpkg-deb", "-x", str(debs[-1]), unpacked])
        if got.returncode != 0:
            debs[-1].unlink()
            raise ImageError(f"{debs[-1]} was damaged and is removed: {got.stderr.strip()}")
        TOOLS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(unpacked, "bin", "busybox"), local)
    return local


def shared_libraries(*binaries: Path) -> list[Path]:
    """The files ``ldd`` names for ``binaries`` (loader included; the vDSO has no file)."""
    found: set[Path] = set()
    for binary in binaries:
        got = _run(["ldd", str(binary)])
        if got.returncode != 0:
            continue  # "not a dynamic executable"
        for line in got.stdout.splitlines():
            match = _LDD_PATH.search(line.split("=>")[-1])
            if match:
                found.add(Path(match.group(1)))
    return sorted(found)


def _link(src: Path, dest: Path) -> None:
    """Put ``src``'s content (symlinks followed) at ``dest``: a hard link, else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    real = src.resolve(strict=True)
    try:
        os.link(real, dest)
    except OSError:
        shutil.copy2(real, dest)


def _users(rootfs: Path) -> None:
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "passwd").write_text(_PASSWD, encoding="utf-8")
    (rootfs / "etc" / "group").write_text(_GROUP, encoding="utf-8")


def _stage(image: str, context: Path) -> Path:
    """Fill ``context`` with what ``image``'s Dockerfile copies; return that Dockerfile."""
    docker_dir = REPO / "docker"
    if image == BASE:
        rootfs = context / "rootfs"
        _users(rootfs)
        for lib in shared_libraries(ENGINE_BINARY, _prometheus()):
            _link(lib, rootfs / lib.relative_to("/"))
        if _CA_BUNDLE.is_file():
            _link(_CA_BUNDLE, rootfs / _CA_BUNDLE.relative_to("/"))
        _link(busybox_binary(), rootfs / "bin" / "wget")
        return docker_dir / "base.Dockerfile"
    if image == NATS:
        _users(context / "rootfs")
        _link(nats_server_binary(), context / "nats-server")
        _link(busybox_binary(), context / "wget")
        return docker_dir / "nats.Dockerfile"
    if image == ENGINE:
        if not ENGINE_BINARY.is_file():
            raise ImageError(f"{ENGINE_BINARY} missing: run ./dev setup (cargo build --release)")
        _link(ENGINE_BINARY, context / "bridge-engine")
        return REPO / "engine-rs" / "Dockerfile"
    if image == PROMETHEUS:
        _link(_prometheus(), context / "prometheus")
        return docker_dir / "prometheus.Dockerfile"
    raise ImageError(f"unknown image {image!r} (known: {', '.join(ALL)})")


def _prometheus() -> Path:
    binary = prometheus_binary()
    if binary is None:
        raise ImageError("no prometheus binary: ./dev setup unpacks one into .dev/tools/bin")
    return binary


def _image_id(image: str) -> str | None:
    got = _run(["docker", "image", "inspect", "--format", "{{.Id}}", image])
    return got.stdout.strip() if got.returncode == 0 else None


def _label(image: str) -> str | None:
    fmt = f'{{{{ index .Config.Labels "{INPUTS_LABEL}" }}}}'
    got = _run(["docker", "image", "inspect", "--format", fmt, image])
    return got.stdout.strip() if got.returncode == 0 else None


def _inputs_hash(dockerfile: Path, context: Path, parent_id: str | None) -> str:
    digest = hashlib.sha256()
    digest.update(dockerfile.read_bytes())
    digest.update((parent_id or "").encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(oct(path.stat().st_mode & 0o777).encode())
    return digest.hexdigest()


def build(image: str) -> Built:
    """Build ``image`` unless it is up to date (same inputs hash label)."""
    import time

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bridge-image-") as tmp:
        context = Path(tmp)
        dockerfile = _stage(image, context)
        parent = _image_id(BASE) if image in (ENGINE, PROMETHEUS) else None
        inputs = _inputs_hash(dockerfile, context, parent)
        if _label(image) == inputs:
            return Built(image, built=False, seconds=time.monotonic() - started)
        shutil.copy2(dockerfile, context / "Dockerfile")
        got = _run(
            ["docker", "build", "--quiet", "--label", f"{INPUTS_LABEL}={inputs}", "-t", image, "."],
            cwd=context,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        if got.returncode != 0:
            raise ImageError(f"docker build {image} failed:\n{got.stdout}{got.stderr}")
    return Built(image, built=True, seconds=time.monotonic() - started)


def build_all(images: Sequence[str] = ALL) -> list[Built]:
    """Build ``images`` in dependency order (the base first when one of them needs it)."""
    wanted = list(images)
    if any(i in (ENGINE, PROMETHEUS) for i in wanted) and BASE not in wanted:
        wanted.insert(0, BASE)
    return [build(image) for image in sorted(wanted, key=ALL.index)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge_dev.images", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="build the images whose inputs changed")
    build_cmd.add_argument("images", nargs="*", default=list(ALL), metavar="IMAGE")
    sub.add_parser("list", help="print the image names")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(ALL))
        return 0
    try:
        for result in build_all(args.images):
            state = "built" if result.built else "up to date"
            print(f"{result.image}: {state} ({result.seconds:.1f} s)")
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
