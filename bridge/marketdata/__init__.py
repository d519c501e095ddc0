"""Market data both ways: the engine's L2 books as an async iterator (``MarketDataFeed``) and
a flow-controlled input stream into the engine (``MarketInputs``).

``book`` (pure L2 book and the decoded messages), ``sync`` (pure recovery protocol),
``conflation`` (pure, bounded hand-over to a slow reader), ``events`` (what a feed yields),
``feed`` and ``feed_inputs`` (the I/O). Open them with ``BridgeClient.market_data(symbols)``
and ``BridgeClient.market_inputs()``.
"""

from bridge.marketdata.book import BookView, Level, TradePrint
from bridge.marketdata.events import BookUpdate, Conflated, Gap, MarketDataEvent, Resynced
from bridge.marketdata.feed import FeedStats, MarketDataFeed
from bridge.marketdata.feed_inputs import MarketInputs, ReferencePrice

__all__ = [
    "BookUpdate",
    "BookView",
    "Conflated",
    "FeedStats",
    "Gap",
    "Level",
    "MarketDataEvent",
    "MarketDataFeed",
    "MarketInputs",
    "ReferencePrice",
    "Resynced",
    "TradePrint",
]
