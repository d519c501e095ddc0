"""Order signing: the orchestrator signs every order operation with its NKey (Ed25519).

The signed bytes are ``SIGNING_DOMAIN \\n subject \\n signed_at \\n payload``: the exact bytes
sent, bound to the subject they were sent to (so an order for one account cannot be replayed to
another) and to a time (so the engine can refuse old ones and remember recent ones as replays).
Three headers carry it: ``Bridge-Signer`` (public NKey), ``Bridge-Signed-At`` (Unix ns,
decimal) and ``Bridge-Signature`` (base64url without padding). The engine verifies before
anything else (engine-rs ``auth``).
"""

from __future__ import annotations

import base64
import binascii
import time

import nkeys
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from bridge import contract


class SignatureError(ValueError):
    """Headers missing or malformed, or a signature that does not verify."""


def signed_bytes(subject: str, signed_at_ns: int, payload: bytes) -> bytes:
    """What is signed for one message."""
    head = f"{contract.SIGNING_DOMAIN}\n{subject}\n{signed_at_ns}\n".encode()
    return head + payload


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(f"{contract.HEADER_SIGNATURE}: not base64url: {exc}") from None


class Signer:
    """Signs order operations with one identity's NKey seed (the seed never leaves it)."""

    def __init__(self, seed: bytes) -> None:
        self._keys = nkeys.from_seed(bytearray(seed))
        self.public_key: str = self._keys.public_key.decode("ascii")

    def __repr__(self) -> str:  # never the seed
        return f"Signer({self.public_key})"

    def headers(self, subject: str, payload: bytes, now_ns: int | None = None) -> dict[str, str]:
        """The three signature headers for ``payload`` sent to ``subject``."""
        at = time.time_ns() if now_ns is None else now_ns
        signature = self._keys.sign(signed_bytes(subject, at, payload))
        return {
            contract.HEADER_SIGNER: self.public_key,
            contract.HEADER_SIGNED_AT: str(at),
            contract.HEADER_SIGNATURE: _b64(signature),
        }


def verify(subject: str, payload: bytes, headers: dict[str, str]) -> str:
    """Check the signature headers of one message; return the signer's public key.

    The engine does this for real (with its window and replay checks); this is the same check
    for tools and tests."""
    try:
        signer = headers[contract.HEADER_SIGNER]
        at = int(headers[contract.HEADER_SIGNED_AT])
        signature = _unb64(headers[contract.HEADER_SIGNATURE])
    except KeyError as exc:
        raise SignatureError(f"missing header {exc.args[0]}") from None
    except ValueError:
        raise SignatureError(f"{contract.HEADER_SIGNED_AT}: not an integer") from None
    try:
        public_key(signer).verify(signed_bytes(subject, at, payload), signature)
    except BadSignatureError:
        raise SignatureError(f"signature does not verify for {signer}") from None
    return signer


def public_key(nkey: str) -> VerifyKey:
    """The Ed25519 key of a public user NKey ("U..."): prefix byte, 32 key bytes, CRC-16."""
    try:
        raw = base64.b32decode(nkey + "=" * (-len(nkey) % 8))
    except (binascii.Error, ValueError):
        raise SignatureError(f"{nkey!r} is not a public NKey (base32)") from None
    if len(raw) != 35 or raw[0] != nkeys.PREFIX_BYTE_USER:
        raise SignatureError(f"{nkey!r} is not a public user NKey")
    # nkeys.crc16 (not crc16_checksum, which nkeys 0.2.0, the declared floor, lacks).
    if nkeys.crc16(raw[:-2]).to_bytes(2, "little") != raw[-2:]:
        raise SignatureError(f"{nkey!r}: checksum mismatch")
    return VerifyKey(raw[1:33])
