"""The bridge's own order paths, measured through its public API (``BridgeClient``).

* synchronous: ``submit`` -> ack and -> first fill, one order at a time on an idle engine, and
  ``submit`` back to back (the Python/engine CPU cost per order is taken there); signing on vs
  off (its cost per order and on the ack latency, ABBA in the same run);
* synchronous with 16 concurrent submitters (``sync_concurrent``): ack latency and orders/s;
* queued: ``enqueue_batch`` publish throughput, raw nats-py publishing of the very messages it
  sent (``publish_replay``), the engine's drain rate of a pre-queued backlog, and, with the
  engine running and the report sink (``bench.report_sink``) receiving: the demo's burst and
  one publisher's end-to-end drain (``e2e``), and order -> final report latency under an
  open-loop offered load, measured from each order's *intended* send time so that a slow
  system cannot hide its queueing (no coordinated omission).

Every order is a 1-share MARKET IOC order of symbol BENCH (``bench/engine.toml`` seeds ample
liquidity), so each is acknowledged, filled once and final (reports NEW, TRADE/FILLED).

One module per scenario: ``sync`` (isolated, back to back, client codec cost), ``signing``,
``diag`` (raw
requests to the engine), ``publish`` ((b) raw publish and ``enqueue_batch``), ``drain``,
``open_loop``, ``engine_core``, ``market_data`` (the feed vs a raw subscription) and
``config_apply`` (a config write -> applied on each side vs a raw KV watch); ``common``
holds the orders, settings and engine they share.
"""

from bench.bridge_paths.common import Engine, order_payload
from bench.bridge_paths.config_apply import config_apply
from bench.bridge_paths.diag import raw_request_to_engine
from bench.bridge_paths.drain import drain, prequeue
from bench.bridge_paths.e2e import burst, drain_e2e
from bench.bridge_paths.engine_core import engine_core
from bench.bridge_paths.market_data import latency as market_data_latency
from bench.bridge_paths.market_data import throughput as market_data_throughput
from bench.bridge_paths.open_loop import open_loop
from bench.bridge_paths.publish import enqueue_throughput, publish_raw
from bench.bridge_paths.publish_replay import publish_replay, record_enqueue
from bench.bridge_paths.signing import LEGS as SIGNING_LEGS
from bench.bridge_paths.signing import engine_env as signing_engine_env
from bench.bridge_paths.signing import signing_leg, signing_rows
from bench.bridge_paths.sync import client_codec_us, sync_back_to_back, sync_isolated
from bench.bridge_paths.sync_concurrent import sync_concurrent

__all__ = [
    "SIGNING_LEGS",
    "Engine",
    "burst",
    "client_codec_us",
    "config_apply",
    "drain",
    "drain_e2e",
    "engine_core",
    "enqueue_throughput",
    "market_data_latency",
    "market_data_throughput",
    "open_loop",
    "order_payload",
    "prequeue",
    "publish_raw",
    "publish_replay",
    "raw_request_to_engine",
    "record_enqueue",
    "signing_engine_env",
    "signing_leg",
    "signing_rows",
    "sync_back_to_back",
    "sync_concurrent",
    "sync_isolated",
]
