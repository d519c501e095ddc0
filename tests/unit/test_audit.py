"""The execution journal verifier's pure core (bridge.audit.verify): a clean chain verifies; a
deleted, altered, inserted, forged or unchained report is found at its stream sequence; chains
interleave independently; a trimmed start is a note, not a break."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import nkeys
import pytest
from click.testing import CliRunner
from nacl.signing import SigningKey, VerifyKey

from bridge import audit, contract
from bridge.audit import Break, StoredMessage
from bridge.cli import cli
from bridge.cli.audit import DEFAULT_ENTITLEMENTS, verify
from tests.unit.fake_transport import new_user_seed

# SHA-256(32 zero bytes || "report-1"), then SHA-256(that || "report-2"): the vector the
# engine's chain is held to (engine-rs/src/chain/tests.rs).
VECTOR = [
    (b"report-1", "c337108b2244b51c4650b943970ada8545b731ec1192b8be13e1755aff78cb27"),
    (b"report-2", "bde2d554ac2a328c6b7030929056e4df5e27d2e91240e6df9f04cab20daa154a"),
]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class Engine:
    """Writes a chain as the engine does: prev, digest, signature over the digest."""

    def __init__(self, engine_id: str, key: SigningKey | None = None) -> None:
        self.engine_id = engine_id
        self.key = key or SigningKey.generate()
        self.head = audit.GENESIS

    def report(self, seq: int, payload: bytes) -> StoredMessage:
        digest = audit.link(self.head, payload)
        headers = {
            contract.HEADER_CHAIN: self.engine_id,
            contract.HEADER_CHAIN_PREV: self.head.hex(),
            contract.HEADER_CHAIN_DIGEST: digest.hex(),
            contract.HEADER_CHAIN_SIGNATURE: _b64(self.key.sign(digest).signature),
        }
        self.head = digest
        return StoredMessage(seq, headers, payload)


def keys_of(*engines: Engine) -> dict[str, VerifyKey]:
    return {e.engine_id: e.key.verify_key for e in engines}


def chain(engine: Engine, count: int, first_seq: int = 1) -> list[StoredMessage]:
    return [engine.report(first_seq + i, f"report {i}".encode()) for i in range(count)]


def renumber(messages: Sequence[StoredMessage]) -> list[StoredMessage]:
    """As a copy of the stream would hold them: sequences 1..n."""
    return [replace(m, seq=i) for i, m in enumerate(messages, start=1)]


def test_digests_follow_the_shared_vector() -> None:
    e = Engine("e1")
    messages = [e.report(i, p) for i, (p, _) in enumerate(VECTOR, start=1)]
    assert [m.headers[contract.HEADER_CHAIN_DIGEST] for m in messages] == [d for _, d in VECTOR]
    assert messages[0].headers[contract.HEADER_CHAIN_PREV] == "0" * 64


def test_clean_chain_verifies() -> None:
    e = Engine("e1")
    result = audit.verify(chain(e, 5), keys_of(e), last_seq=5)
    assert result.ok, result.render()
    assert result.reports == 5
    assert result.render() == "OK: 5 reports in 1 chains (engine e1: seq 1..5)"
    (summary,) = result.chains
    assert summary.from_genesis
    assert summary.signed_by == ("e1",)


def test_deleted_report_is_found_at_the_next_report_of_its_chain() -> None:
    e = Engine("e1")
    messages = chain(e, 5)
    del messages[2]  # seq 3
    result = audit.verify(messages, keys_of(e), last_seq=5)
    assert result.broken is not None
    assert (result.broken.seq, result.broken.chain) == (4, "e1")
    assert result.broken.kind is Break.PREV_MISMATCH
    assert result.render().startswith("BROKEN at stream sequence 4 (chain e1): prev mismatch")


def test_deleted_last_report_is_a_missing_sequence() -> None:
    """No later report of the chain shows it: the stream's sequence gap does."""
    e = Engine("e1")
    messages = chain(e, 5)[:-1]
    result = audit.verify(messages, keys_of(e), last_seq=5)
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (5, Break.MISSING_MESSAGE)


def test_altered_report_is_found_where_it_is() -> None:
    e = Engine("e1")
    messages = chain(e, 5)
    messages[1] = replace(messages[1], payload=b"report 1, but for a larger quantity")
    result = audit.verify(messages, keys_of(e))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (2, Break.DIGEST_MISMATCH)


def test_altered_report_with_a_recomputed_digest_fails_its_signature() -> None:
    e = Engine("e1")
    messages = chain(e, 3)
    forger = Engine("e1")  # knows the rules, not the key
    forger.head = bytes.fromhex(messages[0].headers[contract.HEADER_CHAIN_DIGEST])
    messages[1] = forger.report(2, b"altered")
    result = audit.verify(messages, keys_of(e))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (2, Break.BAD_SIGNATURE)


def test_inserted_report_is_found_where_it_is() -> None:
    """A forged report linked correctly to the one before it (an insertion by someone who knows
    the rules but not the key) fails at its own sequence; unsigned, likewise."""
    e = Engine("e1")
    messages = chain(e, 4)
    forger = Engine("e1")
    forger.head = bytes.fromhex(messages[1].headers[contract.HEADER_CHAIN_DIGEST])
    forged = forger.report(0, b"a fill that never happened")
    result = audit.verify(renumber([*messages[:2], forged, *messages[2:]]), keys_of(e))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (3, Break.BAD_SIGNATURE)
    unsigned = replace(
        forged,
        headers={k: v for k, v in forged.headers.items() if k != contract.HEADER_CHAIN_SIGNATURE},
    )
    result = audit.verify(renumber([*messages[:2], unsigned, *messages[2:]]), keys_of(e))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (3, Break.MISSING_SIGNATURE)


def test_inserted_copy_of_an_earlier_report_breaks_the_chain_at_it() -> None:
    e = Engine("e1")
    messages = chain(e, 4)
    result = audit.verify(renumber([*messages[:3], messages[0], messages[3]]), keys_of(e))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (4, Break.PREV_MISMATCH)


def test_signature_by_an_unknown_key_is_refused() -> None:
    e = Engine("e1")
    other = Engine("other")
    result = audit.verify(chain(e, 2), keys_of(other))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (1, Break.BAD_SIGNATURE)
    result = audit.verify(chain(Engine("e1"), 2), {})
    assert result.broken is not None
    assert result.broken.kind is Break.UNKNOWN_ENGINE_KEY


def test_two_interleaved_chains_verify_independently() -> None:
    e1, e2 = Engine("e1"), Engine("e2")
    messages = [(e1 if i % 3 else e2).report(i, f"r{i}".encode()) for i in range(1, 13)]
    result = audit.verify(messages, keys_of(e1, e2), last_seq=12)
    assert result.ok, result.render()
    assert {(c.engine_id, c.reports) for c in result.chains} == {("e1", 8), ("e2", 4)}
    assert "engine e1: seq 1..11" in result.render()
    del messages[5]  # seq 6: e2's second report
    result = audit.verify(messages, keys_of(e1, e2))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.chain) == (9, "e2")


def test_trimmed_start_is_a_note_not_a_break() -> None:
    """Reports aged out of the stream: the first one left links to one no longer there."""
    e = Engine("e1")
    messages = chain(e, 6)[3:]
    result = audit.verify(messages, keys_of(e), last_seq=6)
    assert result.ok, result.render()
    assert result.reports == 3
    assert not result.chains[0].from_genesis
    assert any("aged out" in n for n in result.notes)


def test_reports_before_the_chain_are_skipped_after_it_they_are_a_break() -> None:
    e = Engine("e1")
    old = [StoredMessage(i, {}, b"old") for i in (1, 2)]
    messages = [*old, *chain(e, 3, first_seq=3)]
    result = audit.verify(messages, keys_of(e))
    assert result.ok, result.render()
    assert result.unchained == 2
    assert "2 reports without chain headers" in result.render()
    result = audit.verify([*messages, StoredMessage(6, {}, b"inserted")], keys_of(e))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (6, Break.UNCHAINED)


@pytest.mark.parametrize(
    ("header", "value"),
    [(contract.HEADER_CHAIN_PREV, "xyz"), (contract.HEADER_CHAIN_DIGEST, "AB" * 32)],
)
def test_malformed_headers_are_a_break(header: str, value: str) -> None:
    e = Engine("e1")
    messages = chain(e, 2)
    messages[1] = replace(messages[1], headers={**messages[1].headers, header: value})
    result = audit.verify(messages, keys_of(e))
    assert result.broken is not None
    assert (result.broken.seq, result.broken.kind) == (2, Break.MALFORMED)


def test_engine_keys_come_from_public_nkeys() -> None:
    raw = secrets.token_bytes(32)
    kp = nkeys.from_seed(bytearray(new_user_seed(raw).encode("ascii")))
    public = bytes(kp.public_key).decode("ascii")
    kp.wipe()
    e = Engine("e1", SigningKey(raw))
    result = audit.verify(chain(e, 2), audit.engine_keys([("engine", public)]))
    assert result.ok, result.render()
    assert result.chains[0].signed_by == ("engine",)


def test_cli_defaults_and_unusable_input(tmp_path: Path) -> None:
    """``bridge audit verify`` defaults to EXECUTIONS and the dev entitlements; an unreadable
    entitlements file exits 2 (could not check), before any connection."""
    defaults = {p.name: p.default for p in verify.params}
    assert defaults["stream"] == contract.EXECUTIONS_STREAM
    assert defaults["entitlements_file"] == DEFAULT_ENTITLEMENTS
    missing = tmp_path / "none.toml"
    result = CliRunner().invoke(cli, ["audit", "verify", "--entitlements", str(missing)])
    assert result.exit_code == 2
    assert "cannot read" in result.output
