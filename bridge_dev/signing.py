"""Order signing for the dev tooling and tests that talk to the engine without ``BridgeClient``
(raw nats-py requests and JetStream publishes): a :class:`~bridge.security.signing.Signer` of a
dev identity, and the headers of one signed message."""

from __future__ import annotations

from collections.abc import Mapping

from bridge.security.signing import Signer
from bridge_dev.pki import DevCredentials


def dev_signer(creds: DevCredentials, role: str = "orchestrator") -> Signer:
    """The signer of ``role``'s dev NKey seed (``.dev/nkeys/<role>.nk``)."""
    return Signer(creds.role(role).seed_file.read_bytes().strip())


def signed(
    signer: Signer,
    subject: str,
    payload: bytes,
    headers: Mapping[str, str] | None = None,
    now_ns: int | None = None,
) -> dict[str, str]:
    """``headers`` plus the signature headers of ``payload`` sent to ``subject``."""
    return {**(headers or {}), **signer.headers(subject, payload, now_ns=now_ns)}
