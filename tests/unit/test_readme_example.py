"""The README's orchestrator example is examples/orchestrator.py, character for character, so
neither can rot: tests/integration/test_orchestrator_example.py runs the file."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = "examples/orchestrator.py"
MARKER = f"<!-- the whole of {EXAMPLE}; tests/unit/test_readme_example.py -->"


def readme_example() -> str:
    """The ```python block right after the marker line in README.md."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.count(MARKER) == 1, f"README.md must hold the line {MARKER!r} exactly once"
    after = readme.split(MARKER, 1)[1].lstrip("\n")
    assert after.startswith("```python\n"), "a ```python block must follow the marker"
    body, fence, _ = after.removeprefix("```python\n").partition("\n```\n")
    assert fence, "the ```python block after the marker is not closed"
    return body + "\n"


def test_readme_example_is_the_example_file() -> None:
    """Copy examples/orchestrator.py into the README block (or back) when this fails."""
    assert readme_example() == (REPO / EXAMPLE).read_text(encoding="utf-8")
