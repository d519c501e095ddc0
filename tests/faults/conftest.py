"""Fixtures of the fault-injection tests: a 3-node cluster with every stream, the consumer and
the buckets provisioned at three replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge_dev.cluster import LocalNatsCluster
from bridge_dev.pki import DevCredentials
from bridge_dev.provision import provision
from bridge_dev.server import connect_as


async def _provision_r3(cluster: LocalNatsCluster) -> list[str]:
    nc = await connect_as(cluster.handle.url, cluster.creds, "operator")
    try:
        return await provision(nc, replicas=3)
    finally:
        await nc.close()


@pytest.fixture
def cluster(dev_creds: DevCredentials) -> Iterator[LocalNatsCluster]:
    with LocalNatsCluster(dev_creds) as c:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, _provision_r3(c)).result(timeout=60)
        yield c
