"""Issuing the dev PKI's files: CA, leaf certificates, NKey seeds, and checking them (no policy).

:mod:`bridge_dev.pki` decides what the dev credentials are and when to (re)generate them; this
module only writes and reads the files. Private keys and seeds are written with mode 0600,
atomically (temp file + rename).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path

import nkeys
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=365)
LEAF_VALIDITY = dt.timedelta(days=90)
# Re-generate material that expires sooner than this (leaves) / than a leaf lifetime (CA).
LEAF_RENEW_BEFORE = dt.timedelta(days=7)
CA_RENEW_BEFORE = dt.timedelta(days=30)
# Tolerate small clock skew between the generating host and the verifying peer.
BACKDATE = dt.timedelta(minutes=5)

# --------------------------------------------------------------------------- file helpers


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    write_atomic(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path} is not an EC private key")
    return key


def pem_paths(directory: Path, name: str) -> tuple[Path, Path]:
    return directory / f"{name}.pem", directory / f"{name}-key.pem"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _san_entries(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


# --------------------------------------------------------------------------- issuing


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """Create a self-signed CA ``<directory>/<name>.pem`` + ``<name>-key.pem``; overwrites."""
    cert_path, key_path = pem_paths(directory, name)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "execution-bridge dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (development CA)"),
        ]
    )
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    _write_private_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def _usages(client: bool) -> list[x509.ObjectIdentifier]:
    if client:
        return [ExtendedKeyUsageOID.CLIENT_AUTH]
    return [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def leaf_subject(name: str, subject: str | None) -> x509.Name:
    """The subject of a leaf: ``subject`` parsed (RFC 4514), else the dev default for ``name``."""
    if subject is not None:
        return x509.Name.from_rfc4514_string(subject)
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "execution-bridge dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def issue_cert(
    directory: Path,
    name: str,
    ca_cert: Path,
    ca_key: Path,
    *,
    client: bool,
    hosts: Sequence[str],
    subject: str | None = None,
) -> tuple[Path, Path]:
    """Issue a leaf ``<directory>/<name>.pem`` + ``<name>-key.pem`` signed by the given CA.

    ``client=True`` gives a clientAuth certificate, otherwise serverAuth + clientAuth (a
    cluster node also dials its peers' routes with it, under mutual TLS). ``hosts`` become
    subjectAltName entries (IP addresses or DNS names). The subject is ``subject`` (RFC 4514,
    e.g. an identity's ``certificate_subject``), else ``O=execution-bridge dev, CN=<name>``.
    Overwrites.
    """
    cert_path, key_path = pem_paths(directory, name)
    issuer = load_cert(ca_cert)
    issuer_key = _load_ec_key(ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + LEAF_VALIDITY, issuer.not_valid_after_utc)
    eku = _usages(client)
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf_subject(name, subject))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(_san_entries(hosts)), critical=False
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    _write_private_key(key_path, key)
    _write_cert(cert_path, cert)
    return cert_path, key_path


def write_nkey_seed(path: Path) -> str:
    """Create a user NKey seed file (mode 0600) at ``path``; return the public key ``U...``.

    The ``nkeys`` package cannot generate keys, so the seed is built per the NKeys spec from
    32 random bytes with ``nkeys.encode_seed`` (seed + user prefix bytes, base32, crc16).
    """
    seed: bytes = nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER)
    public_key = _public_key_of_seed(seed)
    write_atomic(path, seed + b"\n", 0o600)
    return public_key


def _public_key_of_seed(seed: bytes) -> str:
    kp = nkeys.from_seed(bytearray(seed))
    try:
        public_key = bytes(kp.public_key).decode("ascii")
    finally:
        kp.wipe()
    if not (public_key.startswith("U") and len(public_key) == 56):
        raise ValueError("not a user NKey seed (public key does not start with 'U')")
    return public_key


# --------------------------------------------------------------------------- validation


def cert_usable(
    cert_path: Path, key_path: Path, renew_before: dt.timedelta
) -> x509.Certificate | None:
    """Return the cert if cert+key exist, match, and stay valid past ``renew_before``."""
    if not (cert_path.is_file() and key_path.is_file()):
        return None
    try:
        cert = load_cert(cert_path)
        key = _load_ec_key(key_path)
    except (ValueError, TypeError):
        return None
    if cert.public_key() != key.public_key():
        return None
    now = _now()
    if cert.not_valid_before_utc > now or cert.not_valid_after_utc - renew_before < now:
        return None
    return cert


def leaf_usable(
    cert_path: Path,
    key_path: Path,
    ca: x509.Certificate,
    *,
    client: bool,
    hosts: Sequence[str],
    subject: x509.Name | None = None,
) -> bool:
    """Cert and key exist, match, are issued by ``ca``, stay valid for a while, carry the
    usages and SANs asked for and (when given) exactly ``subject``."""
    cert = cert_usable(cert_path, key_path, LEAF_RENEW_BEFORE)
    if cert is None:
        return False
    if subject is not None and cert.subject != subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    if any(usage not in eku for usage in _usages(client)):
        return False
    if hosts:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        if set(_san_entries(hosts)) - set(san):
            return False
    return True


def seed_public_key(seed_file: Path) -> str | None:
    if not seed_file.is_file():
        return None
    try:
        return _public_key_of_seed(seed_file.read_bytes().strip())
    except (ValueError, nkeys.NkeysError):
        return None
