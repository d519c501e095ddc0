"""The raw replay row's helpers (``bench.bridge_paths.publish_replay``): which published
messages are recorded (the ORDERS stream's subjects, whatever the client packs), and the fresh
``Nats-Msg-Id`` each replayed message gets (unique, as long as the original)."""

from __future__ import annotations

import pytest

# bench/ needs the dev extra (psutil, hdrhistogram); the minimum-versions check runs the unit
# tests with the package's own dependencies only.
pytest.importorskip("psutil")

from bench.bridge_paths.publish_replay import (
    Message,
    Recording,
    _fresh_id,
    _renamed,
    subject_matches,
)
from bridge import contract


def test_subject_matching_follows_nats_wildcards() -> None:
    queue = contract.queue("ACC1")
    assert subject_matches(contract.QUEUE_ALL, queue)
    assert subject_matches(contract.QUEUE_ALL, queue + ".more")
    assert not subject_matches(contract.QUEUE_ALL, contract.QUEUE_PREFIX.rstrip("."))
    assert subject_matches(contract.SUBMIT_ALL, contract.submit("ACC1"))
    assert not subject_matches(contract.SUBMIT_ALL, contract.submit("ACC1") + ".x")
    assert not subject_matches(contract.SUBMIT_ALL, queue)
    assert subject_matches(queue, queue)
    assert not subject_matches(queue, contract.queue("ACC2"))


def test_replayed_messages_get_fresh_ids_of_the_same_length() -> None:
    old = [f"run0c-{i:07d}" for i in range(3)]
    recording = Recording(
        3,
        [
            Message(contract.queue("Q"), b"x", {contract.HEADER_MSG_ID: m, "other": "kept"})
            for m in old
        ],
    )
    renamed = _renamed(recording, "run12")
    ids = [m.headers[contract.HEADER_MSG_ID] for m in renamed]
    assert len(set(ids)) == 3
    assert not set(ids) & set(old)
    assert [len(i) for i in ids] == [len(o) for o in old]
    assert all(m.headers["other"] == "kept" and m.data == b"x" for m in renamed)
    assert _fresh_id("ab", "longtag", 7) == "longtag-7"  # longer than the original: still unique


def test_an_atomic_batch_keeps_one_fresh_batch_id() -> None:
    def msg(batch: str, seq: int) -> Message:
        headers = {contract.HEADER_BATCH_ID: batch, contract.HEADER_BATCH_SEQUENCE: str(seq)}
        return Message(contract.queue("Q"), b"x", headers)

    recording = Recording(4, [msg("batch-a", 1), msg("batch-a", 2), msg("batch-b", 1)])
    ids = [m.headers[contract.HEADER_BATCH_ID] for m in _renamed(recording, "t1")]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2]}) == 2
    assert not {"batch-a", "batch-b"} & set(ids)
    assert [m.headers[contract.HEADER_BATCH_SEQUENCE] for m in _renamed(recording, "t1")] == [
        "1",
        "2",
        "1",
    ]
