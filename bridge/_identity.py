"""The client's identity: its NKey seed, read once at connect, and what follows from it.

The seed (``nkey_seed_file`` or ``nkey_seed``) authenticates the connection (nats-py signs the
server's nonce with it), signs every order operation when ``sign_orders`` is on
(``bridge.security.signing.Signer``) and names the identity's own inbox: the default
``inbox_prefix`` is ``contract.identity_inbox_prefix("orchestrator", <public key>)``, the only
inbox the server lets this identity subscribe to. The file is read once, when the client
connects, and the seed goes to nats-py inline from there (``nkeys_seed_str``), so it is not read
again on reconnects. It is never logged: it lives in a ``SecretStr`` and in the ``Signer``,
whose ``repr`` shows the public key only.
"""

from __future__ import annotations

from dataclasses import dataclass

import nkeys
from pydantic import SecretStr

from bridge import contract
from bridge.config import BridgeSettings
from bridge.errors import ConfigurationError
from bridge.security.signing import Signer

ROLE = "orchestrator"
"""The role whose inbox namespace a client's identity inbox lives in."""


def check_settings(settings: BridgeSettings) -> None:
    """Refuse, when the client is built, settings that cannot work (nothing is read yet)."""
    if settings.sign_orders and settings.nkey_seed is None and settings.nkey_seed_file is None:
        raise ConfigurationError(
            "sign_orders is on but no NKey seed is configured: set nkey_seed_file "
            "(BRIDGE_NKEY_SEED_FILE) or nkey_seed (BRIDGE_NKEY_SEED) to the identity's user "
            "seed, or turn signing off with sign_orders=false (BRIDGE_SIGN_ORDERS=false; the "
            "engine then refuses the orders unless its require_signatures is off)"
        )


@dataclass(frozen=True, slots=True, repr=False)
class Identity:
    """What the seed gives the client: its public key, its signer and its inbox prefix."""

    seed: SecretStr | None
    public_key: str | None
    signer: Signer | None
    inbox_prefix: str

    def __repr__(self) -> str:  # never the seed
        return f"Identity(public_key={self.public_key!r}, signing={self.signer is not None})"

    def transport_settings(self, settings: BridgeSettings) -> BridgeSettings:
        """The settings the transport connects with: the seed inline (already read) and the
        resolved inbox prefix."""
        return settings.model_copy(
            update={
                "nkey_seed": self.seed,
                "nkey_seed_file": None,
                "inbox_prefix": self.inbox_prefix,
            }
        )


def load(settings: BridgeSettings) -> Identity:
    """Read the seed (once) and derive the identity; ``ConfigurationError`` if it is unusable
    (the message names the file, never the seed)."""
    check_settings(settings)
    seed = _read_seed(settings)
    if seed is None:
        prefix = settings.inbox_prefix or contract.inbox_prefix(ROLE)
        return Identity(seed=None, public_key=None, signer=None, inbox_prefix=prefix)
    where = settings.nkey_seed_file or "nkey_seed"
    try:
        signer = Signer(seed.get_secret_value().encode("ascii"))
    except (nkeys.NkeysError, ValueError, IndexError) as exc:  # UnicodeError is a ValueError
        raise ConfigurationError(
            f"{where}: not a valid NKey user seed ({type(exc).__name__})"
        ) from None
    if not signer.public_key.startswith("U"):
        raise ConfigurationError(f"{where}: an NKey seed, but not a user's (its key is not U...)")
    prefix = settings.inbox_prefix or contract.identity_inbox_prefix(ROLE, signer.public_key)
    return Identity(
        seed=seed,
        public_key=signer.public_key,
        signer=signer if settings.sign_orders else None,
        inbox_prefix=prefix,
    )


def _read_seed(settings: BridgeSettings) -> SecretStr | None:
    if settings.nkey_seed is not None:
        return SecretStr(settings.nkey_seed.get_secret_value().strip())
    if settings.nkey_seed_file is None:
        return None
    try:
        text = settings.nkey_seed_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"cannot read nkey_seed_file {settings.nkey_seed_file}: {type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or 'not an ASCII seed file'}"
        ) from None
    return SecretStr(text)
