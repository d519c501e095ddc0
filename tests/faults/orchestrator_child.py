"""A stand-in orchestrator process for tests/faults/test_client_restart.py.

``python -m tests.faults.orchestrator_child JOURNAL ACCOUNT COUNT`` records COUNT orders in
the outbox, then queues them in batches of 50, printing ``acked N`` after each batch (the
parent kills it with SIGKILL mid-run). With ``--stepped`` it reads one line on stdin before
each batch (the parent paces it, so that it cannot run ahead of the kill). With ``--resume``
it re-sends whatever the outbox has no outcome for and prints ``SUMMARY {json}``. Settings
come from ``BRIDGE_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bridge import BridgeClient, BridgeSettings, OrderOutbox
from tests.faults.harness import order_flow

BATCH = 50


async def main(outbox_path: str, account: str, count: int, resume: bool, stepped: bool) -> None:
    with OrderOutbox(outbox_path) as outbox:
        async with BridgeClient(BridgeSettings(), outbox=outbox) as bridge:
            if resume:
                pending = len(outbox.pending())
                acks, queued = await bridge.resubmit_pending()
                summary = {
                    "pending": pending,
                    "resubmitted": len(acks) + len(queued),
                    "jetstream_duplicates": sum(q.duplicate for q in queued),
                }
                print("SUMMARY", json.dumps(summary), flush=True)
                return
            orders = order_flow(account, count, seed=13)
            outbox.record(orders, route="queue")
            for start in range(0, count, BATCH):
                if stepped and not await asyncio.to_thread(sys.stdin.readline):
                    return  # the parent closed stdin
                await bridge.enqueue_batch(orders[start : start + BATCH])
                print(f"acked {start + BATCH}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("outbox")
    parser.add_argument("account")
    parser.add_argument("count", type=int)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stepped", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.outbox, args.account, args.count, args.resume, args.stepped))
