"""The subjects one client uses, built only from tokens that passed the contract's rules.

Every order subject carries the account as a token, so an account that is not a valid token
(``contract.ACCOUNT_PATTERN``: no dot, no wildcard, no space, no leading underscore) would
address another subject, or a wildcard. ``Subjects`` checks an account once, raising the typed
validation error (``InvalidOrderError`` naming the field) before any subject is built, and
remembers the subjects of the accounts it has seen: a lookup per operation afterwards, and the
way back from a subject the server names in a permissions violation (in lower case) to the
account it concerns.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from bridge import contract
from bridge.errors import FieldIssue, InvalidOrderError

_ACCOUNT = re.compile(contract.ACCOUNT_PATTERN)
_CLIENT_ORDER_ID = re.compile(contract.CLIENT_ORDER_ID_PATTERN)
MAX_ACCOUNTS = 4096
"""Accounts remembered at most (then the memory starts again; the check is cheap)."""


class AccountSubjects(NamedTuple):
    """The subjects of one account's order operations and reports."""

    submit: str
    cancel: str
    status: str
    queue: str
    queue_batch: str
    reports: str
    mass_cancel: str
    replace: str


def check_token(value: str, field: str, pattern: re.Pattern[str], model: str) -> None:
    """``InvalidOrderError`` naming ``field`` unless ``value`` matches ``pattern``."""
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidOrderError(
            [
                FieldIssue(
                    field=field,
                    rule="string_pattern_mismatch",
                    message=f"{value!r} does not match {pattern.pattern} (it becomes a subject "
                    "token)",
                )
            ],
            model=model,
        )


class Subjects:
    """One client's subjects, per account, built once after the account is checked."""

    def __init__(self) -> None:
        self._accounts: dict[str, AccountSubjects] = {}
        self._by_lower: dict[str, tuple[str, str]] = {}  # lower-case subject -> (subject, account)

    def of(self, account: str, model: str = "request") -> AccountSubjects:
        """The subjects of ``account``; ``InvalidOrderError`` (field ``account``) if it is not a
        valid subject token."""
        known = self._accounts.get(account)
        if known is not None:
            return known
        check_token(account, "account", _ACCOUNT, model)
        if len(self._accounts) >= MAX_ACCOUNTS:
            self._accounts.clear()
            self._by_lower.clear()
        made = AccountSubjects(
            submit=contract.submit(account),
            cancel=contract.cancel(account),
            status=contract.status(account),
            queue=contract.queue(account),
            queue_batch=contract.queue_batch(account),
            reports=contract.executions_for_account(account),
            mass_cancel=contract.mass_cancel(account),
            replace=contract.replace(account),
        )
        self._accounts[account] = made
        for subject in made:
            self._by_lower[subject.lower()] = (subject, account)
        return made

    def reports(self, account: str, client_order_id: str | None) -> str:
        """The report subject of ``account``, or of one of its orders."""
        subjects = self.of(account, model="reports")
        if client_order_id is None:
            return subjects.reports
        check_token(client_order_id, "client_order_id", _CLIENT_ORDER_ID, "reports")
        return contract.executions(account, client_order_id)

    def attribute(self, subject: str) -> tuple[str, str | None]:
        """The subject as this client spelled it, and its account, from the (lower-case)
        subject a server error names; the subject as given and None when it is not one of
        ours. A subject under one of ours (an order's reports) or naming one of ours (a
        JetStream consumer filter) counts."""
        lower = subject.lower()
        exact = self._by_lower.get(lower)
        if exact is not None:
            return exact
        for known, (_, account) in self._by_lower.items():
            if lower.endswith("." + known) or (known.endswith(">") and known[:-1] in lower):
                return subject, account
        return subject, None
