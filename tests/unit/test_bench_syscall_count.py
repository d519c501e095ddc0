"""``bench.syscall_count.parse_summary``: the calls column of ``strace -c`` output, with and
without an errors column, and 0 for a syscall strace never saw."""

from __future__ import annotations

import pytest

# bench/ needs the dev extra (psutil); the minimum-versions check runs the unit tests with the
# package's own dependencies only.
pytest.importorskip("psutil")

from bench.syscall_count import parse_summary

SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 97.10    1.925518         227      8450           fsync
  2.90    0.057491          28      2003        12 fdatasync
------ ----------- ----------- --------- --------- ----------------
100.00    1.983009         189     10453        12 total
"""


def test_counts_come_from_the_calls_column() -> None:
    assert parse_summary(SUMMARY) == {"fsync": 8450, "fdatasync": 2003}


def test_a_syscall_never_made_counts_zero() -> None:
    only_fsync = "\n".join(line for line in SUMMARY.splitlines() if "fdatasync" not in line)
    assert parse_summary(only_fsync) == {"fsync": 8450, "fdatasync": 0}
    assert parse_summary("") == {"fsync": 0, "fdatasync": 0}
