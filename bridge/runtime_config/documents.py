"""The runtime configuration documents: their keys, which side reads each, validation, diffs.

One JSON document per key of the config bucket (``contract.CONFIG_KV_BUCKET``), each checked
against its JSON Schema (``schemas/config/v1/<key>.schema.json``, shipped in the package as
``bridge/runtime_config/schemas``; a unit test keeps the two copies identical). The engine
validates with the same files. Pure: no I/O but reading the package's schema files.

Errors are ``FieldError``s with the conventions of the shared test vector
(``schemas/testdata/config_documents.json``): ``field`` is the dotted JSON path of the offending
value (array indexes as numbers; for ``required`` and ``additionalProperties`` the property's own
path; ``<document>`` for the document itself), ``rule`` the failing JSON Schema keyword
(``propertyNames`` for a key of an object that breaks its rule; ``json``
for a body that is not JSON, ``unknown_document`` for a key without a schema). A value of the
wrong type reports ``type`` alone (not also the keywords that its type makes fail, such as a
``not`` around a string ``pattern``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from bridge import contract
from bridge.models import FieldError

DOCUMENT = "<document>"
"""``FieldError.field`` of an error about the document as a whole."""

SIDES: dict[str, tuple[str, ...]] = {
    contract.CONFIG_RISK_KEY: ("engine",),
    contract.CONFIG_SYMBOLS_KEY: ("engine",),
    contract.CONFIG_TRADING_STATE_KEY: ("engine",),
    contract.CONFIG_LOG_LEVELS_KEY: ("engine", "client"),
    contract.CONFIG_CLIENT_KEY: ("client",),
    contract.CONFIG_ROUTING_KEY: ("client",),
}
"""Each document's key -> the sides that read and apply it (and answer with ConfigApplied)."""

KEYS: tuple[str, ...] = tuple(SIDES)
CLIENT_KEYS: tuple[str, ...] = tuple(k for k, sides in SIDES.items() if "client" in sides)
"""The documents a ``BridgeClient`` applies."""


@cache
def schema(key: str) -> dict[str, Any]:
    """The JSON Schema of document ``key`` (``KeyError`` for an unknown key)."""
    if key not in SIDES:
        raise KeyError(key)
    path = files("bridge.runtime_config").joinpath("schemas").joinpath(f"{key}.schema.json")
    text = path.read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator(key: str) -> Draft202012Validator:
    return Draft202012Validator(schema(key))


@dataclass(frozen=True, slots=True)
class Checked:
    """A document body after validation: the document when valid, else its errors."""

    document: dict[str, Any] | None
    errors: tuple[FieldError, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


def _error(field: str, rule: str, message: str) -> FieldError:
    return FieldError.model_construct(field=field, rule=rule, message=message)


def _path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or DOCUMENT


def _field_errors(error: ValidationError) -> list[FieldError]:
    """One jsonschema error as the vector's (field, rule) pairs."""
    rule = str(error.validator)
    parts = list(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path:
        # A key of an object breaks its rule (e.g. an account that is not one): the object's
        # ``propertyNames``, as the engine reports it, not the keyword inside it.
        return [_error(_path(parts), "propertyNames", error.message)]
    instance = error.instance
    required = error.validator_value
    if rule == "required" and isinstance(instance, dict) and isinstance(required, list):
        missing = [p for p in required if p not in instance]
        return [_error(_path([*parts, p]), rule, f"'{p}' is required") for p in missing]
    if rule == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = [p for p in instance if p not in known]
        return [_error(_path([*parts, p]), rule, f"'{p}' is not allowed here") for p in extra]
    return [_error(_path(parts), rule, error.message)]


def validate(key: str, body: bytes | str) -> Checked:
    """Parse and validate one document body for ``key``; never raises."""
    if key not in SIDES:
        why = f"no document {key!r}; known: {', '.join(KEYS)}"
        return Checked(None, (_error(DOCUMENT, "unknown_document", why),))
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return Checked(None, (_error(DOCUMENT, "json", f"not JSON: {exc}"),))
    errors: list[FieldError] = []
    for error in _validator(key).iter_errors(document):
        errors.extend(_field_errors(error))
    typed = {e.field for e in errors if e.rule == "type"}
    errors = [e for e in errors if e.rule == "type" or e.field not in typed]
    unique = {(e.field, e.rule): e for e in errors}
    if unique:
        return Checked(None, tuple(unique[k] for k in sorted(unique)))
    return Checked(document if isinstance(document, dict) else None, ())


TRADING_STATES: tuple[str, ...] = ("ACTIVE", "REDUCE_ONLY", "HALTED")
"""The values of a trading state (venue-wide, a symbol's, an account's)."""


def with_account_state(
    document: dict[str, Any] | None, account: str, state: str | None
) -> dict[str, Any]:
    """The ``trading_state`` document ``document`` (None: there is none, i.e. ACTIVE
    everywhere) with ``account``'s entry (the per-account kill switch) set to ``state``, or
    removed for ``None`` (the account is then judged by the venue's and its symbols' states
    alone). Everything else is kept; an empty ``accounts`` map is dropped. Pure: the input is
    not changed; validate the result before writing it."""
    new: dict[str, Any] = (
        copy.deepcopy(document) if document is not None else {"version": 1, "state": "ACTIVE"}
    )
    accounts: dict[str, Any] = dict(new.get("accounts") or {})
    if state is None:
        accounts.pop(account, None)
    else:
        accounts[account] = state
    if accounts:
        new["accounts"] = accounts
    else:
        new.pop("accounts", None)
    return new


def canonical(document: dict[str, Any] | None) -> str:
    """The document as written for humans and for ``bridge config set`` (sorted keys)."""
    return json.dumps(document, indent=2, sort_keys=True) if document is not None else "null"


ABSENT = "(absent)"


@dataclass(frozen=True, slots=True)
class Change:
    """One value that differs between two versions of a document (dotted ``path``)."""

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        old = ABSENT if self.old is _MISSING else json.dumps(self.old)
        new = ABSENT if self.new is _MISSING else json.dumps(self.new)
        return f"{self.path}: {old} -> {new}"


_MISSING: Any = object()


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            _flatten(v, f"{prefix}.{i}" if prefix else str(i), out)
    else:
        out[prefix or DOCUMENT] = value


def diff(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Change]:
    """Every leaf value that differs, by dotted path (a document that is not there has none)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if old is not None:
        _flatten(old, "", before)
    if new is not None:
        _flatten(new, "", after)
    paths = sorted(set(before) | set(after))
    return [
        Change(p, before.get(p, _MISSING), after.get(p, _MISSING))
        for p in paths
        if before.get(p, _MISSING) != after.get(p, _MISSING)
    ]


def diff_text(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """``diff`` as lines ``path: old -> new`` (``(absent)`` where a side has no value)."""
    return [str(c) for c in diff(old, new)]
