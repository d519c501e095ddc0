"""The breaking-change gate bites (issue 16, item 1).

Each test copies what the gate reads (``buf.yaml``, ``schemas/``, ``engine-rs/proto/``) into a
temporary directory, changes it, and runs the very command ``./dev test`` runs
(``python -m bridge_dev.contract_gate``, pointed at the copy with ``--root``): a renumbered or
retyped field fails it with buf's message naming the field; the unmodified copy and a
compatible change pass. The committed release images are what their frozen files build.

These need the buf binary (the dev extra's buf-bin), so they are not in tests/unit, which the
minimum-versions check runs with the test extra only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bridge_dev import contract_gate

REPO = Path(__file__).resolve().parents[2]
ORDERS = Path("schemas/bridge/v1/orders.proto")
STATE = Path("engine-rs/proto/engine/v1/state.proto")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """What the gate reads, copied: the configuration, the contract, the engine state."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copyfile(REPO / "buf.yaml", root / "buf.yaml")
    shutil.copytree(REPO / "schemas", root / "schemas")
    shutil.copytree(REPO / "engine-rs" / "proto", root / "engine-rs" / "proto")
    return root


def _gate(root: Path) -> subprocess.CompletedProcess[str]:
    """The gate as ./dev test runs it, on ``root``."""
    return subprocess.run(
        [sys.executable, "-m", "bridge_dev.contract_gate", "check", "--root", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert text.count(old) == 1, f"{old!r} not found exactly once in {path}"
    path.write_text(text.replace(old, new), "utf-8")


def test_the_unmodified_schemas_pass(copy: Path) -> None:
    proc = _gate(copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "buf lint: ok" in proc.stdout
    assert "buf breaking schemas --against schemas/released/v1.0/image.binpb: ok" in proc.stdout


def test_a_renumbered_field_fails(copy: Path) -> None:
    _edit(copy / ORDERS, "  string symbol = 3;", "  string symbol = 13;")
    proc = _gate(copy)
    assert proc.returncode != 0
    assert (
        'Previously present field "3" with name "symbol" on message "NewOrder" was deleted '
        'without reserving the number "3".'
    ) in proc.stdout


def test_a_retyped_field_fails(copy: Path) -> None:
    _edit(copy / ORDERS, "  int64 created_at_unix_ns = 9;", "  string created_at_unix_ns = 9;")
    proc = _gate(copy)
    assert proc.returncode != 0
    assert (
        'Field "9" with name "created_at_unix_ns" on message "NewOrder" changed type from '
        '"int64" to "string".'
    ) in proc.stdout


def test_a_renamed_field_fails(copy: Path) -> None:
    """Same number and type, so the bytes are unchanged; the generated code is not (FILE)."""
    _edit(
        copy / ORDERS,
        "  string account = 2;\n  // Instrument",
        "  string acct = 2;\n  // Instrument",
    )
    proc = _gate(copy)
    assert proc.returncode != 0
    assert 'Field "2" on message "NewOrder" changed name from "account" to "acct".' in proc.stdout


def test_a_field_removed_with_its_number_and_name_reserved_passes(copy: Path) -> None:
    _edit(copy / ORDERS, "  string text = 11;\n", '  reserved 11;\n  reserved "text";\n')
    proc = _gate(copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_added_field_passes(copy: Path) -> None:
    _edit(
        copy / ORDERS,
        "  string session_id = 12;\n",
        "  string session_id = 12;\n  uint32 x = 13;\n",
    )
    proc = _gate(copy)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_renumbered_field_of_the_engine_state_fails(copy: Path) -> None:
    """The engine reads the records an older engine stored: its state stays WIRE compatible."""
    _edit(copy / STATE, "  string engine_order_id = 2;", "  string engine_order_id = 20;")
    proc = _gate(copy)
    assert proc.returncode != 0
    assert 'with name "engine_order_id" on message "OrderRecord" was deleted' in proc.stdout


def test_a_message_without_a_comment_fails_lint(copy: Path) -> None:
    _edit(copy / ORDERS, "// Request to cancel a resting order (FIX OrderCancelRequest).\n", "")
    proc = _gate(copy)
    assert proc.returncode != 0
    assert 'Message "CancelRequest" should have a non-empty comment' in proc.stdout


@pytest.mark.parametrize("release", contract_gate.releases(), ids=lambda r: r.version)
def test_committed_images_are_built_from_the_frozen_files(
    release: contract_gate.Release, tmp_path: Path
) -> None:
    contract, engine = contract_gate.build_images(release, tmp_path)
    fix = "stale: run `python -m bridge_dev.contract_gate image` and commit the result"
    assert contract.read_bytes() == release.contract_image.read_bytes(), fix
    assert engine.read_bytes() == release.engine_image.read_bytes(), fix
