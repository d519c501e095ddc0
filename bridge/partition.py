"""The symbol -> partition function of the contract (``PARTITIONS`` in contract.toml).

A symbol's partition is FNV-1a 32-bit over its UTF-8 bytes, modulo ``contract.PARTITIONS``: the
function nats-server's subject mapping ``{{partition(8,1)}}`` applies to a one-token subject
(nats-io/nats-server, server/subject_transform.go, ``getHashPartition``: ``fnv.New32a()`` over
the token, then ``h.Sum32() % uint32(numBuckets)``), so a server mapping and the bridge agree on
where a symbol goes. ``engine-rs/src/partition.rs`` is the engine's copy; both are held to the
vectors in ``schemas/testdata/partitions.json``. Pure: no I/O.
"""

from __future__ import annotations

from bridge import contract

FNV1A_32_OFFSET_BASIS = 0x811C9DC5
FNV1A_32_PRIME = 0x01000193
_U32 = 0xFFFFFFFF


def fnv1a_32(data: bytes) -> int:
    """FNV-1a 32-bit of ``data``: per byte, xor it in, then multiply by the prime mod 2**32."""
    h = FNV1A_32_OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * FNV1A_32_PRIME) & _U32
    return h


def partition_of(symbol: str) -> int:
    """The partition (0 .. PARTITIONS - 1) that owns ``symbol``."""
    return fnv1a_32(symbol.encode("utf-8")) % contract.PARTITIONS


def partition_id(partition: int) -> str:
    """The engine id of ``partition`` (``contract.partition_engine_id``), e.g. ``p3``: it owns
    the partition's journal and records. ValueError outside 0 .. PARTITIONS - 1."""
    if not 0 <= partition < contract.PARTITIONS:
        raise ValueError(f"partition {partition} is not in 0..{contract.PARTITIONS - 1}")
    return contract.partition_engine_id(str(partition))
