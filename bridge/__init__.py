"""Execution bridge: what a Python trading orchestrator imports to reach the Rust engine.

See README.md for the subjects, streams and roles; ``bridge.errors`` for the exception tree.
"""

import importlib.metadata as _metadata
import typing as _typing
import warnings as _warnings

from bridge._mass_cancel import MassCancelResult
from bridge.client import BridgeClient, ConnectionEvent, ConnectionState, Readiness
from bridge.config import BridgeSettings
from bridge.errors import (
    BackpressureError,
    BridgeError,
    ClientClosedError,
    ConfigurationError,
    ConnectionFailedError,
    EngineUnavailableError,
    FieldIssue,
    InvalidOrderError,
    MarketDataError,
    MassCancelIncompleteError,
    NoCreditError,
    OrderRejectedError,
    OutcomeUnknownError,
    PartialBatchError,
    ProtocolError,
    PublishError,
    ReportsLostError,
    SecurityViolationError,
    SessionError,
    StreamFullError,
    UnsupportedOperationError,
)
from bridge.marketdata import (
    BookUpdate,
    BookView,
    Conflated,
    FeedStats,
    Gap,
    Level,
    MarketDataFeed,
    MarketInputs,
    ReferencePrice,
    Resynced,
    TradePrint,
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
from bridge.outbox import OrderOutbox, PendingOrder
from bridge.replace import Replace
from bridge.reports import ReportStream
from bridge.session import Session, SessionInfo, SessionOptions

try:
    __version__ = _metadata.version("nats-execution-bridge")
    """The installed distribution's version: pyproject.toml's ``version`` is the one source."""
except _metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AckStatus",
    "BackpressureError",
    "BookUpdate",
    "BookView",
    "BridgeClient",
    "BridgeError",
    "BridgeSettings",
    "ClientClosedError",
    "ConfigurationError",
    "Conflated",
    "ConnectionEvent",
    "ConnectionFailedError",
    "ConnectionState",
    "EngineUnavailableError",
    "ExecType",
    "ExecutionReport",
    "FeedStats",
    "FieldError",
    "FieldIssue",
    "Gap",
    "InvalidOrderError",
    "Level",
    "MarketDataError",
    "MarketDataFeed",
    "MarketInputs",
    "MassCancelIncompleteError",
    "MassCancelResult",
    "NoCreditError",
    "Order",
    "OrderAck",
    "OrderOutbox",
    "OrderRejectedError",
    "OrderState",
    "OrderStatus",
    "OrderType",
    "OutcomeUnknownError",
    "PartialBatchError",
    "PendingOrder",
    "ProtocolError",
    "PublishError",
    "QueuedOrder",
    "Readiness",
    "ReferencePrice",
    "RejectReason",
    "Replace",
    "ReportStream",
    "ReportsLostError",
    "Resynced",
    "SecurityViolationError",
    "Session",
    "SessionError",
    "SessionInfo",
    "SessionOptions",
    "Side",
    "StreamFullError",
    "TimeInForce",
    "TradePrint",
    "UnsupportedOperationError",
]


def __getattr__(name: str) -> _typing.Any:
    """``bridge.OrderJournal``: deprecated alias of ``OrderOutbox`` (warns; see bridge.journal)."""
    if name == "OrderJournal":
        from bridge import journal

        _warnings.warn(journal.RENAMED, DeprecationWarning, stacklevel=2)
        return OrderOutbox
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
