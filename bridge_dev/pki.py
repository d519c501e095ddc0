"""Development PKI and NKeys: owns the dev CA, the server certificate and, for every identity of
the entitlements file (``nats/entitlements.toml``), a client certificate and a user NKey; and the
resolved entitlements the dev server is configured from.

Everything lives under one root directory (default ``<repo>/.dev``, git-ignored)::

    pki/ca.pem, pki/ca-key.pem                 self-signed CA (EC P-256, 1 year)
    pki/server.pem, pki/server-key.pem         server cert, SAN 127.0.0.1, ::1, localhost
    pki/<name>.pem, pki/<name>-key.pem         client cert per identity (clientAuth EKU, subject
                                               = its certificate_subject, e.g. CN=<name>)
    nkeys/<name>.nk, nkeys/<name>.pub          user NKey seed (0600) and its public key
    entitlements.toml                          nats/entitlements.toml with every ``dev:<name>``
                                               key replaced by nkeys/<name>.pub

The roles orchestrator, engine and operator are identities of the same names (always generated,
so callers that ask for a role keep working with any entitlements file).

:func:`ensure_dev_credentials` is idempotent: it only generates what is missing, expired
(or close to it), or no longer matches the CA or the identity's subject; a regenerated CA
re-issues every leaf. Private keys and seeds are written with mode 0600, atomically.

CLI: ``python -m bridge_dev.pki [--dir DIR] [--entitlements FILE]`` prints what it created.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.security import entitlements as ent
from bridge.security.server_auth import inbox_prefix
from bridge_dev.pki_issue import (
    CA_RENEW_BEFORE,
    cert_usable,
    issue_cert,
    leaf_subject,
    leaf_usable,
    load_cert,
    make_ca,
    pem_paths,
    seed_public_key,
    write_atomic,
    write_nkey_seed,
)

__all__ = [
    "ROLES",
    "SERVER_HOSTS",
    "DevCredentials",
    "IdentityCredentials",
    "RoleCredentials",
    "default_root",
    "ensure_dev_credentials",
    "issue_cert",
    "make_ca",
    "write_nkey_seed",
]

ROLES: tuple[str, ...] = ("orchestrator", "engine", "operator")
"""Identities always generated (each named after its role)."""

SERVER_HOSTS: tuple[str, ...] = ("127.0.0.1", "::1", "localhost")

DEV_ENTITLEMENTS = Path(__file__).resolve().parents[1] / "nats" / "entitlements.toml"
"""The committed dev entitlements file (``dev:<name>`` keys)."""
RESOLVED_ENTITLEMENTS = "entitlements.toml"
"""Its resolved copy under the credentials root."""

_CA_NAME = "ca"
_SERVER_NAME = "server"


def default_root() -> Path:
    """Return ``<repo>/.dev`` (the repo is two levels above this package)."""
    return Path(__file__).resolve().parents[1] / ".dev"


@dataclass(frozen=True)
class IdentityCredentials:
    """Client certificate, key, NKey seed and inbox prefix of one identity.

    ``role`` is the identity's role (for orchestrator, engine and operator also its name)."""

    name: str
    role: str
    cert_file: Path
    key_file: Path
    seed_file: Path
    public_nkey: str
    inbox_prefix: str


RoleCredentials = IdentityCredentials
"""Former name (the three roles are identities)."""


@dataclass(frozen=True)
class DevCredentials:
    """All development credentials under one root directory."""

    root: Path
    ca_file: Path
    server_cert: Path
    server_key: Path

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def nkeys_dir(self) -> Path:
        return self.root / "nkeys"

    @property
    def entitlements_file(self) -> Path:
        """The resolved entitlements (every key concrete) the dev servers are configured from."""
        return self.root / RESOLVED_ENTITLEMENTS

    def entitlements(self) -> ent.Entitlements:
        """The resolved entitlements, read from :attr:`entitlements_file`."""
        return ent.load(self.entitlements_file)

    def public_nkey(self, name: str) -> str:
        """The public NKey generated for ``name`` (FileNotFoundError if there is none)."""
        pub_file = self.nkeys_dir / f"{name}.pub"
        try:
            return pub_file.read_text(encoding="ascii").strip()
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{pub_file} is missing; run ensure_dev_credentials({str(self.root)!r}) or "
                f"issue_identity({name!r})"
            ) from exc

    def identity(
        self, name: str, entitlements: ent.Entitlements | None = None
    ) -> IdentityCredentials:
        """Credentials of identity ``name`` as declared in ``entitlements`` (default: the
        resolved dev file); a role name not declared there is an identity of that role."""
        declared = entitlements if entitlements is not None else self.entitlements()
        public_nkey = self.public_nkey(name)
        try:
            identity = declared.by_name(name)
        except KeyError:
            if name not in ROLES:
                raise KeyError(
                    f"no identity {name!r} in the entitlements ({self.entitlements_file})"
                ) from None
            identity = ent.Identity.model_validate(
                {
                    "name": name,
                    "role": name,
                    "nkey": public_nkey,
                    "certificate_subject": f"CN={name}",
                }
            )
        if identity.nkey != public_nkey:
            raise ValueError(
                f"identity {name!r}: the entitlements name key {identity.nkey}, but "
                f"{self.nkeys_dir / name}.pub holds {public_nkey}"
            )
        return IdentityCredentials(
            name=name,
            role=identity.role,
            cert_file=self.pki_dir / f"{name}.pem",
            key_file=self.pki_dir / f"{name}-key.pem",
            seed_file=self.nkeys_dir / f"{name}.nk",
            public_nkey=public_nkey,
            inbox_prefix=inbox_prefix(identity),
        )

    def role(self, name: str) -> IdentityCredentials:
        """Credentials of the identity ``name`` (a role name or any identity's)."""
        return self.identity(name)

    def issue_identity(
        self, name: str, certificate_subject: str | None = None, *, log: list[str] | None = None
    ) -> str:
        """Generate whatever is missing or stale of ``name``'s certificate (subject
        ``certificate_subject``, default ``CN=<name>``) and NKey; return its public key."""
        subject = certificate_subject or f"CN={name}"
        created = log if log is not None else []
        ca_cert, ca_key = pem_paths(self.pki_dir, _CA_NAME)
        cert, key = pem_paths(self.pki_dir, name)
        wanted = leaf_subject(name, subject)
        ca = load_cert(ca_cert)
        if not leaf_usable(cert, key, ca, client=True, hosts=(), subject=wanted):
            issue_cert(self.pki_dir, name, ca_cert, ca_key, client=True, hosts=(), subject=subject)
            created.append(f"created client certificate {cert} ({subject})")
        return _ensure_nkey(self.nkeys_dir, name, created)

    def resolve(
        self, entitlements: ent.Entitlements, *, log: list[str] | None = None
    ) -> ent.Entitlements:
        """``entitlements`` with every ``dev:<name>`` key replaced by ``name``'s dev key; each
        identity of the file gets its certificate and NKey first (generated if missing)."""
        for identity in entitlements.identities:
            name = identity.nkey.removeprefix(ent.DEV_KEY_PREFIX)
            if identity.nkey.startswith(ent.DEV_KEY_PREFIX):
                self.issue_identity(name, identity.certificate_subject, log=log)
        return entitlements.resolve(self.public_nkey)


def _ensure_nkey(nkeys_dir: Path, name: str, created: list[str]) -> str:
    seed_file = nkeys_dir / f"{name}.nk"
    pub_file = nkeys_dir / f"{name}.pub"
    public_key = seed_public_key(seed_file)
    if public_key is None:
        public_key = write_nkey_seed(seed_file)
        created.append(f"created NKey seed {seed_file} ({public_key})")
    else:
        os.chmod(seed_file, 0o600)
    current = pub_file.read_text(encoding="ascii").strip() if pub_file.is_file() else None
    if current != public_key:
        write_atomic(pub_file, (public_key + "\n").encode("ascii"), 0o644)
        created.append(f"wrote public NKey {pub_file}")
    return public_key


def _write_resolved(creds: DevCredentials, source: Path, created: list[str]) -> None:
    resolved = creds.resolve(ent.load(source), log=created)
    text = (
        f"# Generated by bridge_dev.pki from {source.name}: every dev:<name> key resolved to\n"
        f"# {creds.nkeys_dir}/<name>.pub. Do not edit; edit the source and re-run it.\n"
        + resolved.to_toml()
    )
    path = creds.entitlements_file
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_atomic(path, text.encode("utf-8"), 0o644)
        created.append(f"wrote resolved entitlements {path}")


def ensure_dev_credentials(
    root: Path | None = None,
    *,
    entitlements_file: Path | None = None,
    log: list[str] | None = None,
) -> DevCredentials:
    """Create whatever dev credentials are missing/stale under ``root`` (default ``<repo>/.dev``)
    for every identity of ``entitlements_file`` (default ``nats/entitlements.toml``) and the
    three roles, and write the resolved entitlements. Appends a line per generated file to
    ``log`` when given."""
    root = (root if root is not None else default_root()).resolve()
    created = log if log is not None else []
    pki_dir = root / "pki"
    nkeys_dir = root / "nkeys"
    pki_dir.mkdir(parents=True, exist_ok=True)
    nkeys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(nkeys_dir, 0o700)

    ca_cert, ca_key = pem_paths(pki_dir, _CA_NAME)
    ca = cert_usable(ca_cert, ca_key, CA_RENEW_BEFORE)
    if ca is None:
        make_ca(pki_dir, _CA_NAME)
        created.append(f"created CA {ca_cert} (+ key {ca_key})")
        # Every leaf of the old CA fails leaf_usable below and is re-issued.
        ca = load_cert(ca_cert)

    server_cert, server_key = pem_paths(pki_dir, _SERVER_NAME)
    if not leaf_usable(server_cert, server_key, ca, client=False, hosts=SERVER_HOSTS):
        issue_cert(pki_dir, _SERVER_NAME, ca_cert, ca_key, client=False, hosts=SERVER_HOSTS)
        created.append(f"created server certificate {server_cert} ({', '.join(SERVER_HOSTS)})")

    creds = DevCredentials(
        root=root, ca_file=ca_cert, server_cert=server_cert, server_key=server_key
    )
    source = entitlements_file if entitlements_file is not None else DEV_ENTITLEMENTS
    declared = {i.name for i in ent.load(source).identities}
    for role in ROLES:
        if role not in declared:
            creds.issue_identity(role, log=created)
    _write_resolved(creds, source, created)
    return creds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge_dev.pki", description="Generate missing development credentials."
    )
    parser.add_argument("--dir", type=Path, default=None, help="root directory (default .dev)")
    parser.add_argument(
        "--entitlements",
        type=Path,
        default=None,
        help="entitlements file whose identities get credentials (default nats/entitlements.toml)",
    )
    args = parser.parse_args(argv)
    log: list[str] = []
    try:
        creds = ensure_dev_credentials(args.dir, entitlements_file=args.entitlements, log=log)
    except ent.EntitlementsError as exc:
        print(f"python -m bridge_dev.pki: {exc}", file=sys.stderr)
        return 1
    for line in log:
        print(line)
    if not log:
        print(f"dev credentials under {creds.root} are complete; nothing created")
    for identity in creds.entitlements().identities:
        print(f"{identity.name} ({identity.role}): {identity.nkey}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
