"""Deprecated: the contract's names are in :mod:`bridge.contract` (generated from
``schemas/bridge/v1/contract.toml``). This alias stays for one version.

Its old ``SUBMIT``, ``CANCEL`` and ``STATUS`` were single subjects; order subjects now carry the
account (``contract.submit(account)``, ...). The old names resolve, with a warning naming the
replacement, to the wildcards every engine serves (``contract.SUBMIT_ALL``, ...): right for a
subscriber, and a publisher is told to use the per-account function.
"""

import warnings as _warnings
from typing import Any as _Any

from bridge import contract as _contract
from bridge.contract import *  # noqa: F403

_warnings.warn(
    "bridge.subjects is deprecated; import bridge.contract instead",
    DeprecationWarning,
    stacklevel=2,
)

_PER_ACCOUNT = {
    "SUBMIT": ("SUBMIT_ALL", "submit"),
    "CANCEL": ("CANCEL_ALL", "cancel"),
    "STATUS": ("STATUS_ALL", "status"),
}


def __getattr__(name: str) -> _Any:
    """``SUBMIT`` / ``CANCEL`` / ``STATUS``: the old single subjects, now one per account."""
    if name in _PER_ACCOUNT:
        wildcard, function = _PER_ACCOUNT[name]
        _warnings.warn(
            f"bridge.subjects.{name} is gone: order subjects carry the account; send to "
            f"bridge.contract.{function}(account), serve bridge.contract.{wildcard} (which "
            "this name now means)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_contract, wildcard)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
