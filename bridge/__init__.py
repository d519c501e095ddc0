"""Execution bridge: what a Python trading orchestrator imports to reach the Rust engine.

See README.md for the subjects, streams and roles; ``bridge.errors`` for the exception tree.
"""

from bridge.client import BridgeClient, ReportStream
from bridge.config import BridgeSettings
from bridge.errors import (
    BridgeError,
    ClientClosedError,
    ConnectionFailedError,
    EngineUnavailableError,
    FieldIssue,
    InvalidOrderError,
    OutcomeUnknownError,
    ProtocolError,
    PublishError,
    StreamFullError,
)
from bridge.models import (
    AckStatus,
    ExecType,
    ExecutionReport,
    FieldError,
    Order,
    OrderAck,
    OrderState,
    OrderStatus,
    OrderType,
    QueuedOrder,
    RejectReason,
    Side,
    TimeInForce,
)

__all__ = [
    "AckStatus",
    "BridgeClient",
    "BridgeError",
    "BridgeSettings",
    "ClientClosedError",
    "ConnectionFailedError",
    "EngineUnavailableError",
    "ExecType",
    "ExecutionReport",
    "FieldError",
    "FieldIssue",
    "InvalidOrderError",
    "Order",
    "OrderAck",
    "OrderState",
    "OrderStatus",
    "OrderType",
    "OutcomeUnknownError",
    "ProtocolError",
    "PublishError",
    "QueuedOrder",
    "RejectReason",
    "ReportStream",
    "Side",
    "StreamFullError",
    "TimeInForce",
]
