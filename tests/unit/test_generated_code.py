"""The committed Python protobuf modules (bridge/v1/*_pb2.py, .pyi) match the .proto files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "bridge" / "v1"
FIX = "the generated code is stale: run `python scripts/gen_proto.py` and commit the result"


def _load_gen_proto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_gen_proto", REPO / "scripts" / "gen_proto.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _generated_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("*_pb2.py*")) if p.is_file()}


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    """Regenerating from schemas/ yields byte-identical bridge/v1 *_pb2.py and *_pb2.pyi files."""
    _load_gen_proto().generate(tmp_path)
    fresh = _generated_files(tmp_path / "bridge" / "v1")
    committed = _generated_files(COMMITTED)
    assert fresh, f"gen_proto.generate() produced nothing in {tmp_path}"

    missing = sorted(set(fresh) - set(committed))
    assert not missing, f"not committed: {missing}; {FIX}"
    orphaned = sorted(set(committed) - set(fresh))
    assert not orphaned, f"committed but no longer generated: {orphaned}; {FIX}"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert not stale, f"differs from a fresh generation: {stale}; {FIX}"
