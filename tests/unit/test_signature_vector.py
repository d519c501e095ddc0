"""The cross-language signature vector (schemas/testdata/signature.json, written by
scripts/gen_signature_vector.py with the Python signer): it verifies, and tampered with it does
not. The engine's auth tests verify the same file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge import contract
from bridge.security.signing import SignatureError, verify

VECTOR = Path(__file__).resolve().parents[2] / "schemas" / "testdata" / "signature.json"


def _load() -> tuple[str, bytes, dict[str, str]]:
    data = json.loads(VECTOR.read_text("utf-8"))
    headers = {
        contract.HEADER_SIGNER: data["public_key"],
        contract.HEADER_SIGNED_AT: data["signed_at"],
        contract.HEADER_SIGNATURE: data["signature"],
    }
    return data["subject"], bytes.fromhex(data["payload_hex"]), headers


def test_vector_verifies_and_holds_no_seed() -> None:
    subject, payload, headers = _load()
    assert verify(subject, payload, headers) == headers[contract.HEADER_SIGNER]
    assert set(json.loads(VECTOR.read_text("utf-8"))) == {
        "public_key",
        "subject",
        "signed_at",
        "payload_hex",
        "signature",
    }


def test_tampered_vector_is_refused() -> None:
    subject, payload, headers = _load()
    with pytest.raises(SignatureError):
        verify(subject, payload[:-1] + bytes([payload[-1] ^ 1]), headers)
    with pytest.raises(SignatureError):
        verify(contract.queue("DESK-B"), payload, headers)
