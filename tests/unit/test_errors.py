"""Unit tests for ``bridge.errors``: the class tree is the one its docstring draws.

The drawing in the module docstring is parsed, so the picture and the code cannot drift apart.
"""

from __future__ import annotations

import builtins
import inspect
import re

import pytest

from bridge import errors
from bridge.errors import (
    BridgeError,
    ClientClosedError,
    ConnectionFailedError,
    EngineUnavailableError,
    FieldIssue,
    InvalidOrderError,
    OutcomeUnknownError,
    ProtocolError,
    PublishError,
    StreamFullError,
)

# A drawn node: tree guides, an optional "├── " / "└── " connector, the class name, the note.
_NODE = re.compile(r"^[ │]*(?:[├└]── )?(?P<name>[A-Z]\w*Error)\b(?P<note>.*)$")


def _drawn_tree() -> dict[str, tuple[str | None, str]]:
    """Parse the docstring's drawing into {class name: (drawn parent or None, note)}.

    A node's depth is the column its name starts at; its parent is the nearest node above it
    with a smaller column.
    """
    doc = errors.__doc__
    assert doc is not None
    drawing = doc.split("::", 1)[1].split("\n\n")[1]
    tree: dict[str, tuple[str | None, str]] = {}
    above: list[tuple[int, str]] = []  # (column, name) of the open ancestors
    for line in drawing.splitlines():
        match = _NODE.match(line)
        if match is None:
            continue  # continuation line of a description
        column = match.start("name")
        while above and above[-1][0] >= column:
            above.pop()
        tree[match["name"]] = (above[-1][1] if above else None, match["note"])
        above.append((column, match["name"]))
    return tree


DRAWN = _drawn_tree()


def test_drawing_parses_to_the_expected_shape() -> None:
    """The parser finds the root and every drawn class, so the tests below are not vacuous."""
    assert DRAWN["BridgeError"][0] is None
    assert DRAWN["StreamFullError"][0] == "PublishError"
    assert DRAWN["ProtocolError"][0] == "BridgeError"
    assert "(also ValueError)" in DRAWN["InvalidOrderError"][1]
    # ConfigurationError and SecurityViolationError joined (issue 12); MarketDataError and
    # NoCreditError (issue 15); MassCancelIncompleteError, SessionError and
    # UnsupportedOperationError (issue 16)
    assert len(DRAWN) == 20


@pytest.mark.parametrize("name", sorted(DRAWN))
def test_every_drawn_class_exists_with_the_drawn_parent(name: str) -> None:
    """Each class in the drawing exists and directly subclasses the class drawn above it."""
    cls = getattr(errors, name, None)
    assert isinstance(cls, type), f"{name} is drawn but bridge.errors has no such class"
    assert issubclass(cls, Exception)
    parent, rest = DRAWN[name]
    if parent is None:
        assert cls.__bases__ == (Exception,)
    else:
        assert cls.__bases__[0] is getattr(errors, parent)
    also = re.search(r"\(also (\w+)\)", rest)
    if also:
        assert issubclass(cls, getattr(builtins, also[1]))


def test_every_error_class_is_drawn() -> None:
    """Every exception class defined in bridge.errors appears in the docstring's drawing."""
    defined = {
        name
        for name, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, Exception) and obj.__module__ == errors.__name__
    }
    assert defined == set(DRAWN)


def test_invalid_order_error_is_also_a_value_error() -> None:
    """InvalidOrderError is both a BridgeError and a ValueError, as drawn."""
    assert issubclass(InvalidOrderError, BridgeError)
    assert issubclass(InvalidOrderError, ValueError)


@pytest.mark.parametrize(
    "cls",
    [
        BridgeError,
        ClientClosedError,
        ConnectionFailedError,
        EngineUnavailableError,
        OutcomeUnknownError,
        PublishError,
        StreamFullError,
        ProtocolError,
    ],
)
def test_str_includes_both_ids(cls: type[BridgeError]) -> None:
    """str() of an order-related error ends with its client_order_id and correlation_id."""
    err = cls("no answer", client_order_id="ord-1", correlation_id="cid-9")
    assert str(err) == "no answer (client_order_id=ord-1, correlation_id=cid-9)"
    assert (err.client_order_id, err.correlation_id) == ("ord-1", "cid-9")


def test_str_includes_only_the_ids_given() -> None:
    """With one id, only that id is appended; with none, the message is unchanged."""
    assert str(BridgeError("m", client_order_id="o")) == "m (client_order_id=o)"
    assert str(BridgeError("m", correlation_id="c")) == "m (correlation_id=c)"
    assert str(BridgeError("m")) == "m"
    assert BridgeError("m").client_order_id is None


def test_stream_full_error_is_a_publish_error_with_err_code() -> None:
    """StreamFullError is caught as PublishError and carries JetStream's err_code and ids."""
    err = StreamFullError("maximum messages exceeded", client_order_id="ord-7", err_code=10077)
    assert isinstance(err, PublishError)
    assert isinstance(err, BridgeError)
    assert err.err_code == 10077
    assert "client_order_id=ord-7" in str(err)
    assert PublishError("x").err_code is None


def test_invalid_order_error_lists_every_issue() -> None:
    """InvalidOrderError keeps its issues as a tuple and names each in its message."""
    issues = [
        FieldIssue("quantity", "greater_than", "must be > 0"),
        FieldIssue("limit_price", "required_for_limit", "needs a price"),
    ]
    err = InvalidOrderError(issues, model="Order")
    assert err.errors == tuple(issues)
    assert str(err) == (
        "invalid Order: quantity: must be > 0 [greater_than]; "
        "limit_price: needs a price [required_for_limit]"
    )


def test_field_issue_is_frozen() -> None:
    """A FieldIssue cannot be changed after creation."""
    issue = FieldIssue("f", "r", "m")
    with pytest.raises(AttributeError):
        issue.field = "g"  # type: ignore[misc]
