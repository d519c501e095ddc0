"""nats-server's system-account messages the sentinel reads (pure: JSON in, models out).

* The authentication-failure advisory on ``SYS_AUTH_ERROR`` (``$SYS.SERVER.<id>.CLIENT.AUTH.ERR``):
  a ``DisconnectEventMsg`` (``server/events.go``): ``server`` (``ServerInfo``: ``id``,
  ``name``), ``client`` (``ClientInfo``: ``id`` = cid, ``host``, ``acc``, ``user`` = the NKey the
  client presented, ``name``, ``lang``, ``ver``) and ``reason`` (e.g. "Authentication Failure").
* The replies to ``SYS_CONNZ`` / ``$SYS.REQ.SERVER.<id>.CONNZ`` and to ``sys_kick``: a
  ``ServerAPIResponse`` (``server``, ``data``, ``error``); connz ``data`` is a ``Connz``
  (``server/monitor.go``) whose ``connections`` are ``ConnInfo`` (``cid``, ``ip``, ``port``,
  ``authorized_user``, ``account``, ``tls_peer_certs[].subject``, ``name``, ``stop``,
  ``reason``).

Only the fields the sentinel uses are modelled; everything else is ignored, so a newer server
that adds fields parses the same.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONN_STATE_OPEN = 0
CONN_STATE_ALL = 2
"""nats-server's ``ConnState`` values for a connz ``state`` filter."""


class SysMessageError(ValueError):
    """A system message that is not valid JSON of the expected shape."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class ServerInfo(_Model):
    id: str = ""
    name: str = ""


class ClientInfo(_Model):
    id: int = 0
    host: str = ""
    account: str = Field(default="", alias="acc")
    user: str = ""
    name: str = ""
    lang: str = ""
    version: str = Field(default="", alias="ver")


class AuthErrorEvent(_Model):
    """One authentication-failure advisory."""

    server: ServerInfo = ServerInfo()
    client: ClientInfo = ClientInfo()
    reason: str = ""
    time: str = Field(default="", alias="timestamp")


class PeerCert(_Model):
    subject: str = ""


class ConnInfo(_Model):
    """One connection in a connz reply (``auth=true`` adds the user and account)."""

    cid: int
    ip: str = ""
    port: int = 0
    name: str = ""
    authorized_user: str = ""
    account: str = ""
    tls_peer_certs: tuple[PeerCert, ...] = ()
    stop: str | None = None
    reason: str = ""

    @property
    def remote_address(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}"

    @property
    def certificate_subject(self) -> str:
        """The subject of the client's certificate (the leaf, first in the chain)."""
        return self.tls_peer_certs[0].subject if self.tls_peer_certs else ""

    @property
    def closed(self) -> bool:
        return self.stop is not None


class Connz(_Model):
    connections: tuple[ConnInfo, ...] = ()


class ApiError(_Model):
    code: int = 0
    description: str = ""


class ServerReply(_Model):
    """A reply of one server to a ``$SYS.REQ`` request."""

    server: ServerInfo = ServerInfo()
    data: dict[str, Any] | None = None
    error: ApiError | None = None


def _load(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SysMessageError(f"{what}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SysMessageError(f"{what}: not a JSON object")
    return data


def parse_auth_error(raw: bytes) -> AuthErrorEvent:
    """An authentication-failure advisory (``SysMessageError`` if it is not one)."""
    data = _load(raw, "auth error advisory")
    try:
        return AuthErrorEvent.model_validate(data)
    except ValidationError as exc:
        raise SysMessageError(f"auth error advisory: {exc.errors()[0]['msg']}") from None


def parse_reply(raw: bytes) -> ServerReply:
    """One server's reply to a ``$SYS.REQ`` request."""
    data = _load(raw, "server reply")
    try:
        return ServerReply.model_validate(data)
    except ValidationError as exc:
        raise SysMessageError(f"server reply: {exc.errors()[0]['msg']}") from None


def connections(reply: ServerReply) -> tuple[ConnInfo, ...]:
    """The connections of a connz reply (none if the reply is an error)."""
    if reply.error is not None or reply.data is None:
        return ()
    try:
        return Connz.model_validate(reply.data).connections
    except ValidationError as exc:
        raise SysMessageError(f"connz reply: {exc.errors()[0]['msg']}") from None


def connz_request(
    *,
    cid: int | None = None,
    user: str | None = None,
    state: int = CONN_STATE_OPEN,
    limit: int | None = None,
) -> bytes:
    """The body of a connz request for one connection id or one user, with auth details."""
    body: dict[str, object] = {"auth": True, "state": state}
    if limit is not None:
        body["limit"] = limit
    if cid is not None:
        body["cid"] = cid
    if user is not None:
        body["user"] = user
    return json.dumps(body).encode()


def kick_request(cid: int) -> bytes:
    """The body of a kick request (``sys_kick(server_id)``) for one connection id."""
    return json.dumps({"cid": cid}).encode()
