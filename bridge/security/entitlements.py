"""The entitlements file: every identity, its keys, role and trading accounts (pure, no I/O
beyond reading the file).

One declaration read by both enforcement points: the server's per-user permissions are rendered
from it (:mod:`bridge.security.server_auth`) and the engine checks every signed order operation
against it (engine-rs ``auth``). The format is documented at the top of
``nats/entitlements.toml``; ``schemas/testdata/entitlements.toml`` is the shared test vector both
parsers are held to.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bridge import contract

Role = Literal["orchestrator", "operator", "engine", "sentinel", "system", "sysadmin"]
"""Roles an identity can have (see nats/entitlements.toml)."""

TRADING_ROLES: frozenset[str] = frozenset({"orchestrator", "operator"})
"""Roles that sign order operations and are entitled to accounts."""

FORMAT_VERSION = 1
DEV_KEY_PREFIX = "dev:"
"""``nkey = "dev:<name>"``: the key bridge_dev generated for <name> (resolved before use)."""

_NKEY_USER = re.compile(r"^U[A-Z2-7]{55}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ACCOUNT = re.compile(contract.ACCOUNT_PATTERN)


class EntitlementsError(ValueError):
    """The entitlements file is missing, unreadable or invalid; the message names the field."""


class Identity(BaseModel):
    """One identity of the entitlements file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: Role
    nkey: str
    certificate_subject: str = Field(min_length=1)
    accounts: tuple[str, ...] = ()

    @field_validator("accounts")
    @classmethod
    def _check_accounts(cls, accounts: tuple[str, ...]) -> tuple[str, ...]:
        for account in accounts:
            if account != contract.ALL_ACCOUNTS and not _ACCOUNT.match(account):
                raise ValueError(
                    f"account {account!r} is neither {contract.ALL_ACCOUNTS!r} nor matches "
                    f"{contract.ACCOUNT_PATTERN} (accounts starting with '_' are the engine's)"
                )
        return accounts

    @property
    def all_accounts(self) -> bool:
        """Entitled to every non-reserved account."""
        return contract.ALL_ACCOUNTS in self.accounts

    def entitled(self, account: str) -> bool:
        """May this identity trade and read ``account``? (Reserved accounts: never.)"""
        if self.role not in TRADING_ROLES or not _ACCOUNT.match(account):
            return False
        return self.all_accounts or account in self.accounts


class Entitlements(BaseModel):
    """A whole entitlements file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int
    identities: tuple[Identity, ...]

    def by_nkey(self, nkey: str) -> Identity | None:
        """The identity with this public NKey, if any."""
        return next((i for i in self.identities if i.nkey == nkey), None)

    def by_name(self, name: str) -> Identity:
        """The identity called ``name`` (KeyError naming it if there is none)."""
        for identity in self.identities:
            if identity.name == name:
                return identity
        raise KeyError(f"no identity {name!r} in the entitlements")

    def with_role(self, role: Role) -> Iterator[Identity]:
        """Every identity of one role, in file order."""
        return (i for i in self.identities if i.role == role)

    def resolve(self, dev_key: Callable[[str], str]) -> Entitlements:
        """Replace each ``dev:<name>`` key by ``dev_key(name)`` (the dev tooling's keys)."""
        identities = []
        for identity in self.identities:
            nkey = identity.nkey
            if nkey.startswith(DEV_KEY_PREFIX):
                nkey = dev_key(nkey.removeprefix(DEV_KEY_PREFIX))
            identities.append(identity.model_copy(update={"nkey": nkey}))
        return parse({"version": self.version, "identities": _as_table(identities)})

    @property
    def concrete(self) -> bool:
        """True when every key is a real public NKey (no ``dev:`` reference left)."""
        return all(_NKEY_USER.match(i.nkey) for i in self.identities)

    def to_toml(self) -> str:
        """The file's text (the same format it was read from), e.g. for .dev/entitlements.toml."""
        lines = [f"version = {self.version}"]
        for i in self.identities:
            lines += ["", f"[identities.{i.name}]", f"role = {_q(i.role)}", f"nkey = {_q(i.nkey)}"]
            lines.append(f"certificate_subject = {_q(i.certificate_subject)}")
            if i.accounts:
                lines.append(f"accounts = [{', '.join(_q(a) for a in i.accounts)}]")
        return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _as_table(identities: list[Identity]) -> dict[str, dict[str, object]]:
    return {i.name: i.model_dump(exclude={"name"}) for i in identities}


def parse(data: Mapping[str, object], *, source: str = "entitlements") -> Entitlements:
    """Validate a decoded file. Errors name the identity and field, e.g.
    ``identities.desk-a.accounts: account 'a.b' ...``."""
    version = data.get("version")
    if version != FORMAT_VERSION:
        raise EntitlementsError(f"{source}: version: must be {FORMAT_VERSION}, got {version!r}")
    table = data.get("identities")
    if not isinstance(table, Mapping) or not table:
        raise EntitlementsError(f"{source}: identities: at least one [identities.<name>] table")
    identities = []
    for name, body in table.items():
        if not _NAME.match(name):
            raise EntitlementsError(f"{source}: identities.{name}: invalid identity name")
        if not isinstance(body, Mapping):
            raise EntitlementsError(f"{source}: identities.{name}: must be a table")
        try:
            identity = Identity.model_validate({"name": name, **body})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise EntitlementsError(f"{source}: identities.{name}.{field}: {err['msg']}") from None
        _check_identity(identity, f"{source}: identities.{name}")
        identities.append(identity)
    _check_unique(identities, source)
    return Entitlements(version=FORMAT_VERSION, identities=tuple(identities))


def _check_identity(identity: Identity, where: str) -> None:
    nkey = identity.nkey
    if not (_NKEY_USER.match(nkey) or nkey.startswith(DEV_KEY_PREFIX)):
        raise EntitlementsError(f"{where}.nkey: not a public user NKey (U + 55 base32 chars)")
    if identity.role in TRADING_ROLES and not identity.accounts:
        raise EntitlementsError(f"{where}.accounts: a {identity.role} needs at least one account")
    if identity.role not in TRADING_ROLES and identity.accounts:
        raise EntitlementsError(f"{where}.accounts: a {identity.role} trades no account")


def _check_unique(identities: list[Identity], source: str) -> None:
    seen: dict[str, str] = {}
    for identity in identities:
        other = seen.setdefault(identity.nkey, identity.name)
        if other != identity.name:
            raise EntitlementsError(
                f"{source}: identities.{identity.name}.nkey: same key as identity {other!r}"
            )


def load(path: Path) -> Entitlements:
    """Read and validate an entitlements file (EntitlementsError names the file and field)."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise EntitlementsError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise EntitlementsError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, source=str(path))
