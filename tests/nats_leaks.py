"""nats-py's leftovers of a refused connection, collected where they are made.

nats-py 2.16 does not close the TLS transport of a connect or reconnect attempt that the server
refuses (no certificate, a foreign CA, an unknown NKey, a removed identity); the garbage
collector finds it later and warns (ResourceWarning), which under ``filterwarnings = error``
fails whatever test is running when the collector happens to run. tests/conftest.py collects
them after every test; a test that provokes refusals on purpose wraps them in
:func:`refused_connections`, so that a collection in the middle of the test is quiet too.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def refused_connections() -> Iterator[None]:
    """Around code whose connection attempts are refused: their transports are collected at the
    end, and a collection while it runs does not warn about them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()
