"""Generate the Python protobuf modules (bridge/v1/*_pb2.py + .pyi) from schemas/.

The .proto files are the single source of truth; the generated modules are committed so the
package installs without a compiler, and tests/unit/test_generated_code.py fails when they are
stale. Usage: ``python scripts/gen_proto.py [--out DIR] [--schemas DIR]`` (default: the
repository root, from schemas/).

A released contract's frozen copy is generated the same way:
``python scripts/gen_proto.py --schemas schemas/released/v1.0 --out
schemas/released/v1.0/python`` (tests/unit/test_released_contract.py checks it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"


def proto_files(schemas: Path = SCHEMAS) -> list[Path]:
    """Every .proto file of the contract (under ``schemas``), in a stable order."""
    return sorted(schemas.glob("bridge/**/*.proto"))


def generate(out: Path, schemas: Path = SCHEMAS) -> None:
    """Compile every .proto of ``schemas`` into ``out`` (which mirrors the package layout:
    out/bridge/v1)."""
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{schemas}",
        f"--python_out={out}",
        f"--plugin=protoc-gen-mypy={Path(sys.executable).parent / 'protoc-gen-mypy'}",
        f"--mypy_out={out}",
        *(str(p.relative_to(schemas)) for p in proto_files(schemas)),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO)
    parser.add_argument("--schemas", type=Path, default=SCHEMAS)
    ns = parser.parse_args()
    schemas = ns.schemas.resolve()
    generate(ns.out, schemas)
    print(f"generated {len(proto_files(schemas))} schema(s) into {ns.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
