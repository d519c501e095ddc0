"""Generate the Python protobuf modules (bridge/v1/*_pb2.py + .pyi) from schemas/.

The .proto files are the single source of truth; the generated modules are committed so the
package installs without a compiler, and tests/unit/test_generated_code.py fails when they are
stale. Usage: ``python scripts/gen_proto.py [--out DIR]`` (default: the repository root).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"


def proto_files() -> list[Path]:
    """Every .proto file of the contract, in a stable order."""
    return sorted(SCHEMAS.glob("bridge/**/*.proto"))


def generate(out: Path) -> None:
    """Compile every .proto into ``out`` (which mirrors the package layout: out/bridge/v1)."""
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{SCHEMAS}",
        f"--python_out={out}",
        f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
        f"--mypy_out={out}",
        *(str(p.relative_to(SCHEMAS)) for p in proto_files()),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO)
    ns = parser.parse_args()
    generate(ns.out)
    print(f"generated {len(proto_files())} schema(s) into {ns.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
