"""The ``nats ...`` and ``bridge ...`` command lines of the runbooks, as the runbook-command
test runs them.

A command is a line of a fenced ```` ```sh ```` block of ``runbooks/*.md`` whose first word is
``nats``, ``bridge`` or ``.venv/bin/bridge`` (continuation lines ending in ``\\`` joined, the
trailing ``# comment`` dropped). Other
fences (```` ``` ```` without ``sh``: log lines, sample output) hold no commands. The commands
of ``cluster.md`` run against a 3-node cluster, every other runbook's against one server with
an engine. Each runs as written, through ``bash -o pipefail``, in a directory whose ``.dev``
and ``bridge`` are the test's credentials and the repo's JetStream definitions, with the
runbooks' natscli contexts (``bridge-operator`` selected, ``bridge-system``) pointing at the
test's servers (``tls://127.0.0.1:4222``, ./dev server's URL that some commands spell out, is
replaced by the test server's). :data:`SKIPPED` names the commands not run, each with its
reason; every other command must exit 0 unless :data:`EXIT_CODES` says otherwise, and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
CLUSTER_RUNBOOK = "cluster.md"
_FENCE = re.compile(r"^\s*```(\S*)")
_COMMAND = re.compile(r"^(nats|bridge|\.venv/bin/bridge)(\s|$)")

SKIPPED: dict[str, str] = {
    "nats kv watch bridge_leases intake": "a live watch that only Ctrl-C ends",
    "nats kv watch bridge_leases 'partition.>'": "a live watch that only Ctrl-C ends",
    "nats stream edit ORDERS --config bridge/jetstream/orders.json -f": (
        "changes the stream (its --dry-run twin just before it is run)"
    ),
    "bridge status ACCOUNT CLIENT_ORDER_ID": "placeholders, not an order",
    "bridge cancel ACCOUNT CLIENT_ORDER_ID": "placeholders, not an order",
    "bridge orders cancel-all ACCOUNT": (
        "a placeholder account (the mass cancel of issue 16, item 4, cancels every open order)"
    ),
    "nats context save bridge-operator ": (
        "re-points the context every other command uses at ./dev server's port (the test "
        "writes the contexts for its own servers with bridge_dev.natscli.write_contexts)"
    ),
}
"""Start of a command -> why the test does not run it."""

EXIT_CODES: dict[str, tuple[int, str]] = {
    "nats stream edit ORDERS --config bridge/jetstream/orders.json --dry-run": (
        1,
        "--dry-run exits 1 when it shows a difference, and a provisioned ORDERS always differs "
        "from its file in Metadata ({} against nil), as orders-stream-full.md says",
    ),
    "nats kv get bridge_leases partition.3": (
        1,
        "the test's engine is not partitioned: nobody holds partition 3, and natscli exits 1 "
        "on a missing key, as partitions.md says",
    ),
}
"""Start of a command -> (its exit code, why it is not 0); every other command exits 0."""

LAST_ON_CLUSTER = ("nats --context bridge-system server raft peer-remove",)
"""Cluster commands run after all the others, against a node the test stops first (they remove
it from the cluster for good)."""


@dataclass(frozen=True)
class RunbookCommand:
    """One command line of a runbook."""

    runbook: str
    line: int
    text: str
    also: tuple[str, ...] = ()
    """Other places (``runbook:line``) of the same command line, against the same target."""

    @property
    def on_cluster(self) -> bool:
        return self.runbook == CLUSTER_RUNBOOK

    @property
    def skipped(self) -> str | None:
        """Why the test does not run this command (None: it does)."""
        return next((why for start, why in SKIPPED.items() if self.text.startswith(start)), None)

    @property
    def exit_code(self) -> int:
        """The exit code the command must end with."""
        return next((c for start, (c, _) in EXIT_CODES.items() if self.text.startswith(start)), 0)

    @property
    def last(self) -> bool:
        return self.text.startswith(LAST_ON_CLUSTER)

    @property
    def id(self) -> str:
        return ",".join([f"{self.runbook}:{self.line}", *self.also]) + f":{self.text}"


def _scan(line: str, quote: str) -> tuple[str, str]:
    """``line`` without a shell comment (a ``#`` after whitespace, outside quotes), and the
    quote still open at its end (``quote``: the one open at its start)."""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), quote
    return line.rstrip(), quote


def _logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join continuation lines (after a trailing backslash, or a quote left open) with a
    space; keep the first line's number."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    quote = ""
    for number, raw in block:
        text, quote = _scan(raw.strip(), quote)
        if pending is not None:
            number, text = pending[0], f"{pending[1]} {text}"
            pending = None
        if quote or text.endswith("\\"):
            pending = (number, text if quote else text[:-1].rstrip())
        elif text:
            out.append((number, text))
    if pending is not None:
        out.append(pending)
    return out


def commands_of(path: Path) -> list[RunbookCommand]:
    """The ``nats`` and ``bridge`` commands of one runbook, in file order."""
    found: list[RunbookCommand] = []
    block: list[tuple[int, str]] | None = None
    language = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(line)
        if fence is not None:
            if block is None:
                block, language = [], fence.group(1)
                continue
            if language == "sh":
                found += [
                    RunbookCommand(path.name, n, text)
                    for n, text in _logical_lines(block)
                    if _COMMAND.match(text)
                ]
            block = None
            continue
        if block is not None:
            block.append((number, line))
    return found


def runbook_commands() -> list[RunbookCommand]:
    """Every runbook's commands (README first, then by file name)."""
    files = sorted(RUNBOOKS.glob("*.md"), key=lambda p: (p.name != "README.md", p.name))
    return [c for path in files for c in commands_of(path)]


def distinct(commands: list[RunbookCommand]) -> list[RunbookCommand]:
    """One of each command line per target (server or cluster), in first-seen order, naming the
    other places it appears: the same line against the same server answers the same."""
    first: dict[tuple[bool, str], RunbookCommand] = {}
    for c in commands:
        key = (c.on_cluster, c.text)
        seen = first.get(key)
        first[key] = (
            c if seen is None else replace(seen, also=(*seen.also, f"{c.runbook}:{c.line}"))
        )
    return list(first.values())
