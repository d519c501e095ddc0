"""Deprecated: the contract's names are in :mod:`bridge.contract` (generated from
``schemas/bridge/v1/contract.toml``). This alias stays for one version."""

import warnings as _warnings

from bridge.contract import *  # noqa: F403

_warnings.warn(
    "bridge.subjects is deprecated; import bridge.contract instead",
    DeprecationWarning,
    stacklevel=2,
)
