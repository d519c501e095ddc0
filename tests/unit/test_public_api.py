"""Unit tests for the package's public surface: ``bridge.__all__``."""

from __future__ import annotations

import inspect

import pytest

import bridge


def test_all_is_sorted_without_duplicates() -> None:
    """bridge.__all__ is in sorted order and lists each name once."""
    assert list(bridge.__all__) == sorted(bridge.__all__)
    assert len(set(bridge.__all__)) == len(bridge.__all__)


@pytest.mark.parametrize("name", bridge.__all__)
def test_every_public_name_resolves(name: str) -> None:
    """Each name in __all__ is an attribute of the bridge package, defined in bridge."""
    obj = getattr(bridge, name)
    assert obj is not None
    assert getattr(obj, "__module__", "").startswith("bridge.")


def test_star_import_gives_exactly_all() -> None:
    """``from bridge import *`` binds exactly the names of __all__."""
    namespace: dict[str, object] = {}
    exec("from bridge import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(bridge.__all__)


def test_public_classes_are_exported() -> None:
    """Every public class re-exported by bridge/__init__.py is listed in __all__."""
    exported = {
        name
        for name, obj in vars(bridge).items()
        if inspect.isclass(obj) and not name.startswith("_")
    }
    assert exported <= set(bridge.__all__)


def _doc_cases() -> list[str]:
    return [name for name in bridge.__all__ if inspect.isclass(getattr(bridge, name))]


@pytest.mark.parametrize("name", _doc_cases())
def test_every_public_class_has_its_own_docstring(name: str) -> None:
    """Each class in __all__ has a non-empty docstring of its own (not an inherited one)."""
    cls = getattr(bridge, name)
    doc = vars(cls).get("__doc__")
    assert isinstance(doc, str)
    assert doc.strip()
