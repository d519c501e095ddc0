"""Transitional re-export of :mod:`bridge.contract` (generated from
``schemas/bridge/v1/contract.toml``); callers move to ``bridge.contract`` directly."""

from bridge.contract import *  # noqa: F403
