"""A stand-in orchestrator process for tests/faults/test_client_restart.py.

``python -m tests.faults.orchestrator_child JOURNAL ACCOUNT COUNT`` records COUNT orders in
the journal, then queues them in batches of 50, printing ``acked N`` after each batch (the
parent kills it with SIGKILL mid-run). With ``--resume`` it re-sends whatever the journal has
no outcome for and prints ``SUMMARY {json}``. Settings come from ``BRIDGE_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from bridge import BridgeClient, BridgeSettings, OrderJournal
from tests.faults.harness import order_flow

BATCH = 50


async def main(journal_path: str, account: str, count: int, resume: bool) -> None:
    with OrderJournal(journal_path) as journal:
        async with BridgeClient(BridgeSettings(), journal=journal) as bridge:
            if resume:
                pending = len(journal.pending())
                acks, queued = await bridge.resubmit_pending()
                summary = {
                    "pending": pending,
                    "resubmitted": len(acks) + len(queued),
                    "jetstream_duplicates": sum(q.duplicate for q in queued),
                }
                print("SUMMARY", json.dumps(summary), flush=True)
                return
            orders = order_flow(account, count, seed=13)
            journal.record(orders, route="queue")
            for start in range(0, count, BATCH):
                await bridge.enqueue_batch(orders[start : start + BATCH])
                print(f"acked {start + BATCH}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("journal")
    parser.add_argument("account")
    parser.add_argument("count", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.journal, args.account, args.count, args.resume))
