"""Raw order messages as the orchestrator's identity sends them: signed (the engine checks the
signature before anything else), for tests that bypass ``BridgeClient`` on purpose."""

from __future__ import annotations

from bridge.security.signing import Signer
from bridge_dev.pki import DevCredentials


def signed(
    creds: DevCredentials, subject: str, payload: bytes, headers: dict[str, str] | None = None
) -> dict[str, str]:
    """``headers`` plus the orchestrator's signature of ``payload`` sent to ``subject``."""
    seed = creds.role("orchestrator").seed_file.read_bytes().strip()
    return {**(headers or {}), **Signer(seed).headers(subject, payload)}
