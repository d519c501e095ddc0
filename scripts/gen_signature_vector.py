"""Write the cross-language signature vector schemas/testdata/signature.json.

One queued order signed by the Python signer (``bridge.security.signing.Signer``) with a key
made for the occasion and thrown away: the file holds the public key, subject, signed_at, the
payload (hex) and the signature, never the seed. The engine (engine-rs ``auth`` tests) must
verify it and refuse it tampered with; ``tests/unit/test_signature_vector.py`` checks it with
``bridge.security.signing.verify``. Regenerating gives a new key and signature, which is fine:
both sides only verify. Usage: ``python scripts/gen_signature_vector.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from pathlib import Path

import nkeys

from bridge import contract
from bridge.security.signing import Signer
from bridge.v1 import common_pb2, orders_pb2

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "schemas" / "testdata" / "signature.json"
SIGNED_AT_NS = 1_700_000_000_000_000_000


def vector() -> dict[str, str]:
    """A freshly signed order, without the seed."""
    order = orders_pb2.NewOrder(
        client_order_id="ord-0001",
        account="DESK-A",
        symbol="ACME",
        side=orders_pb2.SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_MARKET,
        quantity=common_pb2.Decimal(units=3, scale=0),
        time_in_force=orders_pb2.TIME_IN_FORCE_IOC,
    )
    payload = order.SerializeToString(deterministic=True)
    subject = contract.queue(order.account)
    seed = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    headers = Signer(seed).headers(subject, payload, now_ns=SIGNED_AT_NS)
    return {
        "public_key": headers[contract.HEADER_SIGNER],
        "subject": subject,
        "signed_at": headers[contract.HEADER_SIGNED_AT],
        "payload_hex": payload.hex(),
        "signature": headers[contract.HEADER_SIGNATURE],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(vector(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
