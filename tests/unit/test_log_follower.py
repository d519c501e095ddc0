"""Following a growing log file: from its end, partial lines, truncation, rotation, bounds."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bridge.security.log_follower import LogFollower, follow


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


def test_starts_at_the_end(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("old 1\nold 2\n")
    with LogFollower(log) as f:
        assert f.poll() == []
        _append(log, "new 1\nnew 2\n")
        assert f.poll() == ["new 1", "new 2"]
        assert f.poll() == []


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("")
    with LogFollower(log) as f:
        _append(log, "[ERR] half")
        assert f.poll() == []
        _append(log, " and the rest\nnext\n")
        assert f.poll() == ["[ERR] half and the rest", "next"]


def test_truncation_reads_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("a long history line\n" * 10)
    with LogFollower(log) as f:
        log.write_text("")  # copytruncate
        _append(log, "after\n")
        assert f.poll() == ["after"]
        assert f.reopened == 1


def test_rotation_drains_the_old_file_then_the_new(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("history\n")
    with LogFollower(log) as f:
        _append(log, "before rotation\n")
        os.rename(log, tmp_path / "nats.log.1")
        _append(tmp_path / "nats.log.1", "late write to the old file\n")
        assert f.poll() == ["before rotation", "late write to the old file"]
        log.write_text("first of the new file\n")
        assert f.poll() == ["first of the new file"]
        assert f.reopened == 1


def test_file_created_later_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    with LogFollower(log) as f:
        assert f.poll() == []
        log.write_text("one\n")
        assert f.poll() == ["one"]


def test_reads_are_bounded(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("")
    with LogFollower(log, max_read_bytes=10, max_line_bytes=100) as f:
        _append(log, "12345\n" * 5)  # 30 bytes
        assert f.poll() == ["12345"]  # 10 bytes read: one line and a partial one
        assert f.poll() == ["12345", "12345"]
        assert f.poll() == ["12345", "12345"]
        assert f.poll() == []


def test_overlong_lines_are_dropped(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("")
    with LogFollower(log, max_read_bytes=1 << 20, max_line_bytes=16) as f:
        _append(log, "short\n" + "x" * 40 + "\nafter\n")
        assert f.poll() == ["short", "after"]
        _append(log, "y" * 10)
        assert f.poll() == []
        _append(log, "y" * 10)  # now longer than 16 without a newline: dropped as it comes
        assert f.poll() == []
        _append(log, "yyy\nok\n")
        assert f.poll() == ["ok"]
        assert f.overlong == 2


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("")
    with LogFollower(log) as f:
        with log.open("ab") as fh:
            fh.write(b"bad \xff byte\n")
        assert f.poll() == ["bad \ufffd byte"]


def test_bounds_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="positive"):
        LogFollower(tmp_path / "x", max_read_bytes=0)


async def test_follow_yields_batches_until_stopped(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text("old\n")
    stop = asyncio.Event()
    follower = LogFollower(log)
    follower.start()
    got: list[str] = []

    async def reader() -> None:
        async for lines in follow(follower, poll_interval=0.01, stop=stop):
            got.extend(lines)
            if "two" in got:
                stop.set()

    task = asyncio.create_task(reader())
    _append(log, "one\ntwo\n")
    await asyncio.wait_for(task, 5)
    follower.close()
    assert got == ["one", "two"]
